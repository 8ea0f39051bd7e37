"""The prune job: load → wrap for pruning → fine-tune on the schedule → strip → save.

The report compares, per layer, the sparsity reached in the stripped weights with the
target, so "pruning did nothing" is visible before anyone converts the model.
"""

import dataclasses
import math
from typing import Optional

from tfcompress.jobs._common import TrainingResult, training_run
from tfcompress.options import LoadOptions, TrainOptions, gather
from tfcompress.report import format_metrics, format_weight_sizes, table
from tfcompress.runtime.weight_coding import code_arrays
from tfcompress.transforms import prune as pruning

__all__ = ["PruneReport", "prune", "format_prune_report"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class PruneReport(TrainingResult):
    STEP = "prune"
    layers: dict  # pruned layer name → {"target": float, "sparsity": float}
    weights: dict  # raw, gzip and Huffman bytes of the stripped weights


TRAINING = TrainOptions(epochs=2)


def prune(
    model,
    train,
    *,
    options: Optional[pruning.PruneOptions] = None,
    training: Optional[TrainOptions] = None,
    load: Optional[LoadOptions] = None,
    output=None,
    val=None,
    logdir=None,
    strategy=None,
    report_path=None,
    callbacks=(),
    verbose="auto",
    **settings,
) -> PruneReport:
    """Prunes a Keras model (or model file) while fine-tuning it on labelled `train` data.

    `options`, `training` and `load` may also be given field by field as keywords
    (`target_sparsity=0.9`, `epochs=3`). `train`/`val`: a data file, a `Dataset`, arrays
    `(x, y)` or a tf.data dataset. The schedule ends on the last training step unless
    `end_step` says otherwise; the saved model is stripped (plain layers, zeros in the kernels).
    """
    options, training, load = gather(
        settings, (pruning.PruneOptions, options), (TrainOptions, training or TRAINING), (LoadOptions, load)
    )
    fit = {"training": training, "strategy": strategy, "callbacks": callbacks, "verbose": verbose}
    with training_run(model, train, val, output=output, report_path=report_path, load=load, **fit) as run:
        total_steps = training.epochs * math.ceil(len(run.train) / training.batch_size)
        targets = {
            name: 0.5 if options.structured else options.target_for(name)
            for name in pruning.prunable_layer_names(run.model, options)
        }
        wrapped, metrics = run.fit(
            lambda: pruning.apply_pruning(run.model, options, total_steps=total_steps),
            callbacks=pruning.pruning_callbacks(logdir),
            sparsity=max(targets.values(), default=None),
        )
        stripped = pruning.strip_pruning(wrapped)
        output_format = run.outputs.keras(stripped, output, input_was_keras3=run.input_was_keras3)
        reached = pruning.layer_sparsity(stripped)
        layers = {name: {"target": target, "sparsity": reached[name]} for name, target in targets.items()}
        result = PruneReport(
            **run.result_fields(output, metrics, options, output_format, stripped),
            layers=layers,
            weights=code_arrays(stripped.get_weights()),
        )
        run.outputs.report(report_path, result)
    return result


def format_prune_report(report: PruneReport) -> str:
    lines = [
        f"prune: {report.model} → {report.output or '(not saved)'}",
        table(
            ("layer", "target", "reached"),
            [(name, f"{values['target']:.2f}", f"{values['sparsity']:.3f}") for name, values in report.layers.items()],
        ),
        format_metrics(report),
    ]
    lines.append(format_weight_sizes(report.weights))
    if report.output_format:
        lines.append(f"written as {report.output_format}")
    return "\n".join(lines)
