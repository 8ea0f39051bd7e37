"""Per-layer int8 sensitivity: which layers lose the accuracy, before anyone guesses.

As TFLite's QuantizationDebugger does, every int8 op runs beside its float twin on the
same (quantized) input, so each layer's error is its own, not what it inherited. Per
layer: RMSE over the output's quantization step (about 0.29, 1/sqrt(12), is pure
rounding; much more means the range or the weights quantize badly) and SQNR in dB.
With eval data, the most sensitive layers are also kept float one at a time to measure
the accuracy that buys (for a regressor or an autoencoder, without labels: the relative
error of its outputs against the Keras model's). With weight_bits 4, each kernel layer is also rounded
to 4 bits alone, and the ones that stand out are suggested for keeping at 8 bits.
"""

import collections
import dataclasses
import math
from typing import Optional

import numpy as np

from tfcompress import _keras
from tfcompress._io.native import captured_output
from tfcompress.data import input_data, keras_inputs, per_input
from tfcompress.export.calibration import attribute_ops, calibrate_only, output_layers
from tfcompress.export.io_order import in_keras_order, keras_names
from tfcompress.export.keras_export import SharedExport
from tfcompress.export.tflite import (
    ConvertOptions,
    conversion_error,
    keras_converter,
    layer_kinds,
    representative_dataset,
    to_tflite,
)
from tfcompress.export.unroll import loops, unrolled
from tfcompress.jobs._common import job_outputs, load_model
from tfcompress.jobs._loaded import LoadedModel
from tfcompress.options import AnalyzeOptions, LoadOptions, gather
from tfcompress.report import library_versions, table
from tfcompress.runtime import metrics
from tfcompress.runtime.inspect import inspect_tflite
from tfcompress.runtime.interpreter import keeping_every_tensor, predict
from tfcompress.runtime.task import QUANTITIES
from tfcompress.transforms.graph import recurrent_layers
from tfcompress.transforms.int4_sensitivity import SUGGEST_BELOW_MEDIAN_DB, int4_sensitivity, keep_at_8_bits
from tfcompress.transforms.training import fitted_data, label_task, labelled_data, output_tasks

__all__ = ["LayerSensitivity", "SensitivityReport", "analyze", "format_sensitivity", "ROUNDING_ONLY"]

ROUNDING_ONLY = 1 / math.sqrt(12)  # RMSE / step of uniform rounding error


@dataclasses.dataclass(frozen=True)
class LayerSensitivity:
    layer: str  # the Keras layer the op comes from
    kind: str  # its class, e.g. DepthwiseConv2D
    tensor: str  # the op's output tensor in the TFLite model
    rmse_over_scale: float
    sqnr_db: float
    accuracy_kept_float: Optional[float] = None  # int8 accuracy with only this layer in float
    relative_error_kept_float: Optional[float] = None  # the same, judged without labels (see SensitivityReport)
    op: str = ""  # the TFLite op, e.g. LOGISTIC: a layer of several ops (a Dense and its sigmoid) has a row for each


@dataclasses.dataclass(frozen=True)
class SensitivityReport:
    model: str
    layers: tuple  # LayerSensitivity, in graph order
    samples: int  # calibration inputs the errors are averaged over
    float_accuracy: Optional[float]
    int8_accuracy: Optional[float]
    rounding_only: float = ROUNDING_ONLY  # the RMSE/step a perfect int8 layer has: plots draw it
    int4_layers: tuple = ()  # LayerAt4Bits, with weight_bits=4
    # Eval data without labels, for a model whose output is a quantity: the int8 outputs' RMS error over
    # the RMS of the Keras outputs, as `auto --max_relative_error` measures it.
    int8_relative_error: Optional[float] = None

    @property
    def keep_at_8_bits(self) -> tuple:
        """The layers to keep at 8 bits when the others go to 4."""
        return keep_at_8_bits(self.int4_layers)

    def row_name(self, row: LayerSensitivity) -> str:
        """How a table or plot names a row: its layer, and its op where the layer has several rows."""
        several = sum(layer.layer == row.layer for layer in self.layers) > 1
        return f"{row.layer} ({row.op})" if several and row.op else row.layer

    def ranked(self) -> list:
        """Most sensitive first."""
        return sorted(self.layers, key=lambda layer: -layer.rmse_over_scale)

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "samples": self.samples,
            "float_accuracy": self.float_accuracy,
            "int8_accuracy": self.int8_accuracy,
            "int8_relative_error": self.int8_relative_error,
            "rounding_only_rmse_over_scale": ROUNDING_ONLY,
            "layers": [dataclasses.asdict(layer) for layer in self.layers],
            "ranking": [layer.layer for layer in self.ranked()],
            "int4": [dataclasses.asdict(layer) for layer in self.int4_layers],
            "keep_at_8_bits": list(self.keep_at_8_bits),
            "versions": library_versions(),
        }


def analyze(
    model,
    calibration,
    *,
    options: Optional[AnalyzeOptions] = None,
    load: Optional[LoadOptions] = None,
    eval_data=None,
    calibration_samples: int = 500,
    json_path=None,
    plot_path=None,
    **settings,
) -> SensitivityReport:
    """Measures each layer's int8 error on `options.samples` calibration inputs.

    With labelled `eval_data`: float and int8 accuracy, and for the `options.try_float` most
    sensitive layers the int8 accuracy with that layer kept float; for a model whose output is a
    quantity, unlabelled, the relative error against the Keras outputs instead. `options` and `load` may
    also be given field by field as keywords.
    """
    options, load = gather(settings, (AnalyzeOptions, options), (LoadOptions, load))
    with job_outputs(json_path, plot_path, inputs=(model, calibration, eval_data)) as outputs:
        if plot_path is not None:
            from tfcompress import plots

            plots.require_matplotlib()
        model, model_path = load_model(model, load, needs_layers=True, one_output=True)
        with LoadedModel(model, model_path) as loaded:
            report = _analyze(loaded, calibration, eval_data, options, load, calibration_samples)
        outputs.report(json_path, report)
        outputs.file(plot_path, lambda path: plots.plot_sensitivity(report, path))
    return report


def _analyze(
    loaded: LoadedModel, calibration, eval_data, options: AnalyzeOptions, load: LoadOptions, calibration_samples: int
) -> SensitivityReport:
    model, export = loaded.model, loaded.export
    # As convert does: a recurrent layer at batch 1 (its loop needs a fixed batch), its loop unrolled
    # (calibrating one crashes the converter).
    int8 = ConvertOptions(precision="int8", batch_size=1 if recurrent_layers(model) else None)
    if loops(model):
        model, export = unrolled(model, "int8"), None
    calibration = input_data(calibration, keras_inputs(model), load.preprocessing, reshape=load.reshape_data)
    kinds = layer_kinds(model)
    statistics, owners, ops = _layer_errors(
        model, export, int8, calibration.take(calibration_samples), calibration.take(options.samples), kinds
    )
    layers = [
        LayerSensitivity(
            owners[tensor],
            kinds.get(owners[tensor], ""),
            tensor,
            float(values["rmse_over_scale"]),
            float(values["sqnr_db"]),
            op=ops.get(tensor, ""),
        )
        for tensor, values in statistics.items()
    ]
    float_accuracy = int8_accuracy = int8_error = labelled = None
    asked = load.asked_tasks(model.output_names)
    task = label_task(model, asked)
    if eval_data is not None:
        evaluation = _evaluation(eval_data, model, load, asked)
        reference = loaded.keras_outputs(evaluation.x)
        labelled = evaluation if evaluation.y is not None else None

        def measured(keep_float) -> float:
            """Accuracy on the labels; without, the relative error against the Keras outputs (auto's)."""
            outputs = _int8_outputs(model, export, int8, calibration.take(calibration_samples), evaluation, keep_float)
            if labelled is None:
                return metrics.fidelity(outputs, reference, task="regression").relative_error
            return metrics.task_accuracy(outputs, evaluation.y, task)

        if labelled is None:
            int8_error = measured(())
        else:
            float_accuracy, int8_accuracy = metrics.task_accuracy(reference, evaluation.y, task), measured(())
        most_sensitive = list(
            dict.fromkeys(
                layer.layer for layer in sorted(layers, key=lambda each: -each.rmse_over_scale) if layer.layer in kinds
            )
        )
        kept_float = {name: measured((name,)) for name in most_sensitive[: options.try_float]}
        field = "accuracy_kept_float" if labelled is not None else "relative_error_kept_float"
        layers = [dataclasses.replace(layer, **{field: kept_float.get(layer.layer)}) for layer in layers]
    int4_layers = ()
    if options.weight_bits == 4:
        int4_layers = int4_sensitivity(model, calibration.take(options.samples).x, labelled, task)
    return SensitivityReport(
        loaded.name,
        tuple(layers),
        len(calibration.take(options.samples)),
        float_accuracy,
        int8_accuracy,
        int4_layers=int4_layers,
        int8_relative_error=int8_error,
    )


def _evaluation(eval_data, model, load: LoadOptions, asked):
    """The eval data: labelled for a classifier; a model whose output is a quantity (a regressor, an
    autoencoder) may come without labels, and is then judged against its own Keras outputs."""
    evaluation = fitted_data(eval_data, model, load.preprocessing, load.reshape_data, "eval", asked)
    if evaluation.y is None and output_tasks(model, asked)[0] not in QUANTITIES:
        return labelled_data(eval_data, model, load.preprocessing, load.reshape_data, "eval", asked)  # says why
    return evaluation


def _layer_errors(model, export: Optional[SharedExport], int8: ConvertOptions, calibration, samples, kinds) -> tuple:
    """(int8 op output tensor name → {"rmse_over_scale", "sqnr_db"}, in op order; that tensor name →
    its layer, as `check` and `--keep_float` name it; → its op).

    The quantizer's debug mode (what TFLite's QuantizationDebugger runs) adds a NumericVerify
    op after each int8 op, fed by the op's output and its float twin's on the same quantized
    input. The interpreter keeps every tensor, so both are read after each invoke (without
    that, the arena may have reused the float one).
    """
    tf = _keras.tensorflow()
    from tensorflow.lite.python import convert
    from tensorflow.lite.tools import flatbuffer_utils

    converter = keras_converter(model, int8.batch_size)
    if export is not None:
        export.share_with(converter, int8.batch_size)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset(model, calibration)
    try:
        with captured_output():
            debug_model = bytes(convert.mlir_quantize(calibrate_only(converter), enable_numeric_verify=True))
    except convert.ConverterError as error:
        raise conversion_error(error, "int8") from None
    debug_model = in_keras_order(debug_model, *keras_names(model))
    summary = inspect_tflite(debug_model)
    operators = summary.operators
    layer_of = {
        name: layer
        for operator, (layer, _) in zip(operators, attribute_ops(operators, kinds, output_layers(summary, kinds)))
        for name in operator.output_names
    }
    graph = flatbuffer_utils.convert_bytearray_to_object(debug_model)
    verified = [
        tuple(op.inputs[:2])
        for op in graph.subgraphs[0].operators
        if graph.operatorCodes[op.opcodeIndex].customCode == b"NumericVerify"
    ]
    interpreter = keeping_every_tensor(tf.lite.Interpreter, debug_model)
    inputs = list(zip(interpreter.get_input_details(), per_input(samples.x)))  # in the Keras order, as the data
    details = {detail["index"]: detail for detail in interpreter.get_tensor_details()}
    noise, signal, count = (collections.defaultdict(float) for _ in range(3))
    for index in range(len(samples)):
        for detail, x in inputs:
            interpreter.set_tensor(detail["index"], x[index : index + 1].astype(detail["dtype"]))
        interpreter.invoke()
        for quantized, reference in verified:
            scale, zero_point = details[quantized]["quantization"]
            float_values = interpreter.get_tensor(reference).astype(np.float64)
            error = float_values - (interpreter.get_tensor(quantized).astype(np.float64) - zero_point) * scale
            noise[quantized] += float(np.sum(np.square(error)))
            signal[quantized] += float(np.sum(np.square(float_values)))
            count[quantized] += error.size
    statistics = {
        details[quantized]["name"]: {
            "rmse_over_scale": math.sqrt(noise[quantized] / count[quantized]) / details[quantized]["quantization"][0],
            "sqnr_db": 10.0 * math.log10(max(signal[quantized], 1e-30) / max(noise[quantized], 1e-30)),
        }
        for quantized, _ in verified
    }
    op_of = {name: operator.name for operator in operators for name in operator.output_names}
    return statistics, {name: layer_of.get(name) or name for name in statistics}, op_of


def _int8_outputs(model, export: Optional[SharedExport], int8: ConvertOptions, calibration, evaluation, keep_float):
    options = dataclasses.replace(int8, keep_float=tuple(keep_float))
    return predict(to_tflite(model, options, calibration, export=export), evaluation.x)


def format_sensitivity(report: SensitivityReport) -> str:
    lines = [
        f"int8 sensitivity of {report.model} ({report.samples} calibration inputs; "
        f"RMSE/step {ROUNDING_ONLY:.2f} is rounding alone)"
    ]
    if report.int8_accuracy is not None:
        lines.append(f"accuracy: float {report.float_accuracy * 100:.2f}%, int8 {report.int8_accuracy * 100:.2f}%")
    if report.int8_relative_error is not None:
        lines.append(f"int8 outputs' relative error against Keras (RMS over RMS): {report.int8_relative_error:.2%}")
    rows = [
        (
            rank,
            report.row_name(layer),
            layer.kind,
            f"{layer.rmse_over_scale:.3f}",
            f"{layer.sqnr_db:.1f}",
            _kept_float(layer),
        )
        for rank, layer in enumerate(report.ranked(), start=1)
    ]
    lines.append(table(("rank", "layer", "kind", "RMSE/step", "SQNR dB", "int8 with it float"), rows))
    if report.int4_layers:
        lines += ["", _format_int4(report)]
    return "\n".join(lines)


def _kept_float(layer: LayerSensitivity) -> str:
    if layer.accuracy_kept_float is not None:
        return f"{layer.accuracy_kept_float * 100:.2f}%"
    if layer.relative_error_kept_float is not None:
        return f"{layer.relative_error_kept_float:.2%} error"
    return "-"


def _format_int4(report: SensitivityReport) -> str:
    """Each kernel alone at 4 bits, and which to keep at 8."""
    rows = [
        (
            layer.layer,
            layer.kind,
            f"{layer.weights:,}",
            f"{layer.sqnr_db:.1f}",
            "-" if layer.accuracy is None else f"{layer.accuracy * 100:.2f}%",
        )
        for layer in report.int4_layers
    ]
    lines = [
        "4-bit weights, one kernel at a time (output SQNR against the float model):",
        table(("layer", "kind", "weights", "SQNR dB", "accuracy"), rows),
    ]
    keep = report.keep_at_8_bits
    if not keep:
        lines.append(
            f"No kernel stands out (none {SUGGEST_BELOW_MEDIAN_DB:g} dB below the median): "
            "`qat --weight_bits 4` with every layer at 4 bits."
        )
        return "\n".join(lines)
    cost = sum(layer.weights for layer in report.int4_layers if layer.layer in keep) // 2
    lines.append(
        f"Keep at 8 bits ({SUGGEST_BELOW_MEDIAN_DB:g} dB or more below the median layer; {cost:,} B more flash): "
        f"`tfcompress qat MODEL --weight_bits 4 --layer_bits {','.join(f'{name}=8' for name in keep)}`"
    )
    return "\n".join(lines)
