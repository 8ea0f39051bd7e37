"""A binary classifier whose one unit is a logit, through the CLI, beside the same with a sigmoid.

Two small CNNs (fashion.trained_cnn), seeded alike, tell a top (T-shirt, pullover, coat, shirt) from
the rest of Fashion-MNIST: one ends in a sigmoid unit, one in a linear unit trained with binary
cross-entropy from logits, as many binary classifiers are. Each is trained here for 3 epochs on the
60,000 training images, then, as a user runs it: `tfcompress prune` to 80% on the 0/1 labels (held
out: the first 2,000 test images), and again on the images alone, then `tfcompress convert
--precision int8 --per_tensor_dense`; the logit model's export is told `--task logits`, as a
linear output reads as a quantity from the graph alone. Each `.tflite` is run here on the 10,000
test images: accuracy at 0.5 (the logit: at 0). Each prune's guard is set against what the step did
to the Keras model on the test images: the labelled one's accuracy on the held-out images, the
unlabelled one's expected drop. Until this benchmark was written the training steps refused
the logit model's 0/1 labels, and convert measured its one-unit "softmax" as 100% top-1.

Then each is distilled (`tfcompress distill --width_multiplier 0.5`) where distillation pays, with
few labels: 6,000 labelled training images and the other 54,000 unlabelled, against the same
student on the 6,000 labels alone (alpha 0) for as many steps; each student then as int8. Until
then distill refused both teachers' 0/1 labels.

    python benchmarks/one_logit.py   # about 10 min on 2 cores
"""

import json
import tempfile
from pathlib import Path

import numpy as np
from absl import app

from tfcompress import _keras
from tfcompress.data import load_data
from tfcompress.report import library_versions, machine_info
from tfcompress.runtime.interpreter import predict
from tfcompress.runtime.metrics import task_accuracy

import render
from fashion import DATA_DIR, as_stored, is_top, trained_cnn
from shrink_recipes import run

TRAINED_EPOCHS = 3
HELD_OUT = 2000
PRUNE = ["--target_sparsity=0.8", "--epochs=2"]
LABELLED = 6000
DISTILL = ["--width_multiplier=0.5", "--batch_size=128"]
KD_EPOCHS = 10  # over all 60,000 images; the labels-only student takes as many steps over its 6,000
HEADS = {"sigmoid": "sigmoid", "one_logit": "logits"}  # the model trained here → how its output reads


def main(argv):
    del argv
    train, test = load_data(f"{DATA_DIR.value}@train"), load_data(f"{DATA_DIR.value}@test")
    labels = is_top(test.y)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        names = ("train", "images", "held_out", "held_out_images", "few_labels", "unlabelled")
        data = {name: folder / f"{name}.npz" for name in names}
        np.savez(data["train"], x=as_stored(train.x), y=is_top(train.y))
        np.savez(data["few_labels"], x=as_stored(train.x[:LABELLED]), y=is_top(train.y[:LABELLED]))
        np.savez(data["unlabelled"], x=as_stored(train.x[LABELLED:]))
        np.savez(data["images"], x=as_stored(train.x))
        np.savez(data["held_out"], x=as_stored(test.x[:HELD_OUT]), y=labels[:HELD_OUT])
        np.savez(data["held_out_images"], x=as_stored(test.x[:HELD_OUT]))
        for head, task in HEADS.items():
            original = trained_cnn(head, train, folder / f"{head}.h5", TRAINED_EPOCHS)
            told = ["--task", task]

            def exported(how: str, model: Path, precision: str, extra: dict) -> dict:
                tflite = folder / f"{head}-{len(rows)}.tflite"
                settings = ["--precision", precision] + (["--per_tensor_dense"] if precision == "int8" else [])
                run(["tfcompress", "convert", str(model), *settings, "--calibration", str(data["train"]), *told]
                    + ["-o", str(tflite), "--quiet"])  # fmt: skip
                accuracy = task_accuracy(predict(tflite.read_bytes(), test.x), labels, task)
                row = {"head": head, "how": how, "accuracy": accuracy, **extra}
                print(row, flush=True)
                return row

            rows.append(exported("float32", original, "float32", {}))
            rows.append(exported("int8, post-training", original, "int8", {}))
            for labelled in (True, False):
                pruned, report = folder / f"{head}-pruned-{labelled}.h5", folder / f"{head}-prune-{labelled}.json"
                given = ["--train", str(data["train" if labelled else "images"])]
                given += ["--val", str(data["held_out" if labelled else "held_out_images"])]
                seconds = run(["tfcompress", "prune", str(original), *given, *PRUNE, *told]
                              + ["-o", str(pruned), "--report", str(report), "--quiet"])  # fmt: skip
                check = json.loads(report.read_text())
                guard = check["accuracy_check"] if labelled else check["output_check"]
                how = f"pruned 80% {'on 0/1 labels' if labelled else 'on the images alone'}, int8"
                keras_accuracy = [_keras_accuracy(model, test.x, labels, task) for model in (original, pruned)]
                extra = {"prune_seconds": round(seconds, 1), "guard": guard, "keras_accuracy": keras_accuracy}
                rows.append(exported(how, pruned, "int8", extra))
            students = {
                f"student at width 0.5, KD on {LABELLED:,} labels + {len(train) - LABELLED:,} unlabelled, int8": [
                    "--unlabeled", str(data["unlabelled"]), f"--epochs={KD_EPOCHS}"],
                f"student at width 0.5, on the {LABELLED:,} labels alone, int8": [
                    "--alpha=0", f"--epochs={KD_EPOCHS * len(train) // LABELLED}"],
            }  # fmt: skip
            for how, settings in students.items():
                student, report = folder / f"{head}-student-{len(rows)}.h5", folder / f"{head}-distill.json"
                seconds = run(["tfcompress", "distill", "--teacher", str(original), *DISTILL, *settings, *told]
                              + ["--train", str(data["few_labels"]), "--val", str(data["held_out"])]
                              + ["-o", str(student), "--report", str(report)])  # fmt: skip
                guard = json.loads(report.read_text())["accuracy_check"]
                keras_accuracy = [_keras_accuracy(model, test.x, labels, task) for model in (original, student)]
                extra = {"distill_seconds": round(seconds, 1), "guard": guard, "keras_accuracy": keras_accuracy}
                rows.append(exported(how, student, "int8", extra))
    for row in rows:
        float32 = next(each for each in rows if each["head"] == row["head"])
        row["accuracy_drop"] = (float32["accuracy"] - row["accuracy"]) * 100
    render.write_result(
        "one_logit",
        {
            "benchmark": "one_logit",
            "trained_epochs": TRAINED_EPOCHS,
            "prune": " ".join(PRUNE),
            "distill": " ".join(DISTILL),
            "kd_epochs": KD_EPOCHS,
            "labelled": LABELLED,
            "unlabelled": len(train) - LABELLED,
            "held_out": HELD_OUT,
            "test_samples": len(test),
            "positives": int(labels.sum()),
            "rows": rows,
            "machine": machine_info(threads=1),
            "versions": library_versions(),
        },
    )
    render.render_all()


def _keras_accuracy(path: Path, x, labels, task: str) -> float:
    """The Keras model's accuracy on the test images: what the step itself did, before conversion."""
    model = _keras.tf_keras().models.load_model(path, compile=False)
    return task_accuracy(model.predict(x, batch_size=256, verbose=0), labels, task)


if __name__ == "__main__":
    app.run(main)
