"""A model file's config, read without deserializing it, bounded, and judged for trust.

Keras runs code while it loads a model: a `Lambda` layer's stored bytecode, an
activation stored as bytecode, a class looked up by a module name the file chooses.
So the trust decision is made here, on the whole config tree, before any Keras code
sees the file: every serialized object at every depth (layers, wrappers' inner layers,
`Bidirectional`'s two layers, nested models, Keras 2.0 list-style configs, initializers)
must be a class tfcompress knows, and no value may carry bytecode, unless the user says
the file is trusted. Sizes the file declares are bounded before they are allocated.
"""

import base64
import binascii
import inspect
import json
import re
import zipfile
from pathlib import Path
from typing import Optional

from tfcompress import _keras
from tfcompress._io import limits
from tfcompress.errors import ModelLoadError, UnsafeModelError
from tfcompress.keras_io.rewrites import NUMBER_OPERATIONS

__all__ = [
    "read_model_config",
    "check_model_is_safe",
    "check_code_free",
    "check_node_references",
    "has_own_node",
    "declared_input_shape",
    "layer_class_names",
    "MODEL_CLASSES",
    "QAT_CLASSES",
    "CODE_CARRYING_CLASSES",
]

MODEL_CLASSES = {"Functional", "Sequential", "Model"}
# Quantization-aware models (what `tfcompress qat` writes) load inside tfmot's quantize_scope.
QAT_CLASSES = {"QuantizeLayer", "QuantizeWrapper", "QuantizeWrapperV2", "QuantizeAnnotate"}
CODE_CARRYING_CLASSES = {"Lambda", "__lambda__"}  # layers whose config holds Python code
# tf.* calls in a functional model: stored as an API name, resolved from TensorFlow.
_TF_OP_CLASSES = {"TFOpLambda", "SlicingOpLambda"}
# Parts of a tf.* name that reach outside the model: files, Python callbacks, printing, raw kernels.
_SIDE_EFFECT_TF_NAMES = {
    "io",
    "gfile",
    "write_file",
    "read_file",
    "py_function",
    "numpy_function",
    "py_func",
    "print",
    "Print",
    "summary",
    "debugging",
    "saved_model",
    "data",
    "raw_ops",
    "load_library",
    "load_op_library",
    "distribute",
    "config",
}
# Markers for values that are not objects (tensors, shapes, tuples, dtype policies).
_KERAS3_VALUE_CLASSES = {
    "TensorShape",
    "__keras_tensor__",
    "__tuple__",
    "__numpy__",
    "__bytes__",
    "__ellipsis__",
    "__slice__",
    "DTypePolicy",
    "FloatDTypePolicy",
    "QuantizedDTypePolicy",
    "QuantizedFloat8DTypePolicy",
}
_SHAPE_KEYS = ("batch_input_shape", "batch_shape")
# Where Keras' own serializable classes live (a compiled model's config names optimizers and losses too).
_NAMESPACES = ("layers", "initializers", "regularizers", "constraints", "optimizers", "losses", "metrics")
# A marshalled code object, as Keras 2 func_dump and Keras 3 write it: base64 of 'c' or 'c'|FLAG_REF.
_BASE64_TEXT = re.compile(r"[A-Za-z0-9+/=\s]{40,}")
_MAX_ARCHIVE_MEMBERS = 10_000
_SAVED_MODEL_LAYERS = {"_tf_keras_layer", "_tf_keras_input_layer", "_tf_keras_rnn_layer"}


def read_model_config(path):
    """(model config dict, saved by Keras 3?) read from the file without deserializing."""
    path = limits.check_input_file(path, "Model file", ModelLoadError, folder_ok=True)
    if path.is_dir():
        return _read_saved_model_config(path), False
    if path.suffix in (".h5", ".hdf5"):
        return _read_h5_config(path)
    if path.suffix == ".keras":
        return _read_keras_zip_config(path)
    if path.suffix == ".tflite":
        raise ModelLoadError(
            f"{path} is already a TFLite model; use `tfcompress inspect` or `tfcompress benchmark` on it."
        )
    raise ModelLoadError(f"Unsupported model file {path}: expected .h5, .keras or a SavedModel folder.")


def check_model_is_safe(
    config: dict, path, *, trust_model_code: bool, custom_objects: dict, saved_by_keras3: bool = False
) -> None:
    """Refuses code-carrying objects (unless trusted), oversized inputs, and classes with no known code."""
    classes = check_code_free(config, path, trust_model_code=trust_model_code)
    known = _known_class_names(saved_by_keras3, bool(set(classes) & QAT_CLASSES))
    allowed = known | set(custom_objects) | CODE_CARRYING_CLASSES | {"function"}  # code: judged above
    for class_name, name in classes.items():
        if class_name not in allowed:
            raise ModelLoadError(
                f"{path} uses the custom layer class {class_name} ('{name}'), which tfcompress has no code for. "
                "Pass --custom_objects path/to/module.py that defines it (with --trust_model_code: the "
                "module runs)."
            )


def check_code_free(config: dict, path, *, trust_model_code: bool) -> dict:
    """The part of the trust decision that needs no TensorFlow: no stored code (unless trusted), no
    oversized declared input. Returns class name → an object's name, for the allow-list. A hostile
    file is refused by this in a fraction of a second."""
    classes = {}
    for node, _ in _walk(config, path):
        if isinstance(node, str):
            if not trust_model_code and _is_bytecode(node):
                raise UnsafeModelError(
                    f"{path} holds Python bytecode (a lambda stored as a function or activation), which "
                    "runs when the model loads. Pass --trust_model_code only if you trust where this model "
                    "came from."
                )
        elif isinstance(node, dict):
            _check_declared_shapes(node, path)
            if isinstance(node.get("class_name"), str):
                _refuse_code_object(node, path, trust_model_code)
                classes.setdefault(node["class_name"], _object_name(node))
    return classes


def _refuse_code_object(node: dict, path, trust_model_code: bool) -> None:
    class_name = node["class_name"]
    if class_name in _TF_OP_CLASSES and not trust_model_code:
        _refuse_side_effect_op(node, path)
    if trust_model_code or not (class_name in CODE_CARRYING_CLASSES or _names_foreign_function(node)):
        return
    raise UnsafeModelError(
        f"{path} contains a {_readable(class_name)} ('{_object_name(node)}'), which runs Python code "
        "stored in the file. Pass --trust_model_code only if you trust where this model came from."
    )


def declared_input_shape(path, *, trust_model_code: bool = False) -> Optional[tuple]:
    """The model's input shape (batch first) as its config declares it, read without TensorFlow, once
    the config is judged free of code; None when the file is not an .h5/.keras, or declares no
    single input."""
    path = Path(path)
    if path.suffix not in (".h5", ".hdf5", ".keras") or not path.is_file():
        return None
    config, _ = read_model_config(path)
    check_code_free(config, path, trust_model_code=trust_model_code)
    inner = config.get("config")
    layers = inner.get("layers") if isinstance(inner, dict) else inner
    if not isinstance(layers, list) or not layers or not all(isinstance(layer, dict) for layer in layers):
        return None
    inputs = [layer for layer in layers if layer.get("class_name") == "InputLayer"]
    candidates = inputs if inputs else layers[:1]
    shapes = [
        next(
            (
                layer.get("config", {}).get(key)
                for key in _SHAPE_KEYS
                if isinstance(layer.get("config"), dict) and layer["config"].get(key)
            ),
            None,
        )
        for layer in candidates
    ]
    if len(shapes) != 1 or not isinstance(shapes[0], list):
        return None
    return tuple(shapes[0])


def has_own_node(layer: dict) -> bool:
    """Whether a nested model in a config was built on its own Input: tf_keras then gives it node 0,
    and the calls of the outer model are its nodes 1, 2, ..."""
    if layer.get("class_name") not in MODEL_CLASSES:
        return False
    inner = layer.get("config")
    if layer["class_name"] != "Sequential":
        return True
    layers = inner.get("layers") if isinstance(inner, dict) else inner
    first = layers[0] if isinstance(layers, list) and layers and isinstance(layers[0], dict) else {}
    return first.get("class_name") == "InputLayer" or "batch_input_shape" in (first.get("config") or {})


def check_node_references(config: dict, path) -> None:
    """tf_keras rebuilds a functional model by retrying its nodes until every input exists, so a node
    that names a missing layer or node, or nodes that wait on each other, make it loop forever.
    Such a graph (Keras 2 node format) is refused here instead."""
    for node, _ in _walk(config, path):
        if (
            isinstance(node, dict)
            and node.get("class_name") in ("Functional", "Model")
            and isinstance(node.get("config"), dict)
        ):
            _check_graph(node["config"], path)


def _check_graph(graph: dict, path) -> None:
    layers = [layer for layer in graph.get("layers") or [] if isinstance(layer, dict)]
    depends = {}  # (layer, node index) → the (layer, node index) pairs it reads
    for layer in layers:
        name = _object_name(layer) if layer.get("name") is None else str(layer["name"])
        offset = 1 if has_own_node(layer) else 0
        if layer.get("class_name") == "InputLayer" or offset:
            depends[(name, 0)] = []
        for index, node in enumerate(layer.get("inbound_nodes") or []):
            if not isinstance(node, list):
                return  # Keras 3's node format: read by Keras 3's own loader
            depends[(name, index + offset)] = list(_references(node))
    for source, needed in depends.items():
        for target in needed:
            if target not in depends:
                raise ModelLoadError(
                    f"{path}: layer '{source[0]}' reads node {target[1]} of '{target[0]}', which "
                    "the model does not have; the model config is damaged."
                )
    outputs = [tuple(ref[:2]) for ref in graph.get("output_layers") or [] if isinstance(ref, list) and len(ref) >= 2]
    if any(tuple(ref) not in depends for ref in outputs):
        raise ModelLoadError(
            f"{path}: the model's outputs name a node that does not exist; the model config is damaged."
        )
    _refuse_cycles(depends, path)


def _references(node):
    """(layer, node index) of every tensor a Keras 2 node reads, positional or keyword."""
    for ref in node:
        if isinstance(ref, list) and len(ref) >= 3 and isinstance(ref[0], str) and isinstance(ref[1], int):
            yield ref[0], ref[1]
            for value in ref[3].values() if len(ref) > 3 and isinstance(ref[3], dict) else ():
                if (
                    isinstance(value, list)
                    and len(value) == 3
                    and isinstance(value[0], str)
                    and isinstance(value[1], int)
                ):
                    yield value[0], value[1]


def _refuse_cycles(depends: dict, path) -> None:
    state = {}  # node → "open" while its inputs are being followed, "done" after
    for start in depends:
        stack = [(start, iter(depends[start]))]
        state.setdefault(start, "open")
        while stack:
            current, pending = stack[-1]
            following = next(pending, None)
            if following is None:
                state[current] = "done"
                stack.pop()
            elif state.get(following) == "open":
                raise ModelLoadError(
                    f"{path}: layer '{following[0]}' depends on its own output; the model config is damaged."
                )
            elif following not in state:
                state[following] = "open"
                stack.append((following, iter(depends[following])))


def layer_class_names(config: dict) -> set:
    """Every class name in the config tree (layers, wrappers' layers, nested models)."""
    return {
        node["class_name"]
        for node, _ in _walk(config, "model")
        if isinstance(node, dict) and isinstance(node.get("class_name"), str)
    }


def _walk(config, path):
    """(value, depth) for every dict, list and string in the tree; iterative, depth bounded."""
    limit = limits.NESTING_DEPTH.value
    stack = [(config, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            raise ModelLoadError(
                f"{path} has a model config nested over {limit} levels deep; it is not a "
                f"model Keras writes. Raise {limits.NESTING_DEPTH.variable} if it is genuine."
            )
        yield node, depth
        if isinstance(node, dict):
            stack.extend((value, depth + 1) for value in node.values())
        elif isinstance(node, list):
            stack.extend((value, depth + 1) for value in node)


def _is_bytecode(text: str) -> bool:
    if len(text) < 40 or not _BASE64_TEXT.fullmatch(text):
        return False
    try:
        head = base64.b64decode("".join(text.split())[:8])
    except (binascii.Error, ValueError):
        return False
    return head[:1] in (b"c", b"\xe3")


def _refuse_side_effect_op(node: dict, path) -> None:
    """A `tf.*` call stored by name runs whatever TensorFlow function the file names when the graph
    runs: one that reaches files, Python or the process is code from the file."""
    config = node.get("config") if isinstance(node.get("config"), dict) else {}
    function = str(config.get("function", ""))
    if set(function.replace("tf.", "", 1).split(".")) & _SIDE_EFFECT_TF_NAMES:
        raise UnsafeModelError(
            f"{path} calls tf.{function} ('{_object_name(node)}'), which acts outside the model (files, Python "
            "or the process) when it runs. Pass --trust_model_code only if you trust where this model came from."
        )


def _names_foreign_function(node: dict) -> bool:
    """Keras 3 stores a function by module and name; only Keras' own modules are safe to import."""
    if node.get("class_name") != "function":
        return False
    module = str(node.get("module") or "")
    return not (module == "keras" or module.startswith("keras."))


def _readable(class_name: str) -> str:
    return "Lambda layer" if class_name == "Lambda" else f"{class_name} object"


def _object_name(node: dict) -> str:
    config = node.get("config")
    if isinstance(config, dict) and isinstance(config.get("name"), str):
        return config["name"]
    return str(node.get("name", "?"))


def _check_declared_shapes(node: dict, path) -> None:
    for key in _SHAPE_KEYS:
        shape = node.get(key)
        if not isinstance(shape, list):
            continue
        elements = 1
        for dim in shape[1:]:
            if dim is None:
                continue
            if not isinstance(dim, int) or isinstance(dim, bool) or dim < 0:
                raise ModelLoadError(
                    f"{path} declares an input of shape {shape}: dimensions must be "
                    "non-negative whole numbers (or None)."
                )
            elements *= dim
        limits.INPUT_ELEMENTS.check(elements, f"{path} (input shape {shape})", ModelLoadError, unit="elements")


def _known_class_names(saved_by_keras3: bool, quantize_aware: bool) -> set:
    tf_keras = _keras.tf_keras()
    modules = [getattr(tf_keras, name) for name in _NAMESPACES]
    names = MODEL_CLASSES | _TF_OP_CLASSES | QAT_CLASSES | _KERAS3_VALUE_CLASSES
    if saved_by_keras3:
        keras = _keras.keras3()
        modules += [getattr(keras, name) for name in _NAMESPACES]
        names |= set(NUMBER_OPERATIONS)  # Keras's own operations, rewritten as tf_keras layers
        names |= set(_keras.application_layers())  # Keras's own, in both libraries' applications
    names |= {name for module in modules for name, value in vars(module).items() if inspect.isclass(value)}
    if quantize_aware:
        for objects in _keras.tfmot().quantization.keras.quantize_scope().custom_objects:
            names |= set(objects)
    return names


def _read_h5_config(path: Path):
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            if "model_config" not in handle.attrs:
                raise ModelLoadError(
                    f"{path} holds no model config (weights only?). Save the whole model with model.save()."
                )
            limits.CONFIG_BYTES.check(handle.attrs.get_id("model_config").get_storage_size(), path, ModelLoadError)
            limits.WEIGHT_BYTES.check(_h5_declared_bytes(handle, path), path, ModelLoadError)
            raw_config = handle.attrs["model_config"]
            version = handle.attrs.get("keras_version", "")
    except (OSError, RuntimeError, KeyError, TypeError):
        raise ModelLoadError(
            f"{path} cannot be read as HDF5: the file is truncated or not a Keras .h5 model."
        ) from None
    version = version.decode() if isinstance(version, bytes) else str(version)
    return _parse_json(raw_config, path), version.startswith("3.")


def _h5_declared_bytes(handle, path) -> int:
    """What the stored datasets would take in memory, from their headers alone."""
    import h5py

    sizes = []

    def add(_, item):
        if len(sizes) > _MAX_ARCHIVE_MEMBERS:
            raise ModelLoadError(f"{path} holds over {_MAX_ARCHIVE_MEMBERS:,} objects; not a Keras model file.")
        if isinstance(item, h5py.Dataset):
            count = 1
            for dim in item.shape or ():
                count *= dim
            sizes.append(count * item.dtype.itemsize)

    handle.visititems(add)
    return sum(sizes)


def _read_keras_zip_config(path: Path) -> tuple:
    """(config, saved by Keras 3?): tf_keras writes .keras archives too, with a 2.x keras_version."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if len(members) > _MAX_ARCHIVE_MEMBERS:
                raise ModelLoadError(f"{path} holds {len(members):,} archive members; not a .keras model.")
            for member in members:
                _check_member(member, path)
            config = archive.getinfo("config.json")
            limits.CONFIG_BYTES.check(config.file_size, f"{path} (config.json)", ModelLoadError)
            return _parse_json(archive.read(config), path), not _written_by_keras2(archive, path)
    except (zipfile.BadZipFile, KeyError, OSError, EOFError, NotImplementedError, RuntimeError):
        raise ModelLoadError(
            f"{path} is not a readable .keras archive (truncated, or no config.json inside)."
        ) from None


def _written_by_keras2(archive: zipfile.ZipFile, path: Path) -> bool:
    if "metadata.json" not in archive.namelist():
        return False
    metadata = archive.getinfo("metadata.json")
    limits.CONFIG_BYTES.check(metadata.file_size, f"{path} (metadata.json)", ModelLoadError)
    version = _parse_json(archive.read(metadata), path)
    return isinstance(version, dict) and str(version.get("keras_version", "")).startswith("2.")


def _check_member(member: zipfile.ZipInfo, path: Path) -> None:
    where = f"{path} ({member.filename})"
    limits.WEIGHT_BYTES.check(member.file_size, where, ModelLoadError)
    if member.file_size > (1 << 20):
        ratio = member.file_size // max(member.compress_size, 1)
        limits.COMPRESSION_RATIO.check(ratio, where, ModelLoadError, unit=": 1")


def _read_saved_model_config(path: Path) -> dict:
    """The layer classes of a tf_keras SavedModel, from its Keras metadata (either place it is kept)."""
    nodes = keras_metadata_nodes(path)
    if not nodes:
        raise ModelLoadError(
            f"{path} is a SavedModel without Keras metadata (e.g. from Keras 3 model.export()): only "
            "its serving signature can be converted, and this command needs the Keras model. Save it as "
            ".keras or .h5 instead."
        )
    layers = []
    for identifier, raw in nodes:
        entry = _parse_json(raw, path) if raw else {}
        if identifier in _SAVED_MODEL_LAYERS and entry.get("class_name") not in MODEL_CLASSES:
            layers.append(entry)
    return {"class_name": "Functional", "config": {"layers": layers}}


def keras_metadata_nodes(path: Path) -> list:
    """(identifier, metadata JSON) of each Keras object a SavedModel folder describes: from
    keras_metadata.pb (TF 2.5 and later), else from the object graph in saved_model.pb, where
    TF 2.4 and earlier kept it. Empty for a SavedModel with no Keras metadata at all."""
    if not (path / "saved_model.pb").exists():
        raise ModelLoadError(
            f"{path} is a folder, not a model file or SavedModel. Pass the .h5/.keras file "
            "or the SavedModel folder itself."
        )
    metadata_path = path / "keras_metadata.pb"
    if metadata_path.exists():
        limits.check_input_file(metadata_path, "Keras metadata", ModelLoadError)
        limits.CONFIG_BYTES.check(metadata_path.stat().st_size, metadata_path, ModelLoadError)
        _keras.tf_keras()
        from tf_keras.protobuf import saved_metadata_pb2

        metadata = saved_metadata_pb2.SavedMetadata.FromString(metadata_path.read_bytes())
        return [(node.identifier, node.metadata) for node in metadata.nodes]
    object_graph = read_saved_model(path).meta_graphs[0].object_graph_def
    return [
        (node.user_object.identifier, node.user_object.metadata)
        for node in object_graph.nodes
        if node.WhichOneof("kind") == "user_object"
        and node.user_object.identifier.startswith("_tf_keras_")
        and node.user_object.metadata  # tf.saved_model.save() of a Keras model names the objects, describes none
    ]


def read_saved_model(path: Path):
    """The parsed saved_model.pb (graphs, functions, signatures), its size bounded first."""
    graph_path = limits.check_input_file(path / "saved_model.pb", "SavedModel graph", ModelLoadError)
    limits.WEIGHT_BYTES.check(graph_path.stat().st_size, graph_path, ModelLoadError)
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    try:
        saved_model = saved_model_pb2.SavedModel.FromString(graph_path.read_bytes())
    except (DecodeError, RecursionError):
        raise ModelLoadError(f"{graph_path} is damaged (not a SavedModel protocol buffer).") from None
    if not saved_model.meta_graphs:
        raise ModelLoadError(f"{graph_path} holds no graph; not a SavedModel.")
    return saved_model


def _parse_json(raw, path) -> dict:
    try:
        config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    except RecursionError:
        raise ModelLoadError(f"{path} has a model config nested too deeply to be a Keras model.") from None
    except (ValueError, UnicodeDecodeError, TypeError):
        raise ModelLoadError(f"{path} has a corrupt model config (not JSON).") from None
    if not isinstance(config, dict):
        raise ModelLoadError(f"{path} has a model config that is not a JSON object.")
    return config
