"""Whether TFLite Micro runs a model as faithfully as LiteRT does.

Bit-exact agreement between runtimes is the wrong test: LiteRT's own two kernel sets
round MEAN, ADD and softmax differently, and on a residual net with average pooling
they differ from each other by tens of quantized steps. A deployment asks whether the
device's outputs are as close to the Keras model's as the host's are. So with the Keras
outputs, TFLite Micro passes when its mean absolute error from them is at most LiteRT's
worse kernel set's, plus `MARGIN` of it and half an output step. Without them (a
`.tflite` was given), LiteRT is the reference: TFLite Micro may differ from its nearer
kernel set by as many steps as the two sets differ from each other, and at least
`ALLOWED_STEPS`. A model with several outputs passes when each output does.
"""

import dataclasses
from typing import Optional

import numpy as np

from tfcompress.runtime.interpreter import dequantize, per_output

__all__ = ["Faithfulness", "judge", "MARGIN", "ALLOWED_STEPS"]

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
    output: Optional[str] = None  # for a model with several outputs: the one nearest to failing

    @property
    def passed(self) -> bool:
        return self.micro_error <= self.allowed

    def describe(self) -> str:
        litert = ", ".join(f"{name} {error:.4g}" for name, error in self.litert_errors.items() if error is not None)
        if self.output is not None:
            return (
                f"output '{self.output}' (the nearest to failing): " + dataclasses.replace(self, output=None).describe()
            )
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


def judge(micro_outputs, litert_outputs: dict, output_details, keras_outputs=None, names=()) -> Faithfulness:
    """The verdict from TFLite Micro's raw outputs and each LiteRT kernel set's (None: it has no kernel
    for an op), against the Keras model's outputs on the same inputs when there are any. Outputs are
    an array, or a tuple with one per output; `output_details` (and `names`) has one per output.
    With several outputs, the verdict of the one nearest to failing is returned, named."""
    details = output_details if isinstance(output_details, (list, tuple)) else [output_details]
    verdicts = []
    for index, detail in enumerate(details):
        verdict = _judge_output(
            per_output(micro_outputs)[index],
            {kernels: None if raw is None else per_output(raw)[index] for kernels, raw in litert_outputs.items()},
            detail,
            None if keras_outputs is None else per_output(keras_outputs)[index],
        )
        if len(details) > 1:
            verdict = dataclasses.replace(verdict, output=names[index] if names else str(index))
        verdicts.append(verdict)
    return max(verdicts, key=lambda verdict: verdict.micro_error / verdict.allowed if verdict.allowed else float("inf"))


def _judge_output(micro_outputs, litert_outputs: dict, output_detail: dict, keras_outputs) -> Faithfulness:
    if keras_outputs is None:
        return _against_litert(micro_outputs, litert_outputs)
    return _against_keras(
        dequantize(micro_outputs, output_detail),
        {kernels: None if raw is None else dequantize(raw, output_detail) for kernels, raw in litert_outputs.items()},
        np.reshape(keras_outputs, micro_outputs.shape),
        output_detail["quantization"][0],
    )


def _against_keras(micro_outputs, litert_outputs: dict, keras_outputs: np.ndarray, output_scale: float):
    litert_errors = {
        kernels: None if outputs is None else _mean_abs_error(outputs, keras_outputs)
        for kernels, outputs in litert_outputs.items()
    }
    worse = max(error for error in litert_errors.values() if error is not None)
    allowed = worse * (1 + MARGIN) + output_scale / 2
    return Faithfulness(
        "keras", _mean_abs_error(micro_outputs, keras_outputs), litert_errors, allowed, len(keras_outputs)
    )


def _against_litert(micro_outputs, litert_outputs: dict) -> Faithfulness:
    """Without a Keras model: TFLite Micro as close to LiteRT as LiteRT is to itself."""
    nearer = min(_steps_between(micro_outputs, outputs) for outputs in litert_outputs.values() if outputs is not None)
    between = _steps_between(litert_outputs["optimized"], litert_outputs.get("reference"))
    allowed = max(ALLOWED_STEPS, between or 0)
    return Faithfulness("litert", nearer, {"between kernel sets": between}, allowed, len(micro_outputs))


def _mean_abs_error(outputs, reference) -> float:
    return float(np.mean(np.abs(np.asarray(outputs, np.float64) - np.asarray(reference, np.float64))))


def _steps_between(first, second) -> Optional[int]:
    if second is None:
        return None
    return int(np.abs(first.astype(np.int64) - second.astype(np.int64)).max())
