"""Training steps on data without labels: fine-tuned towards the model's own outputs, through the CLI.

Two models on full Fashion-MNIST (60k training images, the 10k test images measured):

- lenet5 (the bundled classifier), pruned to 80% by `tfcompress prune` for 2 epochs, once with the
  training labels and once with the images alone (an .npz without y), per seed; beside it the same
  sparsity by magnitude with no fine-tuning. Measured: test accuracy, and agreement with the
  original model's top-1 predictions.
- a dense autoencoder trained here (784-128-32-128-784, seeded), pruned the same way with the images
  alone, the only way it can be: measured, how far its outputs moved from the original's (RMS change
  over RMS, as the report's `output_check` says on its own data) and its reconstruction error
  against the test images themselves, the task it is for.

Then `tfcompress auto --max_relative_error 0.05 --task reconstruction` (its sigmoid output would read as
yes/no scores) on the autoencoder, post-training candidates only
and with `--train` (the images alone; shorter probes than the defaults), the chosen .tflite's error
measured again here against the Keras model's outputs on the test images.

And `tfcompress distill --width_multiplier 0.5 --task reconstruction` of the autoencoder on the images
alone (a teacher that is not a classifier: its outputs are matched), beside the same half-width
architecture trained on the images themselves for as many epochs as the teacher was, per seed: its
reconstruction error on the test images, and how far its outputs are from the teacher's.

    python benchmarks/unlabelled.py   # about 30 min on 2 cores (--parts prune, auto or distill: some of them)
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
from tfcompress.runtime.metrics import fidelity
from tfcompress.testing.pruned import one_shot_pruned

import render
from fashion import DATA_DIR, as_stored

ROOT = Path(__file__).resolve().parents[1]
_SEEDS = flags.DEFINE_list("seeds", ["0", "1"], "Fine-tuning seeds (--seed) of each classifier run.")
_PARTS = flags.DEFINE_list(
    "parts",
    ["prune", "auto", "distill"],
    "prune: lenet5 and the autoencoder pruned with and without labels; auto: auto --max_relative_error on the "
    "autoencoder, with and without --train; distill: a half-width autoencoder distilled from it, against the same "
    "trained on the images. A run of some parts keeps the others' stored rows.",
)

SPARSITY = 0.8
EPOCHS = 2
AUTOENCODER_EPOCHS = 5
AUTO_BUDGET = 0.05
AUTO_TRAINING = ("--prune_epochs=6", "--cluster_epochs=2", "--time_budget=30")  # the defaults: 30 and 6 epochs
CALIBRATION = ROOT / "sample_models/data/fashion_mnist_calib.npz"


def main(argv):
    del argv
    train, test = load_data(f"{DATA_DIR.value}@train"), load_data(f"{DATA_DIR.value}@test")
    result = render.stored_result("unlabelled", {})
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        images, test_images = folder / "images.npz", folder / "test_images.npz"
        np.savez(images, x=as_stored(train.x))
        np.savez(test_images, x=as_stored(test.x))
        autoencoder = folder / "autoencoder.h5"
        _trained_autoencoder(train.x).save(autoencoder, include_optimizer=False)
        if "prune" in _PARTS.value:
            result["classifier"] = _classifier_rows(folder, images, test)
            result["autoencoder"] = _autoencoder_rows(folder, images, autoencoder, test)
        if "auto" in _PARTS.value:
            result["auto"] = _auto_rows(folder, images, test_images, autoencoder, test)
        if "distill" in _PARTS.value:
            result["distill"] = _distill_rows(folder, images, test_images, autoencoder, train.x, test)
    result.update(
        {
            "benchmark": "unlabelled",
            "sparsity": SPARSITY,
            "epochs": EPOCHS,
            "training_samples": len(train),
            "test_samples": len(test),
            "machine": machine_info(threads=1),
            "versions": library_versions(),
        }
    )
    render.write_result("unlabelled", result)
    render.render_all()


def _classifier_rows(folder: Path, images: Path, test) -> list:
    model = ROOT / "sample_models" / "lenet5.h5"
    keras = _keras.tf_keras()
    original = keras.models.load_model(model, compile=False)
    reference = original.predict(test.x, batch_size=256, verbose=0)
    rows = [{"how": "original", **_classified(reference, reference, test.y)}]
    rows.append({"how": "not fine-tuned", **_classified(_one_shot(original, test.x), reference, test.y)})
    labelled = f"{DATA_DIR.value}@train"
    for seed in _SEEDS.value:
        for how, tag, data in (("labels", "labelled", labelled), ("own outputs, no labels", "unlabelled", images)):
            pruned, _, seconds = _prune(folder, model, data, f"lenet5-{tag}-{seed}", seed)
            outputs = keras.models.load_model(pruned, compile=False).predict(test.x, batch_size=256, verbose=0)
            rows.append({"how": how, "seed": int(seed), "seconds": seconds, **_classified(outputs, reference, test.y)})
            print(rows[-1], flush=True)
    return rows


def _autoencoder_rows(folder: Path, images: Path, model: Path, test) -> dict:
    keras = _keras.tf_keras()
    original = keras.models.load_model(model, compile=False)
    reference = original.predict(test.x, batch_size=256, verbose=0)
    rows = [{"how": "original", **_reconstructed(reference, reference, test.x)}]
    rows.append({"how": "not fine-tuned", **_reconstructed(_one_shot(original, test.x), reference, test.x)})
    # its sigmoid output would read as yes/no scores, as convert reads it: it is a quantity
    pruned, report, seconds = _prune(folder, model, images, "autoencoder-pruned", "0", ("--task=reconstruction",))
    outputs = keras.models.load_model(pruned, compile=False).predict(test.x, batch_size=256, verbose=0)
    rows.append(
        {
            "how": "own outputs, no labels",
            "seconds": seconds,
            "output_check": report["output_check"],
            **_reconstructed(outputs, reference, test.x),
        }
    )
    print(rows[-1], flush=True)
    return {"layers": "784-128-32-128-784", "epochs": AUTOENCODER_EPOCHS, "rows": rows}


def _auto_rows(folder: Path, images: Path, test_images: Path, model: Path, test) -> dict:
    """`tfcompress auto --max_relative_error` on the autoencoder, post-training only and with `--train`
    (the images alone); the chosen .tflite measured again here against the Keras model's outputs."""
    reference = _keras.tf_keras().models.load_model(model, compile=False).predict(test.x, batch_size=256, verbose=0)
    runs = []
    for how, training in (("post-training only", []), ("with --train", ["--train", str(images), *AUTO_TRAINING])):
        tag = "train" if training else "post"
        output, report_path = folder / f"auto-{tag}.tflite", folder / f"auto-{tag}.json"
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "tfcompress", "auto", str(model), "--calibration", str(CALIBRATION)]
            + ["--eval", str(test_images), f"--max_relative_error={AUTO_BUDGET}", "-o", str(output)]
            + ["--report", str(report_path), "--task=reconstruction", "--quiet", *training],
        )
        seconds = time.perf_counter() - started
        if done.returncode not in (0, 1):  # 1: no candidate within the budget, reported
            raise SystemExit(f"auto ({how}) failed with exit code {done.returncode}")
        report = json.loads(report_path.read_text())
        chosen = next((c for c in report["candidates"] if c["name"] == report["chosen"]), None)
        run = {"how": how, "seconds": seconds, "candidates": len(report["candidates"]), "chosen": report["chosen"]}
        run["float32_gzip_bytes"] = report["float32"]["gzip_bytes"]
        if chosen is not None:
            outputs = predict(output.read_bytes(), test.x)
            run.update(gzip_bytes=chosen["gzip_bytes"], reported_error=chosen["relative_error"])
            run.update(_reconstructed(outputs, reference, test.x))
        runs.append(run)
        print(run, flush=True)
    return {"budget": AUTO_BUDGET, "training": " ".join(AUTO_TRAINING), "runs": runs}


def _distill_rows(folder: Path, images: Path, test_images: Path, model: Path, train_images, test) -> dict:
    """A width-0.5 student of the autoencoder by `tfcompress distill` (its outputs matched, on the images
    alone), against the same architecture trained on reconstructing the images, per seed."""
    from tfcompress.transforms.distill import scale_width

    keras = _keras.tf_keras()
    teacher = keras.models.load_model(model, compile=False)
    reference = teacher.predict(test.x, batch_size=256, verbose=0)
    rows = [{"how": "teacher", "params": int(teacher.count_params()), **_reconstructed(reference, reference, test.x)}]
    for seed in _SEEDS.value:
        output, report_path = folder / f"student-{seed}.h5", folder / f"student-{seed}.json"
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "tfcompress", "distill", "--teacher", str(model), "--width_multiplier=0.5"]
            + ["--train", str(images), "--val", str(test_images), f"--epochs={AUTOENCODER_EPOCHS}"]
            + ["--batch_size=128", f"--seed={seed}", "--task=reconstruction", "-o", str(output)]
            + ["--report", str(report_path), "--quiet"],
            check=True,
        )
        seconds = time.perf_counter() - started
        report = json.loads(report_path.read_text())
        student = keras.models.load_model(output, compile=False)
        outputs = student.predict(test.x, batch_size=256, verbose=0)
        rows.append(
            {"how": "distilled (teacher's outputs)", "seed": int(seed), "seconds": seconds,
             "matched": report["matched"], "params": int(student.count_params()),
             "reported_error": report["output_check"]["relative_error"], **_reconstructed(outputs, reference, test.x)}
        )  # fmt: skip
        print(rows[-1], flush=True)
        direct = scale_width(teacher, 0.5, int(seed))
        direct.compile(keras.optimizers.Adam(1e-3), "mse")
        started = time.perf_counter()
        direct.fit(train_images, train_images, epochs=AUTOENCODER_EPOCHS, batch_size=128, verbose=2)
        outputs = direct.predict(test.x, batch_size=256, verbose=0)
        rows.append(
            {"how": "trained on the images", "seed": int(seed), "seconds": time.perf_counter() - started,
             "params": int(direct.count_params()), **_reconstructed(outputs, reference, test.x)}
        )  # fmt: skip
        print(rows[-1], flush=True)
    return {"width_multiplier": 0.5, "epochs": AUTOENCODER_EPOCHS, "rows": rows}


def _prune(folder: Path, model: Path, data, name: str, seed: str, told=()) -> tuple:
    """`tfcompress prune` as a user runs it: (the pruned .h5, its report, seconds)."""
    output, report = folder / f"{name}.h5", folder / f"{name}.json"
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "tfcompress", "prune", str(model), "--train", str(data), "-o", str(output)]
        + [f"--target_sparsity={SPARSITY}", f"--epochs={EPOCHS}", f"--seed={seed}", f"--report={report}"]
        + ["--quiet", *told],
        check=True,
    )
    return output, json.loads(report.read_text()), time.perf_counter() - started


def _one_shot(original, inputs) -> np.ndarray:
    """The outputs of `original` with its Dense and Conv2D kernels pruned by magnitude, not fine-tuned."""
    return one_shot_pruned(original, SPARSITY).predict(inputs, batch_size=256, verbose=0)


def _classified(outputs, reference, labels) -> dict:
    predicted = np.argmax(outputs, -1)
    return {
        "accuracy": float(np.mean(predicted == labels)),
        "agreement": float(np.mean(predicted == np.argmax(reference, -1))),
    }


def _reconstructed(outputs, reference, images) -> dict:
    return {
        "relative_error": fidelity(outputs, reference, task="regression").relative_error,
        "reconstruction_mse": float(np.mean((outputs - images) ** 2)),
    }


def _trained_autoencoder(images):
    keras = _keras.tf_keras()
    keras.utils.set_random_seed(0)
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dense(32, activation="relu"),
            layers.Dense(128, activation="relu"),
            layers.Dense(784, activation="sigmoid"),
            layers.Reshape((28, 28, 1)),
        ],
        name="autoencoder",
    )
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    model.fit(images, images, epochs=AUTOENCODER_EPOCHS, batch_size=128, verbose=2)
    return model


if __name__ == "__main__":
    app.run(main)
