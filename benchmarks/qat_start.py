"""How soon `tfcompress qat` trains, or refuses, in a fresh process (cache off).

The pre-flight check runs before QAT; it must not make users wait long for the first
training step, and a model QAT cannot handle must fail before any training. Times from
the `quantize_aware` call (TensorFlow already imported) to the first training batch of a
small CNN with a LayerNormalization (kept float), and to the refusal of a subclassed
model. Median of fresh processes.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from absl import app, flags

from tfcompress.report import library_versions, machine_info

import render

ROOT = Path(__file__).resolve().parents[1]
CALIBRATION = ROOT / "sample_models/data/fashion_mnist_calib.npz"
_PROCESSES = flags.DEFINE_integer("processes", 3, "Fresh processes per measurement.", lower_bound=1)
_CHILD = flags.DEFINE_enum("child", None, ["first_step", "refusal"], "Internal: measure once and print seconds.")


def main(argv):
    del argv
    if _CHILD.value:
        print(json.dumps({"seconds": _first_step() if _CHILD.value == "first_step" else _refusal()}))
        return
    environment = {**os.environ, "TFCOMPRESS_CACHE_DIR": "off", "TF_CPP_MIN_LOG_LEVEL": "3"}
    seconds = {
        kind: [_child_seconds(kind, environment) for _ in range(_PROCESSES.value)] for kind in ("first_step", "refusal")
    }
    result = {
        "benchmark": "qat_start",
        "processes": _PROCESSES.value,
        "first_step_median_s": statistics.median(seconds["first_step"]),
        "refusal_median_s": statistics.median(seconds["refusal"]),
        "seconds": seconds,
        "machine": machine_info(threads=1),
        "versions": library_versions(),
    }
    print(
        f"first QAT step {result['first_step_median_s']:.1f} s, refusal {result['refusal_median_s']:.1f} s "
        f"(medians of {_PROCESSES.value} processes)"
    )
    render.write_result("qat_start", result)
    render.render_all()


def _child_seconds(kind, environment) -> float:
    done = subprocess.run(
        [sys.executable, __file__, f"--child={kind}"], check=True, capture_output=True, text=True, env=environment
    )
    return json.loads(done.stdout.strip().splitlines()[-1])["seconds"]


def _small_cnn(extra=None):
    from tfcompress import _keras

    keras = _keras.tf_keras()
    keras.utils.set_random_seed(3)
    layers = keras.layers
    inputs = keras.Input((28, 28, 1))
    x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(8, 3, strides=2, use_bias=False)(inputs)))
    x = layers.Flatten()(extra(layers)(x) if extra else x)
    return keras.Model(inputs, layers.Dense(10, activation="softmax")(x))


def _first_step() -> float:
    from tfcompress import _keras, quantize_aware

    keras = _keras.tf_keras()
    path = Path(tempfile.mkdtemp()) / "layer_norm.h5"
    _small_cnn(lambda layers: layers.LayerNormalization()).save(path)
    first_batch = []

    class FirstBatch(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            first_batch.append(time.perf_counter())

    start = time.perf_counter()
    quantize_aware(path, CALIBRATION, epochs=1, callbacks=[FirstBatch()], verbose=0)
    return first_batch[0] - start


def _refusal() -> float:
    import numpy as np

    from tfcompress import _keras, quantize_aware
    from tfcompress.errors import PreflightError

    keras = _keras.tf_keras()

    class Classifier(keras.Model):
        def __init__(self):
            super().__init__(name="classifier")
            self.flatten = keras.layers.Flatten()
            self.dense = keras.layers.Dense(10, activation="softmax")

        def call(self, inputs):
            return self.dense(self.flatten(inputs))

    model = Classifier()
    model(np.zeros((1, 28, 28, 1), np.float32))
    start = time.perf_counter()
    try:
        quantize_aware(model, CALIBRATION, verbose=0)
    except PreflightError:
        return time.perf_counter() - start
    raise SystemExit("the subclassed model was not refused")


if __name__ == "__main__":
    app.run(main)
