"""Accuracy and fidelity: how a converted model's outputs compare with labels and a reference."""

import dataclasses
from typing import Optional

import numpy as np

from tfcompress.errors import DataError

__all__ = ["Fidelity", "accuracy", "accuracy_drop", "fidelity"]


@dataclasses.dataclass(frozen=True)
class Fidelity:
    """Agreement of a model's outputs with a reference model's, on the same inputs."""

    top1_agreement: float  # fraction of samples whose arg-max class matches
    max_abs_error: float
    mean_abs_error: float
    samples: int
    # Samples whose two largest outputs are exactly equal: an int8 softmax has steps of
    # 1/256, so near-ties round to a tie and arg-max falls back to the lower class index.
    top1_ties: int = 0

    def to_dict(self) -> dict:
        return {
            "top1_agreement": self.top1_agreement,
            "max_abs_error": self.max_abs_error,
            "mean_abs_error": self.mean_abs_error,
            "samples": self.samples,
            "top1_ties": self.top1_ties,
        }


def accuracy(outputs: np.ndarray, labels: Optional[np.ndarray]) -> Optional[float]:
    """Top-1 accuracy as a fraction, or None without labels.

    Labels the model cannot output (a class index past its last output, or a count
    that differs from the inputs) are an error, not a low accuracy.
    """
    if labels is None:
        return None
    classes = max(outputs.shape[-1], 2)
    if len(labels) != len(outputs):
        raise DataError(f"The data has {len(labels)} labels for {len(outputs)} inputs; give one label per input.")
    if len(labels) and (labels.min() < 0 or labels.max() >= classes):
        raise DataError(
            f"The labels run from {int(labels.min())} to {int(labels.max())}, but the model has "
            f"{classes} classes (0 to {classes - 1}); check the labels belong to this model."
        )
    return float(np.mean(np.argmax(outputs, axis=-1) == labels))


def accuracy_drop(reference: Optional[float], accuracy: Optional[float]) -> Optional[float]:
    """Percentage points the accuracy fell below the reference's (negative: it rose); None without either."""
    if reference is None or accuracy is None:
        return None
    return (reference - accuracy) * 100.0


def fidelity(outputs: np.ndarray, reference: np.ndarray) -> Fidelity:
    difference = np.abs(outputs.astype(np.float64) - reference.astype(np.float64))
    agreement = np.mean(np.argmax(outputs, axis=-1) == np.argmax(reference, axis=-1))
    top_two = np.sort(outputs, axis=-1)[..., -2:] if outputs.shape[-1] > 1 else None
    ties = int(np.sum(top_two[..., 0] == top_two[..., 1])) if top_two is not None else 0
    return Fidelity(float(agreement), float(difference.max()), float(difference.mean()), len(outputs), ties)
