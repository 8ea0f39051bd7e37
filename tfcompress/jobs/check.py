"""Pre-flight check: before any training or calibration, what will quantize, run and fit.

For every layer: what QAT does with it (transforms/qat.py's plan), which TFLite ops it
lowers to (a fast float32 conversion, cached), whether each op has an integer kernel
in LiteRT (an int8 conversion on a few inputs that lets ops without one stay float),
and, for microcontrollers, whether the installed TFLite Micro resolves each op and
runs the model. The verdict says ready, ready with float fallbacks, or not
deployable, with a fix for each problem. `qat`, `micro` and `convert` run it first.
"""

import contextlib
import dataclasses
import hashlib
from typing import Optional

import numpy as np

from tfcompress import progress
from tfcompress._io import cache
from tfcompress.data import (
    Dataset,
    fit_to_input,
    fit_to_inputs,
    keras_inputs,
    load_data,
    noise,
    one_or_tuple,
    per_input,
)
from tfcompress.errors import ConversionError, PreflightError
from tfcompress.export.calibration import attribute_ops, output_layers
from tfcompress.export.keras_export import SharedExport
from tfcompress.export.tflite import ConvertOptions, input_shapes, to_tflite
from tfcompress.jobs._common import job_outputs, load_model
from tfcompress.jobs._loaded import keras_predict
from tfcompress.options import CheckOptions, LoadOptions, gather
from tfcompress.report import library_versions, table
from tfcompress.report_schema import schema_version
from tfcompress.runtime.faithfulness import Faithfulness, judge
from tfcompress.runtime.inspect import inspect_tflite
from tfcompress.runtime.interpreter import quantize_inputs
from tfcompress.runtime.micro_ops import micro_op_names
from tfcompress.runtime.tflm import beside_litert, micro_run_error
from tfcompress.transforms import qat
from tfcompress.transforms.graph import flatten_nested, recurrent_layers

__all__ = [
    "CheckReport",
    "LayerCheck",
    "Problem",
    "check",
    "check_model",
    "micro_refuses",
    "format_check",
    "READY",
    "FALLBACKS",
    "NOT_DEPLOYABLE",
    "BLOCKS",
    "FALLBACK",
    "QAT_FLOAT",
    "NOTE",
]

READY = "ready"
FALLBACKS = "ready with float fallbacks"
NOT_DEPLOYABLE = "not deployable"

_CHECK_SAMPLES = 16
_MODEL_ROW = "(model)"
_MICRO_FIXES = {
    "GELU": "use activation='relu' or 'hard_swish' instead of gelu",
    "TILE": "avoid tf.tile / RepeatVector; broadcast with a multiply instead",
    "REDUCE_PROD": "fix the batch size (micro converts with batch 1)",
    "TOPK_V2": "take the top-k on the host after the model",
    "SELECT": "use tf.where with broadcastable shapes (SELECT_V2)",
}


BLOCKS = "blocks"  # the target cannot run the model
FALLBACK = "fallback"  # the deployed model runs with ops left in float
QAT_FLOAT = "qat"  # quantization-aware training keeps it float; the post-training int8 model is not affected
NOTE = "note"  # worth knowing; the deployed model is not affected


@dataclasses.dataclass(frozen=True)
class Problem:
    layer: str
    problem: str
    fix: str
    severity: str
    float_op: bool = False  # an op left computing in float (convert and micro refuse those by default)

    @property
    def blocks(self) -> bool:
        return self.severity == BLOCKS

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class LayerCheck:
    name: str
    layer_type: str
    qat: qat.LayerPlan
    ops: tuple  # TFLite ops the layer lowers to
    float_ops: tuple  # of those, the ones left computing in float in the int8 model
    micro_missing: tuple  # ops the installed TFLite Micro has no kernel for
    param_bytes: dict  # estimated weight bytes per precision ({} for a flattened container)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "layer_type": self.layer_type,
            "qat": self.qat.to_dict(),
            "ops": list(self.ops),
            "float_ops": list(self.float_ops),
            "micro_missing": list(self.micro_missing),
            "param_bytes": self.param_bytes,
        }


@dataclasses.dataclass(frozen=True)
class CheckReport:
    model: str
    target: str
    layers: tuple
    problems: tuple
    ops: dict  # op counts of the model converted for the target
    micro_run: Optional[str] = None  # what TFLite Micro said, None when it ran (micro only)
    micro_verification: Optional[Faithfulness] = None  # TFLite Micro as faithful as LiteRT? (when it ran)

    @property
    def verdict(self) -> str:
        severities = {problem.severity for problem in self.problems}
        return NOT_DEPLOYABLE if BLOCKS in severities else FALLBACKS if FALLBACK in severities else READY

    def to_dict(self) -> dict:
        return {
            "schema_version": schema_version("check"),
            "model": self.model,
            "target": self.target,
            "verdict": self.verdict,
            "problems": [problem.to_dict() for problem in self.problems],
            "layers": [layer.to_dict() for layer in self.layers],
            "ops": self.ops,
            "param_bytes": _total_param_bytes(self.layers),
            "micro_run": self.micro_run,
            "micro_verification": self.micro_verification.to_dict() if self.micro_verification else None,
            "versions": library_versions(),
        }

    def summary(self) -> str:
        """The verdict and the problems on one line, for errors raised by other commands."""
        listed = "; ".join(
            f"{p.layer}: {p.problem} (fix: {p.fix})" for p in self.problems if p.severity not in (NOTE, QAT_FLOAT)
        )
        return f"{self.model} is {self.verdict} for {self.target}" + (f": {listed}" if listed else "")

    def raise_if_blocked(self, *, allow_float_ops: bool = True) -> None:
        """PreflightError when not deployable, or (unless allowed) when ops stay float."""
        float_op_problems = [p for p in self.problems if p.severity == FALLBACK and p.float_op]
        if self.verdict == NOT_DEPLOYABLE or (float_op_problems and not allow_float_ops):
            raise PreflightError(
                f"pre-flight check: {self.summary()}. Run `tfcompress check` for the per-layer table, "
                "or pass --skip_check."
            )


def check(
    model,
    *,
    options: Optional[CheckOptions] = None,
    load: Optional[LoadOptions] = None,
    calibration=None,
    json_path=None,
    **settings,
) -> CheckReport:
    """Checks a Keras model (or model file) against a deployment target (`target="micro"`, ...).

    `calibration` (a data file or Dataset) is optional: only a few inputs are used, to
    find which ops have integer kernels; without it, uniform noise in [0, 1) is used,
    which is enough for that question (not for accuracy).
    """
    options, load = gather(settings, (CheckOptions, options), (LoadOptions, load))
    with job_outputs(json_path, inputs=(model, calibration)) as outputs:
        model, model_path = load_model(model, load)
        progress.stage(f"converting for {options.target} and reading the result layer by layer")
        if calibration is not None and not isinstance(calibration, Dataset):
            calibration = load_data(calibration, load.preprocessing)
        report = check_model(
            model, target=options.target, calibration=calibration, source=model_path, reshape_data=load.reshape_data
        )
        outputs.report(json_path, report)
    return report


def check_model(
    model,
    *,
    target: str,
    calibration: Optional[Dataset] = None,
    source=None,
    reshape_data: bool = False,
    export: Optional[SharedExport] = None,
) -> CheckReport:
    """`check` for a loaded tf_keras model; conversions are cached when `source` names its file,
    and share `export` (of `model`) when given."""
    CheckOptions(target=target)  # validates it
    plans = qat.plan_qat(model)
    flat = model if any(plan.action == qat.REFUSE for plan in plans) else flatten_nested(model)
    with contextlib.ExitStack() as cleanup:
        if export is None or export.model is not flat:  # a flattened copy is a model of its own
            export = cleanup.enter_context(SharedExport(flat))
        return _Check(
            flat,
            str(source or model.name),
            target,
            plans,
            model_cache_key(source),
            _check_inputs(flat, calibration, reshape_data),
            export,
        ).run()


def cached_conversion(
    model, cache_key: Optional[dict], options: ConvertOptions, inputs=None, export: Optional[SharedExport] = None
) -> bytes:
    """`to_tflite`, from the conversions cache when `cache_key` names the model file's content.

    `inputs` calibrate integer precisions. `convert` reads the float32 conversion the check
    made from here, for its size ratio, without converting again."""

    def convert() -> bytes:
        calibration = Dataset(inputs, None, "check") if options.needs_calibration else None
        return to_tflite(model, options, calibration, export=export)

    if cache_key is None:
        return convert()
    key = {
        **cache_key,
        "options": dataclasses.asdict(options),
        "versions": library_versions(),
        "source": cache.source_digest(),
        "inputs": _array_digest(inputs) if options.needs_calibration else None,
    }
    return cache.cached_bytes("conversions", key, convert)


def micro_refuses(model_bytes: bytes, ops) -> bool:
    """The check's micro test on a converted model, without its per-layer diagnosis: TFLite Micro
    lacks one of `ops`, or cannot run the model."""
    if not set(ops) <= set(micro_op_names()):
        return True
    return micro_run_error(model_bytes, _probe_arena(model_bytes)) is not None


def _probe_arena(model_bytes: bytes) -> int:
    """An arena generous enough that a failure to run is not a failure to fit."""
    return max(16 * len(model_bytes), 1 << 22)


def model_cache_key(source) -> Optional[dict]:
    """What identifies a model file in the conversions cache (None for an in-memory model)."""
    return {"model": cache.file_digest(source)} if source is not None else None


class _Check:
    """One check run: converts for the target, then reads the flatbuffers layer by layer."""

    def __init__(self, model, name, target, plans, cache_key, inputs, export):
        self.model, self.name, self.target, self.plans = model, name, target, plans
        self.cache_key, self.inputs, self.export = cache_key, inputs, export
        self.problems = []
        self.verification = None

    def run(self) -> CheckReport:
        micro = self.target == "micro"
        # Recurrent layers' loops need a fixed batch (as convert converts them).
        batch_size = 1 if micro or recurrent_layers(self.model) else None
        lowered = self._convert(ConvertOptions(precision="float32", batch_size=batch_size))
        if self.target == "mobile-fp16":
            deployed = self._convert(ConvertOptions(precision="float16", batch_size=batch_size))
        else:
            deployed = self._convert(
                ConvertOptions(
                    precision="int8",
                    io_type="int8" if micro else "float32",
                    per_tensor_dense=micro,
                    calibration_samples=_CHECK_SAMPLES,
                    batch_size=batch_size,
                    float_fallback=True,
                )
            )
        layer_names = [layer.name for layer in self.model.layers]
        lowered_ops = _ops_by_layer(lowered, layer_names)
        deployed_ops = _ops_by_layer(deployed, layer_names)
        available = micro_op_names() if micro else None
        for plan in self.plans:
            if plan.action == qat.REFUSE and self.target != "mobile-fp16":
                self.problems.append(
                    Problem(
                        plan.name,
                        f"QAT cannot train it ({plan.reason}); post-training int8 still works",
                        plan.fix,
                        QAT_FLOAT,
                    )
                )
        flattened = tuple(
            LayerCheck(plan.name, plan.layer_type, plan, (), (), (), {})
            for plan in self.plans
            if plan.action == qat.FLATTEN
        )
        layers = flattened + tuple(
            self._layer_check(layer, lowered_ops, deployed_ops, available)
            for layer in self.model.layers
            if type(layer).__name__ != "InputLayer"
        )
        self._model_row_problems(deployed_ops, available)
        micro_run = (
            self._micro_run(deployed)
            if micro and deployed is not None and not any(p.blocks for p in self.problems)
            else None
        )
        summary = inspect_tflite(deployed) if deployed is not None else None
        return CheckReport(
            self.name,
            self.target,
            layers,
            tuple(self.problems),
            summary.ops if summary else {},
            micro_run,
            self.verification,
        )

    def _convert(self, options: ConvertOptions) -> Optional[bytes]:
        try:
            return cached_conversion(self.model, self.cache_key, options, self.inputs, self.export)
        except ConversionError as error:
            self.problems.append(
                Problem(
                    _MODEL_ROW,
                    f"{options.precision} conversion failed: {str(error).rstrip('.')}",
                    "replace the layer whose op the message names with standard Keras layers",
                    BLOCKS,
                )
            )
            return None

    def _layer_check(self, layer, lowered_ops, deployed_ops, available) -> LayerCheck:
        plan = next(
            (p for p in self.plans if p.name == layer.name),
            qat.LayerPlan(layer.name, type(layer).__name__, qat.REFUSE, "inside a subclassed model"),
        )
        ops = tuple(op.name for op in lowered_ops.get(layer.name, ()))
        deployed = deployed_ops.get(layer.name, ())
        integer_target = self.target != "mobile-fp16"
        float_ops = tuple(sorted({op.name for op in deployed if op.computes_in_float})) if integer_target else ()
        missing = tuple(sorted({op.name for op in deployed if op.name not in available})) if available else ()
        if integer_target:
            if plan.action == qat.KEEP_FLOAT:
                # Without weights, QAT has nothing to train: only its output range comes from calibration.
                severity = QAT_FLOAT if layer.weights or float_ops else NOTE
                self.problems.append(Problem(plan.name, f"stays float during QAT: {plan.reason}", plan.fix, severity))
            for op in float_ops:
                self.problems.append(
                    Problem(
                        layer.name,
                        f"{op} computes in float: LiteRT has no int8 kernel for it here",
                        "replace the layer, or accept float ops with --allow_float_ops",
                        FALLBACK,
                        float_op=True,
                    )
                )
        for op in missing:
            self.problems.append(
                Problem(
                    layer.name,
                    f"TFLite Micro has no {op} kernel",
                    _MICRO_FIXES.get(
                        op,
                        f"replace {layer.name} with layers TFLite "
                        "Micro supports, or deploy with LiteRT (--target mobile)",
                    ),
                    BLOCKS,
                )
            )
        return LayerCheck(layer.name, type(layer).__name__, plan, ops, float_ops, missing, _param_bytes(layer))

    def _model_row_problems(self, deployed_ops, available) -> None:
        for op in dict.fromkeys(op.name for op in deployed_ops.get(_MODEL_ROW, ())):
            if available is not None and op not in available:
                self.problems.append(
                    Problem(
                        _MODEL_ROW,
                        f"TFLite Micro has no {op} kernel",
                        _MICRO_FIXES.get(op, "deploy with LiteRT (--target mobile)"),
                        BLOCKS,
                    )
                )

    def _micro_run(self, model_bytes: bytes) -> Optional[str]:
        error = micro_run_error(model_bytes, _probe_arena(model_bytes))
        if error is not None:
            self.problems.append(
                Problem(
                    _MODEL_ROW,
                    f"TFLite Micro cannot run the int8 model: {error}",
                    "replace the op it names, or deploy with LiteRT (--target mobile)",
                    BLOCKS,
                )
            )
            return error
        self.verification = self._micro_faithfulness(model_bytes)
        if not self.verification.passed:
            self.problems.append(
                Problem(
                    _MODEL_ROW,
                    f"TFLite Micro runs the int8 model less faithfully than LiteRT: {self.verification.describe()}",
                    "deploy with LiteRT (--target mobile), or package it anyway with micro --accept_micro_difference",
                    BLOCKS,
                )
            )
        return None

    def _micro_faithfulness(self, model_bytes: bytes) -> Faithfulness:
        """micro's test on the check's inputs: TFLite Micro, both LiteRT kernel sets and the Keras model."""
        summary = inspect_tflite(model_bytes)
        inputs = tuple(array[:_CHECK_SAMPLES] for array in per_input(self.inputs))
        micro, litert = beside_litert(
            model_bytes, quantize_inputs(inputs, summary.input_details()), _probe_arena(model_bytes)
        )
        keras_outputs = keras_predict(self.model, inputs)
        return judge(micro, litert, summary.output_details(), keras_outputs, summary.output_keys)


def _check_inputs(model, calibration: Optional[Dataset], reshape_data: bool):
    """The check's inputs: an array, or a tuple of one per input for a model with several."""
    shapes = input_shapes(model)
    if calibration is None:
        return one_or_tuple(noise((_CHECK_SAMPLES,) + tuple(shape[1:]), seed) for seed, shape in enumerate(shapes))
    if len(shapes) == 1:
        return fit_to_input(calibration.take(_CHECK_SAMPLES), shapes[0], reshape=reshape_data).x
    return fit_to_inputs(calibration.take(_CHECK_SAMPLES), keras_inputs(model), reshape=reshape_data).x


def _ops_by_layer(model_bytes: Optional[bytes], layer_names) -> dict:
    """Layer name → its OperatorInfos, read from the tensor names the converter kept.

    Names look like "model/re_lu/Relu;model/conv2d/Conv2D". The op making a model output is named
    by the signature: it belongs to that output's layer.
    """
    if model_bytes is None:
        return {}
    summary = inspect_tflite(model_bytes)
    operators, names = summary.operators, set(layer_names)
    by_layer = {}
    for operator, (layer, _) in zip(operators, attribute_ops(operators, names, output_layers(summary, names))):
        by_layer.setdefault(layer or _MODEL_ROW, []).append(operator)
    return by_layer


def _param_bytes(layer) -> dict:
    """Weight bytes per precision: kernels at 4/2/1 bytes, biases and vectors stay 32-bit in int8."""
    kernels = sum(int(np.prod(w.shape)) for w in layer.weights if len(w.shape) >= 2)
    vectors = sum(int(np.prod(w.shape)) for w in layer.weights if len(w.shape) < 2)
    return {"float32": 4 * (kernels + vectors), "float16": 2 * (kernels + vectors), "int8": kernels + 4 * vectors}


def _total_param_bytes(layers) -> dict:
    return {
        precision: sum(layer.param_bytes.get(precision, 0) for layer in layers)
        for precision in ("float32", "float16", "int8")
    }


def _array_digest(x) -> str:
    """A digest of the inputs (every input's array, in order)."""
    digest = hashlib.sha256()
    for array in per_input(x):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def format_check(report: CheckReport) -> str:
    """The per-layer table, the problems with their fixes, and the verdict."""
    header = ("layer", "type", "QAT", "TFLite ops", "float in int8", "missing in TFLM", "int8 bytes")
    rows = [
        (
            layer.name,
            layer.layer_type,
            layer.qat.action,
            " ".join(dict.fromkeys(layer.ops)) or "-",
            " ".join(layer.float_ops) or "-",
            " ".join(layer.micro_missing) or "-",
            _bytes(layer, "int8"),
        )
        for layer in report.layers
    ]
    if report.target == "mobile-fp16":
        header, rows = (
            header[:4] + ("fp16 bytes",),
            [row[:4] + (_bytes(layer, "float16"),) for row, layer in zip(rows, report.layers)],
        )
    elif report.target == "mobile":
        header, rows = header[:5] + header[6:], [row[:5] + row[6:] for row in rows]
    lines = [table(header, rows)]
    for problem in report.problems:
        lines.append(f"{problem.severity}: {problem.layer}: {problem.problem}. Fix: {problem.fix}.")
    if report.micro_verification and report.micro_verification.passed:
        lines.append(f"TFLite Micro is as faithful as LiteRT: {report.micro_verification.describe()}")
    qat_float = [problem.layer for problem in report.problems if problem.severity == QAT_FLOAT]
    kept = f" (QAT would train {', '.join(qat_float)} in float: the int8 model itself is not affected)"
    lines.append(f"verdict ({report.target}): {report.verdict}" + (kept if qat_float else ""))
    return "\n".join(lines)


def _bytes(layer: LayerCheck, precision: str) -> str:
    return f"{layer.param_bytes[precision]:,}" if layer.param_bytes else "-"
