"""Fashion-MNIST as the benchmarks hand it to the CLI, and the small CNNs some of them train on it."""

from pathlib import Path

import numpy as np
from absl import flags

from tfcompress import _keras

DATA_DIR = flags.DEFINE_string(
    "data_dir", "/usr/share/datasets/fashion-mnist", "Fashion-MNIST IDX folder (apt-get install dataset-fashion-mnist)."
)
TOPS = (0, 2, 4, 6)  # T-shirt/top, pullover, coat, shirt: a binary classifier's "yes"


def as_stored(x) -> np.ndarray:
    """Images as the IDX files store them (uint8), so the loader scales them as it scales those."""
    return (x * 255).round().astype(np.uint8)


def is_top(labels) -> np.ndarray:
    """The binary labels, 1 for a top, from the ten classes."""
    return np.isin(labels, TOPS).astype(np.int64)


def trained_cnn(task: str, train, path: Path, epochs: int) -> Path:
    """A small CNN (two convolutions, 64 units) trained here, seeded, on the labelled training images:
    "sigmoid", one unit telling a top (`is_top`); "one_logit", the same from one linear unit (binary
    cross-entropy from logits); "logits", the ten classes without a softmax."""
    keras = _keras.tf_keras()
    keras.utils.set_random_seed(0)
    layers = keras.layers
    model = keras.Sequential(
        [keras.Input((28, 28, 1)), layers.Conv2D(16, 3, activation="relu"), layers.MaxPooling2D()]
        + [layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(), layers.Flatten()]
        + [layers.Dense(64, activation="relu"), _head(task, layers)]
    )
    if task in ("sigmoid", "one_logit"):
        labels = is_top(train.y).astype(np.float32)
        loss = keras.losses.BinaryCrossentropy(from_logits=task == "one_logit")
    else:
        labels, loss = train.y, keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    accuracy = keras.metrics.BinaryAccuracy("accuracy", threshold=0.0) if task == "one_logit" else "accuracy"
    model.compile(keras.optimizers.Adam(1e-3), loss, metrics=[accuracy])
    model.fit(train.x, labels, epochs=epochs, batch_size=128, verbose=2)
    model.save(path, include_optimizer=False)
    return path


def _head(task: str, layers):
    if task == "sigmoid":
        return layers.Dense(1, "sigmoid")
    return layers.Dense(1 if task == "one_logit" else 10)
