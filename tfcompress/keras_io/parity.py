"""Whether a translated model (Keras 3 ↔ tf_keras) computes what the model it translates computes.

Both are run on the same seeded inputs. Within `PARITY_ATOL` in float32, the translation is
faithful. Further apart is not yet a wrong translation: the two libraries round differently
(tf_keras normalizes a conv's batch with a fused kernel, Keras 3 with separate ops), and deep nets
and large outputs carry that rounding far. A Keras 3 ResNet50 (random weights, 32×32) and its
translation gave outputs 6.6e-5 apart in float32, while float32 rounding moved each 1.0e-4 from
the same model run in float64, where the two agreed to the last bit; a two-conv regressor with
outputs near 150 was 1.5e-5 apart. So a pair further apart than `PARITY_ATOL` is faithful when
it is no further apart than float32 rounding moves the two (each model rebuilt in float64 and
compared with itself, the two distances added): the most two exact translations can differ by.
A wrong setting (a BatchNormalization epsilon, an axis) moves the outputs in any precision.
"""

import json

import numpy as np

from tfcompress._io import limits
from tfcompress.data import noise, per_input
from tfcompress.errors import UntranslatableModelError
from tfcompress.keras_io.config import CODE_CARRYING_CLASSES, layer_class_names

__all__ = ["check_parity", "PARITY_ATOL"]

PARITY_ATOL = 1e-5  # float32 outputs this close: faithful, whatever the rounding
_FLOAT_DTYPES = {"float16", "bfloat16", "float32", "float64", "mixed_float16", "mixed_bfloat16"}
_POLICY_CLASSES = {"DTypePolicy", "FloatDTypePolicy", "Policy"}


def check_parity(original, translated, builders: tuple, path, direction: str) -> None:
    """Refuses `translated` unless it computes `original`'s outputs; `builders` are, for each, the
    Keras module that built it (keras or tf_keras) and the custom objects its config needs."""
    shapes = [tuple(tensor.shape[1:]) for tensor in original.inputs]
    if any(None in shape for shape in shapes):
        raise UntranslatableModelError(
            f"{path}: input shape {next(s for s in shapes if None in s)} has unknown dimensions; "
            "tfcompress needs a fixed input size."
        )
    inputs = [noise((4,) + shape, seed) for seed, shape in enumerate(shapes)]
    outputs = [_predicted(model, inputs) for model in (original, translated)]
    error = _largest_difference(*outputs)
    if error <= PARITY_ATOL:
        return
    rounding = _float32_rounding((original, translated), outputs, builders, inputs)
    if rounding is not None and error <= rounding:
        return
    measured = "" if rounding is None else f" and more than float32 rounding moves the two ({rounding:.2e})"
    raise UntranslatableModelError(
        f"{path}: the {direction} differs from it by {error:.2e}, more than {PARITY_ATOL:.0e}{measured}; "
        "this model cannot be translated faithfully."
    )


def _float32_rounding(models, outputs, builders, inputs):
    """How far float32 rounding moves each model's outputs from its float64 self, added (None where
    one cannot be rebuilt in float64)."""
    in_float64 = [x.astype(np.float64) for x in inputs]
    moved = 0.0
    for model, float32_outputs, (library, custom_objects) in zip(models, outputs, builders):
        try:
            rebuilt = _in_float64(model, library, custom_objects)
            if rebuilt is None:
                return None
            moved += _largest_difference(float32_outputs, _predicted(rebuilt, in_float64))
        except Exception:  # any failure (a layer without float64 kernels) leaves the float32 verdict
            return None
    return moved


def _predicted(model, inputs: list) -> list:
    outputs = model(inputs if len(inputs) > 1 else inputs[0], training=False)
    return [np.asarray(output, np.float64) for output in per_input(outputs)]


def _largest_difference(expected: list, received: list) -> float:
    return max(float(np.max(np.abs(ours - theirs))) for ours, theirs in zip(expected, received))


def _in_float64(model, library, custom_objects):
    """`model` rebuilt from its config with float64 weights and arithmetic (None: it carries code, or
    the two float64 copies would take more than half the bytes of weights a model may have)."""
    if model.count_params() * np.dtype(np.float64).itemsize * 2 > limits.WEIGHT_BYTES.value / 2:
        return None
    config = json.loads(model.to_json())
    if layer_class_names(config) & CODE_CARRYING_CLASSES:  # its code runs only where the user said
        return None
    rebuilt = library.models.model_from_json(json.dumps(_float64_config(config)), custom_objects=custom_objects)
    slots = rebuilt.get_weights()
    rebuilt.set_weights([np.asarray(weight).astype(slot.dtype) for weight, slot in zip(model.get_weights(), slots)])
    return rebuilt


def _float64_config(node):
    """The config with every floating dtype and dtype policy made float64 (integer inputs keep theirs)."""
    if isinstance(node, list):
        return [_float64_config(value) for value in node]
    if not isinstance(node, dict):
        return node
    if node.get("class_name") in _POLICY_CLASSES and node.get("config", {}).get("name") in _FLOAT_DTYPES:
        return {**node, "config": {**node["config"], "name": "float64"}}
    return {key: "float64" if _is_float_dtype(key, value) else _float64_config(value) for key, value in node.items()}


def _is_float_dtype(key, value) -> bool:
    return key == "dtype" and isinstance(value, str) and value in _FLOAT_DTYPES
