"""The tool's own speed against the stock script, and the batch before/after, in one run.

Parts (--parts, comma-separated):
- convert: for every sample model and one larger model (tf_keras MobileNetV2, alpha 1.0,
  224×224×3, seeded random weights, calibrated on seeded random images and evaluated on
  seeded random images with random labels: a timing subject, its accuracy means nothing),
  --pairs alternating pairs, each command a fresh process: the stock script
  (`benchmarks/stock.py convert`: load, TFLiteConverter int8, LiteRT accuracy on the eval
  file) and `tfcompress convert MODEL --precision int8 --calibration C --eval E -o OUT`
  with the conversions cache off. Once per model, the same command on the code before
  this change (--before, run from a git worktree) gives the "before" time and the bytes
  the new `.tflite` must equal.
- micro: the stock conversion at batch 1 with int8 I/O plus a TFLite Micro run of 100 eval
  inputs (`benchmarks/stock.py micro`) vs `tfcompress micro MODEL --calibration C --eval E -o DIR`.
- batch: the 20 models of benchmarks/pipeline.py through `tools/compress_models.py
  --recipe mobile_int8 --jobs 2`, cold (fresh output and cache), before vs after,
  alternating, --batch_pairs times; every .tflite compared byte for byte.

Wall time and peak RSS (of the process tree's largest process) per command; medians.
Writes results/tool_speed.json and its table.
"""

import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import batch_models
import numpy as np
from absl import app, flags

from tfcompress import _keras
from tfcompress.report import library_versions, machine_info
from tfcompress.testing.sample_models import SAMPLE_FILES

import render

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_models"
CALIBRATION = SAMPLES / "data" / "fashion_mnist_calib.npz"
EVAL = SAMPLES / "data" / "fashion_mnist_eval.npz"
MICRO_MODELS = ("lenet_300_100.h5", "lenet5.h5", "dscnn.h5", "resnet8.h5")
LARGE = "mobilenetv2_100_224.h5"

_PARTS = flags.DEFINE_list("parts", ["convert", "micro", "batch"], "Which parts to run.")
_PAIRS = flags.DEFINE_integer("pairs", 3, "Alternating stock/tfcompress pairs per model.", lower_bound=1)
_BATCH_PAIRS = flags.DEFINE_integer("batch_pairs", 2, "Before/after pairs of the 20-model batch.", lower_bound=1)
_BEFORE = flags.DEFINE_string("before", "44df873", "The revision before this change, for bytes and before times.")
_SPEED_DIR = flags.DEFINE_string("speed_dir", "/tmp/tfcompress-tool-speed", "Models, data, outputs, the worktree.")
_MODELS = flags.DEFINE_list("models", None, "Only these models of the convert part (file names; default all).")
_LARGE_CALIBRATION = flags.DEFINE_integer("large_calibration", 200, "Random calibration images for the large model.")
_LARGE_EVAL = flags.DEFINE_integer("large_eval", 500, "Random eval images for the large model.")


def main(argv):
    del argv
    work = Path(_SPEED_DIR.value)
    work.mkdir(parents=True, exist_ok=True)
    before = _worktree(work / "before", _BEFORE.value)
    result = render.stored_result("tool_speed", {"benchmark": "tool_speed"})
    result.update(before=_BEFORE.value, machine=machine_info(threads=1), versions=library_versions())
    result["rss_by"] = "gnu time"
    if "convert" in _PARTS.value:
        rows = {row["model"]: row for row in result.get("convert", [])}  # a partial run keeps the other rows
        for subject in _convert_subjects(work):
            if _MODELS.value is None or subject[0].name in _MODELS.value:
                rows[subject[0].name] = _convert_rows(work, before, *subject)
        order = [subject[0].name for subject in _convert_subjects(work)]
        result["convert"] = sorted(rows.values(), key=lambda row: order.index(row["model"]))
        result["pairs"] = _PAIRS.value
    if "micro" in _PARTS.value:
        result["micro"] = [_micro_rows(work, SAMPLES / name) for name in MICRO_MODELS]
    if "batch" in _PARTS.value:
        result["batch"] = _batch(work, before)
    render.write_result("tool_speed", result)
    render.render_all()
    print(json.dumps({k: v for k, v in result.items() if k not in ("machine", "versions")}, indent=1))


def _convert_subjects(work: Path) -> list:
    subjects = [(SAMPLES / name, CALIBRATION, EVAL) for name in SAMPLE_FILES]
    return subjects + [_large_model(work)]


def _convert_rows(work: Path, before: Path, model: Path, calibration: Path, evaluation: Path) -> dict:
    out = work / "convert"
    out.mkdir(exist_ok=True)
    stock_output, ours_output, before_output = (
        out / f"{model.stem}.{kind}.tflite" for kind in ("stock", "ours", "before")
    )
    stock = [sys.executable, str(ROOT / "benchmarks" / "stock.py"), "convert", str(model), str(calibration)]
    stock += [str(evaluation), str(stock_output)]
    ours = ["convert", str(model), "--precision", "int8", "--calibration", str(calibration), "--eval", str(evaluation)]
    pairs = _pairs(stock, _tfcompress(ours + ["-o", str(ours_output)]))
    earlier = _run(_tfcompress(ours + ["-o", str(before_output)]), pythonpath=before)
    row = _summary(model.name, pairs)
    row.update(
        before_s=earlier["seconds"],
        before_rss_mb=earlier["rss_mb"],
        same_bytes_as_before=ours_output.read_bytes() == before_output.read_bytes(),
        sha256=hashlib.sha256(ours_output.read_bytes()).hexdigest()[:16],
        size_bytes=ours_output.stat().st_size,
        stock_size_bytes=stock_output.stat().st_size,
    )
    print(json.dumps(row), flush=True)
    return row


def _micro_rows(work: Path, model: Path) -> dict:
    out = work / "micro"
    out.mkdir(exist_ok=True)
    stock = [sys.executable, str(ROOT / "benchmarks" / "stock.py"), "micro", str(model), str(CALIBRATION)]
    stock += [str(EVAL), str(out / f"{model.stem}.stock.tflite")]
    ours = _tfcompress(["micro", str(model), "--calibration", str(CALIBRATION), "--eval", str(EVAL)])
    row = _summary(model.name, _pairs(stock, ours + ["-o", str(out / model.stem)]))
    print(json.dumps(row), flush=True)
    return row


def _pairs(stock: list, ours: list) -> list:
    """--pairs (stock, ours) pairs; which runs first alternates."""
    pairs = []
    for repeat in range(_PAIRS.value):
        if repeat % 2 == 0:
            first = _run(stock)
            pairs.append((first, _run(ours)))
        else:
            second = _run(ours)
            pairs.append((_run(stock), second))
    return pairs


def _summary(name: str, pairs: list) -> dict:
    stock_s = [stock["seconds"] for stock, _ in pairs]
    ours_s = [ours["seconds"] for _, ours in pairs]
    return {
        "model": name,
        "stock_s": statistics.median(stock_s),
        "ours_s": statistics.median(ours_s),
        "ratio": statistics.median(ours / stock for stock, ours in zip(stock_s, ours_s)),
        "ratios": [round(ours / stock, 3) for stock, ours in zip(stock_s, ours_s)],
        "stock_rss_mb": max(stock["rss_mb"] for stock, _ in pairs),
        "ours_rss_mb": max(ours["rss_mb"] for _, ours in pairs),
    }


def _batch(work: Path, before: Path) -> dict:
    models = batch_models.make_models(work / "batch_models", batch_models.FASHION_MNIST, seeds=5)
    runs = []
    for repeat in range(_BATCH_PAIRS.value):
        order = ("before", "after") if repeat % 2 == 0 else ("after", "before")
        for which in order:
            output, cache = work / f"batch_{which}_{repeat}", work / f"batch_cache_{which}"
            for folder in (output, cache):
                shutil.rmtree(folder, ignore_errors=True)
            tool = (before if which == "before" else ROOT) / "tools" / "compress_models.py"
            command = [sys.executable, str(tool), "--input_dir", str(models), "--recipe", "mobile_int8"]
            command += ["--output_dir", str(output), "--cache_dir", str(cache), "--jobs", "2"]
            measured = _run(command, pythonpath=before if which == "before" else None)
            counts = json.loads((output / "summary.json").read_text())["counts"]
            runs.append({"which": which, "repeat": repeat, **measured, "counts": counts})
            print(json.dumps(runs[-1]), flush=True)
    before_s = statistics.median(run["seconds"] for run in runs if run["which"] == "before")
    after_s = statistics.median(run["seconds"] for run in runs if run["which"] == "after")
    identical = all(
        batch_models.tflite_files(work / f"batch_{run['which']}_{run['repeat']}")
        == batch_models.tflite_files(work / "batch_before_0")
        for run in runs
    )
    return {
        "models": len(list(models.glob("*.h5"))),
        "runs": runs,
        "before_s": before_s,
        "after_s": after_s,
        "ratio": after_s / before_s,
        "outputs_identical": identical,
    }


def _tfcompress(args: list) -> list:
    return [sys.executable, "-m", "tfcompress", *args]


def _run(command: list, pythonpath=None) -> dict:
    """Wall seconds, and the peak RSS of the largest process in the command's tree as GNU time
    reports it (a child forked from this process would count this process's pages as its own)."""
    env = {**os.environ, "TFCOMPRESS_CACHE_DIR": "off", "TF_CPP_MIN_LOG_LEVEL": "2"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    with tempfile.NamedTemporaryFile("r") as peak:
        started = time.perf_counter()
        finished = subprocess.run(
            ["/usr/bin/time", "-f", "%M", "-o", peak.name, *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )
        seconds = time.perf_counter() - started
        peak_kb = int(peak.read().split()[-1])
    if finished.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{finished.stdout.decode(errors='replace')[-3000:]}")
    return {"seconds": round(seconds, 3), "rss_mb": round(peak_kb / 1024, 1)}


def _worktree(folder: Path, revision: str) -> Path:
    """The code at `revision`, checked out beside the work (imported through PYTHONPATH)."""
    if not folder.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(folder), revision], check=True)
    probe = subprocess.run(
        [sys.executable, "-c", "import tfcompress; print(tfcompress.__file__)"],
        env={**os.environ, "PYTHONPATH": str(folder)},
        capture_output=True,
        text=True,
        check=True,
    )
    if not probe.stdout.strip().startswith(str(folder)):
        sys.exit(f"PYTHONPATH={folder} does not select the old code: {probe.stdout}")
    return folder


def _large_model(work: Path) -> tuple:
    """MobileNetV2 1.0 at 224×224 with seeded random weights, and random uint8 images for it."""
    folder = work / "large"
    folder.mkdir(exist_ok=True)
    model, calibration, evaluation = folder / LARGE, folder / "calibration.npz", folder / "eval.npz"
    if not model.exists():
        keras = _keras.tf_keras()
        keras.utils.set_random_seed(0)
        network = keras.applications.MobileNetV2(input_shape=(224, 224, 3), alpha=1.0, weights=None, classes=1000)
        network.save(model, include_optimizer=False)
    rng = np.random.default_rng(0)
    if not evaluation.exists():
        images = rng.integers(0, 256, (_LARGE_CALIBRATION.value + _LARGE_EVAL.value, 224, 224, 3), dtype=np.uint8)
        np.savez(calibration, x=images[: _LARGE_CALIBRATION.value])
        labels = rng.integers(0, 1000, _LARGE_EVAL.value)
        np.savez(evaluation, x=images[_LARGE_CALIBRATION.value :], y=labels)
    return model, calibration, evaluation


if __name__ == "__main__":
    app.run(main)
