"""The convert job: load → convert → verify → report, composed from the stages.

`convert` is what `tfcompress convert` and `tfcompress.convert(...)` run: it never
returns a model it has not measured against the Keras original.
"""

import concurrent.futures
import dataclasses
from typing import Optional

import numpy as np
from absl import logging

from tfcompress import progress
from tfcompress._io.files import path_size
from tfcompress.data import Dataset, input_data, keras_inputs, noise, one_or_tuple
from tfcompress.errors import ConversionError, DataError
from tfcompress.export.tflite import CALIBRATED_PRECISIONS, ConvertOptions, to_tflite
from tfcompress.jobs import _cautions as cautions
from tfcompress.jobs._common import job_outputs, load_model
from tfcompress.jobs._loaded import LoadedModel
from tfcompress.jobs.check import cached_conversion, check_model, micro_refuses, model_cache_key
from tfcompress.options import GuardOptions, LoadOptions, gather
from tfcompress.report import ConversionReport, Reference
from tfcompress.runtime import metrics
from tfcompress.runtime.inspect import file_parts, gzip_size, inspect_tflite, weight_tensors
from tfcompress.runtime.interpreter import predict, xnnpack_warning
from tfcompress.runtime.latency import measure_latency
from tfcompress.runtime.task import resolve_tasks
from tfcompress.transforms.qat import has_low_bit_weights, is_quantize_aware

__all__ = ["convert", "convert_loaded", "for_model", "io_report", "RANDOM_CALIBRATION"]

RANDOM_CALIBRATION = "random"
_RANDOM_CALIBRATION_SAMPLES = 100
_INT4_LOSS_WARNING_PT = 1.0  # post-training int4 losses above this point at QAT


def convert(
    model,
    *,
    options: Optional[ConvertOptions] = None,
    load: Optional[LoadOptions] = None,
    guard: Optional[GuardOptions] = None,
    calibration=None,
    eval_data=None,
    output=None,
    report_path=None,
    latency_runs: int = 100,
    check_target: str = "mobile",
    **settings,
) -> ConversionReport:
    """Converts a Keras model (or model file) to TFLite and measures the result.

    `options`, `load` and `guard` may also be given field by field as keywords
    (`precision="int8"`, `trust_model_code=True`, `skip_check=True`). int8 and int16x8 need
    `calibration` (a data file or `Dataset`), except for a QAT model, whose learned ranges are
    used (calibration then only covers layers QAT kept in float); "random" calibrates on
    uniform noise, is logged as a warning and marked in the report. With `eval_data` the report
    has accuracy and accuracy drop against the Keras model; fidelity is measured on the eval
    data, or else the calibration data. An int8 model in which the converter left ops computing
    in float is an error unless `allow_float_ops`. A model that fails to convert, or that
    `check_target` cannot run, fails with the pre-flight check's per-layer fixes (unless
    `skip_check`); a model that converts cleanly is converted once.
    """
    options, load, guard = gather(settings, (ConvertOptions, options), (LoadOptions, load), (GuardOptions, guard))
    with job_outputs(output, report_path, inputs=(model, calibration, eval_data)) as outputs:
        model, model_path = load_model(model, load)
        with LoadedModel(model, model_path) as loaded:
            report = convert_loaded(
                loaded,
                for_model(options, model),
                load,
                guard,
                calibration,
                eval_data,
                output,
                latency_runs,
                check_target,
            )
        outputs.bytes(output, report.tflite)
        outputs.report(report_path, report)
    return report


def for_model(options: ConvertOptions, model) -> ConvertOptions:
    """The options with what the model itself decides: QAT's learned ranges, weights trained at 4 bits."""
    return dataclasses.replace(
        options, quantize_aware=is_quantize_aware(model), low_bit_weights=has_low_bit_weights(model)
    )


def convert_loaded(
    loaded: LoadedModel,
    options: ConvertOptions,
    load: LoadOptions,
    guard: GuardOptions,
    calibration,
    eval_data,
    output=None,
    latency_runs: int = 100,
    check_target: str = "mobile",
) -> ConversionReport:
    """`convert` for a loaded model, writing nothing: what auto measures each candidate with."""
    model = loaded.model
    inputs = keras_inputs(model)
    options, warnings = cautions.for_recurrent_layers(model, options)
    if options.precision == "int16x8" and guard.allow_float_ops:  # else an op without an int16x8 kernel fails
        options = dataclasses.replace(options, float_fallback=True)
    preprocessing, reshape_data = load.preprocessing, load.reshape_data
    calibration_data = _calibration(calibration, options, inputs, preprocessing, reshape_data, warnings)
    evaluation = input_data(eval_data, inputs, preprocessing, reshape=reshape_data)
    progress.stage(f"converting to {options.precision}" + (" (calibrating)" if options.needs_calibration else ""))
    tflite_bytes, summary = _checked_conversion(loaded, options, guard, calibration_data, check_target)
    if options.precision == "int8" and summary.float_ops and options.keep_float:
        warnings.append(f"kept in float as asked ({', '.join(options.keep_float)}): {', '.join(summary.float_ops)}")
    elif options.precision in CALIBRATED_PRECISIONS and summary.float_ops:
        message = (
            f"the converter left these ops computing in float in the {options.precision} model: "
            f"{', '.join(summary.float_ops)}"
        )
        if not guard.allow_float_ops:
            raise ConversionError(f"{message}. Replace those layers, or pass --allow_float_ops to accept them.")
        warnings.append(message)

    reference_accuracy = accuracy = fidelity = None
    by_output = ()
    check_data = evaluation if evaluation is not None else calibration_data
    if check_data is not None:
        progress.stage(f"verifying against Keras on {len(check_data)} inputs")
    float32_bytes, keras_outputs, tflite_outputs = _measured_beside_keras(loaded, options, tflite_bytes, check_data)
    applied = next((data.preprocessing for data in (check_data, calibration_data) if data is not None), None)
    warnings.extend(cautions.scaled_twice(model, applied))
    warnings.extend(cautions.clusters_spread(model, options))
    warnings.extend(cautions.state_between_invokes(summary))
    if check_data is not None:
        tasks = resolve_tasks(load.asked_tasks(summary.output_keys), summary)
        by_output = metrics.fidelity_by_output(tflite_outputs, keras_outputs, tasks, summary.output_keys, check_data.x)
        fidelity = by_output[0]
        warnings.extend(cautions.meaningless_measures(keras_outputs, evaluation, tasks, load.tells_task))
        if evaluation is not None and len(tasks) == 1:
            reference_accuracy = metrics.task_accuracy(keras_outputs, evaluation.y, tasks[0])
            accuracy = metrics.task_accuracy(tflite_outputs, evaluation.y, tasks[0])
    if options.packs_int4_after_conversion:
        warnings.extend(_post_training_int4_loss(reference_accuracy, accuracy, fidelity))
    if fidelity is not None and options.calibration_method != "minmax":
        warnings.extend(_calibration_method_cost(loaded, options, load, calibration, eval_data, fidelity))
    if latency_runs:
        progress.stage("measuring latency")
    latency = measure_latency(tflite_bytes, runs=latency_runs, warmup=10) if latency_runs else None
    warnings.extend(filter(None, [xnnpack_warning(tflite_bytes)]))
    return ConversionReport(
        float32_bytes=float32_bytes,
        model=loaded.name,
        output=None if output is None else str(output),
        precision=options.precision,
        size_bytes=len(tflite_bytes),
        gzip_bytes=gzip_size(tflite_bytes),
        reference=Reference(loaded.name, path_size(loaded.path) or _keras_float32_bytes(model), reference_accuracy),
        accuracy=accuracy,
        fidelity=fidelity,
        fidelity_by_output=by_output if len(by_output) > 1 else (),
        latency=latency,
        ops=summary.ops,
        float_ops=summary.float_ops,
        weights=weight_tensors(summary),
        file_bytes=file_parts(summary),
        io=io_report(summary),
        calibration=_calibration_note(calibration_data, options),
        options={
            "io_type": options.io_type,
            "per_tensor_dense": options.per_tensor_dense,
            "calibration_samples": options.calibration_samples,
            "batch_size": options.batch_size,
            "allow_float_ops": guard.allow_float_ops,
            "skip_check": guard.skip_check,
            "quantize_aware": options.quantize_aware,
            "keep_float": list(options.keep_float),
            "calibration_method": options.calibration_method,
            "percentile": options.percentile,
            "input_range": list(options.input_range) if options.input_range else None,
            "weight_bits": 4 if options.low_bit_weights else options.weight_bits,
        },
        warnings=tuple(warnings),
        preprocessing=applied,
        tflite=tflite_bytes,
    )


def _calibration_method_cost(loaded, options: ConvertOptions, load, calibration, eval_data, fidelity) -> tuple:
    """A warning when the calibration method asked for is materially less faithful than the min-max
    default on the same data, with both numbers: clipping ranges helps some models and hurts others."""
    progress.stage("measuring min-max calibration beside " + options.calibration_method)
    minmax = convert_loaded(
        loaded,
        dataclasses.replace(options, calibration_method="minmax"),
        load,
        GuardOptions(skip_check=True, allow_float_ops=True),
        calibration,
        eval_data,
        latency_runs=0,
    ).fidelity
    if not fidelity.worse_than(minmax):
        return ()
    message = (
        f"--calibration_method {options.calibration_method} costs fidelity: {fidelity.headline()} against the "
        f"Keras model, {minmax.headline()} with the min-max default"
    )
    logging.warning(message)
    return (message,)


def _post_training_int4_loss(reference_accuracy, accuracy, fidelity) -> tuple:
    """A warning when rounding trained weights to 4 bits cost more than training at 4 bits would."""
    drop = metrics.accuracy_drop(reference_accuracy, accuracy)
    if drop is not None:
        lost, loss = drop, f"{drop:.2f} pt of accuracy"
    elif fidelity is not None and fidelity.top1_agreement is not None:
        lost = (1 - fidelity.top1_agreement) * 100
        loss = f"{lost:.1f}% of the Keras model's top-1 predictions"
    else:
        return ()
    if lost <= _INT4_LOSS_WARNING_PT:
        return ()
    message = (
        f"post-training int4 weights cost {loss}; `tfcompress qat --weight_bits 4` trains the "
        "weights at 4 bits and usually loses far less"
    )
    logging.warning(message)
    return (message,)


def _calibration(
    calibration, options: ConvertOptions, inputs, preprocessing, reshape_data, warnings
) -> Optional[Dataset]:
    if isinstance(calibration, str) and calibration == RANDOM_CALIBRATION:
        message = (
            "calibrating on random noise: activation ranges will not match real data "
            "and accuracy may collapse; pass real calibration data"
        )
        logging.warning(message)
        warnings.append(message)
        arrays = one_or_tuple(
            noise((_RANDOM_CALIBRATION_SAMPLES,) + tuple(model_input.shape[1:]), seed)
            for seed, model_input in enumerate(inputs)
        )
        return Dataset(arrays, None, RANDOM_CALIBRATION)
    if calibration is None and options.needs_calibration:
        raise DataError(
            f"precision={options.precision} needs calibration data: pass --calibration DATA "
            "(a few hundred real inputs), or --calibration random to accept random ranges."
        )
    return input_data(calibration, inputs, preprocessing, reshape=reshape_data)


def io_report(summary) -> dict:
    """The model's inputs and outputs as the report gives them: dtype, shape, bytes, quantization."""
    return {"inputs": [t.io_dict() for t in summary.inputs], "outputs": [t.io_dict() for t in summary.outputs]}


def _calibration_note(data: Optional[Dataset], options: ConvertOptions) -> dict:
    """What the converter calibrated on: it reads at most `calibration_samples` inputs."""
    if data is None or not options.needs_calibration:
        return {"source": None if data is None else data.source, "samples": 0, "random": False}
    return {
        "source": data.source,
        "samples": min(len(data), options.calibration_samples),
        "random": data.source == RANDOM_CALIBRATION,
    }


def _keras_float32_bytes(model) -> int:
    return int(sum(np.prod(w.shape) for w in model.weights)) * 4


def _measured_beside_keras(loaded: LoadedModel, options: ConvertOptions, tflite_bytes: bytes, data) -> tuple:
    """(the float32 size, the Keras outputs on `data`, the converted model's): LiteRT's pass runs in a
    thread beside TensorFlow's Keras pass, which leaves a core idle (MobileNetV2 at 224×224, 200 inputs:
    11.3 s one after another, 7.8 s side by side with the float32 conversion). The float32 conversion
    itself waits for the Keras pass: exporting the model detaches its predict function for a moment,
    and a predict running beside it then called None (a Keras 3 SimpleRNN, in the coverage suite)."""
    if data is None:
        return _float32_bytes(loaded, options, tflite_bytes), None, None
    with concurrent.futures.ThreadPoolExecutor(1) as beside:
        tflite_outputs = beside.submit(predict, tflite_bytes, data.x)
        keras_outputs = loaded.keras_outputs(data.x)
        tflite_outputs = tflite_outputs.result()
    return _float32_bytes(loaded, options, tflite_bytes), keras_outputs, tflite_outputs


def _float32_bytes(loaded: LoadedModel, options: ConvertOptions, tflite_bytes: bytes) -> Optional[int]:
    """Size of the same model's float32 .tflite, what size ratios are taken against (cached by
    the model file's content); None for a QAT model (its float32 form holds fake-quant ops)."""
    if options.quantize_aware:
        return None
    if options.precision == "float32":
        return len(tflite_bytes)
    float32 = ConvertOptions(precision="float32", batch_size=options.batch_size)
    return len(cached_conversion(loaded.model, model_cache_key(loaded.path), float32, export=loaded.export))


def _checked_conversion(
    loaded: LoadedModel, options: ConvertOptions, guard: GuardOptions, calibration: Optional[Dataset], target: str
) -> tuple:
    """(the conversion, its op summary), with the pre-flight check's verdict for `target`.

    The check converts the model its own ways to diagnose it layer by layer. For int8 that
    is needed only when this conversion fails, leaves ops in float that were not asked for,
    or the target cannot run it: otherwise the check finds nothing to block, so a clean
    model is converted once. int16x8 is checked first, as the check asks about int8.
    """
    checked = options.precision in CALIBRATED_PRECISIONS and not guard.skip_check
    if checked and options.precision == "int16x8":
        _preflight(loaded, guard, calibration, target)
        checked = False
    try:
        tflite_bytes = to_tflite(loaded.model, options, calibration, export=loaded.export)
    except ConversionError:
        if checked:
            _preflight(loaded, guard, calibration, target)
        raise
    summary = inspect_tflite(tflite_bytes)
    if checked and not _target_runs(tflite_bytes, summary, options, guard, target):
        _preflight(loaded, guard, calibration, target)
    return tflite_bytes, summary


def _target_runs(tflite_bytes: bytes, summary, options: ConvertOptions, guard: GuardOptions, target: str) -> bool:
    """Whether nothing the pre-flight check blocks on shows in the converted model itself."""
    if summary.float_ops and not options.keep_float and not guard.allow_float_ops:
        return False
    return target != "micro" or not micro_refuses(tflite_bytes, summary.ops)


def _preflight(loaded: LoadedModel, guard: GuardOptions, calibration: Optional[Dataset], target: str) -> None:
    progress.stage(f"pre-flight check for {target}")
    real_calibration = None if calibration is None or calibration.source == RANDOM_CALIBRATION else calibration
    check_model(
        loaded.model, target=target, calibration=real_calibration, source=loaded.path, export=loaded.export
    ).raise_if_blocked(allow_float_ops=guard.allow_float_ops)
