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
import tempfile
import warnings
from pathlib import Path
from typing import Optional

from tfcompress import _keras
from tfcompress._io import limits
from tfcompress._io.files import save_atomic
from tfcompress.errors import ModelLoadError, OptionError, UntranslatableModelError, one_line
from tfcompress.keras_io.config import (
    MODEL_CLASSES,
    QAT_CLASSES,
    check_model_is_safe,
    check_node_references,
    has_own_node,
    layer_class_names,
    read_model_config,
)
from tfcompress.keras_io.parity import check_parity
from tfcompress.keras_io.rewrites import rewritten
from tfcompress.keras_io.signature import has_serving_signature_only, load_serving_signature

__all__ = [
    "load_model",
    "model_and_path",
    "save_model",
    "check_output_format",
    "to_keras3",
    "load_custom_objects",
    "require_one_output",
    "saved_by_keras3",
    "KERAS3_FORMAT",
    "TF_KERAS_FORMAT",
]

KERAS3_FORMAT = "Keras 3 (.keras)"
TF_KERAS_FORMAT = "tf_keras (.h5)"
_BASE_LAYER_KEYS = {
    "name",
    "trainable",
    "dtype",
    "dynamic",
    "batch_input_shape",
    "input_shape",
    "batch_size",
    "input_dim",
    "activity_regularizer",
    "autocast",
}
# Keras 3 options that tf_keras lacks but that, at these values, change nothing.
_HARMLESS_KERAS3_VALUES = {
    "data_format": "channels_last",
    "fill_mode": "constant",
    "fill_value": 0.0,
    "lora_alpha": None,
}
# Keras 3 options tf_keras has under another name.
_KERAS3_RENAMED = {"LeakyReLU": {"negative_slope": "alpha"}}
# tf_keras options that Keras 3 layers dropped, at the values that mean "not used".
_KERAS3_DROPPABLE = {"groups": 1, "time_major": False, "softmax_robust_masking": False}
# tf_keras options Keras 3 takes from the layer's call instead (MultiHeadAttention's input shapes).
_KERAS3_FROM_CALL = {"query_shape", "key_shape", "value_shape"}


def load_model(path, *, trust_model_code: bool = False, custom_objects: Optional[dict] = None):
    """Loads a Keras model file as a tf_keras model, without running code from the file.

    `trust_model_code` allows `Lambda` layers (their stored bytecode runs while
    loading); `custom_objects` maps class names to the user's own layer classes.
    """
    path = Path(path)
    if path.is_dir() and has_serving_signature_only(path):
        return load_serving_signature(path, trust_model_code=trust_model_code)
    config, saved_by_keras3 = read_model_config(path)
    custom_objects = {**({} if saved_by_keras3 else _keras.application_layers()), **(custom_objects or {})}
    check_model_is_safe(
        config, path, trust_model_code=trust_model_code, custom_objects=custom_objects, saved_by_keras3=saved_by_keras3
    )
    check_node_references(config, path)
    if saved_by_keras3:
        return _load_keras3(path, config, trust_model_code, custom_objects)
    tf_keras = _keras.tf_keras()
    quantize_aware = bool(layer_class_names(config) & QAT_CLASSES)
    try:
        with (
            _keras.tfmot().quantization.keras.quantize_scope() if quantize_aware else contextlib.nullcontext(),
            _keras.bounded_weights(limits.WEIGHT_BYTES.value, path, ModelLoadError),
            contextlib.ExitStack() as stack,
        ):
            return tf_keras.models.load_model(_h5_or_path(path, stack), compile=False, custom_objects=custom_objects)
    except (ValueError, TypeError, KeyError, OSError, ImportError, AttributeError, IndexError) as error:
        raise ModelLoadError(f"Cannot load {path} with tf_keras: {one_line(error, first_line_only=True)}") from None


def _h5_or_path(path: Path, stack: contextlib.ExitStack):
    """An .h5 is opened here and handed over open: TensorFlow's file layer cannot open a name
    that is not UTF-8, h5py can. A SavedModel or a tf_keras .keras archive is given by name."""
    if path.is_dir() or path.suffix == ".keras":
        return str(path)
    import h5py

    return stack.enter_context(h5py.File(path, "r"))


def saved_by_keras3(path) -> bool:
    """Whether a model file was written by Keras 3 (the default output format follows it)."""
    return path is not None and Path(path).suffix in (".h5", ".keras") and read_model_config(Path(path))[1]


def model_and_path(model, *, trust_model_code: bool = False, custom_objects: Optional[dict] = None):
    """(tf_keras model, its file or None): the jobs take either a model or a model file."""
    if not isinstance(model, (str, os.PathLike)):
        return model, None
    return load_model(model, trust_model_code=trust_model_code, custom_objects=custom_objects), model


def save_model(model, path, *, input_was_keras3: bool = False) -> str:
    """Writes a tf_keras model atomically, without optimizer state, in the format the path asks
    for; returns that format and why it was chosen (reports record it).

    `.keras` is a Keras 3 file: the model is translated to Keras 3 and proven to give the same
    outputs first, or nothing is written. `.h5` is a tf_keras file (Keras warns the format is
    legacy; it is the one these users deploy from, and Keras 3 reads it unless a layer carries an
    option Keras 3 dropped). Without either suffix the input's flavour decides: Keras 3 when the
    input was saved by Keras 3.
    """
    path = Path(path)
    if path.suffix == ".keras" or (path.suffix != ".h5" and input_was_keras3):
        keras3_model = to_keras3(model, path)
        save_atomic(path, lambda tmp: _save_keras3(keras3_model, Path(tmp)))
        return KERAS3_FORMAT + (
            ""
            if path.suffix == ".keras"
            else f", the input's format: {path} has no .keras or .h5 suffix (Keras 3 loads the "
            "file once it is named .keras)"
        )

    save_atomic(path, lambda tmp: _save_tf_keras(model, tmp))
    return (
        TF_KERAS_FORMAT
        if path.suffix == ".h5"
        else f"tf_keras SavedModel folder: {path} has no .keras or .h5 suffix, and the input was a tf_keras model"
    )


def check_output_format(model, output, *, input_was_keras3: bool, quantize_aware: bool = False) -> None:
    """Fails before training when the output's format cannot hold the model: a Keras 3 file of a
    quantization-aware model (tfmot's wrappers have no Keras 3 form), or of a layer Keras 3 lacks."""
    if output is None:
        return
    suffix = Path(output).suffix
    if suffix != ".keras" and (suffix == ".h5" or not input_was_keras3):
        return
    if quantize_aware:
        raise OptionError(
            f"{output}: a quantization-aware model holds tfmot's quantize wrappers, which have no Keras 3 form. "
            "Write -o OUT.h5 (tf_keras; `tfcompress convert OUT.h5 --precision int8` reads it), or go straight "
            "to .tflite with a recipe (a qat step, then convert)."
        )
    to_keras3(model, output)


def to_keras3(model, path="model"):
    """The tf_keras `model` as a Keras 3 model, proven equal on seeded inputs (keras_io/parity.py).

    Keras 3 reads tf_keras' `.h5` format, so the model goes through one in a temporary folder;
    the weights are copied bit for bit (pruned zeros and cluster values survive).
    """
    keras = _keras.keras3()
    with tempfile.TemporaryDirectory(prefix="tfcompress-keras3-") as folder:
        h5_path = Path(folder) / "model.h5"
        _save_tf_keras(model, h5_path)
        _drop_options_keras3_lacks(h5_path, keras)
        try:
            translated = keras.saving.load_model(h5_path, compile=False)
        except (ValueError, TypeError, KeyError, AttributeError, NotImplementedError) as error:
            raise UntranslatableModelError(
                f"{path}: the model has no Keras 3 form ({one_line(error, first_line_only=True)[:300]}); "
                "write it as .h5 (tf_keras), which `tfcompress convert` reads."
            ) from None
    builders = ((_keras.tf_keras(), _keras.application_layers()), (keras, None))
    check_parity(model, translated, builders, path, "Keras 3 translation of the tf_keras model")
    return translated


def _drop_options_keras3_lacks(h5_path: Path, keras) -> None:
    """tf_keras writes options Keras 3 layers no longer take (DepthwiseConv2D's groups=1, the RNNs'
    time_major=False); where they change nothing they are removed from the config Keras 3 reads.
    Any other one stays, and Keras 3 refuses the file naming it."""
    import h5py

    def clean(node):
        if isinstance(node, list):
            return [clean(item) for item in node]
        if not isinstance(node, dict):
            return node
        node = {key: clean(value) for key, value in node.items()}
        layer_class = getattr(keras.layers, str(node.get("class_name")), None)
        if inspect.isclass(layer_class) and isinstance(node.get("config"), dict):
            accepted = _init_parameters(layer_class)
            node["config"] = {
                key: value
                for key, value in node["config"].items()
                if key in accepted or not _keras3_can_drop(key, value)
            }
        return node

    with h5py.File(h5_path, "r+") as handle:
        handle.attrs["model_config"] = json.dumps(clean(json.loads(handle.attrs["model_config"])))


def _keras3_can_drop(key: str, value) -> bool:
    """An option a Keras 3 layer lacks may go when it changes nothing for a model whose weights are
    loaded: unused (None, or a default that means off), taken from the call, or an initializer."""
    return (
        value is None
        or key in _KERAS3_FROM_CALL
        or key.endswith("_initializer")
        or _KERAS3_DROPPABLE.get(key, object()) == value
    )


def _save_tf_keras(model, path) -> None:
    """tf_keras' own save, without optimizer state and without its notices about the legacy `.h5`
    format and a fine-tuned model's unbuilt metrics."""
    with warnings.catch_warnings(), _keras.quiet_tensorflow_logger("compiled metrics have yet to be built"):
        warnings.filterwarnings("ignore", message="You are saving your model as an HDF5 file")
        model.save(path, include_optimizer=False)


def _save_keras3(model, tmp: Path) -> None:
    """Keras 3 writes only to a `.keras` name; the temporary file may have another suffix."""
    if tmp.suffix == ".keras":
        model.save(tmp)
        return
    named = tmp.with_name(tmp.name + ".keras")
    try:
        model.save(named)
        os.replace(named, tmp)
    finally:
        named.unlink(missing_ok=True)


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
        raise ModelLoadError(
            f"Importing the custom objects module {module_path} failed: {type(error).__name__}: {error}"
        ) from error
    if isinstance(getattr(module, "custom_objects", None), dict):
        return dict(module.custom_objects)
    return {
        name: value
        for name, value in vars(module).items()
        if (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__ == module.__name__
        and not name.startswith("_")
    }


# ---------------------------------------------------------------- Keras 3 → tf_keras


def _load_keras3(path: Path, config: dict, trust_model_code: bool, custom_objects: dict):
    keras = _keras.keras3()
    tf_keras = _keras.tf_keras()
    keras3_objects = {**_keras.application_layers(of_keras3=True), **custom_objects}  # for its legacy .h5 reader
    try:
        with _keras.bounded_weights(limits.WEIGHT_BYTES.value, path, ModelLoadError, keras3_too=True):
            original = keras.saving.load_model(
                str(path), compile=False, safe_mode=not trust_model_code, custom_objects=keras3_objects
            )
    except (ValueError, TypeError, KeyError, OSError, AttributeError, IndexError) as error:
        raise ModelLoadError(f"Cannot load {path} with Keras 3: {one_line(error, first_line_only=True)}") from None
    translated = _translate_model(config, tf_keras)
    check_node_references(translated, path)
    tf_keras_objects = {**_keras.application_layers(), **custom_objects}  # Keras 3's LayerScale → tf_keras's
    try:
        model = tf_keras.models.model_from_json(json.dumps(translated), custom_objects=tf_keras_objects)
    except (ValueError, TypeError, KeyError) as error:
        raise UntranslatableModelError(
            f"{path}: the Keras 3 config could not be rebuilt in tf_keras{_failing_layer(translated, tf_keras)}: "
            f"{one_line(error, first_line_only=True)!r}. Save the model with Keras 2 (tf_keras) or replace that layer."
        ) from None
    for layer in original.layers:
        model.get_layer(layer.name).set_weights(layer.get_weights())
    builders = ((keras, keras3_objects), (tf_keras, tf_keras_objects))
    check_parity(original, model, builders, path, "tf_keras translation of the Keras 3 model")
    return model


def require_one_output(model, path) -> None:
    """analyze and auto measure one output (against class labels, or its relative error): a model
    with several is refused by their names."""
    if model.outputs is not None and len(model.outputs) > 1:
        names = ", ".join(f"'{tensor.name.split(':')[0].split('/')[0]}'" for tensor in model.outputs)
        raise ModelLoadError(
            f"{path or model.name} has {len(model.outputs)} outputs ({names}); analyze and auto take models with "
            "one output so far; prune, cluster, qat, lowrank and distill take several (trained towards the "
            "outputs of the model, or of the teacher), and so do convert, micro, check and benchmark."
        )


def _failing_layer(translated: dict, tf_keras) -> str:
    """`, at layer 'NAME' (Class)` for the first translated layer tf_keras cannot build on its own, or ""."""
    for layer in translated["config"]["layers"]:
        if layer["class_name"] in MODEL_CLASSES:
            continue
        try:
            tf_keras.layers.deserialize({"class_name": layer["class_name"], "config": dict(layer["config"])})
        except (ValueError, TypeError, KeyError):
            return f", at layer '{layer['name']}' ({layer['class_name']})"
    return ""


def _translate_model(config: dict, tf_keras) -> dict:
    inner = config["config"]
    # A nested model built on its own Input has a node of its own in tf_keras (node 0), so its calls
    # are numbered from 1 there, from 0 in Keras 3.
    shifted = {layer["config"]["name"] for layer in inner["layers"] if has_own_node(layer)}
    layers = [_translate_layer(each, tf_keras, shifted) for layer in inner["layers"] for each in rewritten(layer)]
    if config["class_name"] == "Sequential":
        return {"class_name": "Sequential", "config": {"name": inner["name"], "layers": layers}}
    return {
        "class_name": "Functional",
        "config": {
            "name": inner["name"],
            "layers": layers,
            "input_layers": _tensor_refs(inner["input_layers"], shifted),
            "output_layers": _tensor_refs(inner["output_layers"], shifted),
        },
    }


def _tensor_refs(refs, shifted=frozenset()):
    """Keras 3 writes a single input or output as a flat [name, node, index]."""
    refs = [refs] if refs and isinstance(refs[0], str) else refs
    return [[name, node + (name in shifted), tensor] for name, node, tensor in refs]


def _translate_layer(layer: dict, tf_keras, shifted=frozenset()) -> dict:
    class_name = layer["class_name"]
    if class_name in MODEL_CLASSES:
        translated = _translate_model(layer, tf_keras)
        name = layer["config"]["name"]
    else:
        layer_class = _tf_keras_class(class_name, tf_keras)
        name = layer["config"].get("name", "?")
        if layer_class is None:
            raise UntranslatableModelError(
                f"Layer '{name}' ({class_name}) has no tf_keras equivalent; tfcompress cannot "
                "translate this Keras 3 model."
            )
        layer_config = _translate_values(layer["config"], tf_keras)
        for old, new in _KERAS3_RENAMED.get(class_name, {}).items():
            if old in layer_config:
                layer_config[new] = layer_config.pop(old)
        if class_name == "InputLayer":
            layer_config["batch_input_shape"] = layer_config.pop("batch_shape")
        translated = {
            "class_name": class_name,
            "config": _keep_accepted(layer_class, layer_config, name, _BASE_LAYER_KEYS),
        }
        if class_name == "MultiHeadAttention":  # tf_keras rebuilds it from the shapes it was called on
            shapes = (layer.get("build_config") or {}).get("shapes_dict", {})
            translated["config"].update(
                query_shape=shapes.get("query_shape"),
                value_shape=shapes.get("value_shape"),
                key_shape=shapes.get("key_shape", shapes.get("value_shape")),
            )
    translated["name"] = name
    if "inbound_nodes" in layer:
        layer_class = _tf_keras_class(class_name, tf_keras)
        call_parameters = (
            [parameter for parameter in inspect.signature(layer_class.call).parameters if parameter != "self"]
            if layer_class is not None
            else []
        )
        translated["inbound_nodes"] = [
            _translate_node(node, name, call_parameters, shifted) for node in layer["inbound_nodes"]
        ]
    return translated


def _tf_keras_class(class_name: str, tf_keras):
    """The tf_keras layer class of that name, or of an application's own layer (ConvNeXt's LayerScale)."""
    return getattr(tf_keras.layers, class_name, None) or _keras.application_layers().get(class_name)


def _translate_node(node: dict, layer_name: str, call_parameters=(), shifted=frozenset()) -> list:
    """Keras 3 {"args": [...], "kwargs": {...}} → tf_keras [[layer, node, tensor, kwargs], ...].

    A layer called with several positional tensors (MultiHeadAttention's query, value) gets the
    first as its input and the others as keyword arguments named by its `call`, as tf_keras
    writes them; tensors given as keyword arguments become tf_keras references too.
    """
    args = list(node.get("args", []))
    kwargs = {
        key: _tensor_ref(value, layer_name, shifted) if _is_keras_tensor(value) else value
        for key, value in node.get("kwargs", {}).items()
    }
    if len(args) > 1 and len(call_parameters) >= len(args):
        kwargs.update(
            {name: _tensor_ref(value, layer_name, shifted) for name, value in zip(call_parameters[1:], args[1:])}
        )
        args = args[:1]
    refs = [[*_tensor_ref(value, layer_name, shifted), {}] for value in _flatten(args)]
    if refs:
        refs[0][3] = kwargs
    return refs


def _tensor_ref(value, layer_name: str, shifted=frozenset()) -> list:
    if not _is_keras_tensor(value):
        raise UntranslatableModelError(
            f"Layer '{layer_name}' is called with a constant argument ({value!r}); tfcompress cannot translate it."
        )
    layer, node_index, tensor_index = value["config"]["keras_history"]
    return [layer, node_index + (layer in shifted), tensor_index]


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
    """An initializer, regularizer or constraint: keep the class, drop Keras 3-only options. A layer
    inside a wrapper (Bidirectional's LSTM, TimeDistributed's Dense) is translated as a layer."""
    class_name = value["class_name"]
    if str(value.get("module", "")).startswith(("keras.layers", "keras.src.layers")):
        inner = _translate_layer(value, tf_keras)
        return {"class_name": inner["class_name"], "config": inner["config"]}
    for namespace in (tf_keras.initializers, tf_keras.regularizers, tf_keras.constraints):
        object_class = getattr(namespace, class_name, None)
        if object_class is not None:
            config = _translate_values(value.get("config") or {}, tf_keras)
            return {"class_name": class_name, "config": _keep_accepted(object_class, config, class_name, set())}
    raise UntranslatableModelError(f"{class_name} (from {value['module']}) has no tf_keras equivalent.")


def _keep_accepted(target_class, config: dict, owner: str, extra_keys: set) -> dict:
    accepted = _init_parameters(target_class) | extra_keys
    kept = {}
    for key, item in config.items():
        if key in accepted:
            kept[key] = item
        elif item not in (None, False) and _HARMLESS_KERAS3_VALUES.get(key, object()) != item:
            raise UntranslatableModelError(
                f"'{owner}' uses the Keras 3 option {key}={item!r}, which tf_keras does not have."
            )
    return kept


def _init_parameters(target_class) -> set:
    names = set()
    for klass in target_class.__mro__:
        if "__init__" in vars(klass):
            names |= {
                name
                for name, parameter in inspect.signature(klass.__init__).parameters.items()
                if parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL)
            }
    return names - {"self"}
