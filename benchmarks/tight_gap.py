"""Why `auto --train` misses a tight comparison: the chain's next step and its neighbours, with seeds.

`benchmarks/shrink.py`'s tight row gives `auto --train` the best hand-picked row's accuracy drop as
its budget. Where auto's model ends larger than the hand-picked one (lenet5), the chain step after
auto's pick is the one that failed, the last probe of the bisection. Here that step's recipe, as
auto's probe ran it, is fine-tuned again with other seeds, and so are settings next to it, built the
same way (`training_steps`, the probes' recipe) and run through `tfcompress run`:

- a finer notch: the layer that step moved, at the sparsity halfway between its two notches (would a
  finer sparsity ladder have found a step between the pick and the failure?);
- the hand-picked row's cluster counts wherever the step clusters harder;
- the hand-picked row's sparsities wherever the step prunes less.

Reads the tight row, its probes (`results/shrink/MODEL.budget-B.auto.json`) and the seeds of the
two recipes from `results/shrink.json`; writes results/tight_gap.json and its table in
benchmarks/README.md.

    python benchmarks/tight_gap.py   # lenet5: 4 settings x 4 seeds, 15 recipe runs, about 17 min on 2 cores
"""

import json
import math
import re
import tempfile
from pathlib import Path

from absl import app, flags

from tfcompress.jobs.auto_train import training_steps
from tfcompress.options import ShrinkOptions
from tfcompress.transforms.allocation import Allocation

import render
from shrink_recipes import EPOCHS, HAND_PICKED, SEEDS, TIGHT, run_recipe

_DATA_DIR = flags.DEFINE_string(
    "data_dir", "/usr/share/datasets/fashion-mnist", "Fashion-MNIST IDX folder (apt-get install dataset-fashion-mnist)."
)
_MODEL = flags.DEFINE_string("model", "lenet5", "Bundled sample model with a tight row in results/shrink.json.")

TRAINING_IMAGES = 60_000


def main(argv):
    del argv
    name = _MODEL.value
    shrink = render.stored_result("shrink", {"rows": []})
    tight = next(row for row in shrink["rows"] if row["model"] == name and row["how"] == TIGHT)
    hand_label, hand = _hand_picked(name, tight["budget"], shrink["rows"])
    step, last = map(int, re.match(r"pruned\+clustered (\d+)/(\d+):", tight["setting"]).groups())
    probes = json.loads((render.RESULTS / "shrink" / f"{name}.budget-{tight['budget']}.auto.json").read_text())
    failed = next(c for c in probes["candidates"] if c["name"].startswith(f"pruned+clustered {step + 1}/{last}:"))
    chosen = next(c for c in probes["candidates"] if c["name"] == tight["setting"])
    layers = [scan["name"] for scan in probes["search"]["scans"]]  # in the model's order, as auto's
    after, before = _allocation(failed["training"], layers), _allocation(chosen["training"], layers)
    if _steps(name, after) != failed["training"]:
        raise SystemExit(f"{failed['name']}: its training steps are not what training_steps makes of it")
    settings = {f"chain step {step + 1} (auto's probe over the budget)": after, **_neighbours(before, after, hand)}
    data = {
        "--train": f"{_DATA_DIR.value}@train",
        "--eval": f"{_DATA_DIR.value}@test",
        "--calibration": str(render.ROOT / "sample_models/data/fashion_mnist_calib.npz"),
    }
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for label, allocation in settings.items():
            measured = failed if allocation == after else None  # seed 0 of the failed step: auto's own probe
            runs = _seed_runs(name, allocation, measured, data, Path(folder), f"gap {len(rows)}")
            rows.append({"label": label, "setting": allocation.describe(), "runs": runs})
    seeds = next(s for s in shrink.get("seeds", []) if s["model"] == name)
    render.write_result(
        "tight_gap",
        {
            "benchmark": "tight_gap",
            "model": name,
            "budget": tight["budget"],
            "hand-picked": {"setting": hand_label, "runs": seeds["hand-picked"]["runs"]},
            "auto": {"setting": tight["setting"], "runs": seeds["auto"]["runs"]},
            "rows": rows,
            "commit": tight.get("commit"),
        },
    )
    render.render_all()


def _neighbours(before: Allocation, after: Allocation, hand: tuple) -> dict:
    """Settings next to the failed step `after` (`before`: auto's pick), labelled; `hand`: the hand-picked
    setting's (sparsities, cluster counts)."""
    sparsities, counts = hand
    neighbours = {
        "that step, a finer notch": _finer_notch(before, after),
        "that step, the hand-picked cluster counts where it clusters harder": _merged(
            after, clusters={layer: _gentler_clusters(k, counts.get(layer)) for layer, k in after.clusters.items()}
        ),
        "that step, the hand-picked sparsities where it prunes less": _merged(
            after, sparsity={layer: max(s, sparsities.get(layer, 0.0)) for layer, s in after.sparsity.items()}
        ),
    }
    return {label: allocation for label, allocation in neighbours.items() if allocation is not None}


def _seed_runs(name: str, allocation: Allocation, measured, data: dict, folder: Path, label: str) -> list:
    """The allocation's recipe fine-tuned with seeds 0 and SEEDS (seed 0 taken from `measured` if given)."""
    runs = [] if measured is None else [{"seed": 0, **{k: measured[k] for k in ("gzip_bytes", "accuracy_drop")}}]
    for seed in (0, *SEEDS)[len(runs) :]:
        seeded = [
            {kind: {**options, "seed": seed}} for step in _steps(name, allocation) for kind, options in step.items()
        ]
        report, _ = run_recipe(name, f"{label} seed {seed}", seeded, data, folder)
        runs.append({"seed": seed, "gzip_bytes": report["gzip_bytes"], "accuracy_drop": report["accuracy_drop"]})
    return runs


def _hand_picked(name: str, budget: float, rows: list) -> tuple:
    """The hand-picked setting the tight row took its budget from: (label, (sparsities, cluster counts))."""
    row = next(r for r in rows if r["model"] == name and r["how"] == "hand-picked" and r["accuracy_drop"] == budget)
    return row["setting"], HAND_PICKED[name][row["setting"]]


def _allocation(training: list, layers: list) -> Allocation:
    """A probe's allocation over the scanned `layers`, read back from its recipe steps."""
    steps = {kind: options for each in training for kind, options in each.items()}
    clusters = steps.get("cluster", {}).get("layer_clusters", {})
    sparsity = steps.get("prune", {}).get("layer_sparsity", {})
    return Allocation({n: sparsity.get(n, 0.0) for n in layers}, {n: clusters.get(n) for n in layers}, 0.0, 0.0)


def _finer_notch(before: Allocation, after: Allocation):
    """`after` with the layer it moved halfway back (to the hundredth) along the sparsity ladder; None
    when the step moved a cluster count."""
    moved = [n for n in after.sparsity if after.sparsity[n] != before.sparsity.get(n, 0.0)]
    if not moved:
        return None
    layer = moved[0]
    halfway = round((before.sparsity.get(layer, 0.0) + after.sparsity[layer]) / 2, 2)
    return _merged(after, sparsity={**after.sparsity, layer: halfway})


def _gentler_clusters(count, hand):
    """The larger of two cluster counts, None (not clustered) being the largest."""
    return None if count is None or hand is None else max(count, hand)


def _merged(allocation: Allocation, **changes) -> Allocation:
    return Allocation(
        **{"sparsity": allocation.sparsity, "clusters": allocation.clusters, **changes},
        estimated_bytes=0.0,
        scan_drop=0.0,
    )


def _steps(name: str, allocation: Allocation) -> list:
    prune_epochs, cluster_epochs = EPOCHS[name]
    shrink = ShrinkOptions(prune_epochs=prune_epochs, cluster_epochs=cluster_epochs)
    return training_steps(allocation, shrink, math.ceil(TRAINING_IMAGES / shrink.batch_size))


if __name__ == "__main__":
    app.run(main)
