"""One SavedModel export of a Keras model, shared by every conversion of it.

The TFLite converter spends nearly all of a Keras conversion writing the model out as
a SavedModel and reading it back (22 of 24 s for the sample MobileNetV2); calibrating
and lowering take the rest. A job that converts one model several times (the real
conversion, the float32 size reference, the pre-flight check's conversions, auto's
candidates, analyze's keep-float trials) exports it once per batch size here and
hands that export to each converter, which then writes the same bytes as a converter
that exported the model itself (tests/test_keras_export.py compares them).

An export is a snapshot of the weights: open one only where the model does not train.
"""

import tempfile
from pathlib import Path
from typing import Optional

__all__ = ["SharedExport"]

# What TF 2.21's converters set on themselves after exporting and loading a SavedModel
# (TFLiteKerasModelConverterV2._convert_keras_to_saved_model and the concrete-function twin).
_EXPORT_STATE = (
    "saved_model_dir",
    "_saved_model_tags",
    "_saved_model_exported_names",
    "_saved_model_version",
    "_trackable_obj",
)
_EXPORT_METHODS = ("_convert_keras_to_saved_model", "_convert_concrete_functions_to_saved_model")


class SharedExport:
    """The exports of one model, one per batch size, in a temporary folder removed on close."""

    def __init__(self, model):
        self.model = model
        self._folder: Optional[tempfile.TemporaryDirectory] = None
        self._exports = {}  # batch size → (the export method's result, the converter state it set)

    def __enter__(self) -> "SharedExport":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self._exports.clear()
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None

    def share_with(self, converter, batch_size: Optional[int]) -> None:
        """Makes `converter` use this model's export for `batch_size`, exporting it on first use."""
        method_name = next(name for name in _EXPORT_METHODS if hasattr(converter, name))
        export_itself = getattr(converter, method_name)

        def export(_unused_folder):
            if batch_size not in self._exports:
                result = export_itself(str(self._new_folder(batch_size)))
                if converter.saved_model_dir is None:  # the export failed: the converter falls back by itself
                    return result
                self._exports[batch_size] = (result, {name: getattr(converter, name) for name in _EXPORT_STATE})
            result, state = self._exports[batch_size]
            for name, value in state.items():
                setattr(converter, name, value)
            return result

        setattr(converter, method_name, export)

    def _new_folder(self, batch_size: Optional[int]) -> Path:
        if self._folder is None:
            self._folder = tempfile.TemporaryDirectory(prefix="tfcompress-export-")
        return Path(tempfile.mkdtemp(prefix=f"batch-{batch_size or 'any'}-", dir=self._folder.name))
