"""Whether TFLite Micro runs a model as faithfully as LiteRT does.

Bit-exact agreement between runtimes is the wrong test: LiteRT's own two kernel sets
round MEAN, ADD and softmax differently, and on a residual net with average pooling
they differ from each other by tens of quantized steps. A deployment asks whether the
device's outputs are as close to the Keras model's as the host's are. So with the Keras
outputs, TFLite Micro passes when its mean absolute error from them is at most LiteRT's
worse kernel set's, plus `MARGIN` of it and half an output step. Without them (a
`.tflite` was given), LiteRT is the reference: TFLite Micro may differ from its nearer
kernel set by as many steps as the two sets differ from each other, and at least
`ALLOWED_STEPS`.
"""

import dataclasses
from typing import Optional

import numpy as np

__all__ = ["Faithfulness", "against_keras", "against_litert", "MARGIN", "ALLOWED_STEPS"]

MARGIN = 0.25
# Steps TFLite Micro may always differ from LiteRT: the int8 softmax of a pruned and clustered
# LeNet-300-100 gave 115 vs 113 (of 256) on 2 of 1,000 outputs with either kernel set.
ALLOWED_STEPS = 2


@dataclasses.dataclass(frozen=True)
class Faithfulness:
    """TFLite Micro's and LiteRT's distance from the reference, and the verdict."""

    reference: str  # "keras": errors are mean abs errors in output units; "litert": max quantized steps
    micro_error: float
    litert_errors: dict  # keras: kernel set → its error; litert: {"between kernel sets": steps}
    allowed: float
    samples: int

    @property
    def passed(self) -> bool:
        return self.micro_error <= self.allowed

    def describe(self) -> str:
        litert = ", ".join(f"{name} {error:.4g}" for name, error in self.litert_errors.items() if error is not None)
        if self.reference == "keras":
            return (
                f"mean abs error from the Keras outputs on {self.samples} inputs: TFLite Micro "
                f"{self.micro_error:.4g}, LiteRT {litert} (allowed {self.allowed:.4g})"
            )
        return (
            f"quantized steps on {self.samples} inputs: TFLite Micro from LiteRT's nearer kernel set "
            f"{self.micro_error:g}, LiteRT {litert} (allowed {self.allowed:g})"
        )

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "passed": self.passed}


def against_keras(micro_outputs, litert_outputs: dict, keras_outputs: np.ndarray, output_scale: float):
    """The verdict from each runtime's dequantized outputs and the Keras model's on the same inputs."""
    litert_errors = {
        kernels: None if outputs is None else _mean_abs_error(outputs, keras_outputs)
        for kernels, outputs in litert_outputs.items()
    }
    worse = max(error for error in litert_errors.values() if error is not None)
    allowed = worse * (1 + MARGIN) + output_scale / 2
    return Faithfulness(
        "keras", _mean_abs_error(micro_outputs, keras_outputs), litert_errors, allowed, len(keras_outputs)
    )


def against_litert(diff_steps_by_kernels: dict, litert_outputs: dict) -> Faithfulness:
    """The verdict without a Keras model: TFLite Micro as close to LiteRT as LiteRT is to itself."""
    between = _steps_between(litert_outputs["optimized"], litert_outputs.get("reference"))
    nearer = min(steps for steps in diff_steps_by_kernels.values() if steps is not None)
    allowed = max(ALLOWED_STEPS, between or 0)
    return Faithfulness("litert", nearer, {"between kernel sets": between}, allowed, len(litert_outputs["optimized"]))


def _mean_abs_error(outputs, reference) -> float:
    return float(np.mean(np.abs(np.asarray(outputs, np.float64) - np.asarray(reference, np.float64))))


def _steps_between(first, second) -> Optional[int]:
    if second is None:
        return None
    return int(np.abs(first.astype(np.int64) - second.astype(np.int64)).max())
