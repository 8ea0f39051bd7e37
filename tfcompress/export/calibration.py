"""int8 with the calibration adjusted: clipped ranges, a fixed input range, layers kept float.

The converter calibrates and quantizes in one call; here the two are split, so the
activation ranges it recorded can be changed in between (percentile clipping of
outliers, an input range the user knows) and chosen layers can be left out of
quantization (the quantizer's denylist). The min-max default never comes here.
"""

import numpy as np

from tfcompress import _keras
from tfcompress.errors import OptionError
from tfcompress._io.native import captured_output

__all__ = ["quantize_with_adjusted_calibration", "calibrate_only", "layer_of_tensor", "op_output_names"]

_PERCENTILE_SAMPLES = 100           # calibration inputs whose activations give the percentiles
_VALUES_PER_SAMPLE = 10_000         # activation values kept per tensor and input (a seeded subsample)


def quantize_with_adjusted_calibration(converter, options, calibration, layer_names) -> bytes:
    """int8 from a converter already set up for int8 (see export/tflite.py), the ranges adjusted first."""
    tf = _keras.tensorflow()
    from tensorflow.lite.python import convert
    from tensorflow.lite.tools import flatbuffer_utils

    calibrated = calibrate_only(converter)
    model = flatbuffer_utils.convert_bytearray_to_object(calibrated)
    ranges = {}
    if options.calibration_method == "percentile":
        ranges.update(_percentile_ranges(calibrated, model, calibration, options.percentile))
    if options.input_range is not None:
        ranges.update({index: tuple(options.input_range) for index in model.subgraphs[0].inputs})
    _set_ranges(model, ranges)
    io_type = {"float32": tf.float32, "int8": tf.int8, "uint8": tf.uint8}[options.io_type]
    quantized = convert.mlir_quantize(
        bytes(flatbuffer_utils.convert_object_to_bytearray(model)), input_data_type=io_type,
        output_data_type=io_type, disable_per_channel_for_dense_layers=options.per_tensor_dense,
        denylisted_nodes=_float_nodes(model, options.keep_float, layer_names))
    return bytes(convert.deduplicate_readonly_buffers(quantized))


def calibrate_only(converter) -> bytes:
    """The float model with the activation ranges the converter recorded on its representative data."""
    converter._experimental_calibrate_only = True   # no public switch in TF 2.21; the QuantizationDebugger uses it
    return bytes(converter.convert())


def op_output_names(model) -> list:
    """Names of the tensors the main subgraph's ops write (what the quantizer's denylist names)."""
    subgraph = model.subgraphs[0]
    return [subgraph.tensors[index].name.decode() for op in subgraph.operators for index in op.outputs]


def _op_output_layers(model, layer_names) -> list:
    """(op output name, Keras layer) in graph order. An op whose output names no layer belongs
    to the op before it: a Dense layer's softmax is written under the model's output name."""
    owners, current = [], None
    for name in op_output_names(model):
        layer = layer_of_tensor(name, layer_names)
        current = layer if layer in layer_names else current
        owners.append((name, current))
    return owners


def layer_of_tensor(tensor_name: str, layer_names) -> str:
    """The Keras layer a converted tensor comes from ("model/conv2d_1/Relu;..." → "conv2d_1")."""
    for part in tensor_name.split(";"):
        for component in part.split("/")[1:]:
            if component in layer_names:
                return component
    return tensor_name


def _float_nodes(model, keep_float, layer_names) -> list:
    if not keep_float:
        return []
    unknown = sorted(set(keep_float) - set(layer_names))
    if unknown:
        raise OptionError(f"keep_float names layers the model does not have: {', '.join(unknown)}. "
                          f"Its layers: {', '.join(layer_names)}.")
    nodes = [name for name, layer in _op_output_layers(model, layer_names) if layer in keep_float]
    if not nodes:
        raise OptionError(f"keep_float: the layers {', '.join(keep_float)} produced no op in the converted model "
                          "(folded into a neighbour); name the layer the op is written under (tfcompress analyze).")
    return nodes


def _percentile_ranges(calibrated: bytes, model, calibration, percentile: float) -> dict:
    """tensor index → (low, high): the activation values' percentiles, never wider than min-max."""
    if not 50.0 < percentile < 100.0:
        raise OptionError(f"percentile must be between 50 and 100. Received: percentile={percentile}")
    from ai_edge_litert.interpreter import Interpreter

    subgraph = model.subgraphs[0]
    recorded = [index for index in _activation_tensors(model) if index not in subgraph.inputs]
    with captured_output():   # LiteRT announces its XNNPACK delegate from C++
        interpreter = Interpreter(model_content=calibrated, experimental_preserve_all_tensors=True)
        interpreter.allocate_tensors()
    input_index = interpreter.get_input_details()[0]["index"]
    rng = np.random.default_rng(0)
    values = {index: [] for index in recorded}
    for sample in calibration.x[:_PERCENTILE_SAMPLES]:
        interpreter.set_tensor(input_index, sample[np.newaxis].astype(np.float32))
        interpreter.invoke()
        for index in recorded:
            flat = interpreter.get_tensor(index).ravel()
            if flat.size > _VALUES_PER_SAMPLE:
                flat = rng.choice(flat, _VALUES_PER_SAMPLE, replace=False)
            values[index].append(flat)
    ranges = {}
    for index, chunks in values.items():
        quantization = subgraph.tensors[index].quantization
        low, high = np.percentile(np.concatenate(chunks), [100.0 - percentile, percentile])
        ranges[index] = (max(float(low), float(quantization.min[0])), min(float(high), float(quantization.max[0])))
    return ranges


def _activation_tensors(model) -> list:
    """Tensors the calibrator recorded a range for (activations, not weights)."""
    subgraph = model.subgraphs[0]
    return [index for index, tensor in enumerate(subgraph.tensors)
            if tensor.quantization is not None and tensor.quantization.min is not None
            and len(tensor.quantization.min) == 1 and _holds_no_data(model.buffers[tensor.buffer])]


def _holds_no_data(buffer) -> bool:
    return buffer.data is None or len(buffer.data) == 0


def _set_ranges(model, ranges: dict) -> None:
    tensors = model.subgraphs[0].tensors
    for index, (low, high) in ranges.items():
        if tensors[index].quantization is None or tensors[index].quantization.min is None:
            continue
        tensors[index].quantization.min = [min(float(low), 0.0)]   # a range must hold zero
        tensors[index].quantization.max = [max(float(high), 0.0)]
