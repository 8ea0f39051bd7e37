"""Every script in tools/ imports and explains itself; the thin ones work end to end."""

import json
import subprocess
import sys

import pytest

from conftest import ROOT

TOOLS = sorted((ROOT / "tools").glob("*.py"))


@pytest.mark.parametrize("tool", TOOLS, ids=lambda path: path.name)
def test_tool_help(tool):
    result = subprocess.run([sys.executable, str(tool), "--helpshort"], capture_output=True, text=True, timeout=120)
    # absl's help flags exit with 1 after printing the help.
    assert "Traceback" not in result.stderr, result.stderr
    assert "flags:" in result.stdout and "--" in result.stdout


def test_h5_to_tflite_then_benchmark_tflite(tmp_path):
    from conftest import CALIBRATION, EVAL, SAMPLE_MODELS

    output, report = tmp_path / "mlp.tflite", tmp_path / "mlp.json"
    converted = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "h5_to_tflite.py"),
            str(SAMPLE_MODELS / "lenet_300_100.h5"),
            str(output),
            f"--calibration={CALIBRATION}",
            f"--eval={EVAL}",
            f"--report={report}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert converted.returncode == 0, converted.stderr
    contract = json.loads(report.read_text())
    assert contract["precision"] == "int8" and contract["size_bytes"] == output.stat().st_size
    assert contract["fidelity"]["top1_agreement"] >= 0.98
    measured = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "benchmark_tflite.py"),
            str(output),
            f"--eval={EVAL}",
            "--runs=20",
            "--repeat=1",
            f"--json={tmp_path / 'bench.json'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert measured.returncode == 0, measured.stderr
    bench = json.loads((tmp_path / "bench.json").read_text())["models"][0]
    assert bench["accuracy"] == pytest.approx(contract["accuracy"])
    missing = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "h5_to_tflite.py"), str(tmp_path / "none.h5"), str(output)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert missing.returncode == 2 and "Traceback" not in missing.stderr


def test_a_tools_warning_is_said_once(tmp_path, tiny_h5):
    """The report's WARNING line, and not absl's log line on stderr too."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "h5_to_tflite.py"), str(tiny_h5), str(tmp_path / "m.tflite")]
        + ["--calibration=random"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert (result.stdout + result.stderr).count("calibrating on random noise") == 1
    assert "WARNING: calibrating on random noise" in result.stdout


@pytest.mark.parametrize("tool", TOOLS, ids=lambda path: path.name)
def test_tool_usage_errors_exit_2_and_flags_take_hyphens(tool, tmp_path):
    """Exit 1 means "a budget was broken" in CI; a typo must not read as that."""
    unknown = subprocess.run(
        [sys.executable, str(tool), "--no-such-flag=1"], capture_output=True, text=True, timeout=120
    )
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    assert "no_such_flag" in unknown.stderr


def test_compress_models_accepts_hyphenated_flags(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "compress_models.py"),
            f"--input-dir={tmp_path / 'none'}",
            f"--output-dir={tmp_path / 'out'}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "Unknown command line flag" not in result.stderr
    assert "none" in result.stderr
