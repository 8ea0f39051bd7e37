"""The distill job: teacher logits → student (given, or the teacher at a smaller width) → KD training → save.

The teacher labels unlabelled data too (`unlabeled`, or training data without labels): its
logits once, or on every augmented batch (`augment`, function matching). The report puts teacher
and student side by side (params, validation accuracy) and counts the samples of each kind, so "is
the smaller network good enough" is answered in the same run that trains it. Without labels to
measure on, the guard reads the teacher's scores as the labels (`guardrail.output_check`). A teacher
that is not one set of class scores (a regressor, an autoencoder, a segmenter, several outputs) has
its outputs matched instead, with the losses the training steps fine-tune a model's own towards.
"""

import dataclasses
import time
from typing import Optional

import numpy as np

from tfcompress import keras_io, progress
from tfcompress.data import Dataset, as_dataset, concatenated, fit_to_inputs, input_data, keras_inputs
from tfcompress.errors import ModelMismatchError, OptionError
from tfcompress.jobs._common import TrainingResult, job_outputs, load_model, options_dict, predicted
from tfcompress.options import LoadOptions, TrainOptions, gather
from tfcompress.report import format_metrics
from tfcompress.runtime.task import QUANTITIES, yes_no
from tfcompress.transforms import augment as augmentations
from tfcompress.transforms import distill as kd
from tfcompress.transforms.distribute import strategy_named
from tfcompress.transforms.graph import copy_model, flatten_nested
from tfcompress.transforms.guardrail import (
    AccuracyCheck,
    accuracy_check,
    guard_data,
    output_check,
    visible_causes,
    zeros_lost,
)
from tfcompress.transforms.training import (
    check_labels,
    fine_tune,
    fit_targets,
    keras_accuracy,
    output_tasks,
    strategy_scope,
)

__all__ = ["DistillReport", "distill", "format_distill_report"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class DistillReport(TrainingResult):
    """`model` is the teacher; the report names it so."""

    STEP = "distill"
    params: dict  # {"teacher": n, "student": n}
    accuracy: dict  # validation accuracy {"teacher", "student"}: fraction or None
    samples: dict  # {"labelled": n, "unlabeled": n}
    training_seconds: float
    matched: Optional[str] = None  # a teacher without one set of class scores: what the student matched

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
        return {
            "params": {**self.params, "ratio": self.params_ratio},
            "accuracy": self.accuracy,
            "samples": self.samples,
            "matched": self.matched,
            "training_seconds": self.training_seconds,
        }


TRAINING = TrainOptions(epochs=10, learning_rate=1e-3)


def distill(
    teacher,
    train,
    *,
    student=None,
    unlabeled=None,
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
    may also be given field by field as keywords. `train`/`val`: data (a file, a `Dataset`, `(x, y)`
    arrays or a tf.data dataset), with labels or without (then the teacher alone supervises them, as
    it does `unlabeled`: inputs in any data form, labels in it ignored). Teachers ending in softmax
    are fine: the logits before it are used; a yes/no teacher (one sigmoid unit, or one logit) takes labels 0 and 1.
    """
    options, training, load = gather(
        settings, (kd.DistillOptions, options), (TrainOptions, training or TRAINING), (LoadOptions, load)
    )
    if (student is None) == (options.width_multiplier is None):
        raise OptionError(
            "Give exactly one of student and width_multiplier. "
            f"Received: student={student!r}, width_multiplier={options.width_multiplier}"
        )
    strategy = _strategy(strategy or training.strategy)
    with job_outputs(output, report_path, inputs=(teacher, student, train, val, unlabeled)) as outputs:
        teacher, teacher_path = load_model(teacher, load, needs_layers=True)
        teacher = flatten_nested(teacher)
        if student is not None:
            student = flatten_nested(load_model(student, load, needs_layers=True)[0])
            _check_fits(teacher, student)
        inputs = keras_inputs(teacher)
        augmentations.check_fits_inputs(options.augment, [model_input.shape[1:] for model_input in inputs])
        requested = load.asked_tasks(teacher.output_names)
        train_data, val_data = (None if data is None else _fitted(data, inputs, load) for data in (train, val))
        labelled = train_data.y is not None
        teacher_tasks = output_tasks(teacher, requested, labelled)
        matching = len(teacher_tasks) > 1 or not _class_scores(teacher, teacher_tasks[0])
        for data, role in ((train_data, "training"), (val_data, "validation")):
            if data is not None and data.y is not None:
                check_labels(teacher, data, role, requested)  # refuses labels for several outputs
                if matching:
                    raise OptionError(_no_labels_to_match(teacher, teacher_tasks[0], role))
        if matching and options.augment:
            raise OptionError(
                "--augment (function matching) distills class scores; this teacher's outputs are matched as they "
                "are, on the data given: leave --augment out."
            )
        unlabeled_data = input_data(unlabeled, inputs, load.preprocessing, reshape=load.reshape_data)
        unlabelled_count = len(unlabeled_data) if unlabeled_data is not None else 0
        x = concatenated(train_data.x, unlabeled_data.x) if unlabelled_count else train_data.x
        input_was_keras3 = keras_io.saved_by_keras3(teacher_path)
        given = student
        with strategy_scope(strategy):  # before the teacher's softmax is switched off, which its config shows
            student = (
                kd.scale_width(teacher, options.width_multiplier, training.seed) if given is None else copy_model(given)
            )
        keras_io.check_output_format(student, output, input_was_keras3=input_was_keras3)
        started = time.perf_counter()
        tasks = {"teacher": teacher_tasks, "student": output_tasks(student, requested, labelled)}
        fit = {"strategy": strategy, "callbacks": callbacks, "verbose": verbose}
        if matching:
            samples = dataclasses.replace(train_data, x=x)
            metrics, matched = _matched(teacher, student, samples, val_data, teacher_tasks, training, **fit)
        else:
            kd_data = {"x": x, "train": train_data, "val": val_data, "unlabelled": unlabelled_count}
            metrics = _distilled(teacher, student, kd_data, teacher_tasks[0], options, training, **fit)
            matched = None
        training_seconds = round(time.perf_counter() - started, 1)
        output_format = outputs.keras(student, output, input_was_keras3=input_was_keras3)
        models = {"teacher": teacher, "student": student}
        labelled_val = val_data is not None and val_data.y is not None
        accuracy = {role: keras_accuracy(model, val_data, tasks[role][0]) if labelled_val else None
                    for role, model in models.items()}  # fmt: skip
        check = _check(models, tasks, val_data, train_data, len(x), training, accuracy)
        remedy = "distill holds no weight at zero: prune the student after distilling."
        lost = None if given is None else zeros_lost(given, student, "distill", remedy)
        result = DistillReport(
            model=str(teacher_path or teacher.name),
            output=None if output is None else str(output),
            metrics=metrics,
            options=options_dict(options, training),
            output_format=output_format,
            keras_model=student,
            accuracy=accuracy,
            params={"teacher": int(teacher.count_params()), "student": int(student.count_params())},
            samples=_samples(train_data, unlabelled_count),
            matched=matched,
            training_seconds=training_seconds,
            accuracy_check=check.to_dict() if isinstance(check, AccuracyCheck) else None,
            output_check=None if isinstance(check, AccuracyCheck) else check.to_dict(),
            warnings=(lost,) if lost else (),
        )
        outputs.report(report_path, result)
    return result


def _check(models: dict, tasks: dict, val_data, train_data, trained_on: int, training, accuracy: dict):
    """The student against the teacher, on the validation data (measured already) or training samples:
    top-1 accuracy where that data has labels, else how far the student's outputs are from the
    teacher's (class scores: the accuracy it can be expected to have lost, the teacher's scores standing
    in for labels). `trained_on`: the samples the student trained on, unlabelled ones counted, for the causes."""
    data, described = guard_data(val_data, train_data)
    causes = visible_causes(training, trained_on)
    if data.y is None:
        before, after = (predicted(models[role], data) for role in ("teacher", "student"))
        names, teacher_tasks = tuple(models["teacher"].output_names), tasks["teacher"]
        return output_check(described, before, after, training, causes, names, teacher_tasks, before_is="the teacher")
    before, after = accuracy["teacher"], accuracy["student"]
    if val_data is None:
        before, after = (keras_accuracy(models[role], data, tasks[role][0]) for role in ("teacher", "student"))
    return accuracy_check(described, before, after, training, causes, before_is="the teacher")


def _label_rows(data, classes: int, unlabelled: int = 0) -> np.ndarray:
    """The hard-label term's targets of `data` then of `unlabelled` more samples: none where there are no labels."""
    if data.y is None:
        return kd.label_distributions(np.zeros(0, np.int64), classes, unlabelled=len(data) + unlabelled)
    return kd.label_distributions(data.y, classes, unlabelled=unlabelled)


def _samples(train_data, unlabelled: int) -> dict:
    """The report's count of samples with labels and without (the teacher's outputs alone)."""
    if train_data.y is None:
        return {"labelled": 0, "unlabeled": len(train_data) + unlabelled}
    return {"labelled": len(train_data), "unlabeled": unlabelled}


def _fitted(data, inputs, load: LoadOptions) -> Dataset:
    """`data` as a `Dataset` fitted to the teacher's inputs; its labels are checked once the teacher's
    task is known, which depends on whether there are any."""
    return fit_to_inputs(as_dataset(data, load.preprocessing), inputs, reshape=load.reshape_data)


def _class_scores(teacher, task: str) -> bool:
    """Whether the teacher gives one set of class scores per sample (a softmax, logits, or one yes/no
    unit), which distill softens and blends with labels; other outputs are matched as they are."""
    shape = tuple(teacher.outputs[0].shape[1:])
    return len(shape) == 1 and task not in QUANTITIES and not (task == "sigmoid" and shape[0] > 1)


def _no_labels_to_match(teacher, task: str, role: str) -> str:
    shape = tuple(teacher.outputs[0].shape[1:])
    logits = task in QUANTITIES and len(shape) == 1
    hint = " (or, if they are class logits, say so with --task logits)" if logits else ""
    return (
        f"The {role} data has labels (y), but the teacher's output ({task}, {shape} per sample) is not one set of "
        f"class scores: distill matches such outputs as they are, without labels. Leave y out{hint}."
    )


def _distilled(teacher, student, data: dict, task: str, options, training, *, strategy, callbacks, verbose) -> dict:
    """Trains `student` on the teacher's softened class scores blended with the labels (Hinton's KD):
    the last epoch's metrics. `data`: the samples `x` (the training data's, then the unlabelled), the
    `train` and `val` datasets, and the count of `unlabelled` samples."""
    two_classes = yes_no(task, int(teacher.outputs[0].shape[-1]))
    classes = 2 if two_classes else int(teacher.outputs[0].shape[-1])
    x, val = data["x"], data["val"]
    label_rows = _label_rows(data["train"], classes, data["unlabelled"])
    with kd.exposed_logits(teacher, two_classes) as teacher_logits:
        train_targets = label_rows if options.augment else kd.packed_targets(label_rows, _logits(teacher_logits, x))
        val_pair = None
        if val is not None:
            val_pair = (val.x, kd.packed_targets(_label_rows(val, classes), _logits(teacher_logits, val.x)))
        with strategy_scope(strategy), kd.exposed_logits(student, two_classes) as student_logits:
            return kd.train_student(
                student_logits,
                x,
                train_targets,
                options,
                training,
                teacher_logits=teacher_logits,
                val=val_pair,
                callbacks=callbacks,
                verbose=verbose,
            )


def _matched(teacher, student, train, val, tasks: tuple, training, *, strategy, callbacks, verbose) -> tuple:
    """Trains `student` towards the teacher's outputs (`tasks`: how each reads), each with its loss, as the
    training steps fine-tune a model towards its own (`fit_targets`): (the last epoch's metrics, what it matched)."""
    targets = fit_targets(teacher, train, val, tasks)
    losses = targets.loss if isinstance(targets.loss, list) else [targets.loss]
    matched = f"the teacher's outputs, by {', '.join(type(loss).__name__ for loss in losses)}"
    progress.stage(f"training the student towards {matched}")
    with strategy_scope(strategy):
        metrics = fine_tune(student, train, targets, training, val=val, callbacks=callbacks, verbose=verbose)
    return metrics, matched


def _logits(logits_model, x) -> np.ndarray:
    return logits_model.predict(x, batch_size=256, verbose=0)


def _check_fits(teacher, student) -> None:
    for role in ("inputs", "outputs"):
        expected = [tuple(tensor.shape[1:]) for tensor in getattr(teacher, role)]
        received = [tuple(tensor.shape[1:]) for tensor in getattr(student, role)]
        if expected != received:
            raise ModelMismatchError(
                f"The student's {role} have shape {', '.join(map(str, received))} but the teacher's have "
                f"{', '.join(map(str, expected))}; "
                f"a student must take the same inputs and predict the same classes."
            )


def _strategy(strategy):
    """A Strategy from its name; multi-worker training is for the steps built on `training_run` (they
    let only the chief write), which distillation is not yet."""
    if strategy == "multi_worker":
        raise OptionError(
            "distill does not train on several machines yet; --strategy multi_worker works for "
            "prune, cluster, qat and lowrank."
        )
    return strategy_named(strategy) if isinstance(strategy, str) else strategy


def format_distill_report(report: DistillReport) -> str:
    lines = [
        f"distill: {report.teacher} → {report.output or '(not saved)'}",
        f"params: teacher {report.params['teacher']:,}, student {report.params['student']:,} "
        f"({report.params_ratio:.2f}x)",
    ]
    samples = f"{report.samples['labelled']:,} labelled"
    if report.samples["unlabeled"]:
        samples += f" + {report.samples['unlabeled']:,} unlabelled (the teacher's outputs alone)"
    augment = report.options.get("augment") or ()
    matching = f", function matching ({', '.join(augment)}; the teacher ran on every batch)" if augment else ""
    lines.append(f"trained on {samples}{matching}: {report.options['epochs']} epochs, {report.training_seconds:g} s")
    if report.matched:
        lines.append(f"matched {report.matched} (not one set of class scores: no temperature, no labels)")
    if report.accuracy["teacher"] is not None:
        lines.append(
            f"validation accuracy: teacher {report.accuracy['teacher'] * 100:.2f}%, "
            f"student {report.accuracy['student'] * 100:.2f}%"
        )
    lines.append(format_metrics(report))
    if report.output_format:
        lines.append(f"written as {report.output_format}")
    return "\n".join(lines)
