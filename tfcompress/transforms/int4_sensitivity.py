"""Which layers to keep at 8 bits when the others go to 4.

Each Conv2D, DepthwiseConv2D and Dense kernel in turn is rounded to 4 bits the way
`convert --weight_bits 4` rounds it (per output channel, least-error clipping), the
rest of the model stays float, and the model's outputs are compared with the float
model's. A layer whose 4-bit kernel alone costs far more than the others' (SQNR at
least `SUGGEST_BELOW_MEDIAN_DB` below the median layer's) is suggested for
`qat --weight_bits 4 --layer_bits NAME=8`: on the bundled resnet8 that is the first
convolution (13.7 dB against a median of 25; alone it cost 3.35 pt of accuracy).
"""

import dataclasses
import math
from typing import Optional

import numpy as np

from tfcompress.data import per_input
from tfcompress.export.int4 import int4_steps
from tfcompress.runtime import metrics
from tfcompress.runtime.interpreter import inference_batch_size

__all__ = ["LayerAt4Bits", "int4_sensitivity", "keep_at_8_bits", "SUGGEST_BELOW_MEDIAN_DB"]

SUGGEST_BELOW_MEDIAN_DB = 6.0  # a quarter of the median layer's signal-to-noise power ratio
_KERNEL_LAYERS = ("Conv2D", "DepthwiseConv2D", "Dense")


@dataclasses.dataclass(frozen=True)
class LayerAt4Bits:
    layer: str
    kind: str
    weights: int  # kernel values: keeping them at 8 bits costs weights / 2 bytes
    sqnr_db: float  # of the model's outputs with only this kernel at 4 bits, against the float model's
    accuracy: Optional[float] = None  # with only this kernel at 4 bits (labelled eval data)


def int4_sensitivity(model, samples, evaluation=None, task: str = "softmax") -> tuple:
    """A `LayerAt4Bits` per kernel layer (nested models' too), in graph order; accuracy on labelled
    `evaluation` as `task` reads the output (runtime.metrics.task_accuracy).

    The model's weights are put back after each layer, also when a prediction fails."""
    reference = _predict(model, samples)
    results = []
    for layer in _kernel_layers(model):
        original = layer.get_weights()
        try:
            layer.set_weights([_at_4_bits(original[0], type(layer).__name__), *original[1:]])
            outputs = _predict(model, samples)
            accuracy = None
            if evaluation is not None:
                accuracy = metrics.task_accuracy(_predict(model, evaluation.x), evaluation.y, task)
        finally:
            layer.set_weights(original)
        results.append(
            LayerAt4Bits(layer.name, type(layer).__name__, int(original[0].size), _sqnr(reference, outputs), accuracy)
        )
    return tuple(results)


def keep_at_8_bits(layers) -> tuple:
    """The layers whose 4-bit kernel alone hurts far more than the median layer's, worst first."""
    if len(layers) < 2:
        return ()
    median = float(np.median([layer.sqnr_db for layer in layers]))
    chosen = [layer for layer in layers if layer.sqnr_db <= median - SUGGEST_BELOW_MEDIAN_DB]
    return tuple(layer.layer for layer in sorted(chosen, key=lambda layer: layer.sqnr_db))


def _kernel_layers(model):
    for layer in model.layers:
        if type(layer).__name__ in _KERNEL_LAYERS and layer.get_weights():
            yield layer
        elif hasattr(layer, "layers"):
            yield from _kernel_layers(layer)


def _at_4_bits(kernel: np.ndarray, kind: str) -> np.ndarray:
    """The kernel as its int4 form computes: Keras keeps output channels last (a depthwise
    kernel's channels are its last two axes)."""
    channels = kernel.shape[-2] * kernel.shape[-1] if kind == "DepthwiseConv2D" else kernel.shape[-1]
    steps, scales = int4_steps(kernel.reshape(-1, channels).astype(np.float64))
    return (steps * scales).reshape(kernel.shape).astype(kernel.dtype)


def _predict(model, x) -> np.ndarray:
    """The outputs on `x` (an array, or one per input), several outputs as one row per sample."""
    arrays = per_input(x)
    batch_size = inference_batch_size((sum(int(np.prod(array.shape[1:])) for array in arrays),))
    outputs = model.predict(x, batch_size=batch_size, verbose=0)
    samples = len(arrays[0])
    return (
        np.concatenate([np.reshape(o, (samples, -1)) for o in outputs], axis=1)
        if isinstance(outputs, list)
        else outputs
    )


def _sqnr(reference: np.ndarray, outputs: np.ndarray) -> float:
    signal = float(np.sum(np.square(reference.astype(np.float64))))
    noise = float(np.sum(np.square(outputs.astype(np.float64) - reference)))
    return 10.0 * math.log10(max(signal, 1e-30) / max(noise, 1e-30))
