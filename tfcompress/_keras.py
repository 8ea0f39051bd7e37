"""The one place tfcompress imports TensorFlow and Keras.

tfcompress works on tf_keras (Keras 2) models inside, because tfmot needs them,
whatever the user's default Keras is; Keras 3 is imported only to read files it
wrote. Imports are lazy so the TensorFlow-free runtime never pays for them.
"""

import os

from tfcompress.errors import UnsupportedVersionError

__all__ = ["tensorflow", "tf_keras", "keras3", "tfmot", "TESTED_TENSORFLOW"]

# The README's version matrix; a different TensorFlow fails fast with this list.
TESTED_TENSORFLOW = ("2.21",)
_SKIP_CHECK_VARIABLE = "TFCOMPRESS_ALLOW_UNTESTED_TENSORFLOW"


def tensorflow():
    """Imports TensorFlow, refusing versions tfcompress was not tested with."""
    import tensorflow as tf

    major_minor = ".".join(tf.__version__.split(".")[:2])
    if major_minor not in TESTED_TENSORFLOW and not os.environ.get(_SKIP_CHECK_VARIABLE):
        raise UnsupportedVersionError(
            f"tfcompress is tested with TensorFlow {', '.join(TESTED_TENSORFLOW)}. "
            f"Received: tensorflow=={tf.__version__}. Install a tested version, or set "
            f"{_SKIP_CHECK_VARIABLE}=1 to try anyway.")
    return tf


def tf_keras():
    """tf_keras, the Keras 2 that tfmot and the TFLite converter's Keras path need."""
    tensorflow()
    import tf_keras as keras2

    return keras2


def keras3():
    """The standalone Keras 3 package, used only to read the files it writes."""
    tensorflow()
    try:
        import keras
    except ImportError:
        raise UnsupportedVersionError(
            "This model was saved by Keras 3; reading it needs the keras package: pip install 'keras>=3'"
        ) from None
    if not keras.__version__.startswith("3."):
        raise UnsupportedVersionError(
            f"This model was saved by Keras 3, but the installed keras is {keras.__version__}. "
            "Install keras>=3 beside tf_keras.")
    return keras


def tfmot():
    """tensorflow_model_optimization, without the TF_USE_LEGACY_KERAS it sets on import.

    tfmot sets that variable for the whole process when imported; tfcompress uses
    tf_keras directly, so the user's own `tf.keras` stays what they chose.
    """
    tf_keras()
    saved = os.environ.get("TF_USE_LEGACY_KERAS")
    try:
        import tensorflow_model_optimization
    finally:
        if saved is None:
            os.environ.pop("TF_USE_LEGACY_KERAS", None)
        else:
            os.environ["TF_USE_LEGACY_KERAS"] = saved
    return tensorflow_model_optimization
