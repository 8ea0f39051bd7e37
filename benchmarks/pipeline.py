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
entry checked against its manifest. Part `machines`: two "machines" (two processes at once, each
with its own copy of the models and data and its own output folder, sharing only an S3 bucket on
a local moto server) run shard 0/2 and 1/2 of the 20 models; their outputs, merged with --merge,
are compared with a one-machine run of the same 20 (every file but the timing-bearing reports and
logs byte for byte, and the summary rows); then a third machine runs all 20 from the bucket with
TensorFlow made unimportable. Writes results/pipeline.json and its table.
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
from batch_models import FASHION_MNIST, make_models, tflite_files

from tfcompress.pipeline.cache import FolderCache
from tfcompress.pipeline.object_cache import ObjectStoreCache
from tfcompress.report import library_versions, machine_info
from tfcompress.testing.s3_server import local_s3_server

import render

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "compress_models.py"
_DATA_DIR = flags.DEFINE_string("data_dir", FASHION_MNIST, "Fashion-MNIST IDX folder.")
_WORK_DIR = flags.DEFINE_string(
    "work_dir", "/tmp/tfcompress-pipeline-benchmark", "Models, outputs and caches (the trained models are reused)."
)
_SEEDS = flags.DEFINE_integer("seeds", 5, "Seeds per architecture (4 architectures).")
_KILLS = flags.DEFINE_integer("kills", 10, "Kill-and-resume trials.")
_REPEATS = flags.DEFINE_integer("repeats", 2, "Cold --jobs 1, cold --jobs 2 and warm runs, each this often.")
_RECIPE = flags.DEFINE_string("recipe", "mobile_int8", "Recipe every model goes through.")
_PARTS = flags.DEFINE_list("parts", ["speed", "machines"], "speed (cold/warm/--jobs and kill trials), machines.")


def main(argv):
    del argv
    work = Path(_WORK_DIR.value)
    models = make_models(work / "models", _DATA_DIR.value, _SEEDS.value)
    result = render.stored_result("pipeline", {"benchmark": "pipeline"})
    if "speed" in _PARTS.value:
        result.update(speed(models, work))
    if "machines" in _PARTS.value:
        result["machines"] = machines(models, work)
    result.update(machine=machine_info(threads=1), versions=library_versions())
    render.write_result("pipeline", result)
    render.render_all()
    print(json.dumps({k: v for k, v in result.items() if k not in ("runs", "kills", "machine", "versions")}, indent=1))


def speed(models: Path, work: Path) -> dict:
    runs = []
    for repeat in range(_REPEATS.value):
        for jobs in (1, 2) if repeat % 2 == 0 else (2, 1):  # alternate, so neither always runs first
            runs.append(timed_batch(models, work / f"cold_jobs{jobs}_{repeat}", work / f"cache_jobs{jobs}", jobs))
        runs.append(timed_batch(models, work / f"warm_jobs2_{repeat}", work / "cache_jobs2", 2, warm=True))
    clean = work / "cold_jobs1_0"
    identical = all(tflite_files(work / run["name"]) == tflite_files(clean) for run in runs)
    kills = [kill_trial(models, work, clean, median(runs, "cold", 2), trial) for trial in range(_KILLS.value)]
    cold1, cold2, warm = median(runs, "cold", 1), median(runs, "cold", 2), median(runs, "warm", 2)
    return {
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
    }


def machines(models: Path, work: Path) -> dict:
    """Shards 0/2 and 1/2 on two machines at once, sharing only a bucket; merged; then a third, warm."""
    root = work / "machines"
    shutil.rmtree(root, ignore_errors=True)
    folders = {name: copy_machine(models, root / name) for name in ("a", "b", "c", "single")}
    single = timed_batch(folders["single"], root / "single" / "out", None, 2)
    with local_s3_server("tfcompress-benchmark", root / "s3.log"):
        bucket = "s3://tfcompress-benchmark/cache"
        started = time.perf_counter()
        shards = [
            subprocess.Popen(
                command(folders[name], root / name / "out", bucket, 1),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env={**os.environ, "TFCOMPRESS_SHARD_INDEX": str(index), "TFCOMPRESS_NUM_SHARDS": "2"},
            )
            for index, name in enumerate(("a", "b"))
        ]
        printed = [shard.communicate()[0] for shard in shards]
        shards_seconds = time.perf_counter() - started
        for name, text in zip(("a", "b"), printed):
            print(f"machine {name}: {text.splitlines()[0]} ... {text.strip().splitlines()[-1]}", flush=True)
        merged = root / "merged"
        merge = subprocess.run(
            [
                sys.executable,
                str(TOOL),
                "--merge",
                f"{root / 'a' / 'out'},{root / 'b' / 'out'}",
                "--output_dir",
                merged,
            ],
            capture_output=True,
            text=True,
        )
        print(merge.stdout.strip() or merge.stderr.strip(), flush=True)
        no_tensorflow = root / "no_tensorflow" / "tensorflow"
        no_tensorflow.mkdir(parents=True)
        (no_tensorflow / "__init__.py").write_text("raise ImportError('TensorFlow imported on a cache hit')\n")
        started = time.perf_counter()
        third = subprocess.run(
            command(folders["c"], root / "c" / "out", bucket, 2),
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": f"{no_tensorflow.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"},
        )
        third_seconds = time.perf_counter() - started
        print(f"machine c: {third.stdout.strip().splitlines()[-1]}", flush=True)
        kills = [
            bucket_kill_trial(folders["a"], root, shards_seconds, trial, root / "single" / "out")
            for trial in range(_KILLS.value)
        ]
    merged_rows = json.loads((merged / "summary.json").read_text())["models"]
    single_rows = json.loads((root / "single" / "out" / "summary.json").read_text())["models"]
    third_rows = json.loads((root / "c" / "out" / "summary.json").read_text())["models"]
    compared = deterministic_files(merged)
    return {
        "models": len(single_rows),
        "shard_exit_codes": [shard.returncode for shard in shards],
        "shard_models": [len(json.loads((root / n / "out" / "summary.json").read_text())["models"]) for n in "ab"],
        "shards_seconds": shards_seconds,
        "single_seconds": single["seconds"],
        "merge_exit_code": merge.returncode,
        "merged_files_compared": len(compared),
        "merged_identical_to_single": compared == deterministic_files(root / "single" / "out"),
        "merged_rows_identical": summary_columns(merged_rows) == summary_columns(single_rows),
        "third_exit_code": third.returncode,
        "third_hits": sum(row["cache"] == "hit" for row in third_rows),
        "third_seconds": third_seconds,
        "third_identical": deterministic_files(root / "c" / "out") == compared,
        "kills": kills,
    }


def bucket_kill_trial(models: Path, root: Path, shard_seconds: float, trial: int, single: Path) -> dict:
    """kill -9 of shard 0/2 (its process group) at a random moment of a cold run against a fresh prefix of
    the bucket; a reader then looks at every entry there; the same command runs again to the end."""
    url = f"s3://tfcompress-benchmark/kills/{trial}"
    output = root / "kill_out"
    shutil.rmtree(output, ignore_errors=True)
    environ = {**os.environ, "TFCOMPRESS_SHARD_INDEX": "0", "TFCOMPRESS_NUM_SHARDS": "2"}
    moment = float(np.random.default_rng(100 + trial).uniform(0.02, 0.98) * shard_seconds)
    shard = subprocess.Popen(
        command(models, output, url, 1),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=environ,
    )
    time.sleep(moment)
    os.killpg(shard.pid, signal.SIGKILL)
    shard.wait()
    cache = ObjectStoreCache(url)
    keys = cache.entry_keys()
    served = [entry_matches_single(cache, key, root / "kill_read" / key, single) for key in keys]
    served = [whole for whole in served if whole is not None]
    shutil.rmtree(root / "kill_read", ignore_errors=True)
    rerun = subprocess.run(command(models, output, url, 1), capture_output=True, text=True, env=environ)
    rows = json.loads((output / "summary.json").read_text())["models"]
    names = {row["name"] for row in rows}
    mine = {name: data for name, data in deterministic_files(single).items() if name.split("/")[0] in names}
    row = {
        "trial": trial,
        "kill_at_s": round(moment, 1),
        "entries_started": len(keys),
        "entries_served": len(served),
        "served_whole": all(served),
        "exit_code": rerun.returncode,
        "hits_on_rerun": sum(r["cache"] == "hit" for r in rows),
        "identical_to_single": deterministic_files(output) == mine,
        "damaged_entries": len(cache.damaged()),
    }
    print(f"bucket kill trial {trial}: {row}", flush=True)
    return row


def entry_matches_single(cache, key: str, folder: Path, single: Path):
    """None when a reader gets no entry for `key`; else whether the entry it gets holds the report, the
    record and the same model.tflite as the one-machine run of that model."""
    if not cache.fetch(key, folder):
        return None
    try:
        name = Path(json.loads((folder / "report.json").read_text())["model"]).stem
        return (folder / "run.json").is_file() and (folder / "model.tflite").read_bytes() == (
            single / name / "model.tflite"
        ).read_bytes()
    except (OSError, ValueError, KeyError):
        return False


def copy_machine(models: Path, folder: Path) -> Path:
    """A machine's own copy of the models and their data, with its own data defaults file."""
    target = folder / "models"
    target.mkdir(parents=True)
    for model in models.glob("*.h5"):
        shutil.copy(model, target)
    data = ROOT / "sample_models" / "data"
    for name in ("fashion_mnist_calib.npz", "fashion_mnist_eval.npz"):
        shutil.copy(data / name, folder / name)
    (target / "tfcompress-data.yaml").write_text(
        f"calibration: {folder / 'fashion_mnist_calib.npz'}\neval: {folder / 'fashion_mnist_eval.npz'}\n"
    )
    return target


_TIMED = ("report.json", "report.md", "run.json", "run.log")  # hold timings and paths: compared by summary rows


def deterministic_files(folder: Path) -> dict:
    """Every output file but the reports and logs, by relative path: what must be the same bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.glob("*/**/*"))
        if p.is_file() and p.name not in _TIMED and p.parts[len(folder.parts)] != "logs"
    }


def summary_columns(rows: list) -> list:
    keep = ("name", "status", "size_bytes", "accuracy", "accuracy_drop", "arena_bytes", "broken_budgets")
    return [{key: row[key] for key in keep} for row in rows]


def median(runs, kind, jobs) -> float:
    return float(np.median([run["seconds"] for run in runs if run["kind"] == kind and run["jobs"] == jobs]))


def command(models: Path, output: Path, cache, jobs: int) -> list:
    cache_flags = ["--cache_dir", str(cache)] if cache else []
    return [
        sys.executable,
        str(TOOL),
        "--input_dir",
        str(models),
        "--recipe",
        _RECIPE.value,
        "--output_dir",
        str(output),
        *cache_flags,
        "--jobs",
        str(jobs),
    ]


def timed_batch(models, output, cache, jobs, warm=False) -> dict:
    """One batch in a fresh output folder; cold runs start from an empty cache."""
    shutil.rmtree(output, ignore_errors=True)
    if not warm and cache:
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


if __name__ == "__main__":
    app.run(main)
