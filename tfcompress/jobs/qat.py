"""The qat job: load → pre-flight check → quantization-aware model → fine-tune → save.

The check runs before anything trains, so a model QAT cannot handle fails in seconds;
layers tfmot cannot quantize train in float and are listed in the report.
"""

import dataclasses
from typing import Optional

from tfcompress import _keras, keras_io
from tfcompress.jobs.check import check_model
from tfcompress.data import Preprocessing
from tfcompress._io.files import check_writable
from tfcompress.report import library_versions, write_json
from tfcompress.transforms import qat
from tfcompress.transforms.training import (TrainOptions, fine_tune, outputs_probabilities, strategy_scope,
                                            training_data)

__all__ = ["QatReport", "quantize_aware", "format_qat_report"]


@dataclasses.dataclass(frozen=True)
class QatReport:
    model: str
    output: Optional[str]
    float_layers: tuple     # LayerPlans of the layers that trained in float
    metrics: dict           # the last epoch's loss/accuracy (and val_ ones)
    check_verdict: Optional[str]
    options: dict
    output_format: Optional[str] = None     # which Keras wrote the output, and why (see keras_io.save_model)
    keras_model: object = dataclasses.field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        return {"model": self.model, "output": self.output, "step": "qat",
                "float_layers": [plan.to_dict() for plan in self.float_layers], "metrics": self.metrics,
                "check_verdict": self.check_verdict, "options": self.options, "output_format": self.output_format,
                "versions": library_versions()}


def quantize_aware(model, train, *, output=None, val=None, preserve: Optional[str] = None, epochs: int = 1,
                   batch_size: int = 32, learning_rate: float = 1e-4, strategy=None, report_path=None, skip_check: bool = False,
                   preprocessing: Preprocessing = Preprocessing(), reshape_data: bool = False,
                   trust_model_code: bool = False, custom_objects: Optional[dict] = None,
                   callbacks=(), verbose="auto") -> QatReport:
    """Quantization-aware fine-tuning of a Keras model (or model file) with tfmot.

    `train`/`val`: a data file, a `Dataset`, arrays `(x, y)` or a tf.data dataset.
    `preserve` "sparsity" (PQAT), "clusters" (CQAT) or "both" (PCQAT) keeps what `prune`
    and `cluster` made. Under a `tf.distribute.Strategy` the QAT model is built and
    trained in its scope. Write `output` as `.h5`; `tfcompress convert` reads the learned
    ranges from it. `callbacks` are Keras callbacks for `fit`.
    """
    options = TrainOptions(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate)
    qat.validate_preserve(preserve)
    for path in (output, report_path):
        check_writable(path)
    model, model_path = keras_io.model_and_path(model, trust_model_code=trust_model_code,
                                                custom_objects=custom_objects)
    keras_io.check_output_format(model, output, input_was_keras3=False, quantize_aware=True)
    train_data, val_data = training_data(train, val, model, preprocessing, reshape_data)

    verdict = None
    if not skip_check:
        report = check_model(model, target="mobile", calibration=train_data, source=model_path)
        report.raise_if_blocked()
        verdict = report.verdict
    from_logits = not outputs_probabilities(model)
    # CQAT trains the centroids and leaves the kernels without gradients on purpose; Keras would
    # warn about that on every retrace.
    with strategy_scope(strategy), _keras.quiet_tensorflow_logger("Gradients do not exist for variables"):
        qat_model, plans = qat.apply_qat(model, preserve)
        metrics = fine_tune(qat_model, train_data, options, from_logits=from_logits, val=val_data,
                            callbacks=callbacks, verbose=verbose)
    if preserve is not None:
        qat_model = qat.as_default_scheme(qat_model, model)
    if preserve in ("clusters", "both"):
        qat.check_clusters_kept(model, qat_model)
    output_format = None if output is None else keras_io.save_model(qat_model, output)
    result = QatReport(str(model_path or model.name), str(output) if output is not None else None,
                       tuple(plan for plan in plans if plan.action == qat.KEEP_FLOAT), metrics, verdict,
                       {**dataclasses.asdict(options), "preserve": preserve}, output_format=output_format,
                       keras_model=qat_model)
    if report_path is not None:
        write_json(result, report_path)
    return result


def format_qat_report(report: QatReport) -> str:
    lines = [f"qat: {report.model} → {report.output or '(not saved)'}",
             "last epoch: " + ", ".join(f"{name} {value:.4f}" for name, value in report.metrics.items())]
    lines += [f"trained in float: {plan.name} ({plan.layer_type}): {plan.reason}" for plan in report.float_layers]
    if report.output_format:
        lines.append(f"written as {report.output_format}")
    return "\n".join(lines)
