"""The settings `benchmarks/shrink.py` holds `auto --train` against, and how a setting runs as a recipe
through `tfcompress run`; `benchmarks/scan_prices.py` prices the settings and runs recipes too.

LeNet-300-100's hand-picked rows are benchmarks/compress.py's; lenet5's and dscnn's were written
before auto ran, the Deep Compression way (big Dense layers hardest, first and last layers lightest).
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BUDGET = 1.0
# Fine-tuning per model: (prune epochs, cluster epochs); batch 128, lr 1e-3 then 1e-4, as auto's defaults.
EPOCHS = {"lenet_300_100": (30, 6), "lenet5": (8, 2), "dscnn": (3, 1)}
UNIFORM = {
    "lenet_300_100": {"90% / 16": (0.90, 16), "95% / 8": (0.95, 8)},
    "lenet5": {"90% / 16": (0.90, 16), "95% / 8": (0.95, 8)},
    "dscnn": {"80% / 16": (0.80, 16)},
}
SEEDS = (1, 2, 3)  # fine-tuning seeds a recipe is run again with; the stored rows are seed 0
TIGHT = "auto --train, the hand-picked row's drop as budget"  # shrink's row held against a hand-picked one
CONTROL = "nothing pruned or clustered"  # the same fine-tuning: what training alone gains or loses
HAND_PICKED = {
    "lenet_300_100": {
        "97/92/70% / 8,8,16": (
            {"dense": 0.97, "dense_1": 0.92, "dense_2": 0.70},
            {"dense": 8, "dense_1": 8, "dense_2": 16},
        ),
        "96/90/50% / 8,8,16": (
            {"dense": 0.96, "dense_1": 0.90, "dense_2": 0.50},
            {"dense": 8, "dense_1": 8, "dense_2": 16},
        ),
    },
    "lenet5": {
        "conv 50%, dense 95/90/50% / 16,8,8,16": (
            {"conv2d_1": 0.5, "dense_3": 0.95, "dense_4": 0.9, "dense_5": 0.5},
            {"conv2d_1": 16, "dense_3": 8, "dense_4": 8, "dense_5": 16},
        ),
    },
    "dscnn": {
        "pointwise 70% / 16": (
            {"conv2d_3": 0.7, "conv2d_4": 0.7, "conv2d_5": 0.7, "conv2d_6": 0.7},
            {"conv2d_3": 16, "conv2d_4": 16, "conv2d_5": 16, "conv2d_6": 16},
        ),
    },
}


def run_recipe(name: str, label: str, training: list, data: dict, folder: Path) -> tuple:
    """Training steps → int8 with one scale per Dense, as a recipe through `tfcompress run`: its report
    and wall seconds."""
    recipe = {
        "name": f"{name} {label}",
        "steps": [*training, {"convert": {"precision": "int8", "per_tensor_dense": True}}],
        "budgets": {"max_accuracy_drop": BUDGET},
    }
    path = folder / f"{label.replace('/', '_').replace(' ', '')}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    output = folder / f"run-{path.stem}"
    flags_and_data = [part for flag, value in data.items() for part in (flag, value)]
    command = ["tfcompress", "run", str(path), "--model", str(ROOT / f"sample_models/{name}.h5"), *flags_and_data]
    seconds = run([*command, "-o", str(output)], check=False)  # exit 1: over the budget, a row too
    return json.loads((output / "report.json").read_text()), seconds


def run(command, check: bool = True) -> float:
    """Runs a CLI command with its output streaming to ours (Keras progress, probes); its wall seconds."""
    print("$", " ".join(command), flush=True)
    started = time.perf_counter()
    finished = subprocess.run(command, stdout=sys.stdout, stderr=sys.stderr)
    if check and finished.returncode != 0:
        raise SystemExit(f"{command[1]} failed with exit code {finished.returncode}")
    return time.perf_counter() - started
