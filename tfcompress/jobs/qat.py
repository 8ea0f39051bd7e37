"""The qat job: load → pre-flight check → quantization-aware model → fine-tune → save.

The check runs before anything trains, so a model QAT cannot handle fails in seconds;
layers tfmot cannot quantize train in float and are listed in the report.
"""

import dataclasses
from typing import Optional

from tfcompress import _keras
from tfcompress.jobs._common import TrainingResult, training_run
from tfcompress.jobs.check import check_model
from tfcompress.options import GuardOptions, LoadOptions, TrainOptions, gather
from tfcompress.report import format_metrics
from tfcompress.transforms import qat
from tfcompress.transforms.guardrail import zeros_lost

__all__ = ["QatReport", "quantize_aware", "format_qat_report"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class QatReport(TrainingResult):
    STEP = "qat"
    float_layers: tuple  # LayerPlans of the layers that trained in float
    check_verdict: Optional[str]

    def own_dict(self) -> dict:
        return {"float_layers": [plan.to_dict() for plan in self.float_layers], "check_verdict": self.check_verdict}


TRAINING = TrainOptions(epochs=1)


def quantize_aware(
    model,
    train,
    *,
    options: Optional[qat.QatOptions] = None,
    training: Optional[TrainOptions] = None,
    load: Optional[LoadOptions] = None,
    guard: Optional[GuardOptions] = None,
    output=None,
    val=None,
    strategy=None,
    report_path=None,
    callbacks=(),
    verbose="auto",
    **settings,
) -> QatReport:
    """Quantization-aware fine-tuning of a Keras model (or model file) with tfmot.

    `options`, `training`, `load` and `guard` may also be given field by field as keywords
    (`preserve="sparsity"`, `epochs=2`, `skip_check=True`). `train`/`val`: a data file, a
    `Dataset`, arrays `(x, y)` or a tf.data dataset. `preserve` "sparsity" (PQAT), "clusters"
    (CQAT) or "both" (PCQAT) keeps what `prune` and `cluster` made. Under a
    `tf.distribute.Strategy` the QAT model is built and trained in its scope. Write `output` as
    `.h5`; `tfcompress convert` reads the learned ranges from it. `callbacks` are Keras callbacks
    for `fit`.
    """
    options, training, load, guard = gather(
        settings,
        (qat.QatOptions, options),
        (TrainOptions, training or TRAINING),
        (LoadOptions, load),
        (GuardOptions, guard),
    )
    fit = {"training": training, "strategy": strategy, "callbacks": callbacks, "verbose": verbose}
    with training_run(
        model, train, val, output=output, report_path=report_path, load=load, quantize_aware=True, **fit
    ) as run:
        verdict = None
        if not guard.skip_check:
            report = check_model(run.model, target="mobile", calibration=run.train, source=run.model_path)
            report.raise_if_blocked()
            verdict = report.verdict
        plans = []

        def quantize_aware_model():
            model, planned = qat.apply_qat(run.model, options.preserve, options.weight_bits, options.layer_bits)
            plans.extend(planned)
            return model

        # CQAT trains the centroids and leaves the kernels without gradients on purpose; Keras would
        # warn about that on every retrace.
        with _keras.quiet_tensorflow_logger("Gradients do not exist for variables"):
            qat_model, metrics = run.fit(quantize_aware_model)
        if options.preserve is not None:
            qat_model = qat.as_default_scheme(qat_model, run.model)
        if options.preserve in ("clusters", "both"):
            qat.check_clusters_kept(run.model, qat_model)
        remedy = "Pass --preserve sparsity (or both) to keep them."
        lost = None if options.preserve in ("sparsity", "both") else zeros_lost(run.model, qat_model, "qat", remedy)
        output_format = run.outputs.keras(qat_model, output)
        result = QatReport(
            **run.result_fields(output, metrics, options, output_format, qat_model),
            float_layers=tuple(plan for plan in plans if plan.action == qat.KEEP_FLOAT),
            check_verdict=verdict,
            warnings=(lost,) if lost else (),
        )
        run.outputs.report(report_path, result)
    return result


def format_qat_report(report: QatReport) -> str:
    lines = [
        f"qat: {report.model} → {report.output or '(not saved)'}",
        format_metrics(report),
    ]
    lines += [f"trained in float: {plan.name} ({plan.layer_type}): {plan.reason}" for plan in report.float_layers]
    if report.output_format:
        lines.append(f"written as {report.output_format}")
    return "\n".join(lines)
