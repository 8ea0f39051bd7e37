"""A loaded Keras model and what every conversion of it shares."""

from typing import Optional

import numpy as np

from tfcompress.export.keras_export import SharedExport
from tfcompress.runtime.interpreter import inference_batch_size

__all__ = ["LoadedModel"]


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

    def keras_outputs(self, x: np.ndarray) -> np.ndarray:
        """The Keras model's outputs on `x`, computed on first use."""
        cached: Optional[np.ndarray] = next((outputs for inputs, outputs in self._outputs if inputs is x), None)
        if cached is None:
            cached = self.model.predict(x, batch_size=inference_batch_size(x.shape[1:]), verbose=0)
            self._outputs.append((x, cached))
        return cached
