"""The micro job: a model → files a TFLite Micro firmware project drops in, verified.

The model is converted to full integer (int8 I/O, per-tensor Dense weights unless asked
otherwise), run in the real TFLite Micro interpreter to measure its arena and to check it
is as faithful to the Keras model as LiteRT is (runtime.faithfulness), and only then
written: `model.tflite`, the C++ sources, `report.json` and `report.md`. Any failure leaves
the output folder untouched.
"""

import dataclasses
from pathlib import Path
from typing import Optional

import numpy as np
from absl import logging

from tfcompress import progress
from tfcompress._io.files import atomic_folder, check_not_inputs, write_atomic, write_json_atomic
from tfcompress.data import input_data, keras_inputs, one_or_tuple, per_input
from tfcompress.errors import ConversionError, DataError, ModelLoadError
from tfcompress.export.ethosu import compile_for_ethos_u
from tfcompress.export.micro import arena_with_margin, check_identifier, micro_sources
from tfcompress.export.tflite import ConvertOptions
from tfcompress.jobs._common import load_model
from tfcompress.jobs._loaded import LoadedModel
from tfcompress.jobs.convert import convert_loaded, for_model, io_report
from tfcompress.jobs.micro_lut import LutResult, format_lut_section, lut_compress_verified
from tfcompress.options import GuardOptions, LoadOptions, MicroOptions, gather
from tfcompress.report import file_parts_text, library_versions, preprocessing_text
from tfcompress.report_schema import schema_version
from tfcompress.runtime import metrics
from tfcompress.runtime.faithfulness import Faithfulness, judge
from tfcompress.runtime.inspect import (
    file_parts,
    gzip_size,
    inspect_tflite,
    is_full_integer,
    precision_of,
    read_tflite,
    weight_tensors,
)
from tfcompress.runtime.interpreter import per_output, predict, quantize_inputs
from tfcompress.runtime.latency import random_inputs
from tfcompress.runtime.task import resolve_tasks
from tfcompress.runtime.tflm import run_micro

__all__ = ["MicroReport", "to_micro"]

_AGREEMENT_SAMPLES = 100
_LUT_CHECK_SAMPLES = 500  # inputs on which LUT-compressed outputs must equal the uncompressed ones


@dataclasses.dataclass(frozen=True)
class MicroReport:
    model: str
    output_dir: str
    size_bytes: int  # flash: the flatbuffer
    gzip_bytes: int
    arena_bytes: int  # measured in TFLite Micro
    arena_with_margin_bytes: int  # what the header declares
    recorded_arena_bytes: int
    max_diff_steps: int
    diff_steps_by_kernels: dict
    agreement_samples: int
    micro_latency: dict
    ops: dict
    accuracy: Optional[float]
    reference: Optional[dict]  # the Keras model: path, size_bytes, accuracy
    fidelity: Optional[metrics.Fidelity]  # LiteRT's outputs against the Keras model's
    per_channel_dense_fidelity: Optional[metrics.Fidelity]  # the same with per-channel Dense weights
    preprocessing: Optional[dict]  # what was applied to the stored data (data.Preprocessing.applied)
    per_tensor_dense: Optional[bool]
    files: tuple
    io: dict  # the model's inputs and outputs (dtype, shape, bytes, quantization)
    calibration: Optional[dict]  # what the int8 conversion calibrated on; None for a given .tflite
    warnings: tuple
    float32_bytes: Optional[int]  # the float32 .tflite of the same Keras model (None for a given .tflite)
    weights: tuple = ()  # every stored weight tensor: name, dtype, bits, bytes (runtime.inspect.weight_tensors)
    file_bytes: Optional[dict] = None  # kernels, other constants, quantization parameters, ... (inspect.file_parts)
    ethos_u: Optional[dict] = None  # vela's summary when an Ethos-U target was asked for
    lut: Optional[LutResult] = None  # with compress="lut": what was compressed, verified, measured
    faithfulness: Optional[Faithfulness] = None  # TFLite Micro vs LiteRT, against Keras
    accepted_difference: bool = False  # packaged with --accept_micro_difference though it failed
    fidelity_by_output: tuple = ()  # a model with several outputs: each one's Fidelity, in order

    @property
    def accuracy_drop(self) -> Optional[float]:
        return metrics.accuracy_drop((self.reference or {}).get("accuracy"), self.accuracy)

    def to_dict(self) -> dict:
        return {
            "schema_version": schema_version("micro"),
            "model": self.model,
            "output": str(Path(self.output_dir) / "model.tflite"),
            "precision": "int8",
            "size_bytes": self.size_bytes,
            "gzip_bytes": self.gzip_bytes,
            "reference": self.reference,
            "accuracy": self.accuracy,
            "accuracy_drop": self.accuracy_drop,
            "fidelity": self.fidelity.to_dict() if self.fidelity else None,
            "fidelity_by_output": [fidelity.to_dict() for fidelity in self.fidelity_by_output],
            "per_channel_dense_fidelity": (
                self.per_channel_dense_fidelity.to_dict() if self.per_channel_dense_fidelity else None
            ),
            "latency_us": self.micro_latency,
            "ops": self.ops,
            "float_ops": [],
            "arena_bytes": self.arena_bytes,
            "arena_with_margin_bytes": self.arena_with_margin_bytes,
            "recorded_arena_bytes": self.recorded_arena_bytes,
            "micro": {
                "max_diff_steps": self.max_diff_steps,
                "diff_steps_by_kernels": self.diff_steps_by_kernels,
                "agreement_samples": self.agreement_samples,
                "verification": self.faithfulness.to_dict() if self.faithfulness else None,
                "accepted_difference": self.accepted_difference,
                "runtime": "tflite-micro Python interpreter",
            },
            "per_tensor_dense": self.per_tensor_dense,
            "weights": list(self.weights),
            "file_bytes": self.file_bytes,
            "files": list(self.files),
            "ethos_u": self.ethos_u,
            "io": self.io,
            "calibration": self.calibration,
            "preprocessing": self.preprocessing,
            "warnings": list(self.warnings),
            "float32_bytes": self.float32_bytes,
            "lut": self.lut.to_dict() if self.lut else None,
            "versions": library_versions(),
        }


CONVERSION = ConvertOptions(precision="int8", io_type="int8", per_tensor_dense=True, batch_size=1)


def to_micro(
    model,
    output_dir,
    *,
    options: Optional[MicroOptions] = None,
    conversion: Optional[ConvertOptions] = None,
    load: Optional[LoadOptions] = None,
    guard: Optional[GuardOptions] = None,
    calibration=None,
    eval_data=None,
    **settings,
) -> MicroReport:
    """Builds and verifies the TFLite Micro deployment files for a Keras model or `.tflite`.

    `options`, `conversion` (full integer at batch 1 always; per-tensor Dense weights unless
    `per_tensor_dense=False`), `load` and `guard` may also be given field by field as keywords. With
    `npu` (e.g. "ethos-u55-128") the verified model is also compiled by Arm's vela
    into `model_vela.tflite`, and vela's SRAM/flash/cycle summary joins the report. With
    `compress="lut"`, weight tensors of few distinct values (clustered layers) are stored
    as bit-packed indices that TFLite Micro's DECODE op expands; the files describe that model.
    A model TFLite Micro runs less faithfully than LiteRT is refused unless `accept_micro_difference`.
    """
    options, conversion, load, guard = gather(
        settings,
        (MicroOptions, options),
        (ConvertOptions, conversion or CONVERSION),
        (LoadOptions, load),
        (GuardOptions, guard),
    )
    conversion = dataclasses.replace(conversion, precision="int8", io_type="int8", batch_size=1)
    output_dir = Path(output_dir)
    check_not_inputs(output_dir, (model, calibration, eval_data), folder=True)
    with atomic_folder(output_dir) as staging:  # checks the folder can be written before the slow work
        return _build_micro(model, output_dir, staging, calibration, eval_data, options, conversion, load, guard)


def _build_micro(
    model,
    output_dir,
    staging,
    calibration,
    eval_data,
    options: MicroOptions,
    conversion: ConvertOptions,
    load: LoadOptions,
    guard: GuardOptions,
) -> MicroReport:
    check_identifier(options.name)
    arena_with_margin(1, options.arena_margin)  # validates the margin before the slow work
    package = _Package(output_dir, staging, eval_data if eval_data is not None else calibration, options, load)
    model_path = Path(model) if not hasattr(model, "inputs") else None
    if model_path is not None and model_path.suffix == ".tflite":
        return package.build(_checked_tflite(model_path), model_path, eval_data)
    if calibration is None:
        raise DataError(
            "micro needs --calibration DATA: int8 conversion calibrates activation ranges on a few hundred real inputs."
        )
    keras_model, keras_path = load_model(model, load)
    with LoadedModel(keras_model, keras_path) as loaded:
        converted = convert_loaded(
            loaded,
            for_model(conversion, keras_model),
            load,
            GuardOptions(skip_check=guard.skip_check),
            calibration,
            eval_data,
            latency_runs=0,
            check_target="micro",
        )
        per_channel = _per_channel_dense_fidelity(loaded, conversion, load, calibration, eval_data, converted)
        return package.build(converted.tflite, loaded.name, eval_data, converted, loaded, per_channel)


def _per_channel_dense_fidelity(loaded, conversion, load, calibration, eval_data, converted):
    """The fidelity per-channel Dense weights would give, measured beside micro's per-tensor default
    (its arena is smaller) so a material loss is told, with the alternative's numbers."""
    if not (conversion.per_tensor_dense and converted.fidelity and "FULLY_CONNECTED" in converted.ops):
        return None
    progress.stage("measuring per-channel Dense weights beside per-tensor")
    alternative = convert_loaded(
        loaded,
        dataclasses.replace(for_model(conversion, loaded.model), per_tensor_dense=False),
        load,
        GuardOptions(skip_check=True),
        calibration,
        eval_data,
        latency_runs=0,
        check_target="micro",
    )
    return alternative.fidelity


@dataclasses.dataclass(frozen=True)
class _Package:
    """What becomes of a full-integer model: run in TFLite Micro, verified, compressed, written."""

    output_dir: Path
    staging: Path
    check_data: object  # the data the outputs are checked on (eval, else calibration)
    options: MicroOptions
    load: LoadOptions

    def build(self, tflite_bytes: bytes, name, eval_data, converted=None, loaded=None, per_channel=None) -> MicroReport:
        """`converted` and `loaded` (the convert report and the Keras model) exist unless a .tflite was given;
        `per_channel` is the fidelity per-channel Dense weights would have had."""
        summary = inspect_tflite(tflite_bytes)
        model_inputs = keras_inputs(loaded.model) if loaded is not None else summary.model_inputs()
        check_data = input_data(self.check_data, model_inputs, self.load.preprocessing, reshape=self.load.reshape_data)
        inputs = _micro_inputs(check_data, summary)
        micro, faithfulness = self._run_verified(tflite_bytes, summary, inputs, check_data, loaded)
        warnings = list(converted.warnings) if converted else []
        if not faithfulness.passed:
            warnings.append(f"packaged with --accept_micro_difference although {faithfulness.describe()}")
        if per_channel is not None and converted.fidelity.worse_than(per_channel):
            warnings.append(
                f"per-tensor Dense weights (micro's default, for a smaller arena) cost fidelity: "
                f"{converted.fidelity.headline()} against the Keras model, {per_channel.headline()} with "
                "per-channel Dense weights (--noper_tensor_dense)"
            )
            logging.warning(warnings[-1])
        accuracy = None
        if converted is not None:
            accuracy = converted.accuracy
        elif eval_data is not None and check_data.y is not None:
            tasks = resolve_tasks(self.load.asked_tasks(summary.output_keys), summary)
            if len(tasks) == 1:
                accuracy = metrics.task_accuracy(predict(tflite_bytes, check_data.x), check_data.y, tasks[0])
        lut = None
        if self.options.compress == "lut":
            lut_inputs = (
                quantize_inputs(check_data.take(_LUT_CHECK_SAMPLES).x, summary.input_details())
                if check_data is not None
                else inputs
            )
            lut = lut_compress_verified(tflite_bytes, lut_inputs, micro.arena_bytes)
            tflite_bytes, summary = lut.model, inspect_tflite(lut.model)
        arena_bytes = lut.arena_bytes if lut else micro.arena_bytes
        vela = compile_for_ethos_u(tflite_bytes, self.options.npu) if self.options.npu else None
        progress.stage("writing the C++ sources and reports")
        declared_arena = arena_with_margin(arena_bytes, self.options.arena_margin)
        sources = micro_sources(tflite_bytes, name=self.options.name, arena_bytes=declared_arena, ops=summary.ops)
        files = ("model.tflite", sources.source_name, sources.header_name, "report.json", "report.md")
        files += ("model_vela.tflite",) if vela else ()
        report = MicroReport(
            model=str(name),
            output_dir=str(self.output_dir),
            size_bytes=len(tflite_bytes),
            gzip_bytes=gzip_size(tflite_bytes),
            arena_bytes=arena_bytes,
            arena_with_margin_bytes=declared_arena,
            recorded_arena_bytes=micro.recorded_arena_bytes,
            max_diff_steps=micro.max_diff_steps,
            diff_steps_by_kernels=micro.diff_steps_by_kernels,
            agreement_samples=len(per_input(inputs)[0]),
            micro_latency=(lut.latency["compressed"] if lut and lut.compressed else micro.latency).to_dict(),
            ops=summary.ops,
            accuracy=accuracy,
            reference=dataclasses.asdict(converted.reference) if converted else None,
            fidelity=converted.fidelity if converted else None,
            fidelity_by_output=converted.fidelity_by_output if converted else (),
            per_channel_dense_fidelity=per_channel,
            preprocessing=getattr(converted or check_data, "preprocessing", None),
            per_tensor_dense=converted.options["per_tensor_dense"] if converted else None,
            files=files,
            io=io_report(summary),
            calibration=converted.calibration if converted else None,
            warnings=tuple(warnings),
            float32_bytes=converted.float32_bytes if converted else None,
            weights=weight_tensors(summary),
            file_bytes=file_parts(summary),
            ethos_u=vela.to_dict() if vela else None,
            lut=lut,
            faithfulness=faithfulness,
            accepted_difference=not faithfulness.passed,
        )
        self._write(report, tflite_bytes, sources, vela)
        return report

    def _run_verified(self, tflite_bytes: bytes, summary, inputs, check_data, loaded) -> tuple:
        """(the TFLite Micro run, its faithfulness); a model it runs less faithfully than LiteRT is refused,
        unless the user accepted that."""
        progress.stage("running in TFLite Micro: arena, and outputs against LiteRT's and the Keras model's")
        micro = run_micro(tflite_bytes, inputs)
        faithfulness = _faithfulness(micro, summary, check_data, loaded)
        if not faithfulness.passed and not self.options.accept_micro_difference:
            raise ConversionError(
                f"TFLite Micro runs the model less faithfully than LiteRT: {faithfulness.describe()}. The model "
                "would not behave on the device as measured here; --accept_micro_difference packages it anyway."
            )
        return micro, faithfulness

    def _write(self, report: MicroReport, tflite_bytes: bytes, sources, vela) -> None:
        write_atomic(self.staging / "model.tflite", tflite_bytes)
        write_atomic(self.staging / sources.source_name, sources.source.encode())
        write_atomic(self.staging / sources.header_name, sources.header.encode())
        write_json_atomic(self.staging / "report.json", report.to_dict())
        write_atomic(self.staging / "report.md", format_micro_report(report).encode())
        if vela:
            write_atomic(self.staging / "model_vela.tflite", vela.model)


def _faithfulness(micro, summary, check_data, loaded) -> Faithfulness:
    """Against the Keras model's outputs where there is one output to compare, else against LiteRT."""
    if loaded is None:
        return judge(micro.outputs, micro.litert_outputs, summary.output_details(), names=summary.output_keys)
    keras_outputs = loaded.keras_outputs(check_data.take(len(per_output(micro.outputs)[0])).x)
    return judge(micro.outputs, micro.litert_outputs, summary.output_details(), keras_outputs, summary.output_keys)


def _int4_rows(report: MicroReport) -> str:
    """Rows for int4 weights: packed in flash, unpacked into the arena when they run; and what the rest
    of the flash holds, which fewer bits do not shrink."""
    packed = [weight["bytes"] for weight in report.weights if weight["dtype"] == "INT4"]
    if not packed:
        return ""
    return (
        f"| int4 weights | {len(packed)} tensors, {sum(packed):,} B packed (two per byte); TFLite Micro unpacks "
        f"each to int8 in the arena when it runs (largest {2 * max(packed):,} B), counted in the arena above |\n"
        f"| flash by part | {file_parts_text(report.file_bytes)} |\n"
    )


def _reference_name(report: MicroReport) -> str:
    return "Keras" if report.faithfulness and report.faithfulness.reference == "keras" else "LiteRT"


def _verdict(report: MicroReport) -> str:
    """As faithful as LiteRT (passed), or packaged anyway on the user's word."""
    if report.faithfulness is None:
        return "n/a"
    verdict = "as faithful as LiteRT" if report.faithfulness.passed else "NOT as faithful as LiteRT (accepted)"
    return f"{verdict}: {report.faithfulness.describe()}"


def format_micro_report(report: MicroReport) -> str:
    """The Markdown report, also printed by the CLI."""
    accuracy = "n/a" if report.accuracy is None else f"{report.accuracy * 100:.2f}%"
    drop = "" if report.accuracy_drop is None else f" (drop {report.accuracy_drop:+.2f} pt vs Keras)"
    steps = report.diff_steps_by_kernels
    agreement = (
        f"max {report.max_diff_steps} quantized step(s) on {report.agreement_samples} inputs "
        f"(optimized kernels {steps['optimized']}, reference kernels "
        f"{'n/a: LiteRT has none for an op here' if steps['reference'] is None else steps['reference']})"
    )
    return f"""# TFLite Micro deployment: {report.model}

| | |
|---|---|
| flash (model.tflite) | {report.size_bytes:,} B |
| tensor arena, measured in TFLite Micro | {report.arena_bytes:,} B |
| tensor arena declared (with margin) | {report.arena_with_margin_bytes:,} B |
{_int4_rows(report)}| ops ({len(report.ops)}) | {", ".join(report.ops)} |
| accuracy | {accuracy}{drop} |
{_fidelity_rows(report)}{_data_row(report.preprocessing)}\
| verified against {_reference_name(report)} | {_verdict(report)} |
| TFLite Micro vs LiteRT | {agreement} |
| TFLite Micro latency (host, Python build) | p50 {report.micro_latency["p50"]:,.0f} us |

{_ethos_u_rows(report.ethos_u)}{format_lut_section(report.lut) if report.lut else ""}{_warning_lines(report)}
Files: {", ".join(f"`{name}`" for name in report.files)}. Include the `.h`, compile the `.cc`,
give the interpreter an arena of the declared size, and register the ops with the generated
`..._register_ops(resolver)`.
"""


def _warning_lines(report: MicroReport) -> str:
    return "\n".join(f"WARNING: {warning}\n" for warning in report.warnings)


def _fidelity_rows(report: MicroReport) -> str:
    """LiteRT's int8 outputs against Keras: a row, or a row per output for a model with several."""
    rows = ""
    for fidelity in report.fidelity_by_output or filter(None, (report.fidelity,)):
        output = f"output '{fidelity.output}', " if fidelity.output else ""
        rows += f"| LiteRT int8 against Keras ({output}{fidelity.task}) | {fidelity.headline()} |\n"
    return rows


def _data_row(preprocessing: Optional[dict]) -> str:
    return f"| data | {preprocessing_text(preprocessing)} |\n" if preprocessing else ""


def _ethos_u_rows(summary: Optional[dict]) -> str:
    if not summary:
        return ""
    return (
        f"\n{summary['target']} (vela, {summary['system_config']}): {summary['npu_operators']} NPU / "
        f"{summary['cpu_operators']} CPU operators, SRAM {summary['sram_bytes']:,} B, off-chip flash "
        f"{summary['off_chip_flash_bytes']:,} B, {summary['total_cycles']:,} cycles "
        f"({summary['inference_time_us']:,.0f} us estimated). `model_vela.tflite` needs the Ethos-U "
        "kernel (resolver.AddEthosU()); the C++ sources hold the CPU model.\n"
    )


def _checked_tflite(path: Path) -> bytes:
    """A given .tflite is packaged as it is, if TFLite Micro can run it as full integer."""
    data = read_tflite(path)
    summary = inspect_tflite(data, str(path))
    if precision_of(summary) != "int8" or not is_full_integer(summary):
        raise ModelLoadError(
            f"{path} is not a full-integer int8 model with integer I/O ({precision_of(summary)}, "
            f"input {summary.inputs[0].dtype}); TFLite Micro needs one. Pass the Keras model instead, "
            "or convert with --precision int8 --io_type int8."
        )
    return data


def _micro_inputs(check_data, summary):
    """The inputs TFLite Micro is checked on, in the inputs' dtypes: an array, or a tuple of one per input."""
    if check_data is None:
        return one_or_tuple(
            np.concatenate([random_inputs(detail, seed) for seed in range(_AGREEMENT_SAMPLES)])
            for detail in summary.input_details()
        )
    return quantize_inputs(check_data.take(_AGREEMENT_SAMPLES).x, summary.input_details())
