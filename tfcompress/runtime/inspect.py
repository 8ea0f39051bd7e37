"""Reads a `.tflite` flatbuffer with the schema module ai-edge-litert ships.

Tells what the converter produced: which ops, which tensor types, how every tensor
is quantized, and which ops still compute in float.
"""

import collections
import dataclasses
import gzip
import struct
from typing import Optional

import numpy as np

from tfcompress._io import limits
from tfcompress.data import ModelInput
from tfcompress.errors import ModelLoadError

__all__ = [
    "TensorInfo",
    "OperatorInfo",
    "TfliteSummary",
    "read_tflite",
    "inspect_tflite",
    "io_counts",
    "constant_values",
    "constant_tensors",
    "precision_of",
    "weight_tensors",
    "file_parts",
    "is_full_integer",
    "gzip_size",
]

_FLATBUFFER_IDENTIFIER = b"TFL3"
# Ops that only move between float and integer at the model's edges.
_CONVERSION_OPS = {"QUANTIZE", "DEQUANTIZE"}
_FLOAT_TYPES = {"FLOAT32", "FLOAT16", "FLOAT64"}
# Bits per stored value of the weight types (int32 constants are biases and shapes, not weights).
_WEIGHT_BITS = {"INT4": 4, "INT8": 8, "UINT8": 8, "INT16": 16, "FLOAT16": 16, "FLOAT32": 32}
# Flatbuffer buffers are little-endian.
_NUMPY_TYPES = {
    name: np.dtype(name).newbyteorder("<")
    for name in ("int8", "uint8", "int16", "int32", "int64", "float16", "float32")
}


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple
    size_bytes: int  # bytes stored in the flatbuffer (0 for activations)
    scales: tuple  # one per tensor, or one per channel
    zero_points: tuple
    quantized_dimension: int
    is_variable: bool = False  # state kept from one invoke to the next (a fused LSTM's)

    @property
    def is_constant(self) -> bool:
        return self.size_bytes > 0

    def interpreter_detail(self) -> dict:
        """The tensor as LiteRT's get_input_details() describes it, for quantize()."""
        return {
            "name": self.name,
            "dtype": np.dtype(self.dtype.lower()),
            "shape": self.shape,
            "quantization": (self.scales[0], self.zero_points[0]) if self.scales else (0.0, 0),
        }

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "size_bytes": self.size_bytes,
            "quantization": _quantization_dict(self),
        }

    def io_dict(self) -> dict:
        """A model input or output: its size is the bytes one sample of it takes, not stored bytes."""
        elements = int(np.prod(self.shape)) if self.shape else 1
        return {**self.to_dict(), "size_bytes": elements * np.dtype(self.dtype.lower()).itemsize}


@dataclasses.dataclass(frozen=True)
class OperatorInfo:
    name: str  # CONV_2D, ...
    output_names: tuple  # its output tensors' names: the converter keeps the Keras layer path
    computes_in_float: bool
    input_names: tuple = ()  # its input tensors' names (constants included)


@dataclasses.dataclass(frozen=True)
class TfliteSummary:
    size_bytes: int
    ops: dict  # op name → count, in first-seen order
    float_ops: tuple  # names of ops that compute in float (not QUANTIZE/DEQUANTIZE)
    inputs: tuple  # TensorInfo of the model inputs
    outputs: tuple
    tensors: tuple  # every tensor of the main subgraph
    operators: tuple  # OperatorInfo, in execution order
    # The names the serving signature gives the inputs and outputs, in the order of `inputs` and
    # `outputs` (the Keras input and output names; the tensor's own name where there is none).
    input_keys: tuple = ()
    output_keys: tuple = ()

    @property
    def state_tensors(self) -> tuple:
        """Names of the variable tensors: state an invoke leaves for the next one."""
        return tuple(tensor.name for tensor in self.tensors if tensor.is_variable)

    def input_details(self) -> list:
        """Each input as LiteRT describes it, for interpreter.quantize_inputs."""
        return [tensor.interpreter_detail() for tensor in self.inputs]

    def output_details(self) -> list:
        return [tensor.interpreter_detail() for tensor in self.outputs]

    def model_inputs(self) -> tuple:
        """The inputs as data is matched to them (data.fit_to_inputs): by signature name, any batch."""
        return tuple(ModelInput(key, (None,) + tuple(t.shape[1:])) for key, t in zip(self.input_keys, self.inputs))


def read_tflite(path) -> bytes:
    """The bytes of a `.tflite` file, with a clear error for a missing file or a Keras file."""
    path = limits.check_input_file(path, "Model file", ModelLoadError)
    limits.WEIGHT_BYTES.check(path.stat().st_size, path, ModelLoadError)
    data = path.read_bytes()
    if path.suffix != ".tflite" and data[4:8] != _FLATBUFFER_IDENTIFIER:
        raise ModelLoadError(f"{path} is not a .tflite model; convert Keras models first with `tfcompress convert`.")
    return data


def inspect_tflite(model_bytes: bytes, source: str = "model") -> TfliteSummary:
    """Parses a TFLite flatbuffer; a truncated or foreign file is a clear error."""
    from ai_edge_litert import schema_py_generated as schema

    if len(model_bytes) < 8 or model_bytes[4:8] != _FLATBUFFER_IDENTIFIER:
        raise ModelLoadError(f"{source} is not a TFLite model (no TFL3 flatbuffer identifier).")
    try:
        model = schema.Model.GetRootAs(model_bytes, 0)
        subgraph = model.Subgraphs(0)
        op_names = [_op_name(model.OperatorCodes(i), schema) for i in range(model.OperatorCodesLength())]
        type_names = {value: name for name, value in vars(schema.TensorType).items() if not name.startswith("_")}
        tensors = tuple(_tensor_info(model, subgraph.Tensors(i), type_names) for i in range(subgraph.TensorsLength()))
        operators = tuple(
            _operator_info(subgraph.Operators(index), op_names, tensors) for index in range(subgraph.OperatorsLength())
        )
        ops = collections.Counter(operator.name for operator in operators)
        float_ops = [operator.name for operator in operators if operator.computes_in_float]
        input_indices, output_indices = subgraph.InputsAsNumpy(), subgraph.OutputsAsNumpy()
        names = _signature_names(model)
        inputs = tuple(tensors[i] for i in input_indices)
        outputs = tuple(tensors[i] for i in output_indices)
        input_keys = tuple(names.get(int(i), tensors[i].name) for i in input_indices)
        output_keys = tuple(names.get(int(i), tensors[i].name) for i in output_indices)
    except (IndexError, ValueError, TypeError, AttributeError, KeyError, OverflowError, struct.error) as error:
        raise ModelLoadError(f"{source} is a damaged TFLite flatbuffer ({error}).") from None
    _check_tensor_sizes(tensors, source)
    return TfliteSummary(
        len(model_bytes),
        dict(ops),
        tuple(sorted(set(float_ops))),
        inputs,
        outputs,
        tensors,
        operators,
        input_keys,
        output_keys,
    )


def io_counts(model_bytes: bytes) -> tuple:
    """(inputs, outputs) of the main subgraph, read without parsing every tensor (`inspect_tflite`):
    the arena search asks it of each probe."""
    from ai_edge_litert import schema_py_generated as schema

    subgraph = schema.Model.GetRootAs(model_bytes, 0).Subgraphs(0)
    return subgraph.InputsLength(), subgraph.OutputsLength()


def _signature_names(model) -> dict:
    """Tensor index → its name in the main subgraph's first signature (e.g. 'serving_default')."""
    for index in range(model.SignatureDefsLength()):
        signature = model.SignatureDefs(index)
        if signature.SubgraphIndex() != 0:
            continue
        maps = [signature.Inputs(i) for i in range(signature.InputsLength())]
        maps += [signature.Outputs(i) for i in range(signature.OutputsLength())]
        return {tensor_map.TensorIndex(): tensor_map.Name().decode("utf-8", "replace") for tensor_map in maps}
    return {}


def _check_tensor_sizes(tensors, source) -> None:
    """Shapes the interpreter would allocate: non-negative, each and all within the limits."""
    total_bytes = 0
    for tensor in tensors:
        if any(dim < 0 for dim in tensor.shape):
            raise ModelLoadError(
                f"{source}: tensor '{tensor.name}' has the shape {list(tensor.shape)}; "
                "dimensions cannot be negative (a damaged or forged file)."
            )
        elements = int(np.prod(tensor.shape, dtype=np.float64))
        limits.INPUT_ELEMENTS.check(
            elements, f"{source} (tensor '{tensor.name}', shape {list(tensor.shape)})", ModelLoadError, unit="elements"
        )
        total_bytes += elements * 4
    limits.DATA_BYTES.check(total_bytes, f"{source} (all tensors)", ModelLoadError)


def constant_values(model_bytes: bytes) -> tuple:
    """(TensorInfo, array) for every constant tensor of the main subgraph: the stored weights."""
    return tuple((info, values) for _, info, values in constant_tensors(model_bytes))


def constant_tensors(model_bytes: bytes) -> tuple:
    """(tensor index, TensorInfo, array) for every constant tensor of the main subgraph."""
    from ai_edge_litert import schema_py_generated as schema

    summary = inspect_tflite(model_bytes)
    model = schema.Model.GetRootAs(model_bytes, 0)
    subgraph = model.Subgraphs(0)
    result = []
    for index, info in enumerate(summary.tensors):
        if not info.is_constant or info.dtype.lower() not in _NUMPY_TYPES:
            continue
        buffer = model.Buffers(subgraph.Tensors(index).Buffer())
        if buffer.DataLength():
            raw = buffer.DataAsNumpy().tobytes()
        else:  # stored after the flatbuffer table (models over 2 GB)
            raw = model_bytes[buffer.Offset() : buffer.Offset() + buffer.Size()]
        values = np.frombuffer(raw, dtype=_NUMPY_TYPES[info.dtype.lower()]).reshape(info.shape)
        result.append((index, info, values))
    return tuple(result)


def gzip_size(data: bytes) -> int:
    """Bytes after gzip -9 with a fixed timestamp: what zeros and shared values really save."""
    return len(gzip.compress(data, compresslevel=9, mtime=0))


def precision_of(summary: TfliteSummary) -> str:
    """The precision a converted model was made with, read from its tensor types."""
    weights = {t.dtype for t in summary.tensors if t.is_constant}
    activations = {t.dtype for t in summary.tensors if not t.is_constant}
    if "FLOAT16" in weights:
        return "float16"
    if "INT16" in activations:
        return "int16x8"
    if activations & {"INT8", "UINT8"}:
        return "int8"
    if weights & {"INT8", "INT4"}:
        return "dynamic"
    return "float32"


def weight_tensors(summary: TfliteSummary) -> tuple:
    """Every stored weight tensor with its width: what `--weight_bits 4` made int4, and what stayed 8-bit."""
    return tuple(
        {"tensor": t.name, "dtype": t.dtype, "bits": _WEIGHT_BITS[t.dtype], "bytes": t.size_bytes}
        for t in summary.tensors
        if t.is_constant and t.dtype in _WEIGHT_BITS
    )


def file_parts(summary: TfliteSummary) -> dict:
    """Where a `.tflite`'s bytes go. Fewer weight bits shrink only the kernels: a per-channel tensor
    also stores a float32 scale and an int64 zero point per channel, and on a small model those
    and the tensor names are a third of the file."""
    kernels = sum(t.size_bytes for t in summary.tensors if t.is_constant and len(t.shape) >= 2)
    constants = sum(t.size_bytes for t in summary.tensors if t.is_constant) - kernels
    quantization = sum(4 * len(t.scales) + 8 * len(t.zero_points) for t in summary.tensors)
    names = sum(len(t.name.encode()) for t in summary.tensors)
    return {
        "kernels": kernels,
        "other_constants": constants,  # biases, shapes
        "quantization_parameters": quantization,
        "tensor_names": names,
        "graph_and_metadata": summary.size_bytes - kernels - constants - quantization - names,
    }


def is_full_integer(summary: TfliteSummary) -> bool:
    """Integer input and no op computing in float: what TFLite Micro runs."""
    return summary.inputs[0].dtype in ("INT8", "UINT8", "INT16") and not summary.float_ops


def _op_name(opcode, schema) -> str:
    # Codes above 127 live in builtin_code; older files keep them in the deprecated byte.
    code = max(opcode.BuiltinCode(), opcode.DeprecatedBuiltinCode())
    for name, value in vars(schema.BuiltinOperator).items():
        if value == code and not name.startswith("_"):
            return name if name != "CUSTOM" else opcode.CustomCode().decode()
    return f"UNKNOWN_{code}"


def _operator_info(operator, op_names, tensors) -> OperatorInfo:
    name = op_names[operator.OpcodeIndex()]
    touched = [tensors[i] for i in _operator_tensors(operator)]
    computes_in_float = name not in _CONVERSION_OPS and any(
        t.dtype in _FLOAT_TYPES and not t.is_constant for t in touched
    )
    return OperatorInfo(
        name,
        _tensor_names(operator.OutputsAsNumpy(), tensors),
        computes_in_float,
        _tensor_names(operator.InputsAsNumpy(), tensors),
    )


def _tensor_names(indices, tensors) -> tuple:
    """Names of an operator's tensors (-1 marks an omitted optional input)."""
    return tuple(tensors[int(i)].name for i in indices if i >= 0) if isinstance(indices, np.ndarray) else ()


def _operator_tensors(operator):
    for array in (operator.InputsAsNumpy(), operator.OutputsAsNumpy()):
        if isinstance(array, np.ndarray):
            yield from (int(i) for i in array if i >= 0)


def _tensor_info(model, tensor, type_names) -> TensorInfo:
    buffer = model.Buffers(tensor.Buffer())
    size = buffer.DataLength() if buffer is not None else 0
    if buffer is not None and size == 0 and buffer.Size() > 1:
        size = buffer.Size()  # data stored outside the flatbuffer table (large models)
    quantization = tensor.Quantization()
    scales, zero_points, dimension = (), (), 0
    if quantization is not None and quantization.ScaleLength():
        scales = tuple(float(s) for s in quantization.ScaleAsNumpy())
        zero_points = tuple(int(z) for z in quantization.ZeroPointAsNumpy())
        dimension = quantization.QuantizedDimension()
    shape = tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
    return TensorInfo(
        tensor.Name().decode(),
        type_names.get(tensor.Type(), str(tensor.Type())),
        shape,
        int(size),
        scales,
        zero_points,
        dimension,
        bool(tensor.IsVariable()),
    )


def _quantization_dict(tensor: TensorInfo) -> Optional[dict]:
    if not tensor.scales:
        return None
    if len(tensor.scales) == 1:
        return {"scale": tensor.scales[0], "zero_point": tensor.zero_points[0]}
    return {"per_channel": len(tensor.scales), "axis": tensor.quantized_dimension}
