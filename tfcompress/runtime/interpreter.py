"""Runs a `.tflite` model in the LiteRT interpreter on float inputs.

Callers think in the model's float domain: inputs are quantized with the input
tensor's scale and zero point, outputs dequantized with the output's, so a float32
and an int8 model are compared on the same numbers.
"""

from typing import Optional

import numpy as np

from tfcompress._io.native import captured_output
from tfcompress.errors import DataError, ModelLoadError

__all__ = [
    "make_interpreter",
    "predict",
    "raw_outputs",
    "quantize",
    "as_input_dtype",
    "dequantize",
    "inference_batch_size",
]

_BATCH_VALUES = 1 << 22  # input values per evaluation batch: 250 Fashion-MNIST images, 27 at 224×224×3


def inference_batch_size(sample_shape) -> int:
    """Samples per evaluation batch: 250, fewer for large inputs, whose activations would otherwise
    take gigabytes (Keras ran MobileNetV2 at 224×224 1.7× faster in batches of 32 than of 250)."""
    values = max(1, int(np.prod(sample_shape)))
    return max(1, min(250, _BATCH_VALUES // values))


def make_interpreter(model_bytes: bytes, *, threads: int = 1, xnnpack: bool = True, reference_kernels: bool = False):
    """A LiteRT interpreter: with or without the default XNNPACK delegate, or running
    the reference kernels (the ones TFLite Micro's portable build implements)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    if reference_kernels:
        resolver = OpResolverType.BUILTIN_REF
    try:
        with captured_output():  # LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate" from C++
            interpreter = Interpreter(
                model_content=model_bytes, num_threads=threads, experimental_op_resolver_type=resolver
            )
            interpreter.allocate_tensors()
        return interpreter
    except (ValueError, RuntimeError) as error:
        raise ModelLoadError(f"LiteRT cannot load the model: {str(error).splitlines()[0]}") from None


def quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    """Float values → the input tensor's dtype, using its scale and zero point."""
    dtype = detail["dtype"]
    scale, zero_point = detail["quantization"]
    if not np.issubdtype(dtype, np.integer) or scale == 0:  # float, or integer ids (an Embedding's)
        return as_input_dtype(x, dtype, detail["name"])
    limits = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero_point), limits.min, limits.max).astype(dtype)


def as_input_dtype(x: np.ndarray, dtype, name: str) -> np.ndarray:
    """`x` as an unquantized input of `dtype`; integer inputs (token ids) must hold whole numbers."""
    if np.issubdtype(dtype, np.integer) and not np.array_equal(x, np.round(x)):
        raise DataError(
            f"Input {name} takes whole numbers ({np.dtype(dtype).name}, e.g. token ids), but the data holds "
            "fractions: uint8 data is divided by 255 unless --input_scale 1."
        )
    return x.astype(dtype)


def dequantize(values: np.ndarray, detail: dict) -> np.ndarray:
    """An output tensor's values → float32, using its scale and zero point."""
    scale, zero_point = detail["quantization"]
    if np.issubdtype(values.dtype, np.integer) and scale != 0:
        return ((values.astype(np.float32) - zero_point) * scale).astype(np.float32)
    return values.astype(np.float32)


def predict(model_bytes: bytes, x: np.ndarray, *, batch_size: Optional[int] = None, threads: int = 1) -> np.ndarray:
    """Float outputs of the model's first output for every sample in `x`, in batches where the
    model has a batch dimension (`inference_batch_size` unless given)."""
    batch_size = batch_size or inference_batch_size(x.shape[1:])
    interpreter = make_interpreter(model_bytes, threads=threads)
    input_detail = interpreter.get_input_details()[0]
    wanted = tuple(int(d) for d in input_detail["shape_signature"][1:])
    if len(wanted) != x.ndim - 1 or any(w not in (-1, h) for w, h in zip(wanted, x.shape[1:])):
        raise DataError(
            f"Data has samples of shape {tuple(x.shape[1:])}, but the model expects "
            f"{tuple(int(d) for d in input_detail['shape'][1:])}."
        )
    outputs, current_batch = [], None
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size]
        if len(batch) != current_batch:
            if input_detail["shape_signature"][0] == -1 or len(batch) == input_detail["shape"][0]:
                interpreter.resize_tensor_input(input_detail["index"], (len(batch),) + tuple(batch.shape[1:]))
                interpreter.allocate_tensors()
                current_batch = len(batch)
            else:
                return _predict_one_by_one(interpreter, x)
        outputs.append(_invoke(interpreter, batch))
    return np.concatenate(outputs)


def _predict_one_by_one(interpreter, x: np.ndarray) -> np.ndarray:
    """For models with a fixed batch of 1 (e.g. converted from a concrete function)."""
    interpreter.allocate_tensors()
    return np.concatenate([_invoke(interpreter, x[i : i + 1]) for i in range(len(x))])


def _invoke(interpreter, batch: np.ndarray) -> np.ndarray:
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    interpreter.set_tensor(input_detail["index"], quantize(batch, input_detail))
    interpreter.invoke()
    return dequantize(interpreter.get_tensor(output_detail["index"]), output_detail)


def raw_outputs(model_bytes: bytes, inputs: np.ndarray, *, reference_kernels: bool = False) -> np.ndarray:
    """The first output in its own dtype, for inputs already in the input's dtype, one by one,
    from LiteRT's own kernels (optimized or reference; never the XNNPACK delegate)."""
    interpreter = make_interpreter(model_bytes, xnnpack=False, reference_kernels=reference_kernels)
    interpreter.allocate_tensors()
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    outputs = []
    for sample in inputs:
        interpreter.set_tensor(input_index, sample[np.newaxis])
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(output_index).copy())
    return np.concatenate(outputs)
