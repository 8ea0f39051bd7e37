"""Result objects → the JSON report contract (DESIGN.md), text tables and files.

A report is a frozen value; rendering never recomputes anything, so the CLI, the
tools and the tests read the same numbers.
"""

import dataclasses
import gzip
import importlib.metadata
import json
from typing import Optional

from tfcompress.files import write_atomic
from tfcompress.runtime.benchmark import Latency
from tfcompress.runtime.metrics import Fidelity

__all__ = ["Reference", "ConversionReport", "gzip_size", "library_versions",
           "format_report", "print_report", "write_json"]

_VERSIONED_PACKAGES = {"tfcompress": "tfcompress", "tensorflow": "tensorflow",
                       "tf_keras": "tf-keras", "ai_edge_litert": "ai-edge-litert"}


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
    fidelity: Optional[Fidelity]
    latency: Optional[Latency]
    ops: dict
    float_ops: tuple
    io: dict                    # {"inputs": [...], "outputs": [...]} tensor dicts
    calibration: dict           # source, samples, random
    options: dict
    warnings: tuple = ()
    arena_bytes: Optional[int] = None
    tflite: bytes = dataclasses.field(default=b"", repr=False, compare=False)  # the model itself

    @property
    def accuracy_drop(self) -> Optional[float]:
        """Reference accuracy minus ours, in percentage points."""
        if self.accuracy is None or self.reference.accuracy is None:
            return None
        return (self.reference.accuracy - self.accuracy) * 100.0

    def to_dict(self) -> dict:
        return {
            "model": self.model, "output": self.output, "precision": self.precision,
            "size_bytes": self.size_bytes, "gzip_bytes": self.gzip_bytes,
            "reference": dataclasses.asdict(self.reference),
            "accuracy": self.accuracy, "accuracy_drop": self.accuracy_drop,
            "fidelity": self.fidelity.to_dict() if self.fidelity else None,
            "latency_us": self.latency.to_dict() if self.latency else None,
            "ops": self.ops, "float_ops": list(self.float_ops),
            "arena_bytes": self.arena_bytes,
            "io": self.io, "calibration": self.calibration, "options": self.options,
            "warnings": list(self.warnings),
            "versions": library_versions(),
        }


def gzip_size(data: bytes) -> int:
    """Bytes after gzip -9 with a fixed timestamp: what zeros and shared values really save."""
    return len(gzip.compress(data, compresslevel=9, mtime=0))


def library_versions() -> dict:
    """Installed versions, read from package metadata so nothing heavy is imported."""
    versions = {}
    for key, distribution in _VERSIONED_PACKAGES.items():
        try:
            versions[key] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            versions[key] = None
    return versions


def format_report(report: ConversionReport) -> str:
    """A short table for people; the JSON report has everything."""
    reference, percent = report.reference, _percent
    rows = [("", "Keras (reference)", f"TFLite {report.precision}")]
    ratio = reference.size_bytes / report.size_bytes if report.size_bytes else 0
    rows.append(("size", f"{reference.size_bytes:,} B", f"{report.size_bytes:,} B ({ratio:.1f}x smaller)"))
    rows.append(("gzip size", "", f"{report.gzip_bytes:,} B"))
    if report.accuracy is not None:
        rows.append(("accuracy", percent(reference.accuracy),
                     f"{percent(report.accuracy)} (drop {report.accuracy_drop:+.2f} pt)"))
    if report.fidelity:
        rows.append(("top-1 agreement", "", percent(report.fidelity.top1_agreement)))
        rows.append(("max abs error", "", f"{report.fidelity.max_abs_error:.4g}"))
    if report.latency:
        rows.append(("latency p50", "", f"{report.latency.p50:,.0f} us (1 thread, this machine)"))
    width = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"{report.model} -> {report.output or '(not written)'}"]
    lines += ["  ".join(cell.ljust(width[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    lines.append("ops: " + ", ".join(f"{name} x{count}" for name, count in report.ops.items()))
    lines.append("float ops: " + (", ".join(report.float_ops) or "none"))
    lines += [f"WARNING: {warning}" for warning in report.warnings]
    return "\n".join(lines)


def print_report(report: ConversionReport, print_fn=print) -> None:
    print_fn(format_report(report))


def write_json(report, path) -> None:
    write_atomic(path, (json.dumps(report.to_dict(), indent=2) + "\n").encode())


def _percent(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value * 100:.2f}%"
