"""The cluster job: load → wrap for clustering → fine-tune the centroids → strip → save.

The report gives, per layer, the cluster count asked for, the distinct values the
stripped kernel holds and its sparsity, so a pipeline can see that clustering (and a
`preserve_sparsity` after pruning) did what it should before anything is converted.
"""

import dataclasses
from typing import Optional

from tfcompress import keras_io
from tfcompress.data import Preprocessing
from tfcompress._io.files import check_writable
from tfcompress.runtime.weight_coding import code_arrays
from tfcompress.report import format_weight_sizes, library_versions, write_json
from tfcompress.transforms import cluster as clustering
from tfcompress.transforms.graph import flatten_nested
from tfcompress.transforms.prune import layer_sparsity
from tfcompress.transforms.training import (TrainOptions, fine_tune, outputs_probabilities, strategy_scope,
                                            training_data)

__all__ = ["ClusterReport", "cluster", "format_cluster_report"]


@dataclasses.dataclass(frozen=True)
class ClusterReport:
    model: str
    output: Optional[str]
    layers: dict            # clustered layer → {"clusters": asked, "unique_values": held, "sparsity": zeros}
    skipped: dict           # layer → why it was left alone
    metrics: dict           # the last epoch's loss/accuracy (and val_ ones)
    options: dict
    weights: dict = dataclasses.field(default_factory=dict)   # raw, gzip and Huffman bytes of the stripped weights
    output_format: Optional[str] = None     # which Keras wrote the output, and why (see keras_io.save_model)
    keras_model: object = dataclasses.field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        return {"model": self.model, "output": self.output, "step": "cluster", "layers": self.layers,
                "skipped": self.skipped, "metrics": self.metrics, "options": self.options, "weights": self.weights, "output_format": self.output_format,
                "versions": library_versions()}


def cluster(model, train, *, output=None, val=None, options: Optional[clustering.ClusterOptions] = None,
            epochs: int = 2, batch_size: int = 32, learning_rate: float = 1e-5, strategy=None, report_path=None,
            preprocessing: Preprocessing = Preprocessing(), reshape_data: bool = False,
            trust_model_code: bool = False, custom_objects: Optional[dict] = None,
            callbacks=(), verbose="auto") -> ClusterReport:
    """Clusters the weights of a Keras model (or model file), fine-tuning the shared values.

    `train`/`val`: a data file, a `Dataset`, arrays `(x, y)` or a tf.data dataset. The
    learning rate defaults lower than pruning's: the centroids start from a trained
    model and large steps would undo it. The saved model is stripped (plain layers).
    """
    options = options or clustering.ClusterOptions()
    training = TrainOptions(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate)
    for path in (output, report_path):
        check_writable(path)
    model, model_path = keras_io.model_and_path(model, trust_model_code=trust_model_code,
                                                custom_objects=custom_objects)
    model = flatten_nested(model)
    input_was_keras3 = keras_io.saved_by_keras3(model_path)
    keras_io.check_output_format(model, output, input_was_keras3=input_was_keras3)
    train_data, val_data = training_data(train, val, model, preprocessing, reshape_data)
    chosen, skipped = clustering.clusterable_layer_names(model, options)
    with strategy_scope(strategy):
        wrapped = clustering.apply_clustering(model, options)
        metrics = fine_tune(wrapped, train_data, training, from_logits=not outputs_probabilities(model),
                            val=val_data, callbacks=callbacks, verbose=verbose)
    stripped = clustering.strip_clustering(wrapped)
    output_format = None if output is None else \
        keras_io.save_model(stripped, output, input_was_keras3=input_was_keras3)
    per_channel = [name for name in chosen if clustering.clusters_per_channel(stripped.get_layer(name), options)]
    unique = clustering.cluster_counts(stripped, per_channel)
    sparsity = layer_sparsity(stripped)
    layers = {name: {"clusters": options.clusters_for(name), "unique_values": unique[name],
                     "per_channel": name in per_channel, "sparsity": sparsity[name]} for name in chosen}
    result = ClusterReport(str(model_path or model.name), str(output) if output is not None else None, layers,
                           skipped, metrics, {**dataclasses.asdict(options), **dataclasses.asdict(training)},
                           weights=code_arrays(stripped.get_weights()), output_format=output_format,
                           keras_model=stripped)
    if report_path is not None:
        write_json(result, report_path)
    return result


def format_cluster_report(report: ClusterReport) -> str:
    lines = [f"cluster: {report.model} → {report.output or '(not saved)'}",
             "layer  clusters  distinct values  sparsity"]
    lines += [f"{name}  {values['clusters']}{' per channel' if values['per_channel'] else ''}  "
              f"{values['unique_values']}  {values['sparsity']:.3f}" for name, values in report.layers.items()]
    lines += [f"left alone: {name} ({why})" for name, why in report.skipped.items()]
    lines.append("last epoch: " + ", ".join(f"{name} {value:.4f}" for name, value in report.metrics.items()))
    lines.append(format_weight_sizes(report.weights))
    if report.output_format:
        lines.append(f"written as {report.output_format}")
    return "\n".join(lines)
