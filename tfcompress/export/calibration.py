"""int8 with the calibration adjusted: clipped ranges, a fixed input range, layers kept float.

The converter calibrates and quantizes in one call; here the two are split, so the
activation ranges it recorded can be changed in between (percentile clipping of
outliers, an input range the user knows) and chosen layers can be left out of
quantization (the quantizer's denylist). The min-max default never comes here.
"""

import numpy as np

from tfcompress import _keras
from tfcompress.data import per_input
from tfcompress.errors import OptionError
from tfcompress.export.io_order import in_keras_order
from tfcompress.runtime.interpreter import keeping_every_tensor

__all__ = [
    "quantize_with_adjusted_calibration",
    "calibrate_only",
    "layers_of_tensor",
    "attribute_ops",
    "output_layers",
]

_PERCENTILE_SAMPLES = 100  # calibration inputs whose activations give the percentiles
_VALUES_PER_SAMPLE = 10_000  # activation values kept per tensor and input (a seeded subsample)


def quantize_with_adjusted_calibration(converter, options, calibration, layer_names, io_names) -> bytes:
    """int8 from a converter already set up for int8 (see export/tflite.py), the ranges adjusted first.
    `io_names`: the Keras (input names, output names), the order `calibration`'s arrays are in."""
    tf = _keras.tensorflow()
    from tensorflow.lite.python import convert
    from tensorflow.lite.tools import flatbuffer_utils

    calibrated = in_keras_order(calibrate_only(converter), *io_names)
    model = flatbuffer_utils.convert_bytearray_to_object(calibrated)
    ranges = {}
    if options.calibration_method == "percentile":
        ranges.update(_percentile_ranges(calibrated, model, calibration, options.percentile))
    if options.input_range is not None:
        ranges.update({index: tuple(options.input_range) for index in model.subgraphs[0].inputs})
    _set_ranges(model, ranges)
    io_type = {"float32": tf.float32, "int8": tf.int8, "uint8": tf.uint8}[options.io_type]
    quantized = convert.mlir_quantize(
        bytes(flatbuffer_utils.convert_object_to_bytearray(model)),
        input_data_type=io_type,
        output_data_type=io_type,
        disable_per_channel_for_dense_layers=options.per_tensor_dense,
        denylisted_nodes=_float_nodes(calibrated, options.keep_float, layer_names),
    )
    return bytes(convert.deduplicate_readonly_buffers(quantized))


def calibrate_only(converter) -> bytes:
    """The float model with the activation ranges the converter recorded on its representative data."""
    converter._experimental_calibrate_only = True  # no public switch in TF 2.21; the QuantizationDebugger uses it
    return bytes(converter.convert())


def layers_of_tensor(tensor_name: str, layer_names) -> tuple:
    """The Keras layers a converted tensor's name mentions, first in the graph first.

    A fused op names its parts last-first: "model/re_lu/Relu;model/batch_normalization/...;
    model/conv2d/Conv2D" → ("conv2d", "batch_normalization", "re_lu").
    """
    found = []
    for part in reversed(tensor_name.split(";")):
        layer = next((component for component in part.split("/")[1:] if component in layer_names), None)
        if layer is not None and layer not in found:
            found.append(layer)
    return tuple(found)


def attribute_ops(operators, layer_names, output_layers=None) -> list:
    """(layer, every layer fused into it) of each op, in graph order: what `check`, `analyze` and
    `keep_float` all name ops by. `operators`: runtime.inspect's OperatorInfos.

    An op's layer is the first, in the graph, of the layers its outputs name (the conv of a fused
    conv+BN+ReLU). An op whose outputs name no layer belongs to the op before it (a Dense layer's
    softmax is written under the model's output name), or, with `output_layers` (`output_layers()`),
    to the output layer whose model output it makes. An unnamed QUANTIZE or DEQUANTIZE (at the
    model's edges) belongs to no layer: (None, ()).
    """
    named = output_layers or {}
    attributed, current = [], (None, ())
    for operator in operators:
        fused = tuple(
            dict.fromkeys(
                layer
                for name in operator.output_names
                for layer in layers_of_tensor(name, layer_names) or filter(None, [named.get(name)])
            )
        )
        if fused:
            current = (fused[0], fused)
        attributed.append((None, ()) if not fused and operator.name in _EDGE_OPS else current)
    return attributed


_EDGE_OPS = {"QUANTIZE", "DEQUANTIZE"}


def output_layers(summary, layer_names) -> dict:
    """Tensor name → output layer, for the op that makes each model output (looking through a final
    DEQUANTIZE). The converter names those tensors by the signature ("StatefulPartitionedCall:0"),
    so with several output heads the op before would otherwise take a head that is not its own."""
    producers = {name: operator for operator in summary.operators for name in operator.output_names}
    found = {}
    for tensor, key in zip(summary.outputs, summary.output_keys):
        operator = producers.get(tensor.name)
        while operator is not None and operator.name in _EDGE_OPS and operator.input_names:
            operator = producers.get(operator.input_names[0])
        if operator is not None and key in layer_names:
            found.update((name, key) for name in operator.output_names)
    return found


def _float_nodes(calibrated: bytes, keep_float, layer_names) -> list:
    """The op outputs the quantizer must leave float: every op of a `keep_float` layer, fused or not."""
    from tfcompress.runtime.inspect import inspect_tflite

    if not keep_float:
        return []
    unknown = sorted(set(keep_float) - set(layer_names))
    if unknown:
        raise OptionError(
            f"keep_float names layers the model does not have: {', '.join(unknown)}. "
            f"Its layers: {', '.join(layer_names)}."
        )
    summary = inspect_tflite(calibrated)
    operators = summary.operators
    nodes = [
        name
        for operator, (_, fused) in zip(
            operators, attribute_ops(operators, layer_names, output_layers(summary, layer_names))
        )
        if set(fused) & set(keep_float)
        for name in operator.output_names
    ]
    if not nodes:
        raise OptionError(
            f"keep_float: the layers {', '.join(keep_float)} produced no op in the converted model "
            "(folded into a neighbour); name the layer the op is written under (tfcompress analyze)."
        )
    return nodes


def _percentile_ranges(calibrated: bytes, model, calibration, percentile: float) -> dict:
    """tensor index → (low, high): the activation values' percentiles, never wider than min-max."""
    if not 50.0 < percentile < 100.0:
        raise OptionError(f"percentile must be between 50 and 100. Received: percentile={percentile}")
    from ai_edge_litert.interpreter import Interpreter

    subgraph = model.subgraphs[0]
    recorded = [index for index in _activation_tensors(model) if index not in subgraph.inputs]
    interpreter = keeping_every_tensor(Interpreter, calibrated)
    input_details = interpreter.get_input_details()
    rng = np.random.default_rng(0)
    values = {index: [] for index in recorded}
    arrays = per_input(calibration.take(_PERCENTILE_SAMPLES).x)
    for sample in range(len(arrays[0])):
        for detail, array in zip(input_details, arrays):
            interpreter.set_tensor(detail["index"], array[sample : sample + 1].astype(detail["dtype"]))
        interpreter.invoke()
        for index in recorded:
            flat = interpreter.get_tensor(index).ravel()
            if flat.size > _VALUES_PER_SAMPLE:
                flat = rng.choice(flat, _VALUES_PER_SAMPLE, replace=False)
            values[index].append(flat)
    ranges = {}
    for index, chunks in values.items():
        chunk = np.concatenate(chunks)
        if not chunk.size:  # a fused LSTM's state tensors read back empty: their min-max range stays
            continue
        quantization = subgraph.tensors[index].quantization
        low, high = np.percentile(chunk, [100.0 - percentile, percentile])
        ranges[index] = (max(float(low), float(quantization.min[0])), min(float(high), float(quantization.max[0])))
    return ranges


def _activation_tensors(model) -> list:
    """Tensors the calibrator recorded a range for (activations, not weights)."""
    subgraph = model.subgraphs[0]
    return [
        index
        for index, tensor in enumerate(subgraph.tensors)
        if tensor.quantization is not None
        and tensor.quantization.min is not None
        and len(tensor.quantization.min) == 1
        and _holds_no_data(model.buffers[tensor.buffer])
    ]


def _holds_no_data(buffer) -> bool:
    return buffer.data is None or len(buffer.data) == 0


def _set_ranges(model, ranges: dict) -> None:
    tensors = model.subgraphs[0].tensors
    for index, (low, high) in ranges.items():
        if tensors[index].quantization is None or tensors[index].quantization.min is None:
            continue
        tensors[index].quantization.min = [min(float(low), 0.0)]  # a range must hold zero
        tensors[index].quantization.max = [max(float(high), 0.0)]
