"""The build-pipeline tool on 20 models: cold vs warm cache, --jobs 1 vs 2, and kill -9 at random moments.

20 models: the four small zoo architectures (lenet_300_100, lenet5, dscnn, resnet8),
each trained from 5 seeds for one epoch on 10k Fashion-MNIST training images, so every
file differs. Each is run through `tools/compress_models.py --recipe mobile_int8`
(int8 calibrated on the committed 1,000 training images, accuracy on the committed 2,000
test images). Measured in one run, --repeats times (medians reported; the order of the
--jobs 1 and --jobs 2 runs alternates): a cold batch with --jobs 1 and with --jobs 2 (fresh
output and cache folders each), a warm batch (fresh output folder, the --jobs 2 cache), and
--kills trials in which the batch (its whole process group, as a cancelled CI step)
gets SIGKILL at a random moment of a cold run, the same command is run again to the end,
and every .tflite is compared byte for byte with the clean --jobs 1 run and every cache
entry checked against its manifest. Writes results/pipeline.json and its table.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from absl import app, flags

from tfcompress import _keras
from tfcompress.data import load_data
from tfcompress.pipeline.cache import FolderCache
from tfcompress.report import library_versions, machine_info
from tfcompress.testing import zoo

import render

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "compress_models.py"
_DATA_DIR = flags.DEFINE_string(
    "data_dir", "/usr/share/datasets/fashion-mnist", "Fashion-MNIST IDX folder (apt-get install dataset-fashion-mnist)."
)
_WORK_DIR = flags.DEFINE_string(
    "work_dir", "/tmp/tfcompress-pipeline-benchmark", "Models, outputs and caches (the trained models are reused)."
)
_SEEDS = flags.DEFINE_integer("seeds", 5, "Seeds per architecture (4 architectures).")
_KILLS = flags.DEFINE_integer("kills", 10, "Kill-and-resume trials.")
_REPEATS = flags.DEFINE_integer("repeats", 2, "Cold --jobs 1, cold --jobs 2 and warm runs, each this often.")
_RECIPE = flags.DEFINE_string("recipe", "mobile_int8", "Recipe every model goes through.")
ARCHITECTURES = ("lenet_300_100", "lenet5", "dscnn", "resnet8")
TRAIN_SAMPLES = 10_000


def main(argv):
    del argv
    work = Path(_WORK_DIR.value)
    models = make_models(work / "models")
    runs = []
    for repeat in range(_REPEATS.value):
        for jobs in (1, 2) if repeat % 2 == 0 else (2, 1):  # alternate, so neither always runs first
            runs.append(timed_batch(models, work / f"cold_jobs{jobs}_{repeat}", work / f"cache_jobs{jobs}", jobs))
        runs.append(timed_batch(models, work / f"warm_jobs2_{repeat}", work / "cache_jobs2", 2, warm=True))
    clean = work / "cold_jobs1_0"
    identical = all(tflite_files(work / run["name"]) == tflite_files(clean) for run in runs)
    kills = [kill_trial(models, work, clean, median(runs, "cold", 2), trial) for trial in range(_KILLS.value)]
    cold1, cold2, warm = median(runs, "cold", 1), median(runs, "cold", 2), median(runs, "warm", 2)
    result = {
        "benchmark": "pipeline",
        "models": len(list(models.glob("*.h5"))),
        "recipe": _RECIPE.value,
        "repeats": _REPEATS.value,
        "runs": runs,
        "median_seconds": {"cold_jobs1": cold1, "cold_jobs2": cold2, "warm_jobs2": warm},
        "jobs_speedup": cold1 / cold2,
        "warm_fraction": warm / cold2,
        "warm_fraction_of_jobs1": warm / cold1,
        "outputs_identical": identical,
        "kills": kills,
        "machine": machine_info(threads=1),
        "versions": library_versions(),
    }
    render.write_result("pipeline", result)
    render.render_all()
    print(json.dumps({k: v for k, v in result.items() if k not in ("runs", "kills", "machine", "versions")}, indent=1))


def median(runs, kind, jobs) -> float:
    return float(np.median([run["seconds"] for run in runs if run["kind"] == kind and run["jobs"] == jobs]))


def make_models(folder: Path) -> Path:
    """20 trained models that differ (architecture × seed), and the data defaults beside them."""
    folder.mkdir(parents=True, exist_ok=True)
    keras = _keras.tf_keras()
    train = load_data(f"{_DATA_DIR.value}@train").take(TRAIN_SAMPLES)
    for name in ARCHITECTURES:
        for seed in range(_SEEDS.value):
            path = folder / f"{name}_s{seed}.h5"
            if path.exists():
                continue
            keras.utils.set_random_seed(seed)
            model = zoo.build(name, keras)
            model.compile(
                optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
            )
            model.fit(train.x, train.y.astype(np.int64), epochs=1, batch_size=128, verbose=2)
            model.save(path, include_optimizer=False)
    data = ROOT / "sample_models" / "data"
    (folder / "tfcompress-data.yaml").write_text(
        f"calibration: {data / 'fashion_mnist_calib.npz'}\neval: {data / 'fashion_mnist_eval.npz'}\n"
    )
    return folder


def command(models: Path, output: Path, cache: Path, jobs: int) -> list:
    return [
        sys.executable,
        str(TOOL),
        "--input_dir",
        str(models),
        "--recipe",
        _RECIPE.value,
        "--output_dir",
        str(output),
        "--cache_dir",
        str(cache),
        "--jobs",
        str(jobs),
    ]


def timed_batch(models, output, cache, jobs, warm=False) -> dict:
    """One batch in a fresh output folder; cold runs start from an empty cache."""
    shutil.rmtree(output, ignore_errors=True)
    if not warm:
        shutil.rmtree(cache, ignore_errors=True)
    started = time.perf_counter()
    finished = subprocess.run(command(models, output, cache, jobs), capture_output=True, text=True)
    seconds = time.perf_counter() - started
    print(f"{output.name}: {finished.stdout.strip().splitlines()[-1]}", flush=True)
    summary = json.loads((output / "summary.json").read_text())
    return {
        "name": output.name,
        "kind": "warm" if warm else "cold",
        "jobs": jobs,
        "seconds": seconds,
        "exit_code": finished.returncode,
        "counts": summary["counts"],
        "cache": sorted({row["cache"] for row in summary["models"]}),
    }


def kill_trial(models, work, clean, cold_seconds, trial) -> dict:
    output, cache = work / "out_kill", work / "cache_kill"
    for folder in (output, cache):
        shutil.rmtree(folder, ignore_errors=True)
    moment = float(np.random.default_rng(trial).uniform(0.02, 0.98) * cold_seconds)
    batch = subprocess.Popen(
        command(models, output, cache, 2), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    time.sleep(moment)
    os.killpg(batch.pid, signal.SIGKILL)
    batch.wait()
    done_before = len(list(output.glob("*/run.json")))
    resumed = subprocess.run(command(models, output, cache, 2), capture_output=True, text=True)
    rows = json.loads((output / "summary.json").read_text())["models"]
    row = {
        "trial": trial,
        "kill_at_s": round(moment, 1),
        "finished_before_kill": done_before,
        "exit_code": resumed.returncode,
        "resumed": sum(r["cache"] == "resumed" for r in rows),
        "identical_to_clean": tflite_files(output) == tflite_files(clean),
        "damaged_cache_entries": len(FolderCache(cache).damaged()),
        "leftovers": len(list((output / ".work").iterdir())),
    }
    print(f"kill trial {trial}: {row}", flush=True)
    return row


def tflite_files(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.glob("*/model.tflite"))}


if __name__ == "__main__":
    app.run(main)
