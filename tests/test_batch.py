"""tools/compress_models.py: sharding, the cache, budgets in the exit code, resuming after a kill."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tfcompress.errors import OptionError
from tfcompress.pipeline import batch
from tfcompress.pipeline.shards import Shard, resolve_shard

from conftest import ROOT, SAMPLE_MODELS

TOOL = ROOT / "tools" / "compress_models.py"
# float16 needs no calibration: the quickest real conversion, with accuracy measured on the eval data.
_RECIPE = "mobile_float16"


@pytest.fixture
def models(tmp_path):
    """Three models with their data defaults: two real ones and a copy under another name."""
    folder = tmp_path / "models"
    folder.mkdir()
    for name in ("lenet_300_100.h5", "lenet5.h5"):
        shutil.copy(SAMPLE_MODELS / name, folder / name)
    shutil.copy(SAMPLE_MODELS / "lenet_300_100.h5", folder / "mlp_copy.h5")
    shutil.copytree(SAMPLE_MODELS / "data", folder / "data")
    shutil.copy(SAMPLE_MODELS / "tfcompress-data.yaml", folder)
    return folder


def _tool(*args, **kwargs):
    return subprocess.run(
        [sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True, timeout=600, **kwargs
    )


def _outputs(folder) -> dict:
    """Every produced model file's bytes, by relative path (reports hold timings; models must not differ)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.tflite"))}


def test_shards_are_disjoint_and_cover_every_model():
    models = [f"m{i}" for i in range(11)]
    shards = [Shard(index, 4, "test").pick(models) for index in range(4)]
    assert sorted(sum(shards, [])) == sorted(models)
    assert sum(len(s) for s in shards) == len(models)
    with pytest.raises(OptionError, match="shard index must be in 0..num_shards-1"):
        Shard(4, 4, "test")


@pytest.mark.parametrize(
    "environ, expected",
    [
        ({}, (0, 1)),
        ({"TFCOMPRESS_SHARD_INDEX": "2", "TFCOMPRESS_NUM_SHARDS": "3"}, (2, 3)),
        ({"JOB_COMPLETION_INDEX": "1", "TFCOMPRESS_NUM_SHARDS": "4"}, (1, 4)),
        (
            {
                "SLURM_ARRAY_TASK_ID": "7",
                "SLURM_ARRAY_TASK_COUNT": "4",
                "SLURM_ARRAY_TASK_MIN": "1",
                "SLURM_ARRAY_TASK_STEP": "2",
            },
            (3, 4),
        ),
        ({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "2"}, (0, 2)),
        ({"CI_NODE_INDEX": "2", "CI_NODE_TOTAL": "2"}, (1, 2)),  # GitLab counts from 1
    ],
)
def test_shard_comes_from_the_engine_environment(environ, expected):
    shard = resolve_shard(None, None, environ)
    assert (shard.index, shard.count) == expected
    assert all(name in shard.describe() for name in environ if "INDEX" in name or "TASK_ID" in name)


def test_flags_win_over_the_environment_and_bad_values_are_one_line():
    environ = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2"}
    assert resolve_shard(0, 3, environ) == Shard(0, 3, "--shard_index")
    assert resolve_shard(None, 3, {"JOB_COMPLETION_INDEX": "2"}).count == 3
    for environ, message in (
        ({"JOB_COMPLETION_INDEX": "1"}, "the number of shards is not"),
        ({"TFCOMPRESS_SHARD_INDEX": "x", "TFCOMPRESS_NUM_SHARDS": "2"}, "must be a whole number"),
        ({"TFCOMPRESS_SHARD_INDEX": "2", "TFCOMPRESS_NUM_SHARDS": "2"}, "must be in 0..num_shards-1"),
        ({}, "needs this job's index"),
    ):
        with pytest.raises(OptionError, match=message):
            resolve_shard(None, 2 if not environ else None, environ)


def test_models_found_and_named_without_collisions(tmp_path):
    for name in ("b.h5", "a.keras", "a.h5", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "saved_model.pb").write_bytes(b"x")
    found = batch.find_models(tmp_path)
    assert [p.name for p in found] == ["a.h5", "a.keras", "b.h5", "saved"]
    assert list(batch.output_names(found).values()) == ["a-h5", "a-keras", "b", "saved"]
    assert [p.name for p in batch.find_models(pattern=str(tmp_path / "*.keras"))] == ["a.keras"]


def test_cached_second_run_is_a_copy_without_tensorflow(models, tmp_path):
    cache = tmp_path / "cache"
    first = _tool(
        "--input_dir", models, "--recipe", _RECIPE, "--output_dir", tmp_path / "out1", "--cache_dir", cache, "--jobs", 2
    )
    assert first.returncode == 0, first.stdout + first.stderr
    summary = json.loads((tmp_path / "out1" / "summary.json").read_text())
    assert [row["status"] for row in summary["models"]] == ["passed"] * 3
    assert [row["cache"] for row in summary["models"]] == ["miss"] * 3
    assert "[3/3]" in first.stdout and (tmp_path / "out1" / "summary.md").read_text().count("✅ passed") == 3
    assert all(row["accuracy_drop"] is not None and abs(row["accuracy_drop"]) < 0.5 for row in summary["models"])
    assert (tmp_path / "out1" / "logs" / "lenet5.log").read_text().count("Traceback") == 0

    # In-process, so we can see what got imported: a hit must not need TensorFlow.
    check = (
        "import sys; from pathlib import Path; from tfcompress.pipeline import batch; "
        f"models = batch.find_models({str(models)!r}); "
        f"result = batch.run_batch(models, batch.BatchOptions({_RECIPE!r}, Path({str(tmp_path / 'out2')!r}), "
        f"Path({str(cache)!r}), jobs=2), progress=lambda line: None); "
        "assert [r['cache'] for r in result.rows] == ['hit'] * 3, result.rows; "
        "assert 'tensorflow' not in sys.modules"
    )
    second = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert _outputs(tmp_path / "out1") == _outputs(tmp_path / "out2") and len(_outputs(tmp_path / "out1")) == 3

    # A damaged entry is not served: it is noticed, set aside and made again.
    entry = next(
        p
        for p in (cache / "entries").iterdir()
        if (p / "model.tflite").is_file() and json.loads((p / "run.json").read_text())["size_bytes"] < 200_000
    )
    (entry / "model.tflite").write_bytes(b"damaged")
    third = _tool("--input_dir", models, "--recipe", _RECIPE, "--output_dir", tmp_path / "out3", "--cache_dir", cache)
    assert third.returncode == 0, third.stderr
    rows = json.loads((tmp_path / "out3" / "summary.json").read_text())["models"]
    assert sorted(row["cache"] for row in rows) == ["hit", "hit", "miss"]
    assert _outputs(tmp_path / "out3") == _outputs(tmp_path / "out1")


def test_budgets_and_errors_set_the_exit_code_and_the_rest_finish(models, tmp_path):
    tight = tmp_path / "tight.yaml"
    tight.write_text("steps:\n  - convert: {precision: float16}\nbudgets:\n  max_size_bytes: 200000\n")
    failed = _tool("--inputs", models / "lenet*.h5", "--recipe", tight, "--output_dir", tmp_path / "a", "--jobs", 2)
    assert failed.returncode == 1, failed.stderr
    rows = {row["name"]: row for row in json.loads((tmp_path / "a" / "summary.json").read_text())["models"]}
    assert rows["lenet5"]["status"] == "passed" and rows["lenet_300_100"]["status"] == "failed"
    assert rows["lenet_300_100"]["broken_budgets"] == ["max_size_bytes"]

    (models / "broken.h5").write_bytes(b"not a model")
    errored = _tool("--inputs", models / "[bl]*.h5", "--recipe", tight, "--output_dir", tmp_path / "b")
    assert errored.returncode == 2
    rows = {row["name"]: row for row in json.loads((tmp_path / "b" / "summary.json").read_text())["models"]}
    assert rows["broken"]["status"] == "error" and "broken.h5 cannot be read as HDF5" in rows["broken"]["error"]
    assert rows["lenet5"]["status"] == "passed" and (tmp_path / "b" / "lenet5" / "model.tflite").is_file()
    assert not (tmp_path / "b" / "broken").exists()


def test_a_models_warnings_reach_the_progress_line_and_the_summary(models, tmp_path):
    """Calibrated on noise, every model is warned of; a build log shows it per model, the summary names it."""
    noise = tmp_path / "noise.yaml"
    noise.write_text("steps:\n  - convert: {precision: int8, calibration: random}\nbudgets: {max_accuracy_drop: 100}\n")
    result = _tool("--inputs", models / "lenet5.h5", "--recipe", noise, "--output_dir", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "[1/1] lenet5: passed" in result.stdout and "1 warning (summary.md)" in result.stdout
    (row,) = json.loads((tmp_path / "out" / "summary.json").read_text())["models"]
    assert [warning.split(":")[:2] for warning in row["warnings"]] == [["convert", " calibrating on random noise"]]
    assert f"- `lenet5`: {row['warnings'][0]}" in (tmp_path / "out" / "summary.md").read_text()


def test_a_killed_batch_resumes_and_ends_as_a_clean_run_would(models, tmp_path):
    clean = _tool("--input_dir", models, "--recipe", _RECIPE, "--output_dir", tmp_path / "clean")
    assert clean.returncode == 0, clean.stderr
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = [
        sys.executable,
        str(TOOL),
        "--input_dir",
        str(models),
        "--recipe",
        _RECIPE,
        "--output_dir",
        str(out),
        "--cache_dir",
        str(cache),
    ]
    killed = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not list(out.glob("*/run.json")) and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(killed.pid, signal.SIGKILL)  # the whole job, as a cancelled CI step is
    killed.wait()
    assert len(list(out.glob("*/run.json"))) < 3, "the batch finished before the kill"

    resumed = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    rows = json.loads((out / "summary.json").read_text())["models"]
    assert "resumed" in {row["cache"] for row in rows} and all(row["status"] == "passed" for row in rows)
    assert _outputs(out) == _outputs(tmp_path / "clean")
    assert not [p for p in (out / ".work").iterdir()] and not list((cache / "entries").glob(".*"))


def test_the_cache_keys_cover_the_whole_package_source(monkeypatch, tmp_path):
    """A changed module anywhere in tfcompress (jobs/, export/, ...) must never reuse a cached result:
    not in the batch cache, and not in the conversions cache the pre-flight check keeps."""
    from tfcompress._io import cache
    from tfcompress.export.tflite import ConvertOptions
    from tfcompress.jobs import check

    assert batch._versions()["tfcompress"] == cache.source_digest()
    monkeypatch.setenv("TFCOMPRESS_CACHE_DIR", str(tmp_path))
    conversions = []
    monkeypatch.setattr(check, "to_tflite", lambda *args, **kwargs: conversions.append(1) or b"converted")
    convert_twice = [check.cached_conversion(None, {"model": "m"}, ConvertOptions()) for _ in range(2)]
    assert convert_twice == [b"converted"] * 2 and len(conversions) == 1
    monkeypatch.setattr(cache, "source_digest", lambda: "another checkout")
    check.cached_conversion(None, {"model": "m"}, ConvertOptions())
    assert len(conversions) == 2


_CRASHING_LAYER = '''
import os
import signal

import tf_keras


class ScaleBy(tf_keras.layers.Layer):
    """Loading this layer kills the process running the model, as a native crash would."""

    def __init__(self, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)
'''


def test_a_worker_that_dies_mid_model_is_reported_and_replaced(models, tmp_path, tf_keras):
    """The crashed model is an error row with the signal; the models after it run on a new
    worker, one after another, and give the bytes of a fresh `tfcompress run` process."""
    from custom_layers import ScaleBy

    inputs = tf_keras.Input((28, 28, 1))
    outputs = tf_keras.layers.Dense(10, activation="softmax")(tf_keras.layers.Flatten()(ScaleBy(13.0)(inputs)))
    tf_keras.Model(inputs, outputs).save(models / "a_crash.h5")
    layers_file = tmp_path / "crashing_layers.py"
    layers_file.write_text(_CRASHING_LAYER)
    out = tmp_path / "out"
    result = _tool(
        "--input_dir",
        models,
        "--recipe",
        _RECIPE,
        "--output_dir",
        out,
        "--custom_objects",
        layers_file,
        "--trust_model_code",
    )
    assert result.returncode == 2, result.stdout + result.stderr
    rows = {row["name"]: row for row in json.loads((out / "summary.json").read_text())["models"]}
    assert rows["a_crash"]["status"] == "error" and rows["a_crash"]["error"].startswith("exit -9")
    assert [rows[name]["status"] for name in ("lenet5", "lenet_300_100", "mlp_copy")] == ["passed"] * 3
    for name in ("mlp_copy",):  # the third model on the replacement worker
        alone = tmp_path / f"alone_{name}"
        fresh = subprocess.run(
            [sys.executable, "-m", "tfcompress", "run", _RECIPE, "--model", models / f"{name}.h5", "-o", alone],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert fresh.returncode == 0, fresh.stderr
        assert (out / name / "model.tflite").read_bytes() == (alone / "model.tflite").read_bytes()


def test_two_machines_share_an_s3_cache_and_their_merged_shards_equal_one_run(models, s3, tmp_path):
    """Shards 0/2 and 1/2 on two "machines" (own folders, the bucket shared), merged, give one machine's
    outputs; a third machine then serves every model from the bucket without TensorFlow."""
    bucket = "s3://tfcompress-cache/batch"
    machines = {}
    for name in ("a", "b", "c", "single"):
        machines[name] = tmp_path / name
        shutil.copytree(models, machines[name] / "models")

    def on(machine, *flags, env=None):
        return _tool(
            "--input_dir", machines[machine] / "models", "--recipe", _RECIPE, "--output_dir", machines[machine] / "out",
            *flags, env={**os.environ, **(env or {})},
        )  # fmt: skip

    first = on("a", "--cache_dir", bucket, env={"TFCOMPRESS_SHARD_INDEX": "0", "TFCOMPRESS_NUM_SHARDS": "2"})
    assert first.returncode == 0 and "2 of 3 models (shard 0 of 2" in first.stdout, first.stdout + first.stderr
    second = on("b", "--cache_dir", bucket, "--shard_index", 1, "--num_shards", 2)
    assert second.returncode == 0 and "1 of 3 models" in second.stdout, second.stderr
    single = on("single", "--jobs", 2)
    assert single.returncode == 0, single.stderr

    merged = tmp_path / "merged"
    joined = _tool("--merge", f"{machines['a'] / 'out'},{machines['b'] / 'out'}", "--output_dir", merged)
    assert joined.returncode == 0, joined.stderr
    rows = json.loads((merged / "summary.json").read_text())["models"]
    one_run = json.loads((machines["single"] / "out" / "summary.json").read_text())["models"]
    assert [row["name"] for row in rows] == [row["name"] for row in one_run] == ["lenet5", "lenet_300_100", "mlp_copy"]
    assert [row["size_bytes"] for row in rows] == [row["size_bytes"] for row in one_run]
    assert _outputs(merged) == _outputs(machines["single"] / "out") and len(_outputs(merged)) == 3
    assert sorted(p.name for p in (merged / "logs").iterdir()) == ["lenet5.log", "lenet_300_100.log", "mlp_copy.log"]

    poisoned = tmp_path / "no_tensorflow" / "tensorflow"
    poisoned.mkdir(parents=True)
    (poisoned / "__init__.py").write_text("raise ImportError('TensorFlow imported on a cache hit')\n")
    third = on("c", "--cache_dir", bucket, "--jobs", 2, env={"PYTHONPATH": str(poisoned.parent)})
    assert third.returncode == 0, third.stdout + third.stderr
    rows = json.loads((machines["c"] / "out" / "summary.json").read_text())["models"]
    assert [row["cache"] for row in rows] == ["hit"] * 3
    assert _outputs(machines["c"] / "out") == _outputs(merged)


def test_merge_refuses_shards_that_do_not_make_one_batch(tmp_path):
    def shard_output(folder, index, names):
        folder.mkdir()
        rows = [{"name": name, "status": "passed"} for name in names]
        summary = {"recipe": "r", "shard": {"index": index, "count": 2}, "batch": ["m0", "m1", "m2"], "models": rows}
        (folder / "summary.json").write_text(json.dumps({**summary, "seconds": 1.0}))
        return folder

    zero = shard_output(tmp_path / "zero", 0, ["m0", "m2"])
    one = shard_output(tmp_path / "one", 1, ["m1"])
    other = shard_output(tmp_path / "other", 1, ["m1", "m2"])
    hostile = shard_output(tmp_path / "hostile", 1, ["../m1"])
    for folders, message in (
        ([zero, hostile], "is not a shard summary"),
        ([zero, zero], "shard 1 missing; shard 0 given twice"),
        ([zero], "shard 1 missing"),
        ([zero, other], "m2 is in both"),
        ([tmp_path / "absent", one], "summary not found"),
    ):
        result = _tool("--merge", ",".join(map(str, folders)), "--output_dir", tmp_path / "merged")
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert not (tmp_path / "merged").exists()
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("x")
    result = _tool("--merge", f"{zero},{one}", "--output_dir", tmp_path / "taken")
    assert result.returncode == 2 and "not an empty folder" in result.stderr
