"""A binary classifier (one sigmoid unit) made as small as it can be within a point, through the CLI.

`top_or_not` (fashion.trained_cnn: is it a T-shirt, pullover, coat or shirt?) is trained here, seeded,
for 3 epochs on the 60,000 Fashion-MNIST training images, then run as a user runs it on its 0/1
labels: `tfcompress convert --precision int8` (post-training), `tfcompress auto --train
--max_accuracy_drop 1 --objective size` with the 10,000 test images as `--eval` (as
benchmarks/shrink.py runs it on the bundled classifiers, with lenet5's epochs), then `tfcompress run`
of the recipe auto wrote. Each `.tflite` is run here on the test images: accuracy at 0.5, and its
size after gzip against the float32 `.tflite`. Until this benchmark was written, `auto` and
`analyze` refused the 0/1 labels and the training steps read the one unit as one class.

    python benchmarks/binary.py   # about 20 min on 2 cores
"""

import gzip
import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np
from absl import app

from tfcompress.data import load_data
from tfcompress.report import library_versions, machine_info
from tfcompress.runtime.interpreter import predict
from tfcompress.runtime.metrics import task_accuracy

import render
from fashion import DATA_DIR, as_stored, is_top, trained_cnn
from shrink_recipes import BUDGET, EPOCHS, run

TRAINED_EPOCHS = 3
PRUNE_EPOCHS, CLUSTER_EPOCHS = EPOCHS["lenet5"]


def main(argv):
    del argv
    train, test = load_data(f"{DATA_DIR.value}@train"), load_data(f"{DATA_DIR.value}@test")
    labels = is_top(test.y)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        data = {"train": folder / "train.npz", "test": folder / "test.npz"}
        np.savez(data["train"], x=as_stored(train.x), y=is_top(train.y))
        np.savez(data["test"], x=as_stored(test.x), y=labels)
        model = trained_cnn("sigmoid", train, folder / "top_or_not.h5", TRAINED_EPOCHS)
        common = ["--calibration", str(data["train"]), "--eval", str(data["test"])]

        def measured(how: str, tflite: Path, seconds: float) -> dict:
            content = tflite.read_bytes()
            outputs = predict(content, test.x)
            row = {"how": how, "size_bytes": len(content), "gzip_bytes": len(gzip.compress(content, mtime=0))}
            row["sha256"] = hashlib.sha256(content).hexdigest()
            row.update(accuracy=task_accuracy(outputs, labels, "sigmoid"), seconds=round(seconds, 1))
            print(row, flush=True)
            return row

        rows = []
        for precision in ("float32", "int8"):
            output = folder / f"{precision}.tflite"
            seconds = run(["tfcompress", "convert", str(model), "--precision", precision, *common, "-o", str(output)])
            rows.append(measured(f"convert --precision {precision}", output, seconds))
        chosen = folder / "auto.tflite"
        seconds = run(
            ["tfcompress", "auto", str(model), "--train", str(data["train"]), *common]
            + [f"--max_accuracy_drop={BUDGET}", "--objective", "size", "--prune_epochs", str(PRUNE_EPOCHS)]
            + ["--cluster_epochs", str(CLUSTER_EPOCHS), "-o", str(chosen), "--report", str(folder / "auto.json")]
        )
        report = json.loads((folder / "auto.json").read_text())
        rows.append({**measured("auto --train", chosen, seconds), "chosen": report["chosen"]})
        remade = folder / "remade"
        seconds = run(
            ["tfcompress", "run", str(chosen.with_suffix(".recipe.yaml")), "--model", str(model)]
            + ["--train", str(data["train"]), *common, "-o", str(remade)]
        )
        rows.append(measured("run of auto's recipe", remade / "model.tflite", seconds))
    float32 = rows[0]
    for row in rows:
        row["gzip_ratio"] = float32["size_bytes"] / row["gzip_bytes"]
        row["accuracy_drop"] = (float32["accuracy"] - row["accuracy"]) * 100
    render.write_result(
        "binary",
        {
            "benchmark": "binary",
            "trained_epochs": TRAINED_EPOCHS,
            "budget": BUDGET,
            "epochs": {"prune": PRUNE_EPOCHS, "cluster": CLUSTER_EPOCHS},
            "test_samples": len(test),
            "positives": int(labels.sum()),
            "rows": rows,
            "remade_same_bytes": rows[-1]["sha256"] == rows[-2]["sha256"],
            "machine": machine_info(threads=1),
            "versions": library_versions(),
        },
    )
    render.render_all()


if __name__ == "__main__":
    app.run(main)
