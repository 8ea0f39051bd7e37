"""A loaded Keras model and what every conversion of it shares."""

import numpy as np

from tfcompress.data import per_input
from tfcompress.export.keras_export import SharedExport
from tfcompress.runtime.interpreter import inference_batch_size

__all__ = ["LoadedModel", "keras_predict"]


class LoadedModel:
    """A Keras model as the jobs convert it: one SavedModel export per batch size and the
    model's outputs on each input array, each computed once however many precisions or
    candidates are converted and measured. Close it (or use `with`) to remove the export."""

    def __init__(self, model, path=None):
        self.model, self.path = model, path
        self.export = SharedExport(model)
        self._outputs = []  # (input array, the Keras outputs on it): arrays are matched by identity

    def __enter__(self) -> "LoadedModel":
        return self

    def __exit__(self, *exc_info) -> None:
        self.export.close()

    @property
    def name(self) -> str:
        return str(self.path) if self.path is not None else self.model.name

    def keras_outputs(self, x):
        """The Keras model's outputs on `x` (an array, or a tuple of one per input), computed on first
        use: an array, or a tuple of one per output."""
        cached = next((outputs for inputs, outputs in self._outputs if inputs is x), None)
        if cached is None:
            cached = keras_predict(self.model, x)
            self._outputs.append((x, cached))
        return cached


def keras_predict(model, x, batch_size=None):
    """`model.predict` for one or several inputs (an array or a tuple, in the model's order): an array,
    or a tuple of one per output."""
    arrays = per_input(x)
    batch_size = batch_size or inference_batch_size((sum(int(np.prod(a.shape[1:])) for a in arrays),))
    outputs = model.predict(list(arrays) if len(arrays) > 1 else arrays[0], batch_size=batch_size, verbose=0)
    return tuple(outputs) if isinstance(outputs, list) else outputs
