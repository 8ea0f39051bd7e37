"""Runs a `.tflite` model in the LiteRT interpreter on float inputs.

Callers think in the model's float domain: inputs are quantized with the input
tensor's scale and zero point, outputs dequantized with the output's, so a float32
and an int8 model are compared on the same numbers.
"""

import hashlib
import os
import signal
import warnings
from typing import Optional

import numpy as np
from absl import logging

from tfcompress._io.native import captured_output
from tfcompress.data import one_or_tuple, per_input
from tfcompress.errors import DataError, ModelLoadError
from tfcompress.runtime.inspect import inspect_tflite
from tfcompress.runtime.isolated import run_isolated
from tfcompress.runtime.kernel_limits import ops_litert_aborts_on

__all__ = [
    "keeping_every_tensor",
    "make_interpreter",
    "xnnpack_warning",
    "predict",
    "per_output",
    "raw_outputs",
    "quantize",
    "quantize_inputs",
    "as_input_dtype",
    "dequantize",
    "inference_batch_size",
]

_BATCH_VALUES = 1 << 22  # input values per evaluation batch: 250 Fashion-MNIST images, 27 at 224×224×3
_PROBE_SECONDS = 300  # a child still preparing the model after this proves nothing either way
_PROBED = {}  # (digest, resolver) → LiteRT's error running the model in a child, or None: it ran


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

    def prepared():
        with captured_output():  # LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate" from C++
            interpreter = Interpreter(
                model_content=model_bytes, num_threads=threads, experimental_op_resolver_type=resolver
            )
            interpreter.allocate_tensors()
        return interpreter

    _run_in_a_child_first(model_bytes, resolver, prepared)
    delegate_failed = xnnpack_warning(model_bytes) if resolver == OpResolverType.AUTO else None
    if delegate_failed:
        logging.warning(delegate_failed)
        return make_interpreter(model_bytes, threads=threads, xnnpack=False)
    try:
        return prepared()
    except (ValueError, RuntimeError) as error:
        raise ModelLoadError(f"LiteRT cannot load the model: {str(error).splitlines()[0]}") from None


def keeping_every_tensor(interpreter_class, model_bytes: bytes):
    """An allocated interpreter whose intermediate tensors stay readable after invoke (what calibration
    and the sensitivity analysis read). Quiet: its delegate line from C++ and its warning that this is
    for debugging say nothing a user could act on."""
    with captured_output(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors")
        interpreter = interpreter_class(model_content=model_bytes, experimental_preserve_all_tensors=True)
        interpreter.allocate_tensors()
    return interpreter


def xnnpack_warning(model_bytes: bytes) -> Optional[str]:
    """What `make_interpreter` warned of if LiteRT's XNNPACK delegate failed this model, for a report."""
    from ai_edge_litert.interpreter import OpResolverType

    failure = _PROBED.get((hashlib.sha256(model_bytes).digest(), OpResolverType.AUTO))
    if not failure or "XNNPACK" not in failure:
        return None
    return (
        f"LiteRT's default XNNPACK delegate cannot run this model ({failure.rstrip('.')}); it is measured "
        "with LiteRT's own kernels, and an app must create its interpreter without the default delegate."
    )


def _run_in_a_child_first(model_bytes: bytes, resolver, prepared) -> None:
    """Runs the model once on zeros in a forked child, keeping LiteRT's error if it failed (`_PROBED`).

    LiteRT aborts the whole process when a kernel's check fails as it prepares an op (an int8
    SQUARED_DIFFERENCE or ADD whose output scale is far smaller than its inputs', tensorflow#60815),
    without a word: such a model is refused with a message instead of ending the user's process.
    And the XNNPACK delegate fails some models only at their first invoke, which a child sees too."""
    key = (hashlib.sha256(model_bytes).digest(), resolver)
    if key in _PROBED or not hasattr(os, "fork"):
        return
    child = run_isolated(lambda: _run_on_zeros(prepared), time_limit=_PROBE_SECONDS)
    if child.signal not in (None, signal.SIGALRM):
        named = ops_litert_aborts_on(inspect_tflite(model_bytes))
        cause = "; ".join(named) or "one of its kernels cannot take the quantization scales the converter gave an op"
        raise ModelLoadError(
            f"LiteRT crashes ({signal.Signals(child.signal).name}) running this model, and would crash "
            f"an app on a device too: {cause}. Convert with another --precision, or keep the layers around "
            "that op in float (--keep_float)."
        )
    failed = not child.succeeded and child.signal is None
    _PROBED[key] = child.printed.strip().splitlines()[-1] if failed and child.printed.strip() else None


def _run_on_zeros(prepared) -> None:
    """Runs the model once on zeros; LiteRT's error, if any, is the last line the parent reads."""
    try:
        interpreter = prepared()
        for detail in interpreter.get_input_details():
            interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
        interpreter.invoke()
    except (ValueError, RuntimeError) as error:
        os.write(2, ("\n" + " ".join(str(error).split())).encode())  # to the pipe, whatever sys.stderr is now
        raise


def quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    """Float values → the input tensor's dtype, using its scale and zero point."""
    dtype = detail["dtype"]
    scale, zero_point = detail["quantization"]
    if not np.issubdtype(dtype, np.integer) or scale == 0:  # float, or integer ids (an Embedding's)
        return as_input_dtype(x, dtype, detail["name"])
    limits = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero_point), limits.min, limits.max).astype(dtype)


def quantize_inputs(x, details) -> object:
    """`quantize` for each input: an array, or a tuple of one per input (`details` in the same order)."""
    return one_or_tuple(quantize(array, detail) for array, detail in zip(per_input(x), details))


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


def predict(model_bytes: bytes, x, *, batch_size: Optional[int] = None, threads: int = 1):
    """Float outputs for every sample of `x` (an array, or a tuple of one per input in the model's
    order), as one array or a tuple of one per output; in batches where the model has a batch
    dimension (`inference_batch_size` unless given)."""
    arrays = per_input(x)
    batch_size = batch_size or inference_batch_size((sum(int(np.prod(a.shape[1:])) for a in arrays),))
    interpreter = make_interpreter(model_bytes, threads=threads)
    details = interpreter.get_input_details()
    _check_shapes(details, arrays)
    outputs, current_batch = [], None
    for start in range(0, len(arrays[0]), batch_size):
        batch = tuple(array[start : start + batch_size] for array in arrays)
        if len(batch[0]) != current_batch:
            if details[0]["shape_signature"][0] == -1 or len(batch[0]) == details[0]["shape"][0]:
                for detail, part in zip(details, batch):
                    interpreter.resize_tensor_input(detail["index"], part.shape)
                interpreter.allocate_tensors()
                current_batch = len(batch[0])
            else:
                return _predict_one_by_one(interpreter, arrays)
        outputs.append(_invoke(interpreter, batch))
    return _joined(outputs)


def per_output(outputs) -> tuple:
    """The arrays of `predict`'s (or Keras') outputs, one per model output."""
    return tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)


def _check_shapes(details, arrays) -> None:
    if len(details) != len(arrays):
        raise DataError(f"Data has {len(arrays)} input array(s), but the model has {len(details)} inputs.")
    for detail, array in zip(details, arrays):
        wanted = tuple(int(d) for d in detail["shape_signature"][1:])
        if len(wanted) != array.ndim - 1 or any(w not in (-1, h) for w, h in zip(wanted, array.shape[1:])):
            raise DataError(
                f"Data has samples of shape {tuple(array.shape[1:])}, but the model's input {detail['name']} "
                f"expects {tuple(int(d) for d in detail['shape'][1:])}."
            )


def _joined(batches: list):
    """Per-batch output tuples → one array per output (the array itself for one output)."""
    return one_or_tuple(np.concatenate(parts) for parts in zip(*batches))


def _predict_one_by_one(interpreter, arrays: tuple):
    """For models with a fixed batch of 1 (e.g. converted from a concrete function)."""
    interpreter.allocate_tensors()
    return _joined([_invoke(interpreter, tuple(a[i : i + 1] for a in arrays)) for i in range(len(arrays[0]))])


def _invoke(interpreter, batch: tuple) -> tuple:
    # Each sample on its own, as Keras runs it: a fused LSTM keeps its state in variable tensors.
    interpreter.reset_all_variables()
    for detail, part in zip(interpreter.get_input_details(), batch):
        interpreter.set_tensor(detail["index"], quantize(part, detail))
    try:
        interpreter.invoke()
    except RuntimeError as error:
        raise ModelLoadError(f"LiteRT fails running the model: {' '.join(str(error).split())}") from None
    return tuple(
        dequantize(interpreter.get_tensor(detail["index"]), detail) for detail in interpreter.get_output_details()
    )


def raw_outputs(model_bytes: bytes, inputs, *, reference_kernels: bool = False):
    """The outputs in their own dtype (an array, or a tuple of one per output), for inputs already in
    the inputs' dtypes, one by one, from LiteRT's own kernels (optimized or reference; never the
    XNNPACK delegate)."""
    interpreter = make_interpreter(model_bytes, xnnpack=False, reference_kernels=reference_kernels)
    interpreter.allocate_tensors()
    arrays = per_input(inputs)
    outputs = []
    for index in range(len(arrays[0])):
        interpreter.reset_all_variables()
        for detail, array in zip(interpreter.get_input_details(), arrays):
            interpreter.set_tensor(detail["index"], array[index : index + 1])
        interpreter.invoke()
        outputs.append(tuple(interpreter.get_tensor(d["index"]).copy() for d in interpreter.get_output_details()))
    return _joined(outputs)
