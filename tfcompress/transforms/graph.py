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
    "fixed_width_layers",
    "channel_reshapes",
    "held_config",
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


def fixed_width_layers(model) -> set:
    """Names of the layers whose units or filters a narrower copy of `model` must keep: those that set an
    output's size, and those whose output an elementwise merge (Add, Multiply, ...) meets with a tensor of a
    width that stays: the model's input (a Transformer's residual stream) or a kept layer's output."""
    keras, tf = _keras.tf_keras(), _keras.tensorflow()
    layers = keras.layers
    merges = [layer for layer in model.layers
              if isinstance(layer, (layers.Add, layers.Subtract, layers.Multiply, layers.Average, layers.Maximum,
                                    layers.Minimum))]  # fmt: skip
    kept = {layer.name for layer in output_units_layers(model)}
    sources = {merge.name: set().union(*map(_width_sources, tf.nest.flatten(merge.input))) for merge in merges}
    changed = True
    while changed:
        changed = False
        for merged in sources.values():
            if _INPUT in merged or merged & kept:
                widened = merged - kept - {_INPUT}
                kept |= widened
                changed = changed or bool(widened)
    return kept


def channel_reshapes(model) -> dict:
    """Reshape layers that keep their input's last dimension (a squeeze-excite block's (1, 1, C)), each
    with the one layer whose units or filters set it: a narrower copy must narrow their target too."""
    keras = _keras.tf_keras()
    found = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.Reshape) and layer.target_shape[-1] == layer.input.shape[-1]:
            sources = _width_sources(layer.input)
            if len(sources) == 1 and _INPUT not in sources:
                found[layer.name] = sources.pop()
    return found


_INPUT = None  # a width source: the model's input


def _width_sources(tensor) -> set:
    """The layers whose units or filters set `tensor`'s last dimension (`_INPUT`: the model's input), found
    back through layers that keep it (activations, normalization, merges, a MultiHeadAttention's query)."""
    keras, tf = _keras.tf_keras(), _keras.tensorflow()
    layer = tensor._keras_history.layer
    if isinstance(layer, keras.layers.InputLayer):
        return {_INPUT}
    if _sets_width(layer.get_config()):
        return {layer.name}
    inbound = tf.nest.flatten(layer.input)
    if isinstance(layer, keras.layers.MultiHeadAttention) or len(inbound) == 1:
        return _width_sources(inbound[0])
    return set().union(*map(_width_sources, inbound))


def held_config(config: dict) -> dict:
    """The config of the layer a wrapper (TimeDistributed, Bidirectional) holds, else `config` itself."""
    wrapped = config.get("layer")
    if isinstance(wrapped, dict) and isinstance(wrapped.get("config"), dict):
        return held_config(wrapped["config"])
    return config


def _sets_width(config: dict) -> bool:
    return bool({"units", "filters"} & set(held_config(config)))


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
