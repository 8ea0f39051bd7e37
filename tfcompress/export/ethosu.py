"""A TFLite Micro int8 model → an Arm Ethos-U NPU model, through Arm's vela compiler.

vela is an optional extra (`pip install 'tfcompress[ethos-u]'`) and runs as its own
command; its per-network summary (SRAM, flash, cycles) goes into the micro report.
"""

import csv
import dataclasses
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tfcompress.errors import ConversionError, OptionError

__all__ = ["VelaResult", "compile_for_ethos_u"]

_TARGET = re.compile(r"^ethos-u(55|65|85)-\d+$")
_OPERATOR_COUNTS = re.compile(r"(CPU|NPU) operators = (\d+)")


@dataclasses.dataclass(frozen=True)
class VelaResult:
    target: str
    model: bytes = dataclasses.field(repr=False)
    summary: dict

    def to_dict(self) -> dict:
        return {"target": self.target, "size_bytes": len(self.model), **self.summary}


def compile_for_ethos_u(model_bytes: bytes, target: str) -> VelaResult:
    """Compiles with `vela --accelerator-config TARGET`; the NPU runs what it supports."""
    if not _TARGET.match(target):
        raise OptionError(f"target must look like ethos-u55-128 (ethos-u55/u65/u85-MACs). Received: target={target!r}")
    vela = _vela_command()
    with tempfile.TemporaryDirectory() as folder:
        model_path = Path(folder) / "model.tflite"
        model_path.write_bytes(model_bytes)
        result = subprocess.run(
            [vela, str(model_path), "--accelerator-config", target, "--output-dir", folder],
            capture_output=True,
            text=True,
        )
        compiled = Path(folder) / "model_vela.tflite"
        if result.returncode != 0 or not compiled.exists():
            lines = (result.stderr or result.stdout).strip().splitlines()
            raise ConversionError(
                f"vela could not compile the model for {target}: {lines[-1] if lines else 'no output'}"
            )
        (summary_path,) = Path(folder).glob("model_summary_*.csv")
        with open(summary_path, newline="") as handle:
            row = next(csv.DictReader(handle))
        counts = dict(_OPERATOR_COUNTS.findall(result.stdout))
        return VelaResult(
            target,
            compiled.read_bytes(),
            {
                "system_config": row["system_config"],
                "sram_bytes": round(float(row["sram_memory_used"]) * 1024),
                "off_chip_flash_bytes": round(float(row["off_chip_flash_memory_used"]) * 1024),
                "npu_cycles": int(float(row["cycles_npu"])),
                "total_cycles": int(float(row["cycles_total"])),
                "inference_time_us": float(row["inference_time"]) * 1e6,
                "npu_operators": int(counts.get("NPU", 0)),
                "cpu_operators": int(counts.get("CPU", 0)),
            },
        )


def _vela_command() -> str:
    beside_python = Path(sys.executable).parent / "vela"
    command = str(beside_python) if beside_python.exists() else shutil.which("vela")
    if command is None:
        raise ConversionError(
            "An Ethos-U target needs Arm's vela compiler: pip install 'tfcompress[ethos-u]' (ethos-u-vela)."
        )
    return command
