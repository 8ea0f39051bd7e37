"""How well the guard of a training step on images without labels tells a harmless step from a harmful one.

A classifier fine-tuned on unlabelled images cannot be measured by accuracy, so the guard judges its
softmax output by the accuracy it can be expected to have lost, the probabilities before the step
standing in for the labels. Here the bundled Fashion-MNIST classifiers are pruned and clustered
through the CLI, on the first N training images without their labels, with settings from gentle to
ruinous; the guard measures on 2,000 held-out test images without labels (`--val`), and the step's
real accuracy drop is measured here on all 10,000 labelled test images. Beside the guard's estimate:
the share of top-1 classes that changed (a cruder estimate) and the RMS change of the probabilities
over their RMS (what the guard measured before, against `--warn_relative_error` 0.1). A verdict is
right when it warns exactly where the real drop is over 3 pt, the labelled guard's limit.

    python benchmarks/label_free_guard.py   # 12 steps, about 10 min on 2 cores
"""

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from absl import app, flags

from tfcompress import _keras
from tfcompress.data import load_data
from tfcompress.plots import require_matplotlib
from tfcompress.report import library_versions, machine_info
from tfcompress.runtime.metrics import fidelity

import render

ROOT = Path(__file__).resolve().parents[1]
_DATA_DIR = flags.DEFINE_string(
    "data_dir", "/usr/share/datasets/fashion-mnist", "Fashion-MNIST IDX folder (apt-get install dataset-fashion-mnist)."
)

HELD_OUT = 2000  # test images the guard measures on, without their labels
ACCURACY_LIMIT = 3.0  # --warn_accuracy_drop's default
RELATIVE_LIMIT = 0.1  # --warn_relative_error's default
STEPS = (  # (model, command, its settings, training images)
    ("lenet5", "prune", ("--target_sparsity=0.5", "--epochs=2"), 1_000),
    ("lenet5", "prune", ("--target_sparsity=0.8", "--epochs=2"), 60_000),
    ("lenet5", "prune", ("--target_sparsity=0.8", "--epochs=2"), 5_000),
    ("lenet5", "prune", ("--target_sparsity=0.9", "--epochs=1", "--learning_rate=0.05"), 1_000),
    ("lenet5", "cluster", ("--clusters=8", "--epochs=1"), 5_000),
    ("lenet5", "cluster", ("--clusters=2", "--epochs=1"), 1_000),
    ("lenet_300_100", "prune", ("--target_sparsity=0.9", "--epochs=2"), 5_000),
    ("lenet_300_100", "prune", ("--target_sparsity=0.97", "--epochs=2"), 5_000),
    ("lenet_300_100", "cluster", ("--clusters=4", "--epochs=1"), 5_000),
    ("dscnn", "prune", ("--target_sparsity=0.7", "--epochs=2"), 5_000),
    ("dscnn", "prune", ("--target_sparsity=0.9", "--epochs=1", "--learning_rate=0.01"), 5_000),
    ("dscnn", "cluster", ("--clusters=8", "--epochs=1"), 5_000),
)


def main(argv):
    del argv
    train, test = load_data(f"{_DATA_DIR.value}@train"), load_data(f"{_DATA_DIR.value}@test")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        held_out = folder / "held_out.npz"
        np.savez(held_out, x=_as_stored(test.x[:HELD_OUT]))
        for index, (model, command, settings, images) in enumerate(STEPS):
            subset = folder / f"images-{images}.npz"
            if not subset.exists():
                np.savez(subset, x=_as_stored(train.x[:images]))
            rows.append(_step_row(folder / f"step-{index}", model, command, settings, subset, held_out, test))
            rows[-1]["training_images"] = images
            print(rows[-1], flush=True)
    _plot(rows, render.RESULTS / "label_free_guard.png")
    render.write_result(
        "label_free_guard",
        {
            "benchmark": "label_free_guard",
            "held_out": HELD_OUT,
            "test_samples": len(test),
            "accuracy_limit": ACCURACY_LIMIT,
            "relative_limit": RELATIVE_LIMIT,
            "rows": rows,
            "machine": machine_info(threads=1),
            "versions": library_versions(),
        },
    )
    render.render_all()


def _as_stored(x) -> np.ndarray:
    """Images as the IDX files store them (uint8), so the loader scales them as it scales those."""
    return (x * 255).round().astype(np.uint8)


def _step_row(stem: Path, model: str, command: str, settings: tuple, images: Path, held_out: Path, test) -> dict:
    """One step run as a user runs it, its guard's verdict, and what the labels say of it."""
    source = ROOT / "sample_models" / f"{model}.h5"
    output, report_path = stem.with_suffix(".h5"), stem.with_suffix(".json")
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "tfcompress", command, str(source), "--train", str(images), "--val", str(held_out)]
        + [*settings, "-o", str(output), "--report", str(report_path), "--quiet"],
        check=True,
    )
    seconds = time.perf_counter() - started
    check = json.loads(report_path.read_text())["output_check"]
    keras = _keras.tf_keras()
    before, after = (
        keras.models.load_model(path, compile=False).predict(test.x, batch_size=256, verbose=0)
        for path in (source, output)
    )
    accuracy = [float(np.mean(np.argmax(outputs, -1) == test.y)) for outputs in (before, after)]
    guarded = slice(0, HELD_OUT)
    return {
        "model": model,
        "step": f"{command} {' '.join(settings)}",
        "seconds": seconds,
        "accuracy_before": accuracy[0],
        "accuracy_after": accuracy[1],
        "real_drop": (accuracy[0] - accuracy[1]) * 100,
        "expected_drop": check["accuracy_drop"],
        "changed": (1 - check["top1_kept"]) * 100,
        "rms_moved": fidelity(after[guarded], before[guarded], task="regression").relative_error,
        "warning": check["warning"],
    }


def _plot(rows: list, path: Path) -> None:
    plt = require_matplotlib()
    figure, (estimates, rms) = plt.subplots(1, 2, figsize=(11, 4.5))
    real = [row["real_drop"] for row in rows]
    estimates.scatter(real, [row["expected_drop"] for row in rows], label="the guard: expected drop")
    estimates.scatter(real, [row["changed"] for row in rows], marker="x", label="top-1 classes changed (%)")
    top = max(real + [row["changed"] for row in rows]) * 1.05
    estimates.plot([0, top], [0, top], color="grey", linewidth=0.8)
    estimates.axvline(ACCURACY_LIMIT, color="grey", linestyle=":")
    estimates.axhline(ACCURACY_LIMIT, color="grey", linestyle=":")
    estimates.set(xscale="symlog", yscale="symlog", xlim=(0, top), ylim=(0, top))
    estimates.set(xlabel="real accuracy drop on 10k labelled images (pt)")
    estimates.set(ylabel="estimated without labels (pt)", title="softmax outputs, no labels")
    estimates.legend()
    rms.scatter(real, [row["rms_moved"] for row in rows])
    rms.axvline(ACCURACY_LIMIT, color="grey", linestyle=":")
    rms.axhline(RELATIVE_LIMIT, color="grey", linestyle=":")
    rms.set(xscale="symlog", yscale="log", xlim=(0, top), xlabel="real accuracy drop (pt)")
    rms.set(ylabel="RMS change over RMS")
    rms.set(title="the probabilities' RMS change (the old check)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    app.run(main)
