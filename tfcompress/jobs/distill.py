"""The distill job: teacher logits once → student (given, or the teacher at a smaller width) → KD training → save.

The report puts teacher and student side by side (params, validation accuracy), so
"is the smaller network good enough" is answered in the same run that trains it.
"""

import dataclasses
from typing import Optional

from tfcompress import keras_io
from tfcompress.errors import ModelMismatchError, OptionError
from tfcompress.jobs._common import TrainingResult, job_outputs, load_model, options_dict
from tfcompress.options import LoadOptions, TrainOptions, gather
from tfcompress.report import format_metrics
from tfcompress.transforms import distill as kd
from tfcompress.transforms.graph import copy_model, flatten_nested
from tfcompress.transforms.training import keras_accuracy, strategy_scope, training_data

__all__ = ["DistillReport", "distill", "format_distill_report"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class DistillReport(TrainingResult):
    """`model` is the teacher; the report names it so."""

    STEP = "distill"
    params: dict  # {"teacher": n, "student": n}
    accuracy: dict  # validation accuracy {"teacher", "student"}: fraction or None

    @property
    def teacher(self) -> str:
        return self.model

    @property
    def params_ratio(self) -> float:
        return self.params["student"] / self.params["teacher"]

    def to_dict(self) -> dict:
        report = super().to_dict()
        return {"teacher": report.pop("model"), **report}

    def own_dict(self) -> dict:
        return {"params": {**self.params, "ratio": self.params_ratio}, "accuracy": self.accuracy}


TRAINING = TrainOptions(epochs=10, learning_rate=1e-3)


def distill(
    teacher,
    train,
    *,
    student=None,
    options: Optional[kd.DistillOptions] = None,
    training: Optional[TrainOptions] = None,
    load: Optional[LoadOptions] = None,
    output=None,
    val=None,
    strategy=None,
    report_path=None,
    callbacks=(),
    verbose="auto",
    **settings,
) -> DistillReport:
    """Trains a student to match a teacher's softened outputs (and the labels).

    Give the student as a model (or file) or as `width_multiplier`: the teacher's own
    architecture with fewer units/filters, freshly initialised. `options`, `training` and `load`
    may also be given field by field as keywords. `train`/`val`: labelled data (a file, a
    `Dataset`, `(x, y)` arrays or a tf.data dataset). Teachers ending in softmax are fine: the
    logits before it are used.
    """
    options, training, load = gather(
        settings, (kd.DistillOptions, options), (TrainOptions, training or TRAINING), (LoadOptions, load)
    )
    if (student is None) == (options.width_multiplier is None):
        raise OptionError(
            "Give exactly one of student and width_multiplier. "
            f"Received: student={student!r}, width_multiplier={options.width_multiplier}"
        )
    with job_outputs(output, report_path, inputs=(teacher, student, train, val)) as outputs:
        teacher, teacher_path = load_model(teacher, load)
        teacher = flatten_nested(teacher)
        if student is not None:
            student = flatten_nested(load_model(student, load)[0])
            _check_fits(teacher, student)
        train_data, val_data = training_data(train, val, teacher, load.preprocessing, load.reshape_data)
        with kd.exposed_logits(teacher) as teacher_logits:
            train_targets = kd.packed_targets(
                train_data.y, teacher_logits.predict(train_data.x, batch_size=256, verbose=0)
            )
            val_pair = (
                None
                if val_data is None
                else (
                    val_data.x,
                    kd.packed_targets(val_data.y, teacher_logits.predict(val_data.x, batch_size=256, verbose=0)),
                )
            )
        input_was_keras3 = keras_io.saved_by_keras3(teacher_path)
        with strategy_scope(strategy):
            student = (
                kd.scale_width(teacher, options.width_multiplier, training.seed)
                if student is None
                else copy_model(student)
            )
            keras_io.check_output_format(student, output, input_was_keras3=input_was_keras3)
            with kd.exposed_logits(student) as student_logits:
                metrics = kd.train_student(
                    student_logits,
                    train_data.x,
                    train_targets,
                    options,
                    training,
                    val=val_pair,
                    callbacks=callbacks,
                    verbose=verbose,
                )
        output_format = outputs.keras(student, output, input_was_keras3=input_was_keras3)
        accuracy = (
            {"teacher": None, "student": None}
            if val_data is None
            else {"teacher": keras_accuracy(teacher, val_data), "student": keras_accuracy(student, val_data)}
        )
        result = DistillReport(
            model=str(teacher_path or teacher.name),
            output=None if output is None else str(output),
            metrics=metrics,
            options=options_dict(options, training),
            output_format=output_format,
            keras_model=student,
            accuracy=accuracy,
            params={"teacher": int(teacher.count_params()), "student": int(student.count_params())},
        )
        outputs.report(report_path, result)
    return result


def _check_fits(teacher, student) -> None:
    for role in ("inputs", "outputs"):
        expected = tuple(getattr(teacher, role)[0].shape[1:])
        received = tuple(getattr(student, role)[0].shape[1:])
        if expected != received:
            raise ModelMismatchError(
                f"The student's {role} have shape {received} but the teacher's have {expected}; "
                f"a student must take the same inputs and predict the same classes."
            )


def format_distill_report(report: DistillReport) -> str:
    lines = [
        f"distill: {report.teacher} → {report.output or '(not saved)'}",
        f"params: teacher {report.params['teacher']:,}, student {report.params['student']:,} "
        f"({report.params_ratio:.2f}x)",
    ]
    if report.accuracy["teacher"] is not None:
        lines.append(
            f"validation accuracy: teacher {report.accuracy['teacher'] * 100:.2f}%, "
            f"student {report.accuracy['student'] * 100:.2f}%"
        )
    lines.append(format_metrics(report.metrics))
    if report.output_format:
        lines.append(f"written as {report.output_format}")
    return "\n".join(lines)
