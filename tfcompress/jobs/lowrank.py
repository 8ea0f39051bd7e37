"""The lowrank job: load → factor Dense/Conv2D kernels by truncated SVD → optionally fine-tune → save.

The report gives params and accuracy at each stage (original, factored, fine-tuned),
so the cost of the factorization and what fine-tuning won back are both visible.
"""

import dataclasses
from typing import Optional

from tfcompress import keras_io
from tfcompress.data import Preprocessing
from tfcompress._io.files import check_writable
from tfcompress.report import library_versions, write_json
from tfcompress.transforms.graph import flatten_nested
from tfcompress.transforms.lowrank import LowRankOptions, factorize
from tfcompress.transforms.training import (TrainOptions, fine_tune, keras_accuracy, labelled_data,
                                            outputs_probabilities, strategy_scope)

__all__ = ["LowRankReport", "lowrank", "format_lowrank_report"]


@dataclasses.dataclass(frozen=True)
class LowRankReport:
    model: str
    output: Optional[str]
    layers: list               # [Factorization]
    skipped: dict              # layer → why it was left alone
    params: dict               # {"original": n, "factored": n}
    accuracy: dict             # {"original", "factored", "fine_tuned"}: fraction or None
    metrics: dict              # the fine-tune's last epoch (empty without --train)
    options: dict
    output_format: Optional[str] = None     # which Keras wrote the output, and why (see keras_io.save_model)
    keras_model: object = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def params_ratio(self) -> float:
        return self.params["factored"] / self.params["original"]

    def to_dict(self) -> dict:
        return {"model": self.model, "output": self.output, "step": "lowrank",
                "layers": [layer.to_dict() for layer in self.layers], "skipped": self.skipped,
                "params": {**self.params, "ratio": self.params_ratio}, "accuracy": self.accuracy,
                "metrics": self.metrics, "options": self.options, "output_format": self.output_format,
                "versions": library_versions()}


def lowrank(model, *, options: LowRankOptions, output=None, train=None, eval_data=None, epochs: int = 1,
            batch_size: int = 32, learning_rate: float = 1e-4, strategy=None, report_path=None,
            preprocessing: Preprocessing = Preprocessing(), reshape_data: bool = False,
            trust_model_code: bool = False, custom_objects: Optional[dict] = None,
            callbacks=(), verbose="auto") -> LowRankReport:
    """Factors the Dense and Conv2D layers of a Keras model (or model file) where that saves params.

    With `train` (labelled data) the factored model is fine-tuned for `epochs`; with
    `eval_data` the report has the accuracy of the original, the factored and the
    fine-tuned model. Data: a data file, a `Dataset`, arrays `(x, y)` or a tf.data dataset.
    """
    training = TrainOptions(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate)
    for path in (output, report_path):
        check_writable(path)
    model, model_path = keras_io.model_and_path(model, trust_model_code=trust_model_code,
                                                custom_objects=custom_objects)
    model = flatten_nested(model)
    input_was_keras3 = keras_io.saved_by_keras3(model_path)
    keras_io.check_output_format(model, output, input_was_keras3=input_was_keras3)
    data = {role: labelled_data(value, model, preprocessing, reshape_data, role)
            for role, value in (("training", train), ("eval", eval_data)) if value is not None}

    def measured(keras_model):
        return keras_accuracy(keras_model, data["eval"]) if "eval" in data else None

    accuracy = {"original": measured(model)}
    with strategy_scope(strategy):
        factored, layers, skipped = factorize(model, options)
    accuracy["factored"] = measured(factored)
    metrics = {}
    if "training" in data and layers:
        with strategy_scope(strategy):
            metrics = fine_tune(factored, data["training"], training, from_logits=not outputs_probabilities(model),
                                callbacks=callbacks, verbose=verbose)
        accuracy["fine_tuned"] = measured(factored)
    output_format = None if output is None else \
        keras_io.save_model(factored, output, input_was_keras3=input_was_keras3)
    result = LowRankReport(str(model_path or model.name), str(output) if output is not None else None, layers,
                           skipped, {"original": int(model.count_params()), "factored": int(factored.count_params())},
                           accuracy, metrics, {**dataclasses.asdict(options), **dataclasses.asdict(training)},
                           output_format=output_format, keras_model=factored)
    if report_path is not None:
        write_json(result, report_path)
    return result


def format_lowrank_report(report: LowRankReport) -> str:
    lines = [f"lowrank: {report.model} → {report.output or '(not saved)'}",
             "layer  rank  energy kept  params before → after"]
    lines += [f"{layer.layer}  {layer.rank}/{layer.full_rank}  {layer.energy:.3f}  "
              f"{layer.params_before:,} → {layer.params_after:,}" for layer in report.layers]
    lines += [f"left alone: {name} ({why})" for name, why in report.skipped.items()]
    lines.append(f"params: {report.params['original']:,} → {report.params['factored']:,} "
                 f"({report.params_ratio:.2f}x)")
    stages = [f"{stage} {value * 100:.2f}%" for stage, value in report.accuracy.items() if value is not None]
    if stages:
        lines.append("accuracy: " + ", ".join(stages))
    if report.output_format:
        lines.append(f"written as {report.output_format}")
    return "\n".join(lines)
