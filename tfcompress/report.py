"""Result objects → the JSON report contract (DESIGN.md), text tables and files.

A report is a frozen value; rendering never recomputes anything, so the CLI, the
tools and the tests read the same numbers.
"""

import dataclasses
import os
import re
from pathlib import Path
from typing import Optional

from tfcompress._io.files import write_json_atomic
from tfcompress.report_schema import schema_version
from tfcompress.runtime.latency import Latency
from tfcompress.runtime.metrics import Fidelity, accuracy_drop

__all__ = [
    "Reference",
    "ConversionReport",
    "BenchmarkReport",
    "library_versions",
    "package_versions",
    "machine_info",
    "format_report",
    "format_weight_sizes",
    "preprocessing_text",
    "format_metrics",
    "named_output",
    "step_warnings",
    "table",
    "markdown_table",
    "print_report",
    "format_benchmark",
    "markdown_benchmark",
    "write_json",
]

_VERSIONED_PACKAGES = {
    "tfcompress": "tfcompress",
    "tensorflow": "tensorflow",
    "tf_keras": "tf-keras",
    "ai_edge_litert": "ai-edge-litert",
    "tflite_micro": "tflite-micro",
}


@dataclasses.dataclass(frozen=True)
class Reference:
    """The model the converted one is measured against (the Keras model)."""

    path: str
    size_bytes: int
    accuracy: Optional[float]


@dataclasses.dataclass(frozen=True)
class ConversionReport:
    model: str
    output: Optional[str]
    precision: str
    size_bytes: int
    gzip_bytes: int
    reference: Reference
    accuracy: Optional[float]
    fidelity: Optional[Fidelity]  # of the first output
    latency: Optional[Latency]
    ops: dict
    float_ops: tuple
    io: dict  # {"inputs": [...], "outputs": [...]} tensor dicts
    calibration: dict  # source, samples, random
    options: dict
    warnings: tuple = ()
    arena_bytes: Optional[int] = None
    float32_bytes: Optional[int] = None  # the same model's float32 .tflite: what size ratios are against
    weights: tuple = ()  # every stored weight tensor: name, dtype, bits, bytes (runtime.inspect.weight_tensors)
    file_bytes: Optional[dict] = None  # kernels, other constants, quantization parameters, ... (inspect.file_parts)
    preprocessing: Optional[dict] = None  # what was applied to the stored data (data.Preprocessing.applied)
    fidelity_by_output: tuple = ()  # a model with several outputs: each one's Fidelity, in order
    tflite: bytes = dataclasses.field(default=b"", repr=False, compare=False)  # the model itself

    @property
    def accuracy_drop(self) -> Optional[float]:
        """Reference accuracy minus ours, in percentage points."""
        return accuracy_drop(self.reference.accuracy, self.accuracy)

    def to_dict(self) -> dict:
        return {
            "schema_version": schema_version("convert"),
            "model": self.model,
            "output": self.output,
            "precision": self.precision,
            "size_bytes": self.size_bytes,
            "gzip_bytes": self.gzip_bytes,
            "float32_bytes": self.float32_bytes,
            "reference": dataclasses.asdict(self.reference),
            "accuracy": self.accuracy,
            "accuracy_drop": self.accuracy_drop,
            "fidelity": self.fidelity.to_dict() if self.fidelity else None,
            "fidelity_by_output": [fidelity.to_dict() for fidelity in self.fidelity_by_output],
            "latency_us": self.latency.to_dict() if self.latency else None,
            "ops": self.ops,
            "float_ops": list(self.float_ops),
            "arena_bytes": self.arena_bytes,
            "weights": list(self.weights),
            "file_bytes": self.file_bytes,
            "io": self.io,
            "calibration": self.calibration,
            "preprocessing": self.preprocessing,
            "options": self.options,
            "warnings": list(self.warnings),
            "versions": library_versions(),
        }


def library_versions() -> dict:
    """The versions a report records (what its numbers were measured with)."""
    return package_versions(_VERSIONED_PACKAGES)


def package_versions(distributions: dict) -> dict:
    """key → installed version of each distribution (None if absent), read from package metadata so
    nothing heavy is imported."""
    import importlib.metadata

    versions = {}
    for key, distribution in distributions.items():
        try:
            versions[key] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            versions[key] = None
    return versions


@dataclasses.dataclass(frozen=True)
class BenchmarkReport:
    """Several `.tflite` models measured in one run (see runtime/benchmark.py)."""

    models: tuple  # ModelBenchmark, in the order given; ratios are to the first
    reference: Optional[Reference]
    eval_source: Optional[str]
    options: dict
    machine: dict
    warnings: tuple = ()  # about the comparison (a reference whose output never changes, a model XNNPACK cannot run)
    preprocessing: Optional[dict] = None  # what was applied to the stored eval data

    def to_dict(self) -> dict:
        return {
            "schema_version": schema_version("benchmark"),
            "models": [self._model_dict(model) for model in self.models],
            "reference": dataclasses.asdict(self.reference) if self.reference else None,
            "eval": self.eval_source,
            "preprocessing": self.preprocessing,
            "options": self.options,
            "machine": self.machine,
            "versions": library_versions(),
        }

    def accuracy_drop(self, model) -> Optional[float]:
        return accuracy_drop(self.reference.accuracy if self.reference else None, model.accuracy)

    def _model_dict(self, model) -> dict:
        latency = {**model.latency.to_dict(), "p50_spread": list(model.p50_spread_us)}
        return {
            "model": model.model,
            "output": None,
            "precision": model.precision,
            "size_bytes": model.size_bytes,
            "gzip_bytes": model.gzip_bytes,
            "reference": dataclasses.asdict(self.reference) if self.reference else None,
            "accuracy": model.accuracy,
            "accuracy_drop": self.accuracy_drop(model),
            "fidelity": model.fidelity.to_dict() if model.fidelity else None,
            "fidelity_by_output": [fidelity.to_dict() for fidelity in model.fidelity_by_output],
            "latency_us": latency,
            "init_ms": model.init_ms,
            "rss_growth_bytes": model.rss_growth_bytes,
            "ops": model.ops,
            "float_ops": list(model.float_ops),
            "arena_bytes": model.arena_bytes,
            "micro": model.micro,
            "warnings": list(self.warnings),
            "versions": library_versions(),
        }


def machine_info(threads: int) -> dict:
    """What the latency numbers were measured on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": threads}


_NUMBER = re.compile(r"[-+]?[\d,]*\.?\d+(%| pt| B|x)?|n/a|-|–")


def table(header, rows) -> str:
    """The one style of printed table: columns two spaces apart, numbers right-aligned, text left-aligned."""
    cells = [[str(cell) for cell in header]] + [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[index]) for row in cells) for index in range(len(header))]
    numeric = _numeric_columns(cells[1:], len(header))
    return "\n".join(
        "  ".join(
            cell.rjust(width) if right else cell.ljust(width) for cell, width, right in zip(row, widths, numeric)
        ).rstrip()
        for row in cells
    )


def markdown_table(header, rows) -> str:
    """The same table in Markdown (report.md files, --markdown)."""
    numeric = _numeric_columns([[str(cell) for cell in row] for row in rows], len(header))
    lines = [
        "| " + " | ".join(map(str, header)) + " |",
        "|" + "|".join("---:" if right else "---" for right in numeric) + "|",
    ]
    return "\n".join(lines + ["| " + " | ".join(map(str, row)) + " |" for row in rows])


def _numeric_columns(rows, count) -> list:
    """A column is numeric when every body cell is a number (or n/a, -)."""
    return [
        bool(rows)
        and all(_NUMBER.fullmatch(row[index]) for row in rows)
        and any(row[index] not in ("n/a", "-", "–", "") for row in rows)
        for index in range(count)
    ]


def _benchmark_rows(report: BenchmarkReport) -> tuple:
    first = report.models[0]
    header = [
        "model",
        "precision",
        "size (B)",
        "size x",
        "gzip (B)",
        "init (ms)",
        "p50 (us)",
        "p50 x",
        "p90 (us)",
        "p99 (us)",
        "accuracy",
        "drop (pt)",
        "fidelity",
        "arena (B)",
    ]
    rows = []
    for model in report.models:
        drop = report.accuracy_drop(model)
        rows.append(
            [
                model.model,
                model.precision,
                f"{model.size_bytes:,}",
                f"{model.size_bytes / first.size_bytes:.2f}",
                f"{model.gzip_bytes:,}",
                f"{model.init_ms:.1f}",
                f"{model.latency.p50:,.1f}",
                f"{model.latency.p50 / first.latency.p50:.2f}",
                f"{model.latency.p90:,.1f}",
                f"{model.latency.p99:,.1f}",
                _percent(model.accuracy),
                "n/a" if drop is None else f"{drop:+.2f}",
                _fidelity_cell(model),
                f"{model.arena_bytes:,}" if model.arena_bytes else "n/a",
            ]
        )
    return header, rows


def _fidelity_cell(model) -> str:
    """The task's headline measure; per output ("label: 99.00% top-1; box: SNR ...") for several."""
    if model.fidelity_by_output:
        return "; ".join(f"{fidelity.output}: {fidelity.headline()}" for fidelity in model.fidelity_by_output)
    return model.fidelity.headline() if model.fidelity else "n/a"


def format_benchmark(report: BenchmarkReport) -> str:
    lines = [table(*_benchmark_rows(report))]
    machine = report.machine
    lines.append(
        f"{machine['cpu']}, {machine['threads']} thread(s); x = ratio to the first model; "
        "x86 latency does not predict ARM or microcontroller latency."
    )
    if report.preprocessing:
        lines.append("eval data: " + preprocessing_text(report.preprocessing))
    lines += [f"warning: {message}" for message in report.warnings]
    for model in report.models:
        if model.micro and "error" in model.micro:
            lines.append(f"TFLite Micro, {model.model}: {model.micro['error']}")
        elif model.micro:
            lines.append(
                f"TFLite Micro, {model.model}: arena {model.micro['arena_bytes']:,} B, "
                f"max difference from LiteRT {model.micro['max_diff_steps']} step(s){_micro_verdict(model.micro)}, "
                f"p50 {model.micro['latency_us']['p50']:,.0f} us"
            )
    return "\n".join(lines)


def _micro_verdict(micro: dict) -> str:
    verification = micro.get("verification")
    if not verification:
        return ""
    verdict = "as faithful as LiteRT" if verification["passed"] else "NOT as faithful as LiteRT"
    between = verification["litert_errors"]["between kernel sets"]
    return f" ({verdict}: allowed {verification['allowed']:g}; LiteRT's two kernel sets differ by {between})"


def markdown_benchmark(report: BenchmarkReport) -> str:
    lines = [markdown_table(*_benchmark_rows(report))]
    machine = report.machine
    lines += ["", f"{machine['cpu']}, {machine['threads']} thread(s). Ratios (x) are to the first model."]
    return "\n".join(lines) + "\n"


def _low_bit_note(weights) -> str:
    return ", int4 weights" if any(weight["bits"] < 8 for weight in weights) else ""


def _fidelity_rows(report: ConversionReport) -> list:
    """The measures that fit each output's task (runtime.task), as (name, Keras, TFLite) rows; a
    model with several outputs has a block of rows per output."""
    if not report.fidelity_by_output:
        return _output_fidelity_rows(report, report.fidelity)
    rows = []
    for fidelity in report.fidelity_by_output:
        rows.append((f"output '{fidelity.output}'", "", fidelity.task))
        rows += [(f"  {name}", keras, tflite) for name, keras, tflite in _output_fidelity_rows(report, fidelity)]
    return rows


def _output_fidelity_rows(report: ConversionReport, fidelity: Fidelity) -> list:
    rows = []
    if fidelity.top1_agreement is not None:
        ties = fidelity.top1_ties
        tied = f" ({ties} tied top-2 outputs of {fidelity.samples})" if ties else ""
        rows.append(("top-1 agreement", "", _percent(fidelity.top1_agreement) + tied))
        if ties and "SOFTMAX" in report.ops and "SOFTMAX" not in report.float_ops:
            rows.append(("", "", "(int8 softmax steps are 1/256; --keep_float LAST_LAYER keeps the head float)"))
    if fidelity.threshold_agreement is not None:
        rows.append(("agreement at 0.5", "", _percent(fidelity.threshold_agreement)))
    if fidelity.snr_db is not None:
        rows.append(("SNR", "", f"{fidelity.snr_db:.1f} dB (relative error {fidelity.relative_error:.2%})"))
    if fidelity.score_correlation is not None:
        rows.append(("anomaly score rank corr.", "", f"{fidelity.score_correlation:.4f}"))
    rows.append(("max abs error", "", f"{fidelity.max_abs_error:.4g}"))
    return rows


def format_report(report: ConversionReport) -> str:
    """A short table for people; the JSON report has everything."""
    reference, percent = report.reference, _percent
    rows = [("size", f"{reference.size_bytes:,} B", f"{report.size_bytes:,} B" + _ratio(report.size_bytes, report))]
    rows.append(("gzip size", "", f"{report.gzip_bytes:,} B" + _ratio(report.gzip_bytes, report)))
    if report.accuracy is not None:
        rows.append(
            (
                "accuracy",
                percent(reference.accuracy),
                f"{percent(report.accuracy)} (drop {report.accuracy_drop:+.2f} pt)",
            )
        )
    if report.fidelity:
        rows += _fidelity_rows(report)
    if report.latency:
        rows.append(("latency p50", "", f"{report.latency.p50:,.0f} us (1 thread, this machine)"))
    lines = [
        f"{report.model} -> {report.output or '(not written)'}",
        table(("", "Keras (reference)", f"TFLite {report.precision}{_low_bit_note(report.weights)}"), rows),
    ]
    lines.append("ops: " + ", ".join(f"{name} x{count}" for name, count in report.ops.items()))
    lines.append("float ops: " + (", ".join(report.float_ops) or "none"))
    if any(weight["bits"] < 8 for weight in report.weights):
        lines.append("weights: " + weight_widths(report.weights))
        if report.file_bytes:
            lines.append("file: " + file_parts_text(report.file_bytes))
    if report.preprocessing:
        lines.append("data: " + preprocessing_text(report.preprocessing))
    lines += [f"WARNING: {warning}" for warning in report.warnings]
    return "\n".join(lines)


def preprocessing_text(applied: dict) -> str:
    """ "uint8 values x 1/255 + 0 (the default for uint8; --input_scale, --input_offset)"; per input
    ("image: uint8 values x 1/255 + 0 (...); meta: ...") for a model with several."""
    if "per_input" in applied:
        return "; ".join(f"{name}: {preprocessing_text(one)}" for name, one in applied["per_input"].items())
    scale = "1/255" if applied["scale"] == 1 / 255 else f"{applied['scale']:g}"
    how = "the default for " + applied["stored_dtype"] if applied["default_scale"] else "as asked"
    return f"{applied['stored_dtype']} values x {scale} + {applied['offset']:g} ({how}; --input_scale, --input_offset)"


def file_parts_text(parts: dict) -> str:
    """ "kernels 9,952 B, quantization parameters 14,004 B, ...": why fewer bits did not halve the file."""
    return ", ".join(f"{name.replace('_', ' ')} {size:,} B" for name, size in parts.items())


def weight_widths(weights) -> str:
    """How the stored weights split by width, e.g. `int4: 3 tensors, 30,240 B; int8: 2 tensors, 990 B`."""
    by_dtype = {}
    for weight in weights:
        count, size = by_dtype.get(weight["dtype"], (0, 0))
        by_dtype[weight["dtype"]] = (count + 1, size + weight["bytes"])
    return "; ".join(
        f"{dtype.lower()}: {count} tensor{'s' * (count != 1)}, {size:,} B" for dtype, (count, size) in by_dtype.items()
    )


def _ratio(size: int, report: ConversionReport) -> str:
    """Against the float32 .tflite of the same model, never against the Keras file."""
    if not report.float32_bytes or report.precision == "float32" and size == report.size_bytes:
        return ""
    if size > report.float32_bytes:  # tiny models: quantization parameters outweigh the saved bytes
        return f" ({size / report.float32_bytes:.2f}x larger than the float32 .tflite, {report.float32_bytes:,} B)"
    return f" ({report.float32_bytes / size:.1f}x smaller than the float32 .tflite, {report.float32_bytes:,} B)"


def format_metrics(report) -> str:
    """The lines a training job's report (a `TrainingResult`) ends with: the last epoch's metrics, then
    the guard's check (accuracy before and after, or on data without labels how far the outputs moved)
    with its warning when over the limit, then the step's other warnings."""
    lines = ["last epoch: " + ", ".join(f"{name} {value:.4f}" for name, value in report.metrics.items())]
    accuracy_check, output_check = report.accuracy_check, report.output_check
    if accuracy_check:
        lines.append(
            f"accuracy {accuracy_check['before']:.2%} before, {accuracy_check['after']:.2%} after "
            f"({accuracy_check['drop']:+.2f} pt drop) on {accuracy_check['data']}"
        )
    if output_check:
        lines += _output_check_lines(output_check)
    lines += [f"WARNING: {check['warning']}" for check in (accuracy_check, output_check) if check and check["warning"]]
    lines += [f"WARNING: {warning}" for warning in report.warnings]
    return "\n".join(lines)


def named_output(name: Optional[str], among: int, most: str) -> str:
    """How a check names the output it measured: not at all for a model with one output, and with why
    it was picked where it was one of several of its kind."""
    if name is None:
        return ""
    return f"output '{name}'" + (f" (of {among}, the one that {most})" if among > 1 else "")


def _output_check_lines(check: dict) -> list:
    """What a training step without labels did to the outputs: class scores' expected accuracy, a quantity's RMS."""
    lines = []
    if check.get("accuracy_drop") is not None:
        named = named_output(check.get("classifier_output"), check.get("classifier_outputs", 1), "lost most")
        kept = "top-1 class" if check.get("yes_at") is None else f"side of {check['yes_at']:g}"
        lines.append(
            f"{named + ': ' if named else ''}{kept} kept on {check['top1_kept']:.2%} of {check['data']}; "
            f"expected accuracy drop {check['accuracy_drop']:+.2f} pt (no labels: "
            f"the scores of {check.get('before_is', 'the model before this step')} stand in for them)"
        )
    if check.get("relative_error") is not None:
        moved = named_output(check.get("output"), check.get("quantity_outputs", 1), "moved most") or "outputs"
        before_is = check.get("before_is", "the model before this step")
        relative = f"(RMS, relative to those of {before_is})"
        lines.append(f"{moved} moved {check['relative_error']:.2%} {relative} on {check['data']}")
    return lines


def step_warnings(steps) -> list:
    """What each step of a `run` report warned of (a training step's accuracy check too), each once, as
    "STEP: warning": `run` prints them, a batch's summary lists them per model."""
    found = []
    for step in steps:
        report = step["report"]
        checks = (report.get("accuracy_check") or {}, report.get("output_check") or {})
        for warning in [check["warning"] for check in checks if check.get("warning")] + list(
            report.get("warnings", ())
        ):
            found.append(f"{step['step']}: {warning}")
    return list(dict.fromkeys(found))


def format_weight_sizes(weights: dict) -> str:
    """The line prune and cluster end with: zeros and shared values show in gzip and Huffman sizes."""
    return (
        f"weights: {weights['raw_bytes']:,} B raw, {weights['gzip_bytes']:,} B gzipped, "
        f"{weights['huffman_bytes']:,} B Huffman-coded (zeros and shared values cost the same raw bytes; "
        "`tfcompress convert` then `inspect` gives the .tflite's sizes)"
    )


def print_report(report: ConversionReport, print_fn=print) -> None:
    print_fn(format_report(report))


def write_json(report, path) -> None:
    write_json_atomic(path, report.to_dict())


def _percent(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value * 100:.2f}%"
