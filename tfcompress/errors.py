"""The exceptions tfcompress raises for problems the user can fix.

The CLI prints any `TfcompressError` as one line and exits with code 2; anything
else is a bug and keeps its traceback.
"""

__all__ = [
    "TfcompressError",
    "ModelLoadError",
    "UnsafeModelError",
    "UntranslatableModelError",
    "DataError",
    "ConversionError",
    "OutputError",
    "UnsupportedVersionError",
    "OptionError",
    "PreflightError",
    "ModelMismatchError",
    "RecipeError",
    "one_line",
]


def one_line(error: BaseException, *, first_line_only: bool = False) -> str:
    """An exception's message on one line (its type when it has none). Library errors quoted in
    ours keep only their first line (`first_line_only`): Keras appends pages of detail."""
    text = str(error).strip() or type(error).__name__
    if first_line_only:
        text = text.splitlines()[0]
    return " ".join(text.split())


class TfcompressError(Exception):
    """Base class: a problem with the user's input, files or environment."""


class ModelLoadError(TfcompressError):
    """The model file is missing, unreadable, or not a Keras model."""


class UnsafeModelError(ModelLoadError):
    """Loading the model would run code stored in the file."""


class UntranslatableModelError(ModelLoadError):
    """A Keras 3 model uses a layer or option tf_keras has no equivalent for."""


class DataError(TfcompressError):
    """Calibration, training or evaluation data is missing or does not fit the model."""


class ConversionError(TfcompressError):
    """The TFLite converter could not produce what was asked for."""


class OutputError(TfcompressError):
    """An output file could not be written."""


class UnsupportedVersionError(TfcompressError):
    """The installed TensorFlow / Keras versions are not ones tfcompress was tested with."""


class OptionError(TfcompressError, ValueError):
    """An option has a value outside what it accepts."""


class PreflightError(TfcompressError):
    """The pre-flight check found a layer or op the step or target cannot handle."""


class ModelMismatchError(TfcompressError):
    """Two models that must fit together (teacher and student) do not, or one cannot be derived."""


class RecipeError(TfcompressError):
    """A recipe file is not valid YAML, or names a step, option or budget that does not exist."""
