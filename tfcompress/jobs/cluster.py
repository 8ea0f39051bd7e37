"""The cluster job: load → wrap for clustering → fine-tune the centroids → strip → save.

The report gives, per layer, the cluster count asked for, the distinct values the
stripped kernel holds and its sparsity, so a pipeline can see that clustering (and a
`preserve_sparsity` after pruning) did what it should before anything is converted.
"""

import dataclasses
from typing import Optional

from tfcompress.jobs._common import TrainingResult, training_run
from tfcompress.options import LoadOptions, TrainOptions, gather
from tfcompress.report import format_metrics, format_weight_sizes, table
from tfcompress.runtime.weight_coding import code_arrays
from tfcompress.transforms import cluster as clustering
from tfcompress.transforms.guardrail import zeros_lost
from tfcompress.transforms.prune import layer_sparsity

__all__ = ["ClusterReport", "cluster", "format_cluster_report"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClusterReport(TrainingResult):
    STEP = "cluster"
    layers: dict  # clustered layer → {"clusters": asked, "unique_values": held, "sparsity": zeros}
    skipped: dict  # layer → why it was left alone
    weights: dict  # raw, gzip and Huffman bytes of the stripped weights


TRAINING = TrainOptions(epochs=2, learning_rate=1e-5)


def cluster(
    model,
    train,
    *,
    options: Optional[clustering.ClusterOptions] = None,
    training: Optional[TrainOptions] = None,
    load: Optional[LoadOptions] = None,
    output=None,
    val=None,
    strategy=None,
    report_path=None,
    callbacks=(),
    verbose="auto",
    **settings,
) -> ClusterReport:
    """Clusters the weights of a Keras model (or model file), fine-tuning the shared values.

    `options`, `training` and `load` may also be given field by field as keywords
    (`clusters=8`, `epochs=3`). `train`/`val`: a data file, a `Dataset`, arrays `(x, y)` or a
    tf.data dataset. The learning rate defaults lower than pruning's: the centroids start from a
    trained model and large steps would undo it. The saved model is stripped (plain layers).
    """
    options, training, load = gather(
        settings, (clustering.ClusterOptions, options), (TrainOptions, training or TRAINING), (LoadOptions, load)
    )
    fit = {"training": training, "strategy": strategy, "callbacks": callbacks, "verbose": verbose}
    with training_run(model, train, val, output=output, report_path=report_path, load=load, **fit) as run:
        chosen, skipped = clustering.clusterable_layer_names(run.model, options)
        kept = [clustering.zeros_kept()] if options.preserve_sparsity else []
        wrapped, metrics = run.fit(lambda: clustering.apply_clustering(run.model, options), callbacks=kept)
        stripped = clustering.strip_clustering(wrapped)
        remedy = "Pass --preserve_sparsity to keep them."
        lost = None if options.preserve_sparsity else zeros_lost(run.model, stripped, "cluster", remedy)
        output_format = run.outputs.keras(stripped, output, input_was_keras3=run.input_was_keras3)
        per_channel = [name for name in chosen if clustering.clusters_per_channel(stripped.get_layer(name), options)]
        unique = clustering.cluster_counts(stripped, per_channel)
        sparsity = layer_sparsity(stripped)
        layers = {
            name: {
                "clusters": options.clusters_for(name),
                "unique_values": unique[name],
                "per_channel": name in per_channel,
                "sparsity": sparsity[name],
            }
            for name in chosen
        }
        result = ClusterReport(
            **run.result_fields(output, metrics, options, output_format, stripped),
            layers=layers,
            skipped=skipped,
            weights=code_arrays(stripped.get_weights()),
            warnings=(lost,) if lost else (),
        )
        run.outputs.report(report_path, result)
    return result


def format_cluster_report(report: ClusterReport) -> str:
    rows = [
        (
            name,
            f"{values['clusters']:g}",
            "yes" if values["per_channel"] else "no",
            values["unique_values"],
            f"{values['sparsity']:.3f}",
        )
        for name, values in report.layers.items()
    ]
    lines = [
        f"cluster: {report.model} → {report.output or '(not saved)'}",
        table(("layer", "clusters", "per channel", "distinct values", "sparsity"), rows),
    ]
    lines += [f"left alone: {name} ({why})" for name, why in report.skipped.items()]
    lines.append(format_metrics(report))
    lines.append(format_weight_sizes(report.weights))
    if report.output_format:
        lines.append(f"written as {report.output_format}")
    return "\n".join(lines)
