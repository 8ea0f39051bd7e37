"""The coverage suite: architectures users bring (tfcompress/testing/field_zoo.py), not only ours.

Each architecture, with seeded random weights, is saved by Keras 2 (.h5) and by Keras 3 (.keras
and .h5). The Keras 2 file goes through `check`, `convert` float16, int8 and int16x8 (verified against
Keras on 64 held-out inputs of its own kind), `analyze` (a regressor's or an autoencoder's
judged on those inputs), and `micro` where the model is meant for a microcontroller; the
Keras 3 files through int8. Each step passes or fails with the one-line
message a user would see; a failure that is not a tfcompress error (a traceback) counts as a
bug. int8 is first tried full-integer; when the converter leaves ops in float, the conversion
is repeated with --allow_float_ops and those ops are stated (int16x8 alike). One architecture per task also
runs through the CLI, whose fidelity must equal the API's. Writes results/coverage.json.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from absl import app, flags

import tfcompress
from tfcompress import _keras
from tfcompress.errors import TfcompressError, one_line
from tfcompress.report import library_versions, machine_info
from tfcompress.runtime.task import QUANTITIES
from tfcompress.testing.field_zoo import (
    FIELD_MODELS,
    build_field_model,
    sample_arrays,
    sample_inputs,
    settle_batch_norm,
)

import render

_MODELS = flags.DEFINE_list("models", list(FIELD_MODELS), "Architectures to run (names in field_zoo.FIELD_MODELS).")
_KERAS3 = flags.DEFINE_boolean("keras3", True, "Also save each architecture with Keras 3 and convert those files.")
_ONE = flags.DEFINE_string("one", None, "Internal: run one architecture in this process and write its row here.")
_ROWS_DIR = flags.DEFINE_string(
    "rows_dir", None, "Keep each architecture's row here; a finished row found there is reused (resumes a run)."
)
_CALIBRATION_SAMPLES, _EVAL_SAMPLES = 64, 64
# Architectures whose int8 conversion the CLI repeats: one per kind of output.
_CLI_PARITY = ("LeNet-5", "regression head", "sigmoid multi-label head", "dense autoencoder (anomaly detection)")


def main(argv):
    del argv
    if _ONE.value:
        name, row_path = _ONE.value.split("=", 1)
        keras3 = _keras.keras3() if _KERAS3.value else None
        with tempfile.TemporaryDirectory(prefix="tfcompress-coverage-") as work:
            _architecture_row(
                name, Path(work) / "model", keras3, lambda row: Path(row_path).write_text(json.dumps(row))
            )
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="tfcompress-coverage-rows-") as work:
        # The children convert with a cache of their own: the conversions cache keys on the model file and
        # the library versions, so a run during development would otherwise read an earlier code's results.
        os.environ["TFCOMPRESS_CACHE_DIR"] = str(Path(work) / "cache")
        rows_dir = Path(_ROWS_DIR.value or work)
        rows_dir.mkdir(parents=True, exist_ok=True)
        for index, name in enumerate(_MODELS.value):
            print(f"[{index + 1}/{len(_MODELS.value)}] {name}", flush=True)
            row_path = rows_dir / f"{list(FIELD_MODELS).index(name)}.json"
            finished = row_path.exists() and _finished(json.loads(row_path.read_text()))
            rows.append(json.loads(row_path.read_text()) if finished else _in_child(name, row_path))
    stored = render.stored_result("coverage", {"rows": []})
    kept = [row for row in stored["rows"] if row["name"] not in {row["name"] for row in rows}]
    order = list(FIELD_MODELS)
    rows = sorted(kept + rows, key=lambda row: order.index(row["name"]) if row["name"] in order else len(order))
    render.write_result("coverage", {"rows": rows, "machine": machine_info(1), "versions": library_versions()})
    render.render_all()


def _finished(row: dict) -> bool:
    """A row whose last step ran (Keras 3's, when asked for), or whose process died."""
    return "process" in row or ("keras3" in row if _KERAS3.value else "int8" in row)


def _in_child(name: str, row_path: Path) -> dict:
    """One architecture in its own process: a converter that crashes the process is a row, not the end."""
    command = [sys.executable, __file__, f"--one={name}={row_path}", f"--keras3={_KERAS3.value}"]
    completed = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    row = json.loads(row_path.read_text()) if row_path.exists() else {"name": name}
    if completed.returncode < 0:  # the steps done are kept; the next one crashed the process
        row["process"] = f"killed by {signal.Signals(-completed.returncode).name} after {list(row)[-1]}"
    elif completed.returncode:
        row["process"] = (completed.stderr.strip().splitlines() or ["no output"])[-1]
    return row


def _architecture_row(name: str, folder: Path, keras3, save) -> None:
    """Runs every step on one architecture, `save`-ing the row after each (a crash keeps the rest)."""
    import tf_keras

    folder.mkdir()
    field = FIELD_MODELS[name]
    model = build_field_model(name, tf_keras)
    settle_batch_norm(model, sample_inputs(name, model, _CALIBRATION_SAMPLES, seed=3))
    h5 = folder / "keras2.h5"
    model.save(h5)
    calibration, evaluation = folder / "calibration.npz", folder / "eval.npz"
    np.savez(calibration, **sample_arrays(name, model, _CALIBRATION_SAMPLES, seed=1))
    np.savez(evaluation, **sample_arrays(name, model, _EVAL_SAMPLES, seed=2))
    data = {"calibration": calibration, "eval_data": evaluation}
    row = {
        "name": name,
        "params": int(model.count_params()),
        "expected_task": field.task,
        "inputs": len(model.inputs),
        "outputs": len(model.outputs),
    }
    save(row)
    task = {"task": "logits"} if field.task == "logits" else {}
    row["check"] = _step(lambda: tfcompress.check(h5, calibration=calibration), _check_summary)
    save(row)
    row["float16"] = _step(lambda: tfcompress.convert(h5, precision="float16", latency_runs=0, **data, **task))
    save(row)
    row["int8"] = _quantized(h5, data, task)
    save(row)
    row["int16x8"] = _quantized(h5, data, task, precision="int16x8")
    save(row)
    # The eval inputs have no labels: a quantity's conversions are judged against the Keras outputs.
    judged = {"eval_data": evaluation} if field.task in QUANTITIES else {}
    row["analyze"] = _step(lambda: tfcompress.analyze(h5, calibration, samples=16, **judged, **task), _analyzed)
    save(row)
    if field.micro:
        row["micro"] = _step(lambda: tfcompress.to_micro(h5, folder / "micro", **data, **task), _micro_summary)
        save(row)
    if name in _CLI_PARITY and row["int8"]["status"] == "ok":
        row["cli_parity"] = _cli_parity(h5, data, task, row["int8"]["fidelity"], folder)
    if keras3 is not None:
        row["keras3"] = _keras3_rows(name, keras3, folder, data, task)
    save(row)


def _quantized(path, data, task, precision="int8") -> dict:
    strict = _step(lambda: tfcompress.convert(path, precision=precision, latency_runs=0, **data, **task))
    if strict["status"] == "ok" or "--allow_float_ops" not in strict.get("message", ""):
        return strict
    relaxed = _step(
        lambda: tfcompress.convert(path, precision=precision, latency_runs=0, allow_float_ops=True, **data, **task)
    )
    return {**relaxed, "full_integer_message": strict["message"]}


def _keras3_rows(name, keras3, folder, data, task) -> dict:
    try:
        model = build_field_model(name, keras3)
        settle_batch_norm(model, sample_inputs(name, model, _CALIBRATION_SAMPLES, seed=3))
    except Exception as error:
        return {"built": False, "message": one_line(error, first_line_only=True)}
    rows = {"built": True}
    for suffix in (".keras", ".h5"):
        path = folder / f"keras3{suffix}"
        try:
            model.save(path)
        except Exception as error:
            rows[suffix] = {"status": "not saved", "message": one_line(error, first_line_only=True)}
            continue
        rows[suffix] = _quantized(path, data, task)
    return rows


def _step(run, summary=None) -> dict:
    started = time.perf_counter()
    try:
        report = run()
    except TfcompressError as error:
        return {"status": "refused", "message": str(error), "seconds": time.perf_counter() - started}
    except Exception as error:  # a traceback a user would see: a bug
        message = f"{type(error).__name__}: {one_line(error, first_line_only=True)}"
        return {"status": "crash", "message": message, "seconds": time.perf_counter() - started}
    result = {"status": "ok", "seconds": time.perf_counter() - started}
    if summary is not None:
        return {**result, **summary(report)}
    return {
        **result,
        "size_bytes": report.size_bytes,
        "float_ops": list(report.float_ops),
        "fidelity": report.fidelity.to_dict() if report.fidelity else None,
        "headline": _headline(report),
        "warnings": list(report.warnings),
    }


def _headline(report) -> str:
    """The task's measure; one per output, named, for a model with several."""
    if report.fidelity_by_output:
        return "; ".join(f"{fidelity.output}: {fidelity.headline()}" for fidelity in report.fidelity_by_output)
    return report.fidelity.headline() if report.fidelity else None


def _check_summary(report) -> dict:
    return {"verdict": report.verdict, "problems": [f"{p.severity}: {p.layer}: {p.problem}" for p in report.problems]}


def _analyzed(report) -> dict:
    return {"layers": len(report.layers), "int8_relative_error": report.int8_relative_error}


def _micro_summary(report) -> dict:
    return {
        "arena_bytes": report.arena_bytes,
        "size_bytes": report.size_bytes,
        "passed": report.faithfulness.passed,
        "headline": _headline(report),
    }


def _cli_parity(path, data, task, api_fidelity, folder) -> dict:
    """The same int8 conversion through the CLI, as the README writes it."""
    report = folder / "cli.json"
    command = [
        sys.executable, "-m", "tfcompress", "convert", str(path), "--precision", "int8",
        "--calibration", str(data["calibration"]), "--eval", str(data["eval_data"]),
        "-o", str(folder / "cli.tflite"), "--report", str(report),
    ] + [f"--task={value}" for value in task.values()]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode:
        return {"same": False, "message": completed.stderr.strip().splitlines()[-1]}
    cli_fidelity = json.loads(report.read_text())["fidelity"]
    same = all(
        cli_fidelity[key] == api_fidelity[key] or np.isclose(cli_fidelity[key], api_fidelity[key], rtol=1e-9)
        for key in api_fidelity
        if api_fidelity[key] is not None and not isinstance(api_fidelity[key], str)
    )
    return {"same": bool(same), "task": cli_fidelity["task"]}


if __name__ == "__main__":
    app.run(main)
