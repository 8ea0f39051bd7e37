"""A model with two inputs and two outputs compressed through the CLI, on real data, without labels.

Fashion-MNIST split into two views, the top and the bottom half of each image, each read by its own
convolution tower; a shared Dense layer feeds two heads: the class (softmax) and the whole image
again (a sigmoid reconstruction). Trained here (seeded) on the 60,000 training images, then, as a
user runs it: `tfcompress prune` to 80% and `tfcompress cluster` to 16 values per kernel on the two
views alone (a model with two heads trains without labels: each head is fine-tuned towards its own
outputs), `tfcompress convert --precision int8 --per_tensor_dense`, each told
`--output_task image=reconstruction`. Each `.tflite` is run here on
the 10,000 test images: class accuracy, and the reconstruction's mean squared error against the
images. Beside it: the float32 and post-training int8 files of the trained model, and the same
sparsity by magnitude without fine-tuning. The guard of each step (on 2,000 held-out images without
labels) is set against what the labels say.

    python benchmarks/several_io.py   # about 15 min on 2 cores
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
from tfcompress.report import library_versions, machine_info
from tfcompress.runtime.interpreter import predict
from tfcompress.testing.pruned import one_shot_pruned

import render

_DATA_DIR = flags.DEFINE_string(
    "data_dir", "/usr/share/datasets/fashion-mnist", "Fashion-MNIST IDX folder (apt-get install dataset-fashion-mnist)."
)

EPOCHS = 3  # of the model trained here
SPARSITY = 0.8
CLUSTERS = 16
HELD_OUT = 2000  # test images the guard measures on, without their labels
CALIBRATION = 500
PRUNE = ("--target_sparsity=0.8", "--epochs=2")
CLUSTER = ("--clusters=16", "--preserve_sparsity", "--epochs=1", "--learning_rate=1e-4")
# The image head's sigmoid makes pixels: a reconstruction, judged by RMS (from the graph alone it reads
# as a yes/no score per pixel)
READING = ("--output_task=image=reconstruction",)


def main(argv):
    del argv
    train, test = load_data(f"{_DATA_DIR.value}@train"), load_data(f"{_DATA_DIR.value}@test")
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        files = {
            "train": _views_file(folder / "train.npz", train.x),
            "held_out": _views_file(folder / "held_out.npz", test.x[:HELD_OUT]),
            "calibration": _views_file(folder / "calibration.npz", train.x[:CALIBRATION]),
        }
        model = _trained(train)
        original = folder / "two_views.h5"
        model.save(original, include_optimizer=False)
        one_shot = folder / "one_shot.h5"
        one_shot_pruned(model, SPARSITY).save(one_shot, include_optimizer=False)

        steps, pruned, clustered = [], folder / "pruned.h5", folder / "clustered.h5"
        for command, source, output, settings in (
            ("prune", original, pruned, PRUNE),
            ("cluster", pruned, clustered, CLUSTER),
        ):
            report, seconds = _tfcompress(command, source, output, settings, files)
            steps.append({"command": f"{command} {' '.join(settings + READING)}", "seconds": seconds, **_guard(report)})
            steps[-1].update(_real_drop(source, output, test))
            print(steps[-1], flush=True)

        rows = []
        for how, source, precision in (
            ("float32", original, "float32"),
            ("int8, post-training only", original, "int8"),
            (f"pruned {SPARSITY:.0%} by magnitude, not fine-tuned, int8", one_shot, "int8"),
            (f"pruned {SPARSITY:.0%}, clustered {CLUSTERS}, no labels, int8", clustered, "int8"),
        ):
            tflite = folder / f"{len(rows)}.tflite"
            settings = (
                (f"--precision={precision}", "--per_tensor_dense") if precision == "int8" else ("--precision=float32",)
            )
            report, seconds = _tfcompress("convert", source, tflite, settings, files)
            rows.append({"how": how, "seconds": seconds, "gzip_bytes": report["gzip_bytes"]})
            rows[-1].update(_measured(tflite.read_bytes(), test))
            print(rows[-1], flush=True)
    render.write_result(
        "several_io",
        {
            "benchmark": "several_io",
            "model": "two views (top and bottom half, 14x28 each), two heads (class, image)",
            "epochs": EPOCHS,
            "training_samples": len(train),
            "test_samples": len(test),
            "held_out": HELD_OUT,
            "steps": steps,
            "rows": rows,
            "machine": machine_info(threads=1),
            "versions": library_versions(),
        },
    )
    render.render_all()


def _views(images) -> tuple:
    """(top half, bottom half) of 28x28 images."""
    return images[:, :14], images[:, 14:]


def _views_file(path: Path, images) -> Path:
    top, bottom = _views(images)
    np.savez(path, top=top, bottom=bottom)
    return path


def _trained(train):
    keras = _keras.tf_keras()
    keras.utils.set_random_seed(0)
    layers = keras.layers

    def tower(view):
        x = layers.MaxPooling2D()(layers.Conv2D(16, 3, activation="relu")(view))
        return layers.Flatten()(layers.Conv2D(32, 3, activation="relu")(x))

    top, bottom = keras.Input((14, 28, 1), name="top"), keras.Input((14, 28, 1), name="bottom")
    shared = layers.Dense(128, activation="relu")(layers.Concatenate()([tower(top), tower(bottom)]))
    label = layers.Dense(10, activation="softmax", name="label")(shared)
    image = layers.Reshape((28, 28, 1), name="image")(layers.Dense(784, activation="sigmoid")(shared))
    model = keras.Model([top, bottom], [label, image], name="two_views")
    model.compile(keras.optimizers.Adam(1e-3), ["sparse_categorical_crossentropy", "mse"], loss_weights=[1.0, 10.0])
    model.fit(list(_views(train.x)), [train.y, train.x], epochs=EPOCHS, batch_size=128, verbose=2)
    return model


def _tfcompress(command: str, source: Path, output: Path, settings: tuple, files: dict) -> tuple:
    """One command as a user runs it: (its report, seconds)."""
    data = (
        ("--calibration", files["calibration"])
        if command == "convert"
        else ("--train", files["train"], "--val", files["held_out"])
    )
    report = output.with_suffix(".json")
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "tfcompress", command, str(source), *map(str, data), *settings, *READING]
        + ["-o", str(output), "--report", str(report), "--quiet"],
        check=True,
    )
    return json.loads(report.read_text()), time.perf_counter() - started


def _guard(report: dict) -> dict:
    check = report["output_check"]
    return {
        "expected_drop": check["accuracy_drop"],
        "top1_kept": check["top1_kept"],
        "image_moved": check["relative_error"],
        "warning": check["warning"],
    }


def _real_drop(before: Path, after: Path, test) -> dict:
    """The class accuracy a step lost on the 10k labelled test images, from its Keras models."""
    keras = _keras.tf_keras()
    accuracy = []
    for path in (before, after):
        label, _ = keras.models.load_model(path, compile=False).predict(list(_views(test.x)), batch_size=256, verbose=0)
        accuracy.append(float(np.mean(np.argmax(label, -1) == test.y)))
    return {"real_drop": (accuracy[0] - accuracy[1]) * 100}


def _measured(tflite: bytes, test) -> dict:
    label, image = predict(tflite, _views(test.x))
    return {
        "size_bytes": len(tflite),
        "accuracy": float(np.mean(np.argmax(label, -1) == test.y)),
        "reconstruction_mse": float(np.mean((image - test.x) ** 2)),
    }


if __name__ == "__main__":
    app.run(main)
