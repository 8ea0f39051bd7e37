"""Keras model → TFLite flatbuffer, at the precision the target needs.

Post-training quantization is a converter setting, so it lives here: int8 and
int16x8 calibrate activation ranges on representative inputs; int8 asks the
converter for integer-only kernels, so an op without one fails the conversion
instead of silently staying float.
"""

import dataclasses
import re
import warnings
from typing import Optional

import numpy as np

from tfcompress import _keras
from tfcompress._io.native import captured_output
from tfcompress.data import Dataset, per_input
from tfcompress.errors import ConversionError, OptionError
from tfcompress.export.calibration import quantize_with_adjusted_calibration
from tfcompress.export.int4 import requantize_int4
from tfcompress.export.io_order import in_keras_order, keras_names
from tfcompress.export.keras_export import SharedExport
from tfcompress.export.unroll import loops, unrolled
from tfcompress.options import WEIGHT_BITS, option
from tfcompress.runtime.interpreter import as_input_dtype

__all__ = [
    "ConvertOptions",
    "PRECISIONS",
    "CALIBRATED_PRECISIONS",
    "IO_TYPES",
    "CALIBRATION_METHODS",
    "to_tflite",
    "conversion_error",
    "keras_converter",
    "input_shapes",
    "layer_kinds",
    "representative_dataset",
]

PRECISIONS = ("float32", "float16", "dynamic", "int8", "int16x8")
IO_TYPES = ("float32", "int8", "uint8")
CALIBRATED_PRECISIONS = ("int8", "int16x8")
CALIBRATION_METHODS = ("minmax", "percentile")


@dataclasses.dataclass(frozen=True)
class ConvertOptions:
    """How to convert: the same object for an API call, CLI flags and a recipe step.

    `per_tensor_dense` quantizes Dense weights with one scale per tensor instead of per
    output channel, which keeps the TFLite Micro arena small; `calibration_samples`
    caps how many calibration inputs the converter sees; `batch_size` fixes the batch
    dimension (TFLite Micro wants 1: a dynamic batch can add SHAPE/REDUCE_PROD ops);
    `float_fallback` lets int8 or int16x8 ops without an integer kernel stay float instead
    of failing the conversion (the pre-flight check uses it to find them all at once).
    """

    precision: str = option(
        "int8", "Weights/activations precision. int8 and int16x8 need --calibration.", choices=PRECISIONS
    )
    io_type: str = option("float32", "Input/output type (integer I/O needs --precision int8).", choices=IO_TYPES)
    per_tensor_dense: bool = option(
        False,
        "One scale per Dense weight tensor: a smaller TFLite Micro arena "
        "(micro's default; --noper_tensor_dense there for per-channel).",
        was_inverse="per_channel_dense",
    )
    calibration_samples: int = option(500, "Calibration inputs the converter sees.", lower_bound=1)
    keep_float: tuple[str, ...] = option((), "int8: leave these layers in float (names from analyze or check).")
    calibration_method: str = option(
        "minmax",
        "int8 activation ranges: the observed min-max, or clipped to --percentile.",
        choices=CALIBRATION_METHODS,
    )
    percentile: float = option(99.99, "With --calibration_method percentile.")
    input_range: Optional[tuple[float, float]] = option(None, "int8: MIN,MAX the input is quantized over.")
    weight_bits: int = option(
        8,
        "int8: 4 stores Conv2D, DepthwiseConv2D and Dense kernels as int4 (two per byte), rescaled after "
        "calibration; trained int4 (qat --weight_bits 4) loses less accuracy.",
    )
    batch_size: Optional[int] = None
    float_fallback: bool = False
    quantize_aware: bool = False  # a QAT model: int8 ranges come from its learned fake-quant nodes
    low_bit_weights: bool = False  # a QAT model with 4-bit weights: the converter packs them as INT4

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise OptionError(
                f"precision must be one of {', '.join(PRECISIONS)}. Received: precision={self.precision!r}"
            )
        if self.io_type not in IO_TYPES:
            raise OptionError(f"io_type must be one of {', '.join(IO_TYPES)}. Received: io_type={self.io_type!r}")
        if self.io_type != "float32" and self.precision != "int8":
            raise OptionError(
                f"Integer I/O needs precision int8. Received: io_type={self.io_type!r}, precision={self.precision!r}"
            )
        if self.batch_size is not None and self.batch_size < 1:
            raise OptionError(f"batch_size must be at least 1. Received: batch_size={self.batch_size}")
        if self.calibration_method not in CALIBRATION_METHODS:
            raise OptionError(
                f"calibration_method must be one of {', '.join(CALIBRATION_METHODS)}. "
                f"Received: calibration_method={self.calibration_method!r}"
            )
        if self.adjusts_calibration and self.precision != "int8":
            raise OptionError(
                "keep_float, calibration_method=percentile and input_range need precision int8. "
                f"Received: precision={self.precision!r}"
            )
        if self.input_range is not None and not (
            len(self.input_range) == 2 and self.input_range[0] < self.input_range[1]
        ):
            raise OptionError(f"input_range must be (low, high) with low < high. Received: {self.input_range}")
        if self.weight_bits not in WEIGHT_BITS:
            raise OptionError(f"weight_bits must be 8 or 4. Received: weight_bits={self.weight_bits}")
        if self.weight_bits != 8 and self.precision != "int8":
            raise OptionError(
                f"weight_bits 4 needs precision int8 (int8 activations). Received: precision={self.precision!r}"
            )
        if self.calibration_samples < 1:
            raise OptionError(
                f"calibration_samples must be at least 1. Received: calibration_samples={self.calibration_samples}"
            )

    @property
    def adjusts_calibration(self) -> bool:
        """Whether the recorded ranges or the layers to quantize differ from the converter's default."""
        return bool(self.keep_float) or self.calibration_method != "minmax" or self.input_range is not None

    @property
    def needs_calibration(self) -> bool:
        return self.precision in CALIBRATED_PRECISIONS and not self.quantize_aware

    @property
    def packs_int4_after_conversion(self) -> bool:
        """Post-training int4: the converter packs INT4 only for a QAT model trained at 4 bits."""
        return self.weight_bits == 4 and not self.low_bit_weights


def to_tflite(
    model, options: ConvertOptions, calibration: Optional[Dataset] = None, *, export: Optional[SharedExport] = None
) -> bytes:
    """Converts a tf_keras model; int8/int16x8 need `calibration` inputs.

    With `export` (a `SharedExport` of this model) the converter reuses that SavedModel
    export instead of writing its own, which is most of a conversion's time."""
    tf = _keras.tensorflow()
    if options.needs_calibration and loops(model):
        model, export = unrolled(model, options.precision), None  # the export is of the loop
    if options.needs_calibration and calibration is None:
        raise ConversionError(
            f"precision={options.precision} needs calibration data: pass --calibration DATA "
            "(a few hundred inputs like the ones the model will see)."
        )
    if options.adjusts_calibration and calibration is None:
        raise OptionError(
            "keep_float, calibration_method=percentile and input_range adjust calibration: pass --calibration DATA."
        )
    converter = keras_converter(model, options.batch_size)
    if export is not None:
        if export.model is not model:
            raise ValueError(f"The export is of model '{export.model.name}', not of '{model.name}'.")
        export.share_with(converter, options.batch_size)
    _configure(converter, options, calibration, tf, _calibration_inputs(model))
    from tensorflow.lite.python.convert import ConverterError

    try:
        # The converter prints calibration progress from C++, warns about input statistics it
        # does not need here, and its calibrator uses the deprecated tf.lite.Interpreter for
        # inputs given by name; none of it helps the user.
        with captured_output(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
            if options.adjusts_calibration and calibration is not None:
                converted = quantize_with_adjusted_calibration(
                    converter, options, calibration, list(layer_kinds(model)), keras_names(model)
                )
            else:
                converted = bytes(converter.convert())
    except ConverterError as error:
        raise conversion_error(error, options.precision) from None
    except RuntimeError as error:
        unsupported = _unquantizable_ops(error)
        if not unsupported:
            raise
        raise ConversionError(
            f"The TFLite converter has no {options.precision} kernel for {', '.join(unsupported)}: pass "
            "--allow_float_ops to keep those ops in float, or choose another --precision."
        ) from None
    if options.packs_int4_after_conversion:
        converted = requantize_int4(converted)
    return in_keras_order(converted, *keras_names(model))


def keras_converter(model, batch_size: Optional[int]):
    """A TFLiteConverter for a tf_keras model, at a fixed batch size unless None."""
    tf = _keras.tensorflow()
    if batch_size is None:
        return tf.lite.TFLiteConverter.from_keras_model(model)
    if model.inputs is not None:
        # Named as the Keras inputs and outputs, as from_keras_model's signature names them.
        specs = [
            tf.TensorSpec((batch_size,) + tuple(t.shape[1:]), t.dtype, name=name)
            for t, name in zip(model.inputs, model.input_names)
        ]
        function = tf.function(lambda *inputs: _named_outputs(model, model(_one_or_list(inputs), training=False)))
    else:  # subclassed: float inputs of the shape it was built with
        specs = [tf.TensorSpec((batch_size,) + shape[1:], tf.float32) for shape in input_shapes(model)]
        function = tf.function(lambda *inputs: model(_one_or_list(inputs), training=False))
    return tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function(*specs)], model)


def _one_or_list(tensors):
    return list(tensors) if len(tensors) > 1 else tensors[0]


def _named_outputs(model, outputs) -> dict:
    return dict(zip(model.output_names, outputs if isinstance(outputs, (list, tuple)) else [outputs]))


def _calibration_inputs(model) -> Optional[tuple]:
    """(signature name, Keras input) of each input, in the Keras order the calibration data has; None
    for a subclassed model."""
    if model.inputs is None:
        return None
    return tuple(zip(model.input_names, model.inputs))


def _configure(converter, options: ConvertOptions, calibration, tf, model_inputs) -> None:
    if options.precision == "float32":
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if options.precision == "float16":
        converter.target_spec.supported_types = [tf.float16]
        return
    if options.precision == "dynamic":
        return
    if calibration is not None:
        converter.representative_dataset = _representative_dataset(
            calibration.take(options.calibration_samples), model_inputs
        )
    if options.precision == "int8":
        if calibration is None:  # a QAT model: without calibration only the default op set converts
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        elif options.float_fallback:
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
        else:
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = _IO_DTYPES[options.io_type](tf)
        converter.inference_output_type = _IO_DTYPES[options.io_type](tf)
    else:
        fallback = [tf.lite.OpsSet.TFLITE_BUILTINS] if options.float_fallback else []
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8,
            *fallback,
        ]
    # The converter's own switches; there are no public names for them in TF 2.21.
    converter._experimental_disable_per_channel_quantization_for_dense_layers = options.per_tensor_dense
    converter._experimental_low_bit_qat = options.low_bit_weights


def layer_kinds(model) -> dict:
    """Every layer's name → its class name, nested models' layers included (what keep_float may name)."""
    kinds = {}
    for layer in model.layers:
        kinds[layer.name] = type(layer).__name__
        if hasattr(layer, "layers"):
            kinds.update(layer_kinds(layer))
    return kinds


def input_shapes(model) -> list:
    """The model's input shapes, batch first; a subclassed model has them only once built."""
    if model.inputs is not None:
        return [tuple(t.shape) for t in model.inputs]
    build_shape = getattr(model, "_build_input_shape", None)
    if build_shape is None:
        raise ConversionError(f"Model '{model.name}' has no known input shape: call it on a batch first.")
    shapes = build_shape if isinstance(build_shape, list) else [build_shape]
    return [tuple(shape.as_list() if hasattr(shape, "as_list") else shape) for shape in shapes]


_CONVERTER_HINTS = {
    "TensorListReserve": "a recurrent layer the converter keeps as a loop (GRU, SimpleRNN; LSTM becomes one "
    "fused op) has no static shape with a dynamic batch: --batch_size 1 converts it to float32 or float16, "
    "but int8 calibration of such a loop crashed TensorFlow 2.21's converter here",
}
_IO_DTYPES = {"float32": lambda tf: tf.float32, "int8": lambda tf: tf.int8, "uint8": lambda tf: tf.uint8}


def representative_dataset(model, calibration: Dataset):
    """The converter's `representative_dataset` for `model` from its calibration data (see below)."""
    return _representative_dataset(calibration, _calibration_inputs(model))


def _representative_dataset(calibration: Dataset, model_inputs):
    """Samples one at a time, each input in its own dtype: token ids for an integer input (an
    Embedding's). A subclassed model (no `model_inputs`) takes floats. Several inputs are given by
    their signature names: the converter would take a list in its own order, not the Keras one."""
    arrays = per_input(calibration.x)
    if model_inputs is None:
        arrays = tuple(x.astype(np.float32) for x in arrays)
    else:
        arrays = tuple(
            as_input_dtype(x, np.dtype(getattr(keras_input.dtype, "as_numpy_dtype", keras_input.dtype)), f"'{name}'")
            for x, (name, keras_input) in zip(arrays, model_inputs)
        )

    def samples():
        for index in range(len(calibration)):
            sample = [x[index : index + 1] for x in arrays]
            yield sample if len(sample) == 1 else {name: x for (name, _), x in zip(model_inputs, sample)}

    return samples


def _unquantizable_ops(error: RuntimeError) -> list:
    """The ops named by the calibrator's "Quantization to 16x8-bit not yet supported for op: 'X'."
    lines (one per op instance), each once; none for any other error."""
    found = re.findall(r"not yet supported for op: '(\w+)'", str(error))
    return list(dict.fromkeys(found))


def conversion_error(error: Exception, precision: str) -> ConversionError:
    """The one line a user sees for the converter's own error (a ConverterError, pages of MLIR)."""
    return ConversionError(f"The TFLite converter failed for precision={precision}: {_converter_message(error)}")


def _converter_message(error: Exception) -> str:
    """The converter's first error line, without its MLIR location prefixes, and what it means
    where its wording does not say."""
    lines = [line.strip() for line in str(error).splitlines() if "error:" in line]
    text = lines[0] if lines else str(error).strip().splitlines()[0]
    text = text.split("error:", 1)[-1].strip()
    hint = next((hint for op, hint in _CONVERTER_HINTS.items() if op in text), None)
    return f"{text} ({hint})" if hint else text
