"""Keras 3 layers and operations that tf_keras has no layer for, as tf_keras layers that compute them.

- Arithmetic between a tensor and a number. Keras 3 records `x + 3.0` or `x * (1 / 6)` in a
  functional model as an operation node called with the number as an argument (MobileNetV3's
  squeeze-excite gates are written that way). tf_keras layers take no numbers, but `Rescaling`
  computes `x * scale + offset`.
- `Activation("hard_sigmoid")` and `Activation("hard_silu")` (MobileNetV3's hard swish): Keras 3's
  hard sigmoid is `clip(x / 6 + 0.5, 0, 1)`, tf_keras's a different curve (`0.2 * x + 0.5`), and
  tf_keras has no hard silu. They become `relu6(x + 3) * (1 / 6)` (`Rescaling`, `ReLU`, `Rescaling`),
  times `x` (`Multiply`) for the silu: the layers tf_keras's own MobileNetV3 uses, which the
  converter fuses into one HARD_SWISH op. The last layer keeps the name the model refers to.

The translation's outputs are checked like any other (parity.py).
"""

__all__ = ["rewritten", "NUMBER_OPERATIONS"]

_OPERATIONS_MODULE = "keras.src.ops."
NUMBER_OPERATIONS = ("Add", "Subtract", "Multiply", "TrueDivide", "Divide")  # Keras 3 classes, in keras.src.ops
_HARD_ACTIVATIONS = ("hard_sigmoid", "hard_silu", "hard_swish")


def rewritten(layer: dict) -> list:
    """The Keras 3 layer entry as the Keras 3 layer entries tf_keras can build: itself, or its rewrite."""
    if _is_operation(layer):
        return [_as_rescaling(layer) or layer]
    if layer["class_name"] == "Activation" and layer["config"].get("activation") in _HARD_ACTIVATIONS:
        return _hard_activation(layer)
    return [layer]


def _is_operation(layer: dict) -> bool:
    return str(layer.get("module", "")).startswith(_OPERATIONS_MODULE) and len(layer.get("inbound_nodes", [])) == 1


def _as_rescaling(layer: dict):
    """A `Rescaling` for an operation between one tensor and one number; None for anything else."""
    (node,) = layer["inbound_nodes"]
    args = node.get("args", [])
    numbers = [value for value in args if _is_number(value)]
    if len(args) != 2 or len(numbers) != 1 or node.get("kwargs"):
        return None
    number, tensor_first = float(numbers[0]), not _is_number(args[0])
    divided = (1.0 / number, 0.0) if tensor_first and number != 0 else None
    scale_and_offset = {
        "Add": (1.0, number),
        "Subtract": (1.0, -number) if tensor_first else (-1.0, number),
        "Multiply": (number, 0.0),
        "TrueDivide": divided,
        "Divide": divided,
    }.get(layer["class_name"])
    if scale_and_offset is None:
        return None
    tensor = args[0] if tensor_first else args[1]
    return _layer("Rescaling", layer["config"]["name"], tensor, scale=scale_and_offset[0], offset=scale_and_offset[1])


def _hard_activation(layer: dict) -> list:
    name = layer["config"]["name"]
    nodes = layer.get("inbound_nodes", [])
    if len(nodes) != 1 or len(nodes[0].get("args", [])) != 1:  # shared: left as it is, for parity to judge
        return [layer]
    (x,) = nodes[0]["args"]
    silu = layer["config"]["activation"] != "hard_sigmoid"
    shifted = _layer("Rescaling", f"{name}_plus_3", x, scale=1.0, offset=3.0)
    relu6 = _layer("ReLU", f"{name}_relu6", _output(shifted, x), max_value=6.0)
    sigmoid = _layer("Rescaling", f"{name}_hard_sigmoid" if silu else name, _output(relu6, x), scale=1 / 6, offset=0.0)
    if not silu:
        return [shifted, relu6, sigmoid]
    return [shifted, relu6, sigmoid, _layer("Multiply", name, [x, _output(sigmoid, x)])]


def _layer(class_name: str, name: str, inputs, **config) -> dict:
    return {
        "class_name": class_name,
        "config": {"name": name, **config},
        "name": name,
        "inbound_nodes": [{"args": [inputs], "kwargs": {}}],
    }


def _output(layer: dict, like: dict) -> dict:
    """A Keras 3 tensor reference to the output of `layer`, shaped like the elementwise input `like`."""
    return {**like, "config": {**like["config"], "keras_history": [layer["name"], 0, 0]}}


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
