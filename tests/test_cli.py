"""`tfcompress convert` end to end, and every bad input giving one clear line."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tfcompress.data import load_data
from tfcompress.errors import ConversionError
from tfcompress.runtime import metrics
from tfcompress.runtime.interpreter import predict

import custom_layers
import hostile_cases
from conftest import CALIBRATION, CONTRACT_KEYS, EVAL, SAMPLE_MODELS


def _one_clear_line(code, err, *expected):
    assert code == 2
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    for text in expected:
        assert text in lines[0], lines[0]


def test_convert_int8_report_matches_litert(run_cli, tmp_path):
    output, report_path = tmp_path / "lenet5.tflite", tmp_path / "lenet5.json"
    code, out, _ = run_cli(
        "convert",
        SAMPLE_MODELS / "lenet5.h5",
        "--precision",
        "int8",
        "--calibration",
        CALIBRATION,
        "--eval",
        EVAL,
        "-o",
        output,
        "--report",
        report_path,
    )
    assert code == 0
    assert "accuracy" in out and "float ops: none" in out
    report = json.loads(report_path.read_text())
    assert CONTRACT_KEYS <= set(report)
    assert report["size_bytes"] == output.stat().st_size
    assert report["gzip_bytes"] < report["size_bytes"]
    assert report["accuracy_drop"] <= 0.5
    assert report["fidelity"]["top1_agreement"] >= 0.98
    assert ("--keep_float" in out) == (report["fidelity"]["top1_ties"] > 0)  # how to remove int8 softmax ties
    # The report's accuracy is what LiteRT measures on the written file.
    evaluation = load_data(EVAL)
    measured = metrics.accuracy(predict(output.read_bytes(), evaluation.x), evaluation.y)
    assert report["accuracy"] == pytest.approx(measured, abs=1e-9)


@pytest.mark.parametrize("precision", ["float32", "float16", "dynamic"])
def test_float_precisions_need_no_calibration(run_cli, tmp_path, tiny_h5, precision):
    output = tmp_path / "m.tflite"
    code, out, _ = run_cli("convert", tiny_h5, "--precision", precision, "-o", output, "--report", tmp_path / "r.json")
    assert code == 0 and output.exists()
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["precision"] == precision and report["accuracy"] is None


def test_random_calibration_is_marked(run_cli, tmp_path, tiny_h5):
    code, out, _ = run_cli(
        "convert", tiny_h5, "--calibration", "random", "-o", tmp_path / "m.tflite", "--report", tmp_path / "r.json"
    )
    assert code == 0 and "WARNING: calibrating on random noise" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["calibration"]["random"] is True and report["warnings"]


def test_a_warning_is_said_once(tmp_path, tiny_h5):
    """In its own process, where the log reaches stderr: the report's WARNING line, not the log line too."""
    result = subprocess.run(
        [sys.executable, "-m", "tfcompress", "convert", str(tiny_h5), "--calibration", "random"]
        + ["-o", str(tmp_path / "m.tflite")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "WARNING: calibrating on random noise" in result.stdout
    assert "calibrating on random noise" not in result.stderr


def test_a_warning_before_an_error_is_said_first(run_cli, monkeypatch, tmp_path, tiny_h5):
    """A failed command prints no report, so the warnings it held may be why: they come before the error."""
    from tfcompress.jobs import benchmark, convert

    def warns_then_fails(*args, **kwargs):
        benchmark._warnings(np.zeros((4, 3)), ())  # logs "the reference model's output is the same ..."
        benchmark._warnings(np.zeros((4, 3)), ())
        raise ConversionError("the converter failed.")

    monkeypatch.setattr(convert, "convert", warns_then_fails)
    code, out, err = run_cli("convert", tiny_h5, "--precision", "float32", "-o", tmp_path / "m.tflite")
    assert code == 2 and not out
    assert err.splitlines() == [
        f"tfcompress convert: warning: {metrics.constant_output(np.zeros((4, 3)))}",
        "tfcompress convert: error: the converter failed.",
    ]


def test_dashed_flag_spelling_is_accepted(run_cli, tmp_path, tiny_h5):
    code, _, _ = run_cli(
        "convert",
        tiny_h5,
        "--calibration",
        CALIBRATION,
        "--calibration-samples=20",
        "--per-tensor-dense",
        "-o",
        tmp_path / "m.tflite",
    )
    assert code == 0


def _save_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


BAD_INPUTS = {
    "missing file": (lambda d, m: ["convert", d / "nope.h5"], "not found"),
    "directory": (lambda d, m: ["convert", d], "is a folder"),
    "truncated h5": (lambda d, m: ["convert", _truncated(m, d)], "truncated"),
    "random bytes h5": (lambda d, m: ["convert", _noise(d)], "cannot be read as HDF5"),
    "wrong data shape": (
        lambda d, m: ["convert", m, "--calibration", _save_npz(d / "s.npz", x=np.zeros((5, 32, 32, 3), np.uint8))],
        "(32, 32, 3)",
    ),
    "wrong dtype": (
        lambda d, m: ["convert", m, "--calibration", _save_npz(d / "t.npz", x=np.full((5, 28, 28, 1), "a"))],
        "dtype",
    ),
    "NaN in calibration": (
        lambda d, m: ["convert", m, "--calibration", _save_npz(d / "n.npz", x=np.full((5, 28, 28, 1), np.nan))],
        "NaN",
    ),
    "empty data file": (
        lambda d, m: ["convert", m, "--calibration", _save_npz(d / "e.npz", x=np.zeros((0, 28, 28, 1), np.uint8))],
        "no samples",
    ),
    "no calibration for int8": (lambda d, m: ["convert", m], "needs calibration data"),
    "unwritable output": (lambda d, m: ["convert", m, "--calibration", CALIBRATION], "does not exist"),
    "custom layer": (lambda d, m: ["convert", _custom_layer_model(d)], "--custom_objects"),
    "unknown precision": (lambda d, m: ["convert", m, "--precision", "int4"], "--precision"),
    "int8 model LiteRT aborts on": (lambda d, m: ["convert", *_near_values_with_calibration(d)], "LiteRT crashes"),
}


def _truncated(model, folder):
    data = model.read_bytes()
    (folder / "cut.h5").write_bytes(data[: len(data) // 2])
    return folder / "cut.h5"


def _noise(folder):
    (folder / "noise.h5").write_bytes(np.random.default_rng(0).bytes(4096))
    return folder / "noise.h5"


def _near_values_with_calibration(folder):
    model, calibration = hostile_cases.squared_difference_of_near_values(folder)
    return model, "--calibration", calibration


def _custom_layer_model(folder):
    import tf_keras

    model = tf_keras.Sequential([tf_keras.Input((28, 28, 1)), custom_layers.ScaleBy(name="scale")])
    model.save(folder / "custom.h5")
    return folder / "custom.h5"


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gives_one_clear_line_and_no_output(run_cli, tmp_path, tiny_h5, case):
    make_args, expected = BAD_INPUTS[case]
    work = tmp_path / "work"
    work.mkdir()
    args = make_args(work, tiny_h5)
    output = tmp_path / "missing_folder" / "m.tflite" if case == "unwritable output" else tmp_path / "m.tflite"
    before = set(os.listdir(tmp_path))
    code, _, err = run_cli(*args, "-o", output, "--report", tmp_path / "r.json")
    _one_clear_line(code, err, expected)
    assert set(os.listdir(tmp_path)) == before  # nothing written, not even a temporary file


def test_lambda_model_runs_no_code_and_writes_nothing(run_cli, tf_keras, tmp_path):
    marker = tmp_path / "marker"
    model = tf_keras.Sequential(
        [
            tf_keras.Input((28, 28, 1)),
            tf_keras.layers.Lambda(lambda x, path=str(marker): (open(path, "w").write("ran"), x)[1]),
        ]
    )
    model.save(tmp_path / "lambda.h5")
    marker.unlink()
    code, _, err = run_cli(
        "convert",
        tmp_path / "lambda.h5",
        "--calibration",
        CALIBRATION,
        "-o",
        tmp_path / "out.tflite",
        "--report",
        tmp_path / "out.json",
    )
    _one_clear_line(code, err, "Lambda layer", "--trust_model_code")
    assert not marker.exists()
    assert not (tmp_path / "out.tflite").exists() and not (tmp_path / "out.json").exists()


def test_verbose_shows_the_traceback(run_cli, tmp_path):
    code, _, err = run_cli("convert", tmp_path / "nope.h5", "-o", tmp_path / "m.tflite", "--verbose")
    assert code == 2 and "Traceback" in err and "not found" in err


def test_console_script_runs_in_a_fresh_process(tmp_path):
    """The installed entry point, as a user runs it: exit code and one error line."""
    result = subprocess.run(
        [sys.executable, "-m", "tfcompress", "convert", str(tmp_path / "x.h5"), "-o", str(tmp_path / "x.tflite")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("tfcompress convert: error:")
    assert "Traceback" not in result.stderr
