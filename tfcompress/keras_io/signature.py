"""SavedModels without Keras metadata (Keras 3 `model.export()`, TF Hub-style): the serving signature as a model.

There are no layers to train, so only post-training conversion applies; the signature's own outputs
are what the conversion is verified against. The graph is read before it is loaded: a serving
function that reaches ops touching files or running Python is refused unless the user trusts it.
"""

from pathlib import Path

from tfcompress import _keras
from tfcompress.errors import ModelLoadError, UnsafeModelError
from tfcompress.keras_io.config import keras_metadata_nodes, read_saved_model

__all__ = ["SERVING_SIGNATURE", "has_serving_signature_only", "load_serving_signature", "is_signature_model"]

SERVING_SIGNATURE = "serving_default"
_MARK = "_tfcompress_serving_signature"
# Ops a serving function has no reason to hold: they read or write files, or call back into Python.
_UNSAFE_OPS = {
    "PyFunc",
    "PyFuncStateless",
    "EagerPyFunc",
    "ReadFile",
    "WriteFile",
    "MatchingFiles",
    "Save",
    "SaveV2",
    "SaveSlices",
    "MergeV2Checkpoints",
    "Restore",
    "RestoreV2",
    "RestoreSlice",
    "ShardedFilename",
    "CreateSummaryFileWriter",
    "ImmutableConst",
    "TFRecordDataset",
    "TFRecordDatasetV2",
    "TextLineDataset",
    "FixedLengthRecordDataset",
    "FixedLengthRecordDatasetV2",
}


def has_serving_signature_only(path: Path) -> bool:
    """Whether a SavedModel folder describes no Keras objects (so tf_keras cannot rebuild it)."""
    return path.is_dir() and not keras_metadata_nodes(path)


def is_signature_model(model) -> bool:
    """Whether a model is a serving signature wrapped by `load_serving_signature` (nothing to train)."""
    return bool(getattr(model, _MARK, False))


def load_serving_signature(path: Path, *, trust_model_code: bool = False):
    """A one-layer tf_keras model that calls the SavedModel's serving signature: one float input, one output."""
    _check_serving_ops(path, trust_model_code)
    tf, tf_keras = _keras.tensorflow(), _keras.tf_keras()
    loaded = tf.saved_model.load(str(path))
    if SERVING_SIGNATURE not in loaded.signatures:
        raise ModelLoadError(
            f"{path} has no '{SERVING_SIGNATURE}' signature (it has: {', '.join(loaded.signatures) or 'none'}); "
            "export the model with a serving signature."
        )
    function = loaded.signatures[SERVING_SIGNATURE]
    input_specs, output_specs = function.structured_input_signature[1], function.structured_outputs
    if len(input_specs) != 1 or len(output_specs) != 1:
        raise ModelLoadError(
            f"{path}: its serving signature has {len(input_specs)} input(s) and {len(output_specs)} output(s); "
            "tfcompress converts signatures with one input and one output."
        )
    ((input_name, spec),) = input_specs.items()
    (output_name,) = output_specs
    if not spec.dtype.is_floating:
        raise ModelLoadError(f"{path}: the serving signature takes {spec.dtype.name} inputs; tfcompress feeds floats.")

    class ServingSignature(tf_keras.layers.Layer):
        """Calls the signature; holds the loaded SavedModel so its variables are saved with the model."""

        def __init__(self):
            super().__init__(name="serving_signature", trainable=False)
            self.saved_model = loaded

        def call(self, inputs):
            return function(**{input_name: inputs})[output_name]

    inputs = tf_keras.Input(spec.shape[1:], batch_size=spec.shape[0], dtype=spec.dtype, name=input_name)
    model = tf_keras.Model(inputs, ServingSignature()(inputs), name=path.name)
    setattr(model, _MARK, True)
    return model


def _check_serving_ops(path: Path, trust_model_code: bool) -> None:
    if trust_model_code:
        return
    meta_graph = read_saved_model(path).meta_graphs[0]
    library = {function.signature.name: function for function in meta_graph.graph_def.library.function}
    roots = _signature_functions(meta_graph)
    ops = _reachable_ops(roots or library, library)
    if not roots:  # a TF1 SavedModel: its signatures run the graph itself
        ops |= {node.op for node in meta_graph.graph_def.node}
    unsafe = sorted(ops & _UNSAFE_OPS)
    if unsafe:
        raise UnsafeModelError(
            f"{path}: its serving function uses {', '.join(unsafe)}, which read or write files or run Python. "
            "Pass --trust_model_code only if you trust where this model came from."
        )


def _signature_functions(meta_graph) -> list:
    """Names of the functions the object graph's signatures call (none for a TF1 SavedModel)."""
    nodes = meta_graph.object_graph_def.nodes
    names = []
    for child in nodes[0].children if nodes else ():
        if child.local_name == "signatures":
            for signature in nodes[child.node_id].children:
                node = nodes[signature.node_id]
                names.append(node.bare_concrete_function.concrete_function_name)
                names.extend(node.function.concrete_functions)
    return [name for name in names if name]


def _reachable_ops(roots, library: dict) -> set:
    """Every op type the `roots` functions run, following calls into other functions."""
    ops, seen, pending = set(), set(), list(roots)
    while pending:
        name = pending.pop()
        if name in seen or name not in library:
            continue
        seen.add(name)
        for node in library[name].node_def:
            ops.add(node.op)
            pending.append(node.op)  # a call of a library function by name
            for attr in node.attr.values():
                pending.append(attr.func.name)
                pending.extend(function.name for function in attr.list.func)
    return ops
