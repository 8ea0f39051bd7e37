"""The lowrank job: load → factor Dense/Conv2D kernels by truncated SVD → optionally fine-tune → save.

The report gives params and accuracy at each stage (original, factored, fine-tuned),
so the cost of the factorization and what fine-tuning won back are both visible.
"""

import dataclasses
from typing import Optional

from tfcompress.jobs._common import training_run
from tfcompress.options import LoadOptions, TrainOptions, gather
from tfcompress.report import library_versions
from tfcompress.transforms.lowrank import LowRankOptions, factorize
from tfcompress.transforms.training import fine_tune, keras_accuracy, outputs_probabilities, strategy_scope

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


TRAINING = TrainOptions(epochs=1)


def lowrank(model, *, options: Optional[LowRankOptions] = None, training: Optional[TrainOptions] = None,
            load: Optional[LoadOptions] = None, output=None, train=None, eval_data=None, strategy=None,
            report_path=None, callbacks=(), verbose="auto", **settings) -> LowRankReport:
    """Factors the Dense and Conv2D layers of a Keras model (or model file) where that saves params.

    `options` (`energy` or `rank_ratio`), `training` and `load` may also be given field by
    field as keywords. With `train` (labelled data) the factored model is fine-tuned for
    `epochs`; with `eval_data` the report has the accuracy of the original, the factored and the
    fine-tuned model. Data: a data file, a `Dataset`, arrays `(x, y)` or a tf.data dataset.
    """
    options, training, load = gather(settings, (LowRankOptions, options), (TrainOptions, training or TRAINING),
                                      (LoadOptions, load))
    with training_run(model, train, eval_data, output=output, report_path=report_path, load=load,
                      held_out_role="eval") as run:
        def measured(keras_model):
            return keras_accuracy(keras_model, run.held_out) if run.held_out is not None else None

        accuracy = {"original": measured(run.model)}
        with strategy_scope(strategy):
            factored, layers, skipped = factorize(run.model, options)
        accuracy["factored"] = measured(factored)
        metrics = {}
        if run.train is not None and layers:
            with strategy_scope(strategy):
                metrics = fine_tune(factored, run.train, training,
                                    from_logits=not outputs_probabilities(run.model), callbacks=callbacks,
                                    verbose=verbose)
            accuracy["fine_tuned"] = measured(factored)
        output_format = run.outputs.keras(factored, output, input_was_keras3=run.input_was_keras3)
        result = LowRankReport(str(run.model_path or run.model.name), str(output) if output is not None else None,
                               layers, skipped, {"original": int(run.model.count_params()),
                                                 "factored": int(factored.count_params())},
                               accuracy, metrics, {**dataclasses.asdict(options), **dataclasses.asdict(training)},
                               output_format=output_format, keras_model=factored)
        run.outputs.report(report_path, result)
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
