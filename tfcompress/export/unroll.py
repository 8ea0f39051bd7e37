"""Recurrent loops unrolled, so that int8 and int16x8 calibration can run.

GRU, SimpleRNN and the other recurrent layers except LSTM stay a WHILE loop in TFLite (LSTM
becomes one fused op), and calibrating that loop crashes TensorFlow 2.21's converter with a
segfault. Unrolled over its fixed number of timesteps, the same layer is plain
FULLY_CONNECTED and element-wise ops, which quantize like any others, with the same weights
and outputs. The user's model is not changed: a copy is unrolled.

The first step's state is zeros, so with a constant zero state the converter folds that step's
recurrent product to a constant and, in 4 of 6 GRU conversions here, left the SPLIT of that
constant in float (a different model each run). The copy's zero state is computed from the input
(the first step's first input value times a row of zeros) instead: nothing folds, and the
conversion is the same every time.
"""

from tfcompress import _keras
from tfcompress.errors import ConversionError
from tfcompress.transforms.graph import recurrent_layers

__all__ = ["loops", "unrolled"]


def loops(model) -> list:
    """Names of the recurrent layers that stay a loop in TFLite, at any depth."""
    if model.inputs is None:
        return []
    return [name for name, fused in recurrent_layers(model).items() if not fused]


def unrolled(model, precision: str):
    """A copy of `model` with every recurrent loop unrolled, the same weights."""
    tf_keras = _keras.tf_keras()

    def unroll(layer):
        if isinstance(layer, tf_keras.Model):
            return tf_keras.models.clone_model(layer, clone_function=unroll)
        config = layer.get_config()
        cell_config = config["layer"]["config"] if "layer" in config else config  # Bidirectional, TimeDistributed
        if "unroll" not in cell_config or cell_config["unroll"]:
            return layer.__class__.from_config(config)
        _require_fixed_timesteps(layer, precision)
        cell_config["unroll"] = True
        copy = layer.__class__.from_config(config)
        for recurrent in _recurrent_parts(copy):
            if isinstance(recurrent.cell.state_size, int):  # GRU, SimpleRNN: one state vector
                recurrent.get_initial_state = _computed_zero_state(recurrent.cell.state_size)
        return copy

    copy = tf_keras.models.clone_model(model, clone_function=unroll)
    copy.set_weights(model.get_weights())
    return copy


def _recurrent_parts(layer) -> list:
    """The recurrent layers a layer runs: itself, a wrapper's inner layer, or Bidirectional's two."""
    if hasattr(layer, "forward_layer"):
        return [layer.forward_layer, layer.backward_layer]
    return [getattr(layer, "layer", layer)]


def _computed_zero_state(units: int):
    def zero_state(inputs):
        tf = _keras.tensorflow()
        return [inputs[:, 0, :1] * tf.zeros((1, units), inputs.dtype)]  # a broadcast MUL: TFLite Micro has no TILE

    return zero_state


def _require_fixed_timesteps(layer, precision: str) -> None:
    shape = layer.input_shape
    timesteps = shape[1] if isinstance(shape, tuple) and len(shape) > 2 else None
    if timesteps is None:
        raise ConversionError(
            f"{layer.name}: recurrent layers other than LSTM (GRU, SimpleRNN, ...) stay a loop in TFLite, and "
            f"calibrating that loop for {precision} crashes TensorFlow 2.21's converter; tfcompress unrolls it, "
            "which needs a fixed number of timesteps, and this layer's input has none. Give the model's input "
            "a fixed sequence length, convert to float16 or dynamic, or use LSTM layers (one fused int8 op)."
        )
