"""Puts a converted model's inputs and outputs in the Keras model's order.

The converter orders a model's inputs and outputs by how its signature sorts their
names, not as the Keras model lists them: a model built as `Model([image, meta],
[label, box])` may come out as inputs (meta, image) and outputs (box, label). Every
caller that sets inputs by position (TFLite Micro's `set_input(data, 0)`, a C program)
then feeds the wrong tensor. The inputs and outputs are two int32 vectors of tensor
indices in the flatbuffer; they are permuted in place, so nothing else changes.
"""

import numpy as np

from tfcompress.runtime.inspect import inspect_tflite

__all__ = ["in_keras_order", "keras_names"]

# Where the schema's SubGraph table keeps its `inputs` and `outputs` vectors (vtable offsets).
_INPUTS_FIELD, _OUTPUTS_FIELD = 6, 8


def keras_names(model) -> tuple:
    """(input names, output names) of a functional tf_keras model, in its own order; a subclassed
    model has none (it is converted with its own order)."""
    if model.inputs is None:
        return (), ()
    return tuple(model.input_names), tuple(model.output_names)


def in_keras_order(model_bytes: bytes, input_names, output_names) -> bytes:
    """`model_bytes` with its inputs and outputs in the order of `input_names` / `output_names`, which
    its signature uses as names (export/tflite.py names a fixed-batch conversion's so too)."""
    if len(input_names) < 2 and len(output_names) < 2:
        return model_bytes
    from ai_edge_litert import schema_py_generated as schema

    summary = inspect_tflite(model_bytes)
    subgraph = schema.Model.GetRootAs(model_bytes, 0).Subgraphs(0)
    patched = bytearray(model_bytes)
    for keys, names, field in (
        (summary.input_keys, input_names, _INPUTS_FIELD),
        (summary.output_keys, output_names, _OUTPUTS_FIELD),
    ):
        order = _keras_order(keys, names)
        if order is None:
            continue
        start = subgraph._tab.Vector(subgraph._tab.Offset(field))
        indices = np.frombuffer(bytes(patched[start : start + 4 * len(keys)]), "<i4")
        patched[start : start + 4 * len(keys)] = indices[order].astype("<i4").tobytes()
    return bytes(patched)


def _keras_order(keys, names):
    """For each Keras input (output), its position among the converted ones; None when unchanged or unknown."""
    positions = {key: position for position, key in enumerate(keys)}
    if len(keys) < 2 or len(positions) != len(keys) or set(positions) != set(names):
        return None
    order = [positions[name] for name in names]
    return None if order == list(range(len(keys))) else np.asarray(order)
