"""Graph surgery the training-time steps share: nested models flattened into one, layers picked by name.

tfmot wraps layers one by one and cannot see inside a model used as a layer
(model-optimization#1139); flattening first lets QAT and pruning reach every layer.
"""

import re
from typing import Optional

from tfcompress import _keras
from tfcompress.errors import OptionError

__all__ = [
    "recurrent_layers",
    "flatten_nested",
    "rebuild",
    "is_graph_model",
    "check_layer_pattern",
    "final_layer",
    "output_units_layers",
    "copy_model",
]


# Recurrent layers the converter turns into one fused op; the others stay a WHILE loop.
_FUSED_RECURRENT = {"LSTM"}
_RECURRENT = {"LSTM", "GRU", "SimpleRNN", "RNN", "ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D"}


def recurrent_layers(model) -> dict:
    """name → fused (True for one fused op, False for a loop) of every recurrent layer, at any depth.

    Their conversion needs a fixed batch size (a loop over a dynamic batch has no static shape)."""
    found = {}
    for layer in model.layers:
        inner = getattr(layer, "layer", None)  # Bidirectional, TimeDistributed
        kind = type(inner if inner is not None else layer).__name__
        if kind in _RECURRENT:
            found[layer.name] = kind in _FUSED_RECURRENT
        elif hasattr(layer, "layers"):
            found.update(recurrent_layers(layer))
    return found


def check_layer_pattern(layers: Optional[str]) -> None:
    """The `layers` option of prune and cluster: a regular expression over layer names."""
    if layers is None:
        return
    try:
        re.compile(layers)
    except re.error as error:
        raise OptionError(f"layers must be a regular expression ({error}). Received: layers={layers!r}") from None


def is_graph_model(model) -> bool:
    """Sequential or Functional (a graph of layers), not subclassed."""
    return bool(getattr(model, "_is_graph_network", False))


def final_layer(model):
    """The layer that produces a single-output graph model's output."""
    return model.outputs[0]._keras_history.layer


def output_units_layers(model) -> tuple:
    """For each output, the layer whose units or filters set its size (found back through Softmax,
    BatchNorm, ...; a TimeDistributed or Bidirectional layer sets it by the layer it holds)."""
    tf = _keras.tensorflow()
    found = []
    for tensor in model.outputs:
        layer = tensor._keras_history.layer
        while not _sets_width(layer.get_config()):
            inbound = tf.nest.flatten(layer.inbound_nodes[0].inbound_layers)
            if len(inbound) != 1:
                break
            layer = inbound[0]
        found.append(layer)
    return tuple(found)


def _sets_width(config: dict) -> bool:
    wrapped = config.get("layer")
    if isinstance(wrapped, dict) and isinstance(wrapped.get("config"), dict):
        return _sets_width(wrapped["config"])
    return bool({"units", "filters"} & set(config))


def copy_model(model):
    """A copy with its own layers and the same weights, so training it leaves `model` alone."""
    copy = _keras.tf_keras().models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def flatten_nested(model):
    """The same layers (same weights) in one flat Functional model."""
    keras = _keras.tf_keras()
    if not any(isinstance(layer, keras.Model) for layer in model.layers):
        return model
    return rebuild(model)


def rebuild(model, replacements: Optional[dict] = None):
    """`model`'s layers called again into a new flat Functional model (the same weights).

    `replacements` maps a layer name to a callable used in that layer's place, so a
    transform can swap one layer for several while everything downstream stays wired.
    """
    keras = _keras.tf_keras()
    inputs = [keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t.name.split(":")[0]) for t in model.inputs]
    outputs = _call_graph(model, inputs, keras, replacements or {})
    return keras.Model(
        inputs if len(inputs) > 1 else inputs[0], outputs if len(outputs) > 1 else outputs[0], name=model.name
    )


def _call_graph(model, inputs, keras, replacements) -> list:
    """Calls `model`'s layers on `inputs` node by node; nested models are expanded."""
    tf = _keras.tensorflow()
    tensors = {id(original): new for original, new in zip(model.inputs, inputs)}

    def mapped(value):
        return tensors[id(value)] if id(value) in tensors else value

    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            layer = node.layer
            if isinstance(layer, keras.layers.InputLayer):
                continue
            args = tf.nest.map_structure(mapped, node.call_args)
            kwargs = tf.nest.map_structure(mapped, node.call_kwargs)
            if isinstance(layer, keras.Model) and is_graph_model(layer):
                outputs = _call_graph(layer, tf.nest.flatten(args[0]), keras, replacements)
            elif layer.name in replacements:
                outputs = replacements[layer.name](*args, **kwargs)
            else:
                outputs = layer(*args, **kwargs)
            for original, new in zip(tf.nest.flatten(node.outputs), tf.nest.flatten(outputs)):
                tensors[id(original)] = new
    return [tensors[id(t)] for t in model.outputs]
