"""The one place tfcompress imports TensorFlow and Keras.

tfcompress works on tf_keras (Keras 2) models inside, because tfmot needs them,
whatever the user's default Keras is; Keras 3 is imported only to read files it
wrote. Imports are lazy so the TensorFlow-free runtime never pays for them.
"""

import contextlib
import functools
import importlib
import logging
import os
import re
import sys
import warnings

from tfcompress._io import native as native_output
from tfcompress.errors import UnsupportedVersionError

__all__ = [
    "tensorflow",
    "tf_keras",
    "keras3",
    "application_layers",
    "tfmot",
    "bounded_weights",
    "show_native_logs",
    "quiet_tensorflow_logger",
    "training_verbosity",
    "TESTED_TENSORFLOW",
]

_SHOW_NATIVE_LOGS = False
# TensorFlow's C++ log level: errors too are hidden by default (CUDA probes on a CPU machine log
# "failed call to cuInit" as an error); a level the user set is kept, --verbose shows everything.
_QUIET_LOG_LEVEL = "3"
_USER_LOG_LEVEL = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
# absl/glog lines ("I0000 00:00:... file.cc:31] ...") and the notices around them.
_NATIVE_NOISE = re.compile(
    r"[IWEF]\d{4} |WARNING: All log messages before absl|To enable the following instructions"
    r"|.*rebuild TensorFlow with the appropriate compiler flags"
)
# Warnings these libraries raise about their own internals; a user can do nothing about them.
_NOISY_MODULES = r"(tensorflow|tf_keras|keras|tensorflow_model_optimization|h5py)(\.|$)"

# The README's version matrix; a different TensorFlow fails fast with this list.
TESTED_TENSORFLOW = ("2.21",)
_SKIP_CHECK_VARIABLE = "TFCOMPRESS_ALLOW_UNTESTED_TENSORFLOW"


def show_native_logs(show: bool) -> None:
    """With `--verbose`, TensorFlow's C++ log lines and library warnings reach the terminal."""
    global _SHOW_NATIVE_LOGS
    _SHOW_NATIVE_LOGS = show
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0" if show else _USER_LOG_LEVEL or _QUIET_LOG_LEVEL


@contextlib.contextmanager
def quiet_tensorflow_logger(*fragments: str):
    """Drops the `tensorflow` logger's records that contain one of `fragments`: notices about
    tf_keras internals that a user can do nothing about."""

    def wanted(record):
        return not any(fragment in record.getMessage() for fragment in fragments)

    logger = logging.getLogger("tensorflow")
    logger.addFilter(wanted)
    try:
        yield
    finally:
        logger.removeFilter(wanted)


def training_verbosity(verbose):
    """Keras `verbose` for fit: "auto" is a progress bar on a terminal, one line per epoch in a log."""
    if verbose != "auto":
        return verbose
    return 1 if sys.stdout.isatty() else 2


@contextlib.contextmanager
def _quiet_import():
    """Keeps TensorFlow's import-time log lines (absl pre-init notice, CUDA stubs, oneDNN) off stderr.

    They are written by C++ before TF_CPP_MIN_LOG_LEVEL is read, so they are caught at the
    file-descriptor level; any other line is passed through.
    """
    if _SHOW_NATIVE_LOGS:
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", _QUIET_LOG_LEVEL)
    warnings.filterwarnings("ignore", module=_NOISY_MODULES)
    with native_output.captured_output() as captured:
        yield
    kept = [line for line in captured.text.splitlines() if line.strip() and not _NATIVE_NOISE.match(line)]
    if kept:
        print("\n".join(kept), file=sys.stderr)


def _import(name: str):
    """The module, imported the first time with its native log lines filtered out."""
    if name not in sys.modules:
        with _quiet_import():
            importlib.import_module(name)
    return sys.modules[name]


def tensorflow():
    """Imports TensorFlow, refusing versions tfcompress was not tested with."""
    tf = _import("tensorflow")

    major_minor = ".".join(tf.__version__.split(".")[:2])
    if major_minor not in TESTED_TENSORFLOW and not os.environ.get(_SKIP_CHECK_VARIABLE):
        raise UnsupportedVersionError(
            f"tfcompress is tested with TensorFlow {', '.join(TESTED_TENSORFLOW)}. "
            f"Received: tensorflow=={tf.__version__}. Install a tested version, or set "
            f"{_SKIP_CHECK_VARIABLE}=1 to try anyway."
        )
    return tf


def tf_keras():
    """tf_keras, the Keras 2 that tfmot and the TFLite converter's Keras path need."""
    tensorflow()
    return _import("tf_keras")


def application_layers(of_keras3: bool = False) -> dict:
    """Layer classes the Keras applications define but do not register (ConvNeXt's LayerScale), tf_keras's
    or Keras 3's: their code is Keras's own, so a model that uses them loads like any other."""
    if of_keras3:
        keras3()
        from keras.src.applications import convnext
    else:
        tf_keras()
        from tf_keras.src.applications import convnext

    return {"LayerScale": convnext.LayerScale}


def keras3():
    """The standalone Keras 3 package, used only to read the files it writes."""
    tensorflow()
    try:
        keras = _import("keras")
    except ImportError:
        raise UnsupportedVersionError(
            "This model was saved by Keras 3; reading it needs the keras package: pip install 'keras>=3'"
        ) from None
    if not keras.__version__.startswith("3."):
        raise UnsupportedVersionError(
            f"This model was saved by Keras 3, but the installed keras is {keras.__version__}. "
            "Install keras>=3 beside tf_keras."
        )
    return keras


def tfmot():
    """tensorflow_model_optimization, without the TF_USE_LEGACY_KERAS it sets on import.

    tfmot sets that variable for the whole process when imported; tfcompress uses
    tf_keras directly, so the user's own `tf.keras` stays what they chose.
    """
    tf_keras()
    saved = os.environ.get("TF_USE_LEGACY_KERAS")
    try:
        tensorflow_model_optimization = _import("tensorflow_model_optimization")
    finally:
        if saved is None:
            os.environ.pop("TF_USE_LEGACY_KERAS", None)
        else:
            os.environ["TF_USE_LEGACY_KERAS"] = saved
    return tensorflow_model_optimization


@contextlib.contextmanager
def bounded_weights(limit_bytes: int, source, error_type, *, keras3_too: bool = False):
    """Refuses, before it is allocated, any weight that would take the model's weights past `limit_bytes`.

    A model config declares layer sizes (units, filters, kernel sizes) that Keras allocates
    while it builds the model, before the stored weights are compared with them; checking
    in `add_weight` bounds what a hostile config can make it allocate.
    """
    layer_classes = [tf_keras().layers.Layer]
    if keras3_too:
        layer_classes.append(keras3().layers.Layer)
    total = [0]

    def guarded(original):
        @functools.wraps(original)
        def add_weight(self, *args, **kwargs):
            shape = kwargs.get("shape")
            if shape is None:
                shape = next((arg for arg in args if isinstance(arg, (tuple, list)) or hasattr(arg, "as_list")), ())
            count = 1
            for dim in shape.as_list() if hasattr(shape, "as_list") else shape:
                count *= int(dim or 1)
            total[0] += count * 4
            if total[0] > limit_bytes:
                raise error_type(
                    f"{source} declares weights of over {limit_bytes:,} bytes (layer '{self.name}', "
                    f"shape {tuple(shape)}). If the file is genuine, raise TFCOMPRESS_MAX_WEIGHT_BYTES."
                )
            return original(self, *args, **kwargs)

        return add_weight

    originals = [(layer_class, layer_class.add_weight) for layer_class in layer_classes]
    for layer_class, original in originals:
        layer_class.add_weight = guarded(original)
    try:
        yield
    finally:
        for layer_class, original in originals:
            layer_class.add_weight = original
