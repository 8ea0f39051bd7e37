"""Model files → tf_keras models: `.h5` (Keras 2 or 3), `.keras` (Keras 3), SavedModel.

The config is read and checked before anything is deserialized: a `Lambda` layer
carries Python bytecode that Keras runs while loading, so it is refused unless the
caller trusts the file. Keras 3 files are translated into tf_keras (what tfmot and
the converter's Keras path need), and the translation is proven by comparing outputs.
"""

import contextlib
import importlib.util
import inspect
import json
import os
import warnings
from pathlib import Path
from typing import Optional

import numpy as np

from tfcompress import _keras, limits
from tfcompress.errors import ModelLoadError, UntranslatableModelError
from tfcompress.files import save_atomic
from tfcompress.model_config import MODEL_CLASSES, QAT_CLASSES, check_model_is_safe, layer_class_names, \
    read_model_config

__all__ = ["load_model", "model_and_path", "save_model", "load_custom_objects", "PARITY_ATOL"]

# How close the translated tf_keras model must be to the Keras 3 original.
PARITY_ATOL = 1e-5
_BASE_LAYER_KEYS = {"name", "trainable", "dtype", "dynamic", "batch_input_shape", "input_shape",
                    "batch_size", "input_dim", "activity_regularizer", "autocast"}
# Keras 3 options that tf_keras lacks but that, at these values, change nothing.
_HARMLESS_KERAS3_VALUES = {"data_format": "channels_last", "fill_mode": "constant",
                           "fill_value": 0.0, "lora_alpha": None}


def load_model(path, *, trust_model_code: bool = False, custom_objects: Optional[dict] = None):
    """Loads a Keras model file as a tf_keras model, without running code from the file.

    `trust_model_code` allows `Lambda` layers (their stored bytecode runs while
    loading); `custom_objects` maps class names to the user's own layer classes.
    """
    path = Path(path)
    custom_objects = dict(custom_objects or {})
    config, saved_by_keras3 = read_model_config(path)
    check_model_is_safe(config, path, trust_model_code=trust_model_code,
                        custom_objects=custom_objects, saved_by_keras3=saved_by_keras3)
    if saved_by_keras3:
        return _load_keras3(path, config, trust_model_code, custom_objects)
    tf_keras = _keras.tf_keras()
    quantize_aware = bool(layer_class_names(config) & QAT_CLASSES)
    try:
        with _keras.tfmot().quantization.keras.quantize_scope() if quantize_aware else contextlib.nullcontext(), \
                _keras.bounded_weights(limits.WEIGHT_BYTES.value, path, ModelLoadError), contextlib.ExitStack() as stack:
            return tf_keras.models.load_model(_h5_or_path(path, stack), compile=False, custom_objects=custom_objects)
    except (ValueError, TypeError, KeyError, OSError, ImportError, AttributeError, IndexError) as error:
        raise ModelLoadError(f"Cannot load {path} with tf_keras: {_first_line(error)}") from None


def _h5_or_path(path: Path, stack: contextlib.ExitStack):
    """An .h5 is opened here and handed over open: TensorFlow's file layer cannot open a name
    that is not UTF-8, h5py can."""
    if path.is_dir():
        return str(path)
    import h5py

    return stack.enter_context(h5py.File(path, "r"))


def model_and_path(model, *, trust_model_code: bool = False, custom_objects: Optional[dict] = None):
    """(tf_keras model, its file or None): the jobs take either a model or a model file."""
    if not isinstance(model, (str, os.PathLike)):
        return model, None
    return load_model(model, trust_model_code=trust_model_code, custom_objects=custom_objects), model


def save_model(model, path) -> None:
    """Writes a tf_keras model to `.h5` (or `.keras`) atomically, without optimizer state.

    Keras warns that `.h5` is a legacy format; it is the format these users deploy from.
    """
    def save(tmp):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="You are saving your model as an HDF5 file")
            model.save(tmp, include_optimizer=False)
    save_atomic(path, save)


def load_custom_objects(module_path) -> dict:
    """Imports the user's module of custom layers (their own code, so trusted).

    Uses its `custom_objects` dict when it has one, else every class and function
    the module itself defines.
    """
    module_path = limits.check_input_file(module_path, "Custom objects module", ModelLoadError)
    spec = importlib.util.spec_from_file_location(f"tfcompress_custom_{module_path.stem}", module_path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # the user's own code: report where it failed, keep the chain
        raise ModelLoadError(f"Importing the custom objects module {module_path} failed: "
                             f"{type(error).__name__}: {error}") from error
    if isinstance(getattr(module, "custom_objects", None), dict):
        return dict(module.custom_objects)
    return {name: value for name, value in vars(module).items()
            if (inspect.isclass(value) or inspect.isfunction(value))
            and value.__module__ == module.__name__ and not name.startswith("_")}


def _first_line(error: Exception) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


# ---------------------------------------------------------------- Keras 3 → tf_keras

def _load_keras3(path: Path, config: dict, trust_model_code: bool, custom_objects: dict):
    keras = _keras.keras3()
    tf_keras = _keras.tf_keras()
    try:
        with _keras.bounded_weights(limits.WEIGHT_BYTES.value, path, ModelLoadError, keras3_too=True):
            original = keras.saving.load_model(
                str(path), compile=False, safe_mode=not trust_model_code, custom_objects=custom_objects)
    except (ValueError, TypeError, KeyError, OSError, AttributeError, IndexError) as error:
        raise ModelLoadError(f"Cannot load {path} with Keras 3: {_first_line(error)}") from None
    translated = _translate_model(config, tf_keras)
    try:
        model = tf_keras.models.model_from_json(json.dumps(translated), custom_objects=custom_objects)
    except (ValueError, TypeError, KeyError) as error:
        raise UntranslatableModelError(
            f"{path}: the Keras 3 config could not be rebuilt in tf_keras: {_first_line(error)}") from None
    for layer in original.layers:
        model.get_layer(layer.name).set_weights(layer.get_weights())
    _check_parity(original, model, path)
    return model


def _check_parity(original, translated, path: Path, samples: int = 4) -> None:
    shape = tuple(original.inputs[0].shape[1:])
    if None in shape:
        raise UntranslatableModelError(
            f"{path}: input shape {shape} has unknown dimensions; tfcompress needs a fixed input size.")
    x = np.random.default_rng(0).uniform(0.0, 1.0, (samples,) + shape).astype(np.float32)
    expected = np.asarray(original(x, training=False))
    received = translated(x, training=False).numpy()
    error = float(np.max(np.abs(expected - received)))
    if error > PARITY_ATOL:
        raise UntranslatableModelError(
            f"{path}: the tf_keras translation differs from the Keras 3 model by {error:.2e} "
            f"(allowed {PARITY_ATOL:.0e}); this model cannot be translated faithfully.")


def _translate_model(config: dict, tf_keras) -> dict:
    inner = config["config"]
    layers = [_translate_layer(layer, tf_keras) for layer in inner["layers"]]
    if config["class_name"] == "Sequential":
        return {"class_name": "Sequential", "config": {"name": inner["name"], "layers": layers}}
    return {"class_name": "Functional", "config": {
        "name": inner["name"], "layers": layers,
        "input_layers": _tensor_refs(inner["input_layers"]),
        "output_layers": _tensor_refs(inner["output_layers"])}}


def _tensor_refs(refs):
    """Keras 3 writes a single input or output as a flat [name, node, index]."""
    return [refs] if refs and isinstance(refs[0], str) else refs


def _translate_layer(layer: dict, tf_keras) -> dict:
    class_name = layer["class_name"]
    if class_name in MODEL_CLASSES:
        translated = _translate_model(layer, tf_keras)
        name = layer["config"]["name"]
    else:
        layer_class = getattr(tf_keras.layers, class_name, None)
        name = layer["config"].get("name", "?")
        if layer_class is None:
            raise UntranslatableModelError(
                f"Layer '{name}' ({class_name}) has no tf_keras equivalent; tfcompress cannot "
                "translate this Keras 3 model.")
        layer_config = _translate_values(layer["config"], tf_keras)
        if class_name == "InputLayer":
            layer_config["batch_input_shape"] = layer_config.pop("batch_shape")
        translated = {"class_name": class_name,
                      "config": _keep_accepted(layer_class, layer_config, name, _BASE_LAYER_KEYS)}
    translated["name"] = name
    if "inbound_nodes" in layer:
        translated["inbound_nodes"] = [_translate_node(node, name) for node in layer["inbound_nodes"]]
    return translated


def _translate_node(node: dict, layer_name: str) -> list:
    """Keras 3 {"args": [...], "kwargs": {...}} → tf_keras [[layer, node, tensor, kwargs], ...]."""
    kwargs = node.get("kwargs", {})
    if any(_is_keras_tensor(value) for value in kwargs.values()):
        raise UntranslatableModelError(
            f"Layer '{layer_name}' is called with tensor keyword arguments; tfcompress cannot translate it.")
    refs = []
    for value in _flatten(node.get("args", [])):
        if not _is_keras_tensor(value):
            raise UntranslatableModelError(
                f"Layer '{layer_name}' is called with a constant argument ({value!r}); "
                "tfcompress cannot translate it.")
        layer, node_index, tensor_index = value["config"]["keras_history"]
        refs.append([layer, node_index, tensor_index, {}])
    if refs:
        refs[0][3] = dict(kwargs)
    return refs


def _flatten(values):
    for value in values:
        if isinstance(value, (list, tuple)):
            yield from _flatten(value)
        else:
            yield value


def _is_keras_tensor(value) -> bool:
    return isinstance(value, dict) and value.get("class_name") == "__keras_tensor__"


def _translate_values(value, tf_keras):
    """Keras 3 serialized values → tf_keras ones (dtype policies, tuples, initializers...)."""
    if isinstance(value, list):
        return [_translate_values(item, tf_keras) for item in value]
    if not isinstance(value, dict):
        return value
    class_name = value.get("class_name")
    if class_name in ("DTypePolicy", "FloatDTypePolicy"):
        return value["config"]["name"]
    if class_name == "__tuple__":
        return list(value["config"]["value"])
    if "module" in value and class_name:
        return _translate_object(value, tf_keras)
    return {key: _translate_values(item, tf_keras) for key, item in value.items()}


def _translate_object(value: dict, tf_keras) -> dict:
    """An initializer, regularizer or constraint: keep the class, drop Keras 3-only options."""
    class_name = value["class_name"]
    for namespace in (tf_keras.initializers, tf_keras.regularizers, tf_keras.constraints):
        object_class = getattr(namespace, class_name, None)
        if object_class is not None:
            config = _translate_values(value.get("config") or {}, tf_keras)
            return {"class_name": class_name,
                    "config": _keep_accepted(object_class, config, class_name, set())}
    raise UntranslatableModelError(f"{class_name} (from {value['module']}) has no tf_keras equivalent.")


def _keep_accepted(target_class, config: dict, owner: str, extra_keys: set) -> dict:
    accepted = _init_parameters(target_class) | extra_keys
    kept = {}
    for key, item in config.items():
        if key in accepted:
            kept[key] = item
        elif item not in (None, False) and _HARMLESS_KERAS3_VALUES.get(key, object()) != item:
            raise UntranslatableModelError(
                f"'{owner}' uses the Keras 3 option {key}={item!r}, which tf_keras does not have.")
    return kept


def _init_parameters(target_class) -> set:
    names = set()
    for klass in target_class.__mro__:
        if "__init__" in vars(klass):
            names |= {name for name, parameter in inspect.signature(klass.__init__).parameters.items()
                      if parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL)}
    return names - {"self"}
