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
import zipfile
from pathlib import Path
from typing import Optional

import numpy as np

from tfcompress import _keras
from tfcompress.errors import ModelLoadError, UnsafeModelError, UntranslatableModelError
from tfcompress.files import save_atomic

__all__ = ["load_model", "model_and_path", "save_model", "load_custom_objects", "read_model_config", "PARITY_ATOL"]

# How close the translated tf_keras model must be to the Keras 3 original.
PARITY_ATOL = 1e-5
_MODEL_CLASSES = {"Functional", "Sequential", "Model"}
_CODE_CARRYING_CLASSES = {"Lambda"}
# tf.* calls in a functional model: stored as an API name, resolved from TensorFlow.
_TF_OP_CLASSES = {"TFOpLambda", "SlicingOpLambda"}
# Quantization-aware models (what `tfcompress qat` writes) load inside tfmot's quantize_scope.
_QAT_CLASSES = {"QuantizeLayer", "QuantizeWrapper", "QuantizeWrapperV2", "QuantizeAnnotate"}
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
                        custom_objects=custom_objects)
    if saved_by_keras3:
        return _load_keras3(path, config, trust_model_code, custom_objects)
    tf_keras = _keras.tf_keras()
    quantize_aware = any(class_name in _QAT_CLASSES for class_name, _ in _walk_layers(config))
    try:
        with _keras.tfmot().quantization.keras.quantize_scope() if quantize_aware else contextlib.nullcontext():
            return tf_keras.models.load_model(str(path), compile=False, custom_objects=custom_objects)
    except (ValueError, TypeError, KeyError, OSError, ImportError) as error:
        raise ModelLoadError(f"Cannot load {path} with tf_keras: {_first_line(error)}") from None


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


def read_model_config(path: Path):
    """(model config dict, saved by Keras 3?) read from the file without deserializing."""
    if not path.exists():
        raise ModelLoadError(f"Model file not found: {path}")
    if path.is_dir():
        return _read_saved_model_config(path), False
    if path.suffix in (".h5", ".hdf5"):
        return _read_h5_config(path)
    if path.suffix == ".keras":
        return _read_keras_zip_config(path), True
    if path.suffix == ".tflite":
        raise ModelLoadError(
            f"{path} is already a TFLite model; use `tfcompress inspect` or `tfcompress benchmark` on it.")
    raise ModelLoadError(
        f"Unsupported model file {path}: expected .h5, .keras or a SavedModel folder.")


def check_model_is_safe(config: dict, path: Path, *, trust_model_code: bool,
                        custom_objects: dict) -> None:
    """Refuses code-carrying layers (unless trusted) and classes we have no code for."""
    known = _known_class_names()
    for class_name, layer_name in _walk_layers(config):
        if class_name in _CODE_CARRYING_CLASSES and not trust_model_code:
            raise UnsafeModelError(
                f"{path} contains a {class_name} layer ('{layer_name}'), which runs Python code "
                "stored in the file. Pass --trust_model_code only if you trust where this model "
                "came from.")
        if class_name not in known and class_name not in custom_objects:
            raise ModelLoadError(
                f"{path} uses the custom layer class {class_name} ('{layer_name}'), which "
                "tfcompress has no code for. Pass --custom_objects path/to/module.py that defines it.")


def load_custom_objects(module_path) -> dict:
    """Imports the user's module of custom layers (their own code, so trusted).

    Uses its `custom_objects` dict when it has one, else every class and function
    the module itself defines.
    """
    module_path = Path(module_path)
    if not module_path.is_file():
        raise ModelLoadError(f"Custom objects module not found: {module_path}")
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


def _read_h5_config(path: Path):
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            raw_config = handle.attrs.get("model_config")
            version = handle.attrs.get("keras_version", "")
    except OSError:
        raise ModelLoadError(
            f"{path} cannot be read as HDF5: the file is truncated or not a Keras .h5 model.") from None
    if raw_config is None:
        raise ModelLoadError(
            f"{path} holds no model config (weights only?). Save the whole model with model.save().")
    version = version.decode() if isinstance(version, bytes) else str(version)
    return _parse_json(raw_config, path), version.startswith("3.")


def _read_keras_zip_config(path: Path) -> dict:
    try:
        with zipfile.ZipFile(path) as archive:
            return _parse_json(archive.read("config.json"), path)
    except (zipfile.BadZipFile, KeyError, OSError):
        raise ModelLoadError(
            f"{path} is not a readable .keras archive (truncated, or no config.json inside).") from None


def _read_saved_model_config(path: Path) -> dict:
    """The layer classes of a tf_keras SavedModel, from its keras_metadata.pb."""
    if not (path / "saved_model.pb").exists():
        raise ModelLoadError(
            f"{path} is a folder, not a model file or SavedModel. Pass the .h5/.keras file "
            "or the SavedModel folder itself.")
    metadata_path = path / "keras_metadata.pb"
    if not metadata_path.exists():
        raise ModelLoadError(
            f"{path} is a SavedModel without Keras metadata (e.g. from Keras 3 model.export()). "
            "Save the Keras model as .keras or .h5 instead.")
    _keras.tf_keras()
    from tf_keras.protobuf import saved_metadata_pb2

    metadata = saved_metadata_pb2.SavedMetadata.FromString(metadata_path.read_bytes())
    layers = []
    for node in metadata.nodes:
        entry = json.loads(node.metadata) if node.metadata else {}
        if "class_name" in entry and entry["class_name"] not in _MODEL_CLASSES:
            layers.append({"class_name": entry["class_name"], "config": {"name": entry.get("name")}})
    return {"class_name": "Functional", "config": {"layers": layers}}


def _parse_json(raw, path: Path) -> dict:
    try:
        return json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    except (ValueError, UnicodeDecodeError):
        raise ModelLoadError(f"{path} has a corrupt model config (not JSON).") from None


def _walk_layers(config: dict):
    """Yields (class name, layer name) of every layer, inside nested models and wrappers."""
    for layer in config.get("config", {}).get("layers", []):
        layer_config = layer.get("config", {})
        yield layer["class_name"], layer_config.get("name", layer.get("name", "?"))
        if layer["class_name"] in _MODEL_CLASSES:
            yield from _walk_layers(layer)
        wrapped = layer_config.get("layer") if isinstance(layer_config, dict) else None
        if isinstance(wrapped, dict) and "class_name" in wrapped:
            yield wrapped["class_name"], wrapped.get("config", {}).get("name", "?")


def _known_class_names() -> set:
    tf_keras = _keras.tf_keras()
    return set(dir(tf_keras.layers)) | _MODEL_CLASSES | _TF_OP_CLASSES | _QAT_CLASSES


def _first_line(error: Exception) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


# ---------------------------------------------------------------- Keras 3 → tf_keras

def _load_keras3(path: Path, config: dict, trust_model_code: bool, custom_objects: dict):
    keras = _keras.keras3()
    tf_keras = _keras.tf_keras()
    try:
        original = keras.saving.load_model(
            str(path), compile=False, safe_mode=not trust_model_code, custom_objects=custom_objects)
    except (ValueError, TypeError, KeyError, OSError) as error:
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
    if class_name in _MODEL_CLASSES:
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
