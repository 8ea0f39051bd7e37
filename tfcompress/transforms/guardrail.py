"""A training step that damages a model says so.

Fine-tuning with too few images for the sparsity asked, too high a learning rate or too
few steps can leave a model far worse than it came in (prune on lenet5 with the bundled
1,000 images ended at 50%), and Keras shows that only as one more line of metrics. Each
training step measures top-1 accuracy before and after on the held-out data it has (`--val`),
else on up to `GUARD_SAMPLES` of its training images (said so: they are not held out), and a drop
of more than `warn_accuracy_drop` points is a warning, in the output and the report, that names
the causes the settings show. On data without labels the step
fine-tunes towards the outputs it started from, and the check (`OutputCheck`) measures how far it
moved them, each output read as convert reads it (or as `--task` says): a quantity by RMS change
over RMS (the measure of convert's fidelity) against `warn_relative_error`; class scores (a softmax,
logits, or a sigmoid's yes/no units) by the accuracy they can be expected to have lost, with the
model's own scores before the step standing in for the labels, against `warn_accuracy_drop`.
Neither the RMS change of probabilities nor the share of changed top-1 classes says that: lenet5
pruned to 50% on 1,000 images moved 21% and changed the class of 6.0% of held-out images, and
lost 1.35 pt of test accuracy; the expected loss was 2.0 pt (`benchmarks/label_free_guard.py`).

A step can also undo the step before it without losing any accuracy: fine-tuning moves every
weight it is not told to hold, so `qat` without `--preserve sparsity` grew a LeNet-300-100
pruned to 90% back to 12%, 41% and 7% zeros in one epoch, and `cluster` without
`--preserve_sparsity` to none. `zeros_lost` says so, naming the layers and what keeps them.
"""

import dataclasses
import math
from typing import Optional

import numpy as np
from absl import logging

from tfcompress.data import Dataset
from tfcompress.report import named_output
from tfcompress.runtime.metrics import fidelity
from tfcompress.runtime.task import QUANTITIES, YES_AT, class_probabilities, yes_no
from tfcompress.transforms.prune import layer_sparsity

__all__ = [
    "AccuracyCheck",
    "OutputCheck",
    "accuracy_check",
    "output_check",
    "expected_accuracy_drop",
    "top1_kept",
    "guard_data",
    "visible_causes",
    "zeros_lost",
    "GUARD_SAMPLES",
]

GUARD_SAMPLES = 2000
_FEW_IMAGES = 10_000  # fewer than this for a high sparsity: pruned models recover on more data
_HIGH_SPARSITY = 0.5
_HIGH_LEARNING_RATE = 1e-3
_FEW_STEPS = 500
_PRUNED = 0.3  # of a kernel's weights exactly zero: trained kernels hold almost none, pruned ones this many
_ROUNDING = 1e-9  # a drop of exactly the limit (15 of 500 samples for 3 pt, 3.0000000000000027 in floats) is within it


@dataclasses.dataclass(frozen=True)
class AccuracyCheck:
    """Top-1 accuracy before and after a training step, on the data named by `data`."""

    data: str
    before: float
    after: float
    limit: float  # points of drop that make a warning
    causes: tuple = ()  # what the settings show that can explain a drop
    before_is: str = "the model before this step"  # distill: "the teacher"

    @property
    def drop(self) -> float:
        return (self.before - self.after) * 100

    @property
    def warning(self) -> Optional[str]:
        if self.drop <= self.limit + _ROUNDING:
            return None
        because = "; ".join(self.causes) or "nothing in the settings explains it: check the data and its labels"
        return (
            f"accuracy fell {self.drop:.1f} pt from {self.before_is}'s on {self.data}, {self.before:.2%} to "
            f"{self.after:.2%}, more than --warn_accuracy_drop {self.limit:g}. Likely: {because}"
        )

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "drop": self.drop, "warning": self.warning}


def accuracy_check(data: str, before: float, after: float, training, causes, **fields) -> AccuracyCheck:
    """The check of one training step, its warning logged when the drop is over `training.warn_accuracy_drop`."""
    return _logged(AccuracyCheck(data, before, after, training.warn_accuracy_drop, causes, **fields))


@dataclasses.dataclass(frozen=True)
class OutputCheck:
    """How far a training step on data without labels moved the model's outputs, on the data named by
    `data`: its quantity outputs by RMS, its class-score outputs (softmax, logits, sigmoid) by the
    accuracy they can be expected to have lost (a model has one kind, or both)."""

    data: str
    relative_error: Optional[float]  # RMS of the change over the RMS before, of the quantity output that moved most
    limit: float  # the relative error that makes a warning
    causes: tuple = ()
    output: Optional[str] = None  # a model with several outputs: the quantity output `relative_error` measures
    accuracy_drop: Optional[float] = None  # points, expected from the scores before: of the class-score output
    top1_kept: Optional[float] = None  # that output's share of samples whose top-1 class (yes/no: side of yes_at) held
    yes_at: Optional[float] = None  # a yes/no output (a sigmoid's, one logit): the score from which it says yes
    accuracy_limit: float = math.inf  # the expected drop that makes a warning
    classifier_output: Optional[str] = None  # a model with several outputs: the class-score output measured
    classifier_task: Optional[str] = None  # how that output reads: softmax, logits or sigmoid
    quantity_outputs: int = 1  # how many outputs of each kind the check measured
    classifier_outputs: int = 0
    task_told: bool = False  # --task or --output_task said how the outputs read: no hint to say so
    before_is: str = "the model before this step"  # distill: "the teacher"

    @property
    def warning(self) -> Optional[str]:
        over = []
        if self.accuracy_drop is not None and self.accuracy_drop > self.accuracy_limit + _ROUNDING:
            named = named_output(self.classifier_output, self.classifier_outputs, "lost most")
            changed = "top-1 class" if self.yes_at is None else f"side of {self.yes_at:g}"
            over.append(
                f"{named + ': ' if named else ''}accuracy can be expected to have fallen {self.accuracy_drop:.1f} pt, "
                f"the {changed} changed on {1 - self.top1_kept:.1%} of {self.data}, more than --warn_accuracy_drop "
                f"{self.accuracy_limit:g} (without labels, the scores of {self.before_is} stand in for them)"
            )
        if self.relative_error is not None and self.relative_error > self.limit:
            moved = named_output(self.output, self.quantity_outputs, "moved most") or "the outputs"
            hint = self.quantity_outputs == 1 and not self.classifier_outputs and not self.task_told
            over.append(
                f"{moved} moved {self.relative_error:.1%} (RMS, relative to the outputs of {self.before_is}) on "
                f"{self.data}, more than --warn_relative_error {self.limit:g}"
                + (" (if they are class logits, say so with --task logits)" if hint else "")
            )
        if not over:
            return None
        because = "; ".join(self.causes) or "nothing in the settings explains it: check the data"
        return f"{'; and '.join(over)}. Likely: {because}"

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "warning": self.warning}


def output_check(
    data: str, before, after, training, causes, names=(), tasks=(), task_told=False, **more
) -> OutputCheck:
    """The check of one training step on data without labels, from the outputs `before` and `after` it
    (an array, or a list of one per output, named by `names`; `tasks` says how each reads, as
    runtime.task names them, and `task_told` whether the user said so; none: quantities; `more`: other
    `OutputCheck` fields, such as what the outputs are compared with): the quantity
    output that moved most and the class-score output that lost most, each judged by its limit in
    `training`, its warning logged."""
    before, after = (list(outputs) if isinstance(outputs, (list, tuple)) else [outputs] for outputs in (before, after))
    tasks = tuple(tasks) or ("regression",) * len(before)
    several = len(before) > 1
    moved, lost = {}, {}
    for index, task in enumerate(tasks):
        if task in QUANTITIES:
            moved[index] = _moved(before[index], after[index])
        else:
            scores = [class_probabilities(outputs[index], task) for outputs in (before, after)]
            lost[index] = expected_accuracy_drop(*scores)
    fields = {"relative_error": None}
    if moved:
        most = max(moved, key=moved.get)
        fields.update(relative_error=moved[most], output=names[most] if several else None)
    if lost:
        most = max(lost, key=lost.get)
        kept = top1_kept(*(class_probabilities(outputs[most], tasks[most]) for outputs in (before, after)))
        fields.update(accuracy_drop=lost[most], top1_kept=kept, classifier_task=tasks[most])
        if yes_no(tasks[most], np.shape(before[most])[-1]):
            fields.update(yes_at=YES_AT[tasks[most]])
        fields.update(classifier_output=names[most] if several else None)
    limits = {"limit": training.warn_relative_error, "accuracy_limit": training.warn_accuracy_drop}
    counts = {"quantity_outputs": len(moved), "classifier_outputs": len(lost)}
    return _logged(OutputCheck(data, causes=causes, task_told=task_told, **limits, **counts, **fields, **more))


def expected_accuracy_drop(before, after) -> float:
    """Points of top-1 accuracy a softmax output can be expected to have lost from `before` to `after`,
    taking `before`'s probabilities for how likely each class is right: their largest, less theirs at
    `after`'s top-1 class, on average. Exact when they are calibrated; a changed class that `before`
    was unsure of costs little."""
    before, after = (np.reshape(outputs, (-1, np.shape(outputs)[-1])) for outputs in (before, after))
    chosen = np.take_along_axis(before, np.argmax(after, axis=-1)[:, None], axis=-1)[:, 0]
    return float(np.mean(np.max(before, axis=-1) - chosen) * 100)


def top1_kept(before, after) -> float:
    """The share of samples (and positions) whose top-1 class did not change."""
    return float(np.mean(np.argmax(before, axis=-1) == np.argmax(after, axis=-1)))


def _moved(before, after) -> float:
    moved = fidelity(after, before, task="regression").relative_error
    if moved is None:  # the outputs before were all zero
        moved = math.inf if np.any(after != before) else 0.0
    return moved


def _logged(check):
    """`check` (an AccuracyCheck or OutputCheck), its warning logged when it has one."""
    if check.warning:
        logging.warning(check.warning)
    return check


def guard_data(held_out: Optional[Dataset], train: Dataset) -> tuple:
    """(the data the check measures on, how the report names it)."""
    if held_out is not None:
        return held_out, f"the validation data ({len(held_out):,} samples)"
    data = train.take(GUARD_SAMPLES)
    return data, f"{len(data):,} training samples, not held out (pass --val for held-out data)"


def visible_causes(training, train_samples: int, sparsity: Optional[float] = None) -> tuple:
    """What in the settings can explain a drop: the sparsity for the data, the learning rate, the steps."""
    causes = []
    if sparsity is not None and sparsity >= _HIGH_SPARSITY and train_samples < _FEW_IMAGES:
        causes.append(
            f"{train_samples:,} training samples for {sparsity:.0%} sparsity (pruned models recover on "
            "tens of thousands)"
        )
    if training.learning_rate > _HIGH_LEARNING_RATE:
        causes.append(f"learning rate {training.learning_rate:g} (fine-tuning usually takes 1e-4 or less)")
    steps = training.epochs * math.ceil(train_samples / training.batch_size)
    if steps < _FEW_STEPS:
        causes.append(
            f"{steps} training steps ({training.epochs} epoch(s) of batch {training.batch_size}): more epochs"
        )
    return tuple(causes)


def zeros_lost(before, after, step: str, remedy: str) -> Optional[str]:
    """A warning, logged, when `step` left a pruned layer of model `before` with fewer than half its zeros
    in model `after` (layers matched by name, through QAT's wrappers); `remedy` says what keeps them."""
    had, has = layer_sparsity(before), layer_sparsity(after)
    lost = [
        f"{name} ({had[name]:.0%} → {has[name]:.0%})"
        for name in had
        if name in has and had[name] >= _PRUNED and has[name] < had[name] / 2
    ]
    if not lost:
        return None
    message = (
        f"{step} let the pruned zeros grow back in {', '.join(lost)}: the model will compress far less "
        f"than the one it started from. {remedy}"
    )
    logging.warning(message)
    return message
