"""The prune job: load → wrap for pruning → fine-tune on the schedule → strip → save.

The report compares, per layer, the sparsity reached in the stripped weights with the
target, so "pruning did nothing" is visible before anyone converts the model.
"""

import dataclasses
import math
from typing import Optional

from tfcompress import keras_io
from tfcompress.data import Preprocessing
from tfcompress._io.files import check_writable
from tfcompress.runtime.weight_coding import code_arrays
from tfcompress.report import format_weight_sizes, library_versions, write_json
from tfcompress.transforms import prune as pruning
from tfcompress.transforms.graph import flatten_nested
from tfcompress.transforms.training import (TrainOptions, fine_tune, outputs_probabilities, strategy_scope,
                                            training_data)

__all__ = ["PruneReport", "prune", "format_prune_report"]


@dataclasses.dataclass(frozen=True)
class PruneReport:
    model: str
    output: Optional[str]
    layers: dict            # pruned layer name → {"target": float, "sparsity": float}
    metrics: dict           # the last epoch's loss/accuracy (and val_ ones)
    options: dict
    weights: dict = dataclasses.field(default_factory=dict)   # raw, gzip and Huffman bytes of the stripped weights
    output_format: Optional[str] = None     # which Keras wrote the output, and why (see keras_io.save_model)
    keras_model: object = dataclasses.field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        return {"model": self.model, "output": self.output, "step": "prune", "layers": self.layers,
                "metrics": self.metrics, "options": self.options, "weights": self.weights,
                "output_format": self.output_format, "versions": library_versions()}


def prune(model, train, *, output=None, val=None, options: Optional[pruning.PruneOptions] = None, epochs: int = 2,
          batch_size: int = 32, learning_rate: float = 1e-4, logdir=None, strategy=None, report_path=None,
          preprocessing: Preprocessing = Preprocessing(), reshape_data: bool = False,
          trust_model_code: bool = False, custom_objects: Optional[dict] = None,
          callbacks=(), verbose="auto") -> PruneReport:
    """Prunes a Keras model (or model file) while fine-tuning it on labelled `train` data.

    `train`/`val`: a data file, a `Dataset`, arrays `(x, y)` or a tf.data dataset. The
    schedule ends on the last training step unless `options.end_step` says otherwise;
    the saved model is stripped (plain layers, zeros in the kernels).
    """
    options = options or pruning.PruneOptions()
    training = TrainOptions(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate)
    for path in (output, report_path):
        check_writable(path)
    model, model_path = keras_io.model_and_path(model, trust_model_code=trust_model_code,
                                                custom_objects=custom_objects)
    model = flatten_nested(model)
    input_was_keras3 = keras_io.saved_by_keras3(model_path)
    keras_io.check_output_format(model, output, input_was_keras3=input_was_keras3)
    train_data, val_data = training_data(train, val, model, preprocessing, reshape_data)
    total_steps = epochs * math.ceil(len(train_data) / batch_size)
    with strategy_scope(strategy):
        wrapped = pruning.apply_pruning(model, options, total_steps=total_steps)
        metrics = fine_tune(wrapped, train_data, training, from_logits=not outputs_probabilities(model),
                            val=val_data, callbacks=pruning.pruning_callbacks(logdir) + list(callbacks),
                            verbose=verbose)
    stripped = pruning.strip_pruning(wrapped)
    output_format = None if output is None else \
        keras_io.save_model(stripped, output, input_was_keras3=input_was_keras3)
    reached = pruning.layer_sparsity(stripped)
    layers = {name: {"target": 0.5 if options.structured else options.target_for(name), "sparsity": reached[name]}
              for name in pruning.prunable_layer_names(model, options)}
    result = PruneReport(str(model_path or model.name), str(output) if output is not None else None, layers,
                         metrics, {**dataclasses.asdict(options), **dataclasses.asdict(training)},
                         weights=code_arrays(stripped.get_weights()), output_format=output_format,
                         keras_model=stripped)
    if report_path is not None:
        write_json(result, report_path)
    return result


def format_prune_report(report: PruneReport) -> str:
    lines = [f"prune: {report.model} → {report.output or '(not saved)'}", "layer  target  reached"]
    lines += [f"{name}  {values['target']:.2f}  {values['sparsity']:.3f}" for name, values in report.layers.items()]
    lines.append("last epoch: " + ", ".join(f"{name} {value:.4f}" for name, value in report.metrics.items()))
    lines.append(format_weight_sizes(report.weights))
    if report.output_format:
        lines.append(f"written as {report.output_format}")
    return "\n".join(lines)
