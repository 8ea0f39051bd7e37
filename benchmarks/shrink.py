"""`auto --train` vs uniform and hand-picked prune + cluster settings, full Fashion-MNIST, all through the CLI.

For each bundled model: `tfcompress auto MODEL --train DIR@train --eval DIR@test
--max_accuracy_drop 1 --objective size` as the README writes it (wall time, the chosen model's
gzip size against the float32 `.tflite`, its accuracy drop on the 10k test images), then the
recipe it wrote re-run with `tfcompress run` and the bytes compared. Then each uniform and
hand-picked setting as a recipe (prune → cluster keeping the zeros → int8, one scale per
Dense) through `tfcompress run`, with auto's epochs, batch and learning rates (the settings and
the recipe runner are benchmarks/shrink_recipes.py's).
The control row is that fine-tuning with nothing pruned or clustered: what training alone gains.
`--parts seeds` fine-tunes the tight comparison's two recipes again with other seeds, to say how much of
a fraction of a point between them is the seed.
Writes results/shrink.json (one model's rows replaced at a time) and the table in benchmarks/README.md.
"""

import functools
import json
import subprocess
import tempfile
import time
from pathlib import Path

from absl import app, flags

import render
from shrink_recipes import BUDGET, CONTROL, EPOCHS, HAND_PICKED, SEEDS, TIGHT, UNIFORM, run, run_recipe

ROOT = Path(__file__).resolve().parents[1]
_DATA_DIR = flags.DEFINE_string(
    "data_dir", "/usr/share/datasets/fashion-mnist", "Fashion-MNIST IDX folder (apt-get install dataset-fashion-mnist)."
)
_MODELS = flags.DEFINE_list("models", ["lenet_300_100", "lenet5", "dscnn"], "Bundled sample models.")
_TIME_BUDGET = flags.DEFINE_float("time_budget", None, "auto's --time_budget in minutes, if any (kept in the row).")
_PARTS = flags.DEFINE_list(
    "parts",
    ["auto", "uniform", "hand-picked", "control", "tight", "kill"],
    "auto: auto --train; uniform, hand-picked: those settings; control: the same fine-tuning with nothing pruned or "
    "clustered; tight: auto --train with the best hand-picked "
    "row's drop as budget; kill: kill -9 of auto --train, then resumed; seeds: the tight row's recipe and its "
    "hand-picked row's, fine-tuned with other seeds (not in the default: 6 more recipe runs per model).",
)

CHAIN_SIZES = "deflated kernels"  # how auto's chain priced bytes (rows without it: an entropy formula)


def main(argv):
    del argv
    _commit()
    data = {
        "--train": f"{_DATA_DIR.value}@train",
        "--eval": f"{_DATA_DIR.value}@test",
        "--calibration": str(ROOT / "sample_models/data/fashion_mnist_calib.npz"),
    }
    result = render.stored_result("shrink", {"rows": []})
    if "kill" in _PARTS.value:
        with tempfile.TemporaryDirectory() as folder:
            result["kill"] = kill_row(Path(folder))
        render.write_result("shrink", result)
    for name in _MODELS.value:
        with tempfile.TemporaryDirectory() as folder:
            fresh = []
            if "auto" in _PARTS.value:
                fresh.append(auto_row(name, data, Path(folder)))
            fresh += [
                setting_row(name, label, how, data, Path(folder))
                for how, label in settings_of(name)
                if how in _PARTS.value
            ]
            if "control" in _PARTS.value:
                fresh.append(setting_row(name, CONTROL, "control", data, Path(folder)))
            if "tight" in _PARTS.value:
                fresh.append(tight_row(name, data, Path(folder), _merged(result["rows"], fresh)))
            if "seeds" in _PARTS.value or "tight" in _PARTS.value:  # a new tight row may hold another recipe
                result["seeds"] = [s for s in result.get("seeds", []) if s["model"] != name]
            if "seeds" in _PARTS.value:
                result["seeds"].append(seeds_of(name, data, Path(folder), _merged(result["rows"], fresh)))
        result = {
            **result,
            "benchmark": "shrink",
            "budget": BUDGET,
            "epochs": EPOCHS,
            "rows": _merged(result["rows"], fresh),
            **{key: value for key, value in _machine().items()},
        }
        render.write_result("shrink", result)  # after each model: a long run keeps what it finished
    render.render_all()


def kill_row(folder: Path) -> dict:
    """auto --train on the bundled data (short probes): once uninterrupted, and once killed with SIGKILL
    after its second probe record, then run again: the same bytes, the records made before the kill kept."""
    data = ROOT / "sample_models/data"
    command = [
        "tfcompress",
        "auto",
        str(ROOT / "sample_models/lenet_300_100.h5"),
        *("--train", str(data / "fashion_mnist_calib.npz"), "--calibration", str(data / "fashion_mnist_calib.npz")),
        *("--eval", str(data / "fashion_mnist_eval.npz"), "--prune_epochs", "2", "--cluster_epochs", "1"),
    ]
    uninterrupted = run([*command, "-o", str(folder / "whole.tflite")])
    killed = folder / "killed.tflite"
    records = folder / "killed.auto"
    process = subprocess.Popen([*command, "-o", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while len(list(records.glob("probe-*.json"))) < 2 and process.poll() is None:
        time.sleep(0.2)
    process.kill()
    process.wait()
    written_before_the_end = killed.exists() or any(folder.glob("killed.*.png"))
    before = {path.name: path.stat().st_mtime_ns for path in records.glob("*.json")}
    resumed = run([*command, "-o", str(killed)])
    after = {path.name: path.stat().st_mtime_ns for path in records.glob("*.json")}
    return {
        "probes_before_kill": len([name for name in before if name.startswith("probe-")]),
        "records_kept": all(after.get(name) == stamp for name, stamp in before.items()),
        "probes_after_kill": len([name for name in after if name.startswith("probe-") and name not in before]),
        "output_at_kill": written_before_the_end,  # outputs appear only when the search is done
        "same_bytes": killed.read_bytes() == (folder / "whole.tflite").read_bytes(),
        "seconds_uninterrupted": round(uninterrupted, 1),
        "seconds_resumed": round(resumed, 1),
    }


def tight_row(name: str, data: dict, folder: Path, rows: list) -> dict:
    """auto --train with the best hand-picked row's accuracy drop as its budget: auto at the same accuracy
    (a negative drop too: fine-tuning can gain over the float model)."""
    budget = _best_hand_picked(name, rows)["accuracy_drop"]
    for earlier in (render.RESULTS / "shrink").glob(f"{name}.budget-*"):  # another budget's probes and plots
        earlier.unlink()
    return auto_row(name, data, folder, budget=budget, how=TIGHT)


def _best_hand_picked(name: str, rows: list) -> dict:
    """The smallest hand-picked row within the budget: the one auto's tight row is held against."""
    hand = [r for r in rows if r["model"] == name and r["how"] == "hand-picked" and r["accuracy_drop"] <= BUDGET]
    return max(hand, key=lambda row: row["gzip_ratio"])


def _merged(stored: list, fresh: list) -> list:
    """Fresh rows replace the stored rows they remeasure in place, so the table keeps its order."""
    replacing = {_identity(row): row for row in fresh}
    kept = [replacing.pop(_identity(row), row) for row in stored]
    return kept + list(replacing.values())


def _identity(row: dict) -> tuple:
    """Which stored row a fresh one replaces: the tight row by its model (its budget follows the hand-picked
    row), another auto row by its budget, a setting by its label."""
    if row["how"] == TIGHT:
        return row["model"], row["how"]
    return row["model"], row["how"], row.get("budget", BUDGET) if row["how"].startswith("auto") else row["setting"]


def settings_of(name: str) -> list:
    return [("uniform", label) for label in UNIFORM[name]] + [("hand-picked", label) for label in HAND_PICKED[name]]


def auto_row(name: str, data: dict, folder: Path, budget: float = BUDGET, how: str = "auto --train") -> dict:
    prune_epochs, cluster_epochs = EPOCHS[name]
    output = folder / f"{name}.tflite"
    command = [
        "tfcompress",
        "auto",
        str(ROOT / f"sample_models/{name}.h5"),
        *[part for flag, value in data.items() for part in (flag, value)],
        f"--max_accuracy_drop={budget}",  # = keeps a negative budget a value
        *(["--time_budget", str(_TIME_BUDGET.value)] if _TIME_BUDGET.value else []),
        "--objective",
        "size",
        "--prune_epochs",
        str(prune_epochs),
        "--cluster_epochs",
        str(cluster_epochs),
        "-o",
        str(output),
        "--report",
        str(folder / "auto.json"),
    ]
    seconds = run(command, check=False)  # exit 1: nothing within the budget, a row too
    report = json.loads((folder / "auto.json").read_text())
    chosen = next((c for c in report["candidates"] if c["name"] == report["chosen"]), None)
    if chosen is None:
        return {"model": name, "how": how, "budget": budget, "setting": "nothing within the budget", "seconds": seconds}
    remade = folder / "remade"
    run(
        [
            "tfcompress",
            "run",
            str(output.with_suffix(".recipe.yaml")),
            "--model",
            command[2],
            *command[3:9],
            "-o",
            str(remade),
        ]
    )
    kept = render.RESULTS / "shrink"
    kept.mkdir(exist_ok=True)
    stem = name if budget == BUDGET else f"{name}.budget-{budget}"
    (kept / f"{stem}.auto.json").write_bytes((folder / "auto.json").read_bytes())  # every probe, for the front
    for picture in (".png", ".layers.png"):
        if output.with_suffix(picture).exists():
            (kept / f"{stem}{picture}").write_bytes(output.with_suffix(picture).read_bytes())
    float32_bytes = report["float32"]["size_bytes"]
    return {
        "model": name,
        "how": how,
        "budget": budget,
        "setting": chosen["name"],
        "gzip_bytes": chosen["gzip_bytes"],
        "float32_bytes": float32_bytes,
        "gzip_ratio": float32_bytes / chosen["gzip_bytes"],
        "float_accuracy": report["float32"]["accuracy"],
        "accuracy": chosen["accuracy"],
        "accuracy_drop": chosen["accuracy_drop"],
        "seconds": round(seconds, 1),
        "probes": len([c for c in report["candidates"] if c["name"].startswith("pruned+clustered")]),
        "chain_length": report["search"]["chain_length"],
        "stopped": report["search"]["stopped"],
        "recipe_remakes_bytes": (remade / "model.tflite").read_bytes() == output.read_bytes(),
        "training": chosen["training"],
        "chain_sizes": CHAIN_SIZES,
        "commit": _commit(),
    }


def setting_row(name: str, label: str, how: str, data: dict, folder: Path) -> dict:
    report, seconds = run_recipe(name, label, _setting_steps(name, label, how), data, folder)
    return {
        "model": name,
        "how": how,
        "setting": label,
        "gzip_bytes": report["gzip_bytes"],
        "float32_bytes": report["float32_bytes"],
        "gzip_ratio": report["float32_bytes"] / report["gzip_bytes"],
        "accuracy": report["accuracy"],
        "accuracy_drop": report["accuracy_drop"],
        "seconds": round(seconds, 1),
        "commit": _commit(),
    }


def seeds_of(name: str, data: dict, folder: Path, rows: list) -> dict:
    """The tight comparison's two recipes, the best hand-picked row's and the one auto chose with its drop
    as budget, fine-tuned again with other seeds: how much of a fraction of a point between them is the
    seed. Seed 0 is the stored rows' own run."""
    hand = _best_hand_picked(name, rows)
    tight = next(row for row in rows if row["model"] == name and row["how"].startswith("auto --train, the hand"))
    recipes = {
        "hand-picked": (hand, _setting_steps(name, hand["setting"], "hand-picked")),
        "auto": (tight, tight["training"]),
    }
    measured = {}
    for who, (row, steps) in recipes.items():
        runs = [{"seed": 0, "gzip_bytes": row["gzip_bytes"], "accuracy_drop": row["accuracy_drop"]}]
        for seed in SEEDS:
            seeded = [{kind: {**options, "seed": seed}} for step in steps for kind, options in step.items()]
            report, _ = run_recipe(name, f"{who} seed {seed}", seeded, data, folder)
            runs.append({"seed": seed, "gzip_bytes": report["gzip_bytes"], "accuracy_drop": report["accuracy_drop"]})
        measured[who] = {"setting": row["setting"], "runs": runs}
    return {"model": name, **measured}


def _setting_steps(name: str, label: str, how: str) -> list:
    """A uniform, hand-picked or control setting's training steps, with auto's epochs, batch and learning rates."""
    prune_epochs, cluster_epochs = EPOCHS[name]
    if how == "control":  # both steps prune to nothing: the same fine-tuning, every weight kept
        prune, cluster = {"target_sparsity": 0.0}, None
    elif how == "uniform":
        sparsity, clusters = UNIFORM[name][label]
        prune, cluster = {"target_sparsity": sparsity}, {"clusters": clusters}
    else:
        sparsities, counts = HAND_PICKED[name][label]
        prune = {"target_sparsity": max(sparsities.values()), "layer_sparsity": sparsities, "layers": _only(sparsities)}
        cluster = {"clusters": max(counts.values()), "layer_clusters": counts, "layers": _only(counts)}
    steps_per_epoch = -(-60000 // 128)
    first = {
        **prune,
        "end_step": round(prune_epochs * 2 / 3) * steps_per_epoch,
        "epochs": prune_epochs,
        "batch_size": 128,
        "learning_rate": 1e-3,
    }
    settle = {"epochs": cluster_epochs, "batch_size": 128, "learning_rate": 1e-4}
    if cluster is None:
        return [{"prune": first}, {"prune": {**prune, **settle}}]
    return [{"prune": first}, {"cluster": {**cluster, "preserve_sparsity": True, **settle}}]


def _only(names) -> str:
    return "^(" + "|".join(names) + ")$"


@functools.cache
def _commit() -> str:
    """The checkout the rows are measured on, read when the run starts (a row is kept until its model's
    parts are run again)."""
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(ROOT), "diff", "--quiet", "HEAD", "--", "tfcompress"]).returncode
    return head.stdout.strip() + ("+changes" if dirty else "")


def _machine() -> dict:
    from tfcompress.report import library_versions, machine_info

    return {"machine": machine_info(threads=1), "versions": library_versions()}


if __name__ == "__main__":
    app.run(main)
