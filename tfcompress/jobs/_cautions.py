"""What a conversion warns about that the user did not ask: the model or its data make its numbers
mean less than they seem (an output that never changes, labels that do not fit the task, data scaled
twice), or change how it must be converted (recurrent layers at batch 1)."""

import dataclasses
from typing import Optional

from absl import logging

from tfcompress.data import Dataset
from tfcompress.export.tflite import ConvertOptions
from tfcompress.export.unroll import loops
from tfcompress.runtime import metrics
from tfcompress.runtime.interpreter import per_output
from tfcompress.runtime.task import QUANTITIES
from tfcompress.transforms.cluster import clustered_dense_layers
from tfcompress.transforms.graph import recurrent_layers

__all__ = [
    "for_recurrent_layers",
    "scaled_twice",
    "clusters_spread",
    "state_between_invokes",
    "meaningless_measures",
]


def for_recurrent_layers(model, options: ConvertOptions) -> tuple:
    """(the options, warnings): a recurrent model converts at batch 1, as its loop needs a fixed batch,
    and its loops are unrolled for a calibrated precision (export/unroll.py); both said aloud."""
    recurrent, warnings = recurrent_layers(model), []
    if recurrent and options.batch_size is None:
        warnings.append(
            f"converted at batch 1 for the recurrent layers ({', '.join(recurrent)}): their loop needs a fixed batch"
        )
        options = dataclasses.replace(options, batch_size=1)
    if options.needs_calibration and loops(model):
        warnings.append(
            f"unrolled {', '.join(loops(model))} over their timesteps for {options.precision}: calibrating a "
            "recurrent loop crashes TensorFlow 2.21's converter; the unrolled model has the same weights and "
            "outputs, but ops for every step, so its file is larger than the loop's"
        )
    for message in warnings:
        logging.warning(message)
    return options, warnings


def scaled_twice(model, applied: Optional[dict]) -> tuple:
    """A warning when uint8 data was divided by 255 by default for a model whose first layer rescales
    its input itself: such a model was trained on raw 0-255 values."""
    if not applied or "per_input" in applied or not applied["default_scale"] or applied["stored_dtype"] != "uint8":
        return ()
    first = _first_layer(model)
    if type(first).__name__ not in ("Rescaling", "Normalization"):
        return ()
    message = (
        f"the model's first layer '{first.name}' ({type(first).__name__}) scales its input, and the uint8 "
        "data was also divided by 255 (the default for uint8); pass --input_scale 1 if the model expects "
        "raw 0-255 values"
    )
    logging.warning(message)
    return (message,)


def state_between_invokes(summary) -> tuple:
    """A warning when the converted model keeps state from one invoke to the next (a fused LSTM's
    variable tensors): Keras starts each sample afresh, and an app that does not reset them carries the
    last sequence's state into the next (an LSTM sequence regressor: 31.7% error against Keras, 1.5%
    reset; tfcompress's measurements reset them)."""
    state = set(summary.state_tensors)
    if not state:
        return ()
    keepers = dict.fromkeys(op.name for op in summary.operators if state & set(op.input_names))
    message = (
        f"{', '.join(keepers) or 'the model'} keeps state between invokes in {len(state)} variable tensors: "
        "reset them before each new sequence (LiteRT: interpreter.reset_all_variables(); TFLite Micro: "
        "interpreter.Reset()), or each one starts from the previous one's state, unlike in Keras"
    )
    logging.warning(message)
    return (message,)


def clusters_spread(model, options: ConvertOptions) -> tuple:
    """A warning when clustered Dense kernels are quantized with a scale per output channel: each
    channel rescales the shared values, so they become many distinct bytes and the file gzips larger
    (a LeNet-300-100 clustered to 16 values: 160,183 B against 138,733 B with --per_tensor_dense)."""
    if not options.needs_calibration or options.per_tensor_dense:
        return ()
    clustered = clustered_dense_layers(model)
    if not clustered:
        return ()
    message = (
        f"the Dense layers {', '.join(clustered)} are clustered, and {options.precision} gives each of their "
        "output channels its own scale, which turns the shared values into many: the file gzips larger than "
        "it needs to; pass --per_tensor_dense to keep them shared"
    )
    logging.warning(message)
    return (message,)


def _first_layer(model):
    """The first layer that computes, looking inside nested models."""
    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    if not layers:
        return None
    return _first_layer(layers[0]) if hasattr(layers[0], "layers") else layers[0]


def meaningless_measures(keras_outputs, evaluation: Optional[Dataset], tasks: tuple, task_told: bool) -> tuple:
    """Warnings for measures that would mislead: a constant reference, labels the task cannot use.
    `tasks`: one per output; `task_told`: whether the user said how they read."""
    found = [metrics.constant_output(outputs) for outputs in per_output(keras_outputs)]
    labelled = evaluation is not None and evaluation.y is not None
    if labelled and len(tasks) > 1:
        found.append(
            f"the eval labels are not used: the model has {len(tasks)} outputs, and tfcompress does not "
            "yet take labels per output; fidelity is measured for each output"
        )
    task = tasks[0]
    if labelled and len(tasks) == 1 and task in QUANTITIES:
        read = "as --task says" if task_told else "(it ends in no softmax or sigmoid)"
        hint = "" if task_told else "; if its outputs are class scores, pass --task logits"
        found.append(f"the eval labels are not used: the model's output reads as {task} {read}{hint}")
    for message in filter(None, found):
        logging.warning(message)
    return tuple(filter(None, found))
