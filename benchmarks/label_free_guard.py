"""How well the guard of a training step on images without labels tells a harmless step from a harmful one.

A classifier fine-tuned on unlabelled images cannot be measured by accuracy, so the guard judges its
class scores by the accuracy they can be expected to have lost, the scores before the step standing
in for the labels. Here the bundled Fashion-MNIST classifiers (softmax), and two trained here
(seeded, 3 epochs on the 60,000 training images): a binary one ending in one sigmoid unit ("is it a
top": T-shirt, pullover, coat or shirt) and a 10-class one that outputs logits (pruned with
`--task logits`), are pruned and clustered through the CLI, on the first N training images without
their labels, with settings from gentle to ruinous; the guard measures on 2,000 held-out test
images without labels (`--val`), and the step's real accuracy drop (top-1; the sigmoid's at 0.5) is
measured here on all 10,000 labelled test images. Beside the guard's estimate: the share of top-1
classes (sides of 0.5) that changed, a cruder estimate, and the RMS change of the outputs over
their RMS (what the guard judged these outputs by before, against `--warn_relative_error` 0.1). A
verdict is right when it warns exactly where the real drop is over 3 pt, the labelled guard's limit.

    python benchmarks/label_free_guard.py   # 22 steps, about 20 min on 2 cores
"""

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from absl import app

from tfcompress import _keras
from tfcompress.data import load_data
from tfcompress.plots import require_matplotlib
from tfcompress.report import library_versions, machine_info
from tfcompress.runtime.metrics import fidelity, task_accuracy

import render
from fashion import DATA_DIR, as_stored, is_top, trained_cnn

ROOT = Path(__file__).resolve().parents[1]

HELD_OUT = 2000  # test images the guard measures on, without their labels
ACCURACY_LIMIT = 3.0  # --warn_accuracy_drop's default
RELATIVE_LIMIT = 0.1  # --warn_relative_error's default
TRAINED_EPOCHS = 3
TASKS = {"top_or_not": "sigmoid", "cnn_logits": "logits"}  # the models trained here; the rest are softmax
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
    ("top_or_not", "prune", ("--target_sparsity=0.5", "--epochs=2"), 1_000),
    ("top_or_not", "prune", ("--target_sparsity=0.8", "--epochs=2"), 5_000),
    ("top_or_not", "prune", ("--target_sparsity=0.95", "--epochs=2"), 5_000),
    ("top_or_not", "prune", ("--target_sparsity=0.9", "--epochs=1", "--learning_rate=0.05"), 1_000),
    ("top_or_not", "cluster", ("--clusters=2", "--epochs=1"), 1_000),
    ("cnn_logits", "prune", ("--target_sparsity=0.5", "--epochs=2"), 1_000),
    ("cnn_logits", "prune", ("--target_sparsity=0.8", "--epochs=2"), 5_000),
    ("cnn_logits", "prune", ("--target_sparsity=0.95", "--epochs=2"), 5_000),
    ("cnn_logits", "prune", ("--target_sparsity=0.9", "--epochs=1", "--learning_rate=0.05"), 1_000),
    ("cnn_logits", "cluster", ("--clusters=2", "--epochs=1"), 1_000),
)


def main(argv):
    del argv
    train, test = load_data(f"{DATA_DIR.value}@train"), load_data(f"{DATA_DIR.value}@test")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        held_out = folder / "held_out.npz"
        np.savez(held_out, x=as_stored(test.x[:HELD_OUT]))
        sources = {name: ROOT / "sample_models" / f"{name}.h5" for name, *_ in STEPS if name not in TASKS}
        for name, task in TASKS.items():
            sources[name] = trained_cnn(task, train, folder / f"{name}.h5", TRAINED_EPOCHS)
        for index, (model, command, settings, images) in enumerate(STEPS):
            subset = folder / f"images-{images}.npz"
            if not subset.exists():
                np.savez(subset, x=as_stored(train.x[:images]))
            stem = folder / f"step-{index}"
            rows.append(_step_row(stem, model, sources[model], command, settings, subset, held_out, test))
            rows[-1]["training_images"] = images
            print(rows[-1], flush=True)
        labelled = _labelled_binary_row(folder, sources["top_or_not"], train, test)
        print(labelled, flush=True)
    _plot(rows, render.RESULTS / "label_free_guard.png")
    render.write_result(
        "label_free_guard",
        {
            "benchmark": "label_free_guard",
            "held_out": HELD_OUT,
            "test_samples": len(test),
            "accuracy_limit": ACCURACY_LIMIT,
            "relative_limit": RELATIVE_LIMIT,
            "trained_here": {name: {"task": task, "epochs": TRAINED_EPOCHS} for name, task in TASKS.items()},
            "rows": rows,
            "labelled_binary": labelled,
            "machine": machine_info(threads=1),
            "versions": library_versions(),
        },
    )
    render.render_all()


def _labelled_binary_row(folder: Path, source: Path, train, test) -> dict:
    """The binary model pruned on its 0/1 labels through the CLI (tfcompress refused them before
    this benchmark was written), its guard's labelled check, and the test accuracy at 0.5."""
    tops = {name: is_top(data.y) for name, data in (("train", train), ("test", test))}
    np.savez(folder / "labelled.npz", x=as_stored(train.x), y=tops["train"])
    np.savez(folder / "labelled_val.npz", x=as_stored(test.x[:HELD_OUT]), y=tops["test"][:HELD_OUT])
    output, report_path = folder / "labelled.h5", folder / "labelled.json"
    settings = ("--target_sparsity=0.8", "--epochs=2")
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "tfcompress", "prune", str(source), "--train", str(folder / "labelled.npz")]
        + ["--val", str(folder / "labelled_val.npz"), *settings, "-o", str(output), "--report", str(report_path)]
        + ["--quiet"],
        check=True,
    )
    seconds = time.perf_counter() - started
    keras = _keras.tf_keras()
    accuracy = [
        task_accuracy(keras.models.load_model(path, compile=False).predict(test.x, verbose=0), tops["test"], "sigmoid")
        for path in (source, output)
    ]
    check = json.loads(report_path.read_text())["accuracy_check"]
    return {
        "step": f"prune {' '.join(settings)}",
        "training_images": len(train),
        "seconds": seconds,
        "accuracy_before": accuracy[0],
        "accuracy_after": accuracy[1],
        "guard": {key: check[key] for key in ("data", "before", "after", "drop", "warning")},
    }


def _step_row(stem: Path, model: str, source: Path, command: str, settings: tuple, images, held_out, test) -> dict:
    """One step run as a user runs it, its guard's verdict, and what the labels say of it."""
    output, report_path = stem.with_suffix(".h5"), stem.with_suffix(".json")
    task = TASKS.get(model, "softmax")
    told = ["--task=logits"] if task == "logits" else []  # logits read as a quantity unless the user says so
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "tfcompress", command, str(source), "--train", str(images), "--val", str(held_out)]
        + [*settings, *told, "-o", str(output), "--report", str(report_path), "--quiet"],
        check=True,
    )
    seconds = time.perf_counter() - started
    check = json.loads(report_path.read_text())["output_check"]
    keras = _keras.tf_keras()
    before, after = (
        keras.models.load_model(path, compile=False).predict(test.x, batch_size=256, verbose=0)
        for path in (source, output)
    )
    labels = is_top(test.y) if task == "sigmoid" else test.y
    accuracy = [task_accuracy(outputs, labels, task) for outputs in (before, after)]
    guarded = slice(0, HELD_OUT)
    return {
        "model": model,
        "task": task,
        "step": f"{command} {' '.join(settings + tuple(told))}",
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
    for task in ("softmax", "sigmoid", "logits"):
        of_task = [row for row in rows if row["task"] == task]
        drops = [row["real_drop"] for row in of_task]
        estimates.scatter(drops, [row["expected_drop"] for row in of_task], label=f"the guard: expected drop, {task}")
        rms.scatter(drops, [row["rms_moved"] for row in of_task], label=task)
    estimates.scatter(real, [row["changed"] for row in rows], marker="x", label="classes changed (%)")
    top = max(real + [row["changed"] for row in rows]) * 1.05
    estimates.plot([0, top], [0, top], color="grey", linewidth=0.8)
    estimates.axvline(ACCURACY_LIMIT, color="grey", linestyle=":")
    estimates.axhline(ACCURACY_LIMIT, color="grey", linestyle=":")
    estimates.set(xscale="symlog", yscale="symlog", xlim=(0, top), ylim=(0, top))
    estimates.set(xlabel="real accuracy drop on 10k labelled images (pt)")
    estimates.set(ylabel="estimated without labels (pt)", title="class scores, no labels")
    estimates.legend()
    rms.axvline(ACCURACY_LIMIT, color="grey", linestyle=":")
    rms.axhline(RELATIVE_LIMIT, color="grey", linestyle=":")
    rms.set(xscale="symlog", yscale="log", xlim=(0, top), xlabel="real accuracy drop (pt)")
    rms.set(ylabel="RMS change over RMS")
    rms.set(title="the outputs' RMS change (the old check)")
    rms.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    app.run(main)
