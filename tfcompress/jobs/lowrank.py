"""The lowrank job: load → factor Dense/Conv2D kernels by truncated SVD → optionally fine-tune → save.

The report gives params and accuracy at each stage (original, factored, fine-tuned),
so the cost of the factorization and what fine-tuning won back are both visible.
"""

import dataclasses
from typing import Optional

from tfcompress.jobs._common import TrainingResult, training_run
from tfcompress.options import LoadOptions, TrainOptions, gather
from tfcompress.report import table
from tfcompress.transforms.lowrank import LowRankOptions, factorize
from tfcompress.transforms.training import keras_accuracy, strategy_scope

__all__ = ["LowRankReport", "lowrank", "format_lowrank_report"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class LowRankReport(TrainingResult):
    STEP = "lowrank"
    layers: list  # [Factorization]
    skipped: dict  # layer → why it was left alone
    params: dict  # {"original": n, "factored": n}
    accuracy: dict  # {"original", "factored", "fine_tuned"}: fraction or None

    @property
    def params_ratio(self) -> float:
        return self.params["factored"] / self.params["original"]

    def own_dict(self) -> dict:
        return {
            "layers": [layer.to_dict() for layer in self.layers],
            "skipped": self.skipped,
            "params": {**self.params, "ratio": self.params_ratio},
            "accuracy": self.accuracy,
        }


TRAINING = TrainOptions(epochs=1)


def lowrank(
    model,
    *,
    options: Optional[LowRankOptions] = None,
    training: Optional[TrainOptions] = None,
    load: Optional[LoadOptions] = None,
    output=None,
    train=None,
    val=None,
    strategy=None,
    report_path=None,
    callbacks=(),
    verbose="auto",
    **settings,
) -> LowRankReport:
    """Factors the Dense and Conv2D layers of a Keras model (or model file) where that saves params.

    `options` (`energy` or `rank_ratio`), `training` and `load` may also be given field by
    field as keywords. With `train` (labelled data) the factored model is fine-tuned for
    `epochs`; with `val` (held-out data) the report has the accuracy of the original, the factored and the
    fine-tuned model. Data: a data file, a `Dataset`, arrays `(x, y)` or a tf.data dataset.
    """
    options, training, load = gather(
        settings, (LowRankOptions, options), (TrainOptions, training or TRAINING), (LoadOptions, load)
    )
    fit = {"training": training, "strategy": strategy, "callbacks": callbacks, "verbose": verbose}
    with training_run(model, train, val, output=output, report_path=report_path, load=load, **fit) as run:

        def measured(keras_model):
            labelled = run.held_out is not None and run.held_out.y is not None
            return keras_accuracy(keras_model, run.held_out, run.tasks[0]) if labelled else None

        accuracy = {"original": measured(run.model)}
        with strategy_scope(run.strategy):
            factored, layers, skipped = factorize(run.model, options)
        accuracy["factored"] = measured(factored)
        metrics = {}
        if run.train is not None and layers:
            factored, metrics = run.fit(lambda: factored)
            accuracy["fine_tuned"] = measured(factored)
        output_format = run.outputs.keras(factored, output, input_was_keras3=run.input_was_keras3)
        result = LowRankReport(
            **run.result_fields(output, metrics, options, output_format, factored),
            layers=layers,
            skipped=skipped,
            accuracy=accuracy,
            params={"original": int(run.model.count_params()), "factored": int(factored.count_params())},
        )
        run.outputs.report(report_path, result)
    return result


def format_lowrank_report(report: LowRankReport) -> str:
    rows = [
        (
            layer.layer,
            f"{layer.rank}/{layer.full_rank}",
            f"{layer.energy:.3f}",
            f"{layer.params_before:,}",
            f"{layer.params_after:,}",
        )
        for layer in report.layers
    ]
    lines = [
        f"lowrank: {report.model} → {report.output or '(not saved)'}",
        table(("layer", "rank", "energy kept", "params before", "params after"), rows),
    ]
    lines += [f"left alone: {name} ({why})" for name, why in report.skipped.items()]
    lines.append(f"params: {report.params['original']:,} → {report.params['factored']:,} ({report.params_ratio:.2f}x)")
    stages = [f"{stage} {value * 100:.2f}%" for stage, value in report.accuracy.items() if value is not None]
    if stages:
        lines.append("accuracy: " + ", ".join(stages))
    lines += [
        f"WARNING: {check['warning']}"
        for check in (report.accuracy_check, report.output_check)
        if check and check["warning"]
    ]
    if report.output_format:
        lines.append(f"written as {report.output_format}")
    return "\n".join(lines)
