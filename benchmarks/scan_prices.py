"""Does the one-shot scan price pruning and clustering as fine-tuning does? dscnn's layers touched alone, fine-tuned.

`auto --train` orders its per-layer moves by the sensitivity scan's one-shot drops
(tfcompress/transforms/layer_scan.py). Issue #21's notes found that a chain priced that way
clusters early and keeps less of the fine-tuning's gain than the hand-picked row. Here each
scanned layer is touched alone through the CLI, fine-tuned as auto's probes for the model are
(the epochs benchmarks/shrink_recipes.py holds; batch 128, full Fashion-MNIST), and measured on
the 10k test set against the same fine-tuning with nothing touched (`tfcompress prune` to 0%,
with seeds for its noise):

- cluster: `tfcompress cluster` to each of the scan's counts (dscnn: 1 epoch at lr 1e-4, the
  probes' clustering);
- prune: `tfcompress prune` to each of SPARSITIES (dscnn: 3 epochs at lr 1e-3, the sparsity
  reached at two thirds, the probes' pruning), then 1 epoch at lr 1e-4 with the zeros kept (a
  constant schedule), which the probes' clustering gives them: after the first step alone the
  control's test accuracy swings by 1.5 pt from epoch to epoch at lr 1e-3;
- recipes: the allocation chain ordered by these fine-tuned prices instead of the one-shot ones,
  read at the hand-picked setting's estimated size and at its forecast drop, those two steps run
  as recipes through `tfcompress run`: would per-notch fine-tuning make the chain find the
  hand-picked setting or better?
- uniform: the hand-picked setting's layers moved together to its neighbouring settings, the way
  the chain cannot (it moves one layer a notch at a time), run as recipes the same way.

The one-shot drops are the scan stored by `benchmarks/shrink.py` (`results/shrink/MODEL.auto.json`,
2,000 test images).

    python benchmarks/scan_prices.py                  # dscnn, about 110 min on 2 cores
    python benchmarks/scan_prices.py --parts recipes  # a part run alone keeps the others' rows
"""

import json
import math
import statistics
import subprocess
import tempfile
from pathlib import Path

from absl import app, flags

from tfcompress.jobs.auto_train import training_steps
from tfcompress.options import ShrinkOptions
from tfcompress.transforms.allocation import Allocation, allocation_chain
from tfcompress.transforms.kernel_bytes import kernel_bytes
from tfcompress.transforms.layer_scan import CLUSTERS, LayerScan
from tfcompress.transforms.layer_scan import SPARSITIES as SCANNED_SPARSITIES

import render
from shrink_recipes import CONTROL, EPOCHS, HAND_PICKED, run_recipe

ROOT = Path(__file__).resolve().parents[1]
_DATA_DIR = flags.DEFINE_string(
    "data_dir", "/usr/share/datasets/fashion-mnist", "Fashion-MNIST IDX folder (apt-get install dataset-fashion-mnist)."
)
_MODEL = flags.DEFINE_string("model", "dscnn", "Bundled sample model whose shrink scan is stored.")
_PARTS = flags.DEFINE_list(
    "parts",
    ["cluster", "prune", "recipes", "uniform"],
    "cluster: the scan's cluster counts; prune: SPARSITIES; recipes: the fine-tuned chain's steps (`_chains`) run "
    "as recipes through `tfcompress run`; uniform: the hand-picked setting's layers at each of UNIFORM's settings.",
)

CONTROL_SEEDS = (0, 1, 2)
SPARSITIES = ("0.5", "0.7", "0.9")  # the scan's ladder up to where its one-shot drops pass 10 pt
TRAINING_IMAGES = 60_000
MEASURED = ("cluster", "prune")
RECIPES = ("fine-tuned", "fine-tuned, as risky")  # the fine-tuned chain's readings run as recipes
UNIFORM = ((0.7, 16), (0.8, 16), (0.7, 8), (0.8, 8), (0.9, 16))  # (sparsity, clusters) of every hand-picked layer


def main(argv):
    del argv
    name = _MODEL.value
    scans = json.loads((render.RESULTS / "shrink" / f"{name}.auto.json").read_text())["search"]["scans"]
    stored = _stored_bytes(name, scans)
    result = render.stored_result("scan_prices", {"benchmark": "scan_prices", "model": name})
    for part in MEASURED:
        if part in _PARTS.value:
            with tempfile.TemporaryDirectory() as folder:
                result[part] = _part(part, scans, Path(folder))
            render.write_result("scan_prices", result)
    if set(MEASURED) <= result.keys():
        result["chains"] = _chains(result, scans, stored)
        render.write_result("scan_prices", result)
    if "recipes" in _PARTS.value:
        with tempfile.TemporaryDirectory() as folder:
            readings = result["chains"]["readings"]
            result["recipes"] = [_recipe(reading[step], Path(folder)) for reading in readings for step in RECIPES]
        render.write_result("scan_prices", result)
    if "uniform" in _PARTS.value:
        with tempfile.TemporaryDirectory() as folder:
            result["uniform"] = [_recipe(reading, Path(folder)) for reading in _uniform(stored)]
        render.write_result("scan_prices", result)
    render.render_all()


def _part(part: str, scans: list, folder: Path) -> dict:
    """The part's fine-tuning, its controls, and a row per layer and notch."""
    settle = _probe_flags("cluster")
    if part == "cluster":
        notches = [(scan["name"], count, drop) for scan in scans for count, drop in scan["cluster_drop"].items()]
        control = [["prune", "--target_sparsity", "0", *settle]]

        def steps(layer, count):
            return [["cluster", "--layers", f"^{layer}$", "--clusters", count, *settle]]

    else:
        notches = [(scan["name"], sparsity, scan["prune_drop"][sparsity]) for scan in scans for sparsity in SPARSITIES]
        first = _probe_flags("prune")
        control = [["prune", "--target_sparsity", "0", *first], ["prune", "--target_sparsity", "0", *settle]]

        def steps(layer, sparsity):
            touch = ["prune", "--layers", f"^{layer}$", "--target_sparsity", sparsity]
            return [[*touch, *first], [*touch, "--schedule", "constant", *settle]]

    controls = [_accuracy([[*step, "--seed", seed] for step in control], folder) for seed in CONTROL_SEEDS]
    rows = [
        {
            "layer": layer,
            "setting": _setting(part, notch),
            "one_shot_drop": one_shot,
            "accuracy": _accuracy(steps(layer, notch), folder),
        }
        for layer, notch, one_shot in notches
    ]
    fine_tuning = [" ".join(map(str, step)) for step in steps("LAYER", "S" if part == "prune" else "K")]
    return {"fine_tuning": fine_tuning, "controls": controls, "rows": rows}


def _chains(result: dict, scans: list, stored: dict) -> dict:
    """The allocation chain priced by the scan's one-shot drops and by the fine-tuned ones, both on the
    notches measured here, read where it first reaches each hand-picked setting's estimated size; a
    setting's forecast adds its layers' fine-tuned drops (the chain's own approximation), and the
    hand-picked one's is set beside its recipe's drop below the control row (results/shrink.json)."""
    fine = {part: _fine_tuned_drops(result[part]) for part in MEASURED}
    drops = {
        "one-shot": lambda scan, part, notch: scan[f"{part}_drop"][notch],
        "fine-tuned": lambda scan, part, notch: fine[part][scan["name"], _setting(part, notch)],
    }
    chains = {
        pricing: allocation_chain(
            [
                LayerScan(
                    scan["name"],
                    scan["weights"],
                    {float(s): drop(scan, "prune", s) for s in SPARSITIES},
                    {int(k): drop(scan, "cluster", k) for k in scan["cluster_drop"]},
                    stored[scan["name"]],
                )
                for scan in scans
            ]
        )
        for pricing, drop in drops.items()
    }
    shrink_rows = render.stored_result("shrink", {"rows": []})["rows"]
    recipes = {row["setting"]: row for row in shrink_rows if row["model"] == result["model"]}
    readings = []
    for label, (sparsities, counts) in HAND_PICKED[result["model"]].items():
        hand = _allocation(stored, sparsities, counts)
        recipe = recipes[label]  # shrink's row, through `tfcompress run`
        measured = {
            "measured_drop": round((recipes[CONTROL]["accuracy"] - recipe["accuracy"]) * 100, 2),
            "gzip_bytes": recipe["gzip_bytes"],
            "accuracy": recipe["accuracy"],
        }
        hand_reading = {"setting": label, **_reading(hand, fine), **measured}
        readings.append(
            {
                "hand_picked": hand_reading,
                **{pricing: _reached(chain, hand.estimated_bytes, fine) for pricing, chain in chains.items()},
                "fine-tuned, as risky": _as_risky(chains["fine-tuned"], hand_reading["forecast_drop"], fine),
            }
        )
    return {"lengths": {pricing: len(chain) for pricing, chain in chains.items()}, "readings": readings}


def _reached(chain: list, size: float, fine: dict) -> dict:
    """The first step of the chain whose estimate is `size` or less."""
    step = next(number for number, allocation in enumerate(chain) if allocation.estimated_bytes <= size)
    return {"step": step, **_reading(chain[step], fine)}


def _as_risky(chain: list, forecast: float, fine: dict) -> dict:
    """The chain's last step whose forecast is `forecast` or less."""
    forecasts = [_reading(allocation, fine)["forecast_drop"] for allocation in chain]
    step = max(number for number, each in enumerate(forecasts) if each <= forecast)
    return {"step": step, **_reading(chain[step], fine)}


def _uniform(stored: dict) -> list:
    """The layers of the (first) hand-picked setting, all at one of UNIFORM's settings, the others untouched:
    a family that moves the layers together, where the chain moves one at a time."""
    (sparsities, _), *_ = HAND_PICKED[_MODEL.value].values()
    settings = []
    for sparsity, clusters in UNIFORM:
        allocation = _allocation(stored, dict.fromkeys(sparsities, sparsity), dict.fromkeys(sparsities, clusters))
        settings.append({"step": f"{sparsity:.0%} / {clusters}", **_allocation_fields(allocation)})
    return settings


def _recipe(reading: dict, folder: Path) -> dict:
    """An allocation fine-tuned as `auto --train` probes it, as a recipe through `tfcompress run`."""
    allocation = Allocation(reading["sparsity"], reading["clusters"], reading["estimated_bytes"], scan_drop=0.0)
    steps = _probe_steps(allocation)
    data = {
        "--train": f"{_DATA_DIR.value}@train",
        "--eval": f"{_DATA_DIR.value}@test",
        "--calibration": str(ROOT / "sample_models/data/fashion_mnist_calib.npz"),
    }
    report, seconds = run_recipe(_MODEL.value, f"step {reading['step']}", steps, data, folder)
    return {
        "step": reading["step"],
        "allocation": allocation.describe(),
        "gzip_bytes": report["gzip_bytes"],
        "accuracy": report["accuracy"],
        "seconds": round(seconds, 1),
    }


def _probe_steps(allocation: Allocation) -> list:
    """The recipe steps auto's probe of `allocation` runs, with this model's epochs (jobs/auto_train.py)."""
    prune_epochs, cluster_epochs = EPOCHS[_MODEL.value]
    shrink = ShrinkOptions(prune_epochs=prune_epochs, cluster_epochs=cluster_epochs)
    return training_steps(allocation, shrink, math.ceil(TRAINING_IMAGES / shrink.batch_size))


def _probe_flags(kind: str) -> list:
    """How auto's probes fine-tune a prune or a cluster step, as `tfcompress` flags."""
    (options,) = [step[kind] for step in _probe_steps(Allocation({"L": 0.5}, {"L": 16}, 0.0, 0.0)) if kind in step]
    timing = ("epochs", "end_step", "batch_size", "learning_rate")
    return [part for key in timing if key in options for part in (f"--{key}", options[key])]


def _setting(part: str, notch: str):
    """A scan's notch key as a setting: a sparsity, or a cluster count."""
    return float(notch) if part == "prune" else int(notch)


def _fine_tuned_drops(measured: dict) -> dict:
    """(layer, setting) → points below the controls' median."""
    control = statistics.median(measured["controls"])
    return {(row["layer"], row["setting"]): round((control - row["accuracy"]) * 100, 2) for row in measured["rows"]}


def _stored_bytes(name: str, scans: list) -> dict:
    """Each scanned layer's deflated int8 kernel at every notch of the scan, as auto's chain prices them."""
    import tf_keras

    model = tf_keras.models.load_model(ROOT / f"sample_models/{name}.h5", compile=False)
    return {scan["name"]: kernel_bytes(model.get_layer(scan["name"]), SCANNED_SPARSITIES, CLUSTERS) for scan in scans}


def _allocation(stored: dict, sparsities: dict, counts: dict) -> Allocation:
    sparsity = {name: sparsities.get(name, 0.0) for name in stored}
    clusters = {name: counts.get(name) for name in stored}
    size = sum(stored[name][sparsity[name], clusters[name]] for name in stored)
    return Allocation(sparsity, clusters, size, scan_drop=0.0)


def _reading(allocation: Allocation, fine: dict) -> dict:
    forecast = sum(fine["prune"][name, s] for name, s in allocation.sparsity.items() if s > 0)
    forecast += sum(fine["cluster"][name, k] for name, k in allocation.clusters.items() if k is not None)
    return {**_allocation_fields(allocation), "forecast_drop": round(forecast, 2)}


def _allocation_fields(allocation: Allocation) -> dict:
    return {
        "allocation": allocation.describe(),
        "sparsity": allocation.sparsity,
        "clusters": allocation.clusters,
        "estimated_bytes": round(allocation.estimated_bytes),
    }


def _accuracy(steps: list, folder: Path) -> float:
    """The test-set accuracy after `tfcompress` fine-tuning steps, the first on the sample model."""
    data = _DATA_DIR.value
    model = ROOT / f"sample_models/{_MODEL.value}.h5"
    for number, (step, *options) in enumerate(steps):
        output = folder / f"step{number}.h5"
        command = ["tfcompress", step, str(model), *map(str, options), "--train", f"{data}@train"]
        command += ["--val", f"{data}@test", "-o", str(output), "--report", str(folder / "report.json")]
        subprocess.run(command, check=True)
        model = output
    return json.loads((folder / "report.json").read_text())["accuracy_check"]["after"]


if __name__ == "__main__":
    app.run(main)
