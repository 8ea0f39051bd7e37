"""Accuracy and fidelity: how a converted model's outputs compare with labels and a reference."""

import dataclasses
from typing import Optional

import numpy as np

from tfcompress.errors import DataError
from tfcompress.runtime.interpreter import per_output
from tfcompress.runtime.task import QUANTITIES, YES_AT, yes_no

__all__ = [
    "Fidelity",
    "accuracy",
    "task_accuracy",
    "accuracy_drop",
    "fidelity",
    "fidelity_by_output",
    "constant_output",
]

_MATERIAL_AGREEMENT = 0.005  # of the samples (or sigmoid outputs)
_MATERIAL_RELATIVE_ERROR = 0.01
_CONSTANT_SPREAD = 1e-4  # outputs varying by less than this fraction of their size count as constant


@dataclasses.dataclass(frozen=True)
class Fidelity:
    """How close a model's outputs are to a reference model's on the same inputs, in the terms of
    the output's task (runtime.task): only the measures that fit it are set."""

    max_abs_error: float
    mean_abs_error: float
    samples: int
    task: str = "softmax"
    top1_agreement: Optional[float] = None  # classifiers: fraction of samples whose arg-max matches
    # Classifiers: samples whose two largest outputs are exactly equal. An int8 softmax has steps
    # of 1/256, so near-ties round to a tie and arg-max falls back to the lower class index.
    top1_ties: Optional[int] = None
    threshold_agreement: Optional[float] = None  # yes/no scores: fraction on the same side of 0.5 (one logit: of 0)
    relative_error: Optional[float] = None  # quantities: RMS of the error / RMS of the reference
    snr_db: Optional[float] = None  # quantities: the reference's power over the error's, in dB
    # Reconstructions: rank correlation of the per-sample reconstruction errors (anomaly scores).
    score_correlation: Optional[float] = None
    output: Optional[str] = None  # which output, for a model with several

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def worse_than(self, other: "Fidelity") -> bool:
        """Whether these outputs are clearly further from the reference than `other`'s on the same
        data: half a point less agreement, or a quantity's error half as large again (and over 1%)."""
        for measure in ("top1_agreement", "threshold_agreement"):
            ours, theirs = getattr(self, measure), getattr(other, measure)
            if ours is not None and theirs is not None:
                return theirs - ours >= _MATERIAL_AGREEMENT
        ours, theirs = self.relative_error, other.relative_error
        return ours is not None and theirs is not None and ours >= max(1.5 * theirs, _MATERIAL_RELATIVE_ERROR)

    def headline(self) -> str:
        """The one measure that fits the task, as a table cell."""
        if self.top1_agreement is not None:
            return f"{self.top1_agreement * 100:.2f}% top-1"
        if self.threshold_agreement is not None:
            return f"{self.threshold_agreement * 100:.2f}% at 0.5"
        if self.relative_error is not None:
            return f"SNR {self.snr_db:.1f} dB, error {self.relative_error:.2%}"
        return f"max error {self.max_abs_error:.3g}"


def accuracy(outputs: np.ndarray, labels: Optional[np.ndarray]) -> Optional[float]:
    """A classifier's top-1 accuracy as a fraction, or None without labels.

    Labels the model cannot output (a class index past its last output, or a count
    that differs from the inputs) are an error, not a low accuracy.
    """
    if labels is None:
        return None
    _check_labels(labels, len(outputs), max(outputs.shape[-1], 2))
    return float(np.mean(np.argmax(outputs, axis=-1) == labels))


def task_accuracy(outputs: np.ndarray, labels: Optional[np.ndarray], task: str) -> Optional[float]:
    """Accuracy where the labels fit the task: class labels for a classifier, 0/1 labels for one
    sigmoid output or one logit; None otherwise (a regression's outputs are not classes, and
    multi-label sigmoid outputs need a label per output)."""
    if labels is None or task in QUANTITIES:
        return None
    if not yes_no(task, outputs.shape[-1]):
        return accuracy(outputs, labels)
    scores = outputs.reshape(len(outputs), -1)
    if scores.shape[1] != 1:
        return None
    _check_labels(labels, len(outputs), 2)
    return float(np.mean((scores[:, 0] > YES_AT[task]) == labels))


def _check_labels(labels: np.ndarray, samples: int, classes: int) -> None:
    if len(labels) != samples:
        raise DataError(f"The data has {len(labels)} labels for {samples} inputs; give one label per input.")
    if len(labels) and (labels.min() < 0 or labels.max() >= classes):
        raise DataError(
            f"The labels run from {int(labels.min())} to {int(labels.max())}, but the model has "
            f"{classes} classes (0 to {classes - 1}); check the labels belong to this model."
        )


def accuracy_drop(reference: Optional[float], accuracy: Optional[float]) -> Optional[float]:
    """Percentage points the accuracy fell below the reference's (negative: it rose); None without either."""
    if reference is None or accuracy is None:
        return None
    return (reference - accuracy) * 100.0


def fidelity(outputs: np.ndarray, reference: np.ndarray, task: str = "softmax", inputs=None) -> Fidelity:
    """`outputs` against `reference` the way `task` reads them; a reconstruction's anomaly scores
    need the `inputs` both reconstructed."""
    outputs, reference = outputs.astype(np.float64), reference.astype(np.float64)
    difference = np.abs(outputs - reference)
    measures = {}
    if yes_no(task, outputs.shape[-1]):
        yes = YES_AT[task]
        measures["threshold_agreement"] = float(np.mean((outputs > yes) == (reference > yes)))
    elif task not in QUANTITIES:
        measures["top1_agreement"] = float(np.mean(np.argmax(outputs, axis=-1) == np.argmax(reference, axis=-1)))
        top_two = np.sort(outputs, axis=-1)[..., -2:]
        measures["top1_ties"] = int(np.sum(top_two[..., 0] == top_two[..., 1])) if outputs.shape[-1] > 1 else 0
    else:
        error_power, reference_power = np.mean(difference**2), np.mean(reference**2)
        measures["relative_error"] = float(np.sqrt(error_power / reference_power)) if reference_power else None
        measures["snr_db"] = _decibels(reference_power, error_power)
        if task == "reconstruction" and inputs is not None:
            measures["score_correlation"] = _rank_correlation(
                _reconstruction_errors(outputs, inputs), _reconstruction_errors(reference, inputs)
            )
    return Fidelity(float(difference.max()), float(difference.mean()), len(outputs), task, **measures)


def fidelity_by_output(outputs, reference, tasks, names, inputs=None) -> tuple:
    """One `Fidelity` per output (`outputs` and `reference`: an array, or one per output), each in its
    own task's terms and named when there are several. Only a one-input model's inputs are a
    reconstruction's reference."""
    single_input = inputs if isinstance(inputs, np.ndarray) else None
    several = len(tasks) > 1
    return tuple(
        dataclasses.replace(fidelity(ours, theirs, task, single_input), output=name if several else None)
        for ours, theirs, task, name in zip(per_output(outputs), per_output(reference), tasks, names)
    )


def constant_output(reference: np.ndarray) -> Optional[str]:
    """A warning when the reference model gives (nearly) the same output for every input: then no
    fidelity measure says anything, and the data's preprocessing is the usual cause."""
    if len(reference) < 2:
        return None
    spread = float(np.max(np.ptp(reference.astype(np.float64), axis=0)))
    level = float(np.max(np.abs(reference)))
    if spread > _CONSTANT_SPREAD * max(level, np.finfo(np.float32).tiny):
        return None
    return (
        f"the reference model's output is the same for all {len(reference)} inputs (it varies by at most "
        f"{spread:.3g}), so agreement with it says nothing; check the data is scaled as the model was "
        "trained (--input_scale, --input_offset)"
    )


def _decibels(signal_power: float, noise_power: float) -> Optional[float]:
    if not signal_power:
        return None
    return float("inf") if not noise_power else float(10 * np.log10(signal_power / noise_power))


def _reconstruction_errors(outputs: np.ndarray, inputs: np.ndarray) -> np.ndarray:
    """Each sample's mean squared difference from its input: the usual anomaly score."""
    flat_outputs = outputs.reshape(len(outputs), -1)
    return np.mean((flat_outputs - inputs.reshape(len(inputs), -1).astype(np.float64)) ** 2, axis=1)


def _rank_correlation(first: np.ndarray, second: np.ndarray) -> Optional[float]:
    """Spearman's rank correlation (ties broken by position); None when either side is constant."""
    if len(first) < 2 or np.ptp(first) == 0 or np.ptp(second) == 0:
        return None
    ranks = [np.argsort(np.argsort(values, kind="stable"), kind="stable") for values in (first, second)]
    return float(np.corrcoef(*ranks)[0, 1])
