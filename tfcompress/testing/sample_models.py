"""Trains the zoo architectures on Fashion-MNIST into the bundled sample models.

Writes `.h5` files without optimizer state (tf_keras), the Keras 3 twins of lenet5,
the small committed data files, and a README table of parameters and accuracy on
the full 10k test set.
"""

import json
from pathlib import Path

import numpy as np

from tfcompress import _keras
from tfcompress._io.files import save_atomic, write_atomic
from tfcompress.data import load_data, load_raw
from tfcompress.testing import zoo

__all__ = ["make_sample_models", "EPOCHS", "BATCHNORM_HEAVY", "SAMPLE_FILES"]

EPOCHS = {"lenet_300_100": 10, "lenet5": 10, "dscnn": 8, "resnet8": 8, "mobilenetv2_035": 10}
# BatchNorm-heavy models: their moving statistics ended up far from what the trained
# network sees (MobileNetV2: 88% in training mode, 10-30% at inference), so the rate
# decays to zero and the statistics are re-estimated with forward passes afterwards.
BATCHNORM_HEAVY = {"resnet8", "mobilenetv2_035"}
_REESTIMATION_STEPS = 500
KERAS3_MODEL = "lenet5"
# The files in sample_models/: the Keras 2 models, then the Keras 3 twins of lenet5.
SAMPLE_FILES = tuple(f"{name}.h5" for name in EPOCHS) + (f"{KERAS3_MODEL}_keras3.keras", f"{KERAS3_MODEL}_keras3.h5")
CALIBRATION_SAMPLES = 1000
_BATCH_SIZE = 128
EVAL_SAMPLES = 2000


def make_sample_models(data_dir, output_dir, *, only=None, seed=0) -> dict:
    """Trains and writes every sample model (or those in `only`); returns their stats."""
    output = Path(output_dir)
    (output / "data").mkdir(parents=True, exist_ok=True)
    train = load_data(f"{data_dir}@train")
    test = load_data(f"{data_dir}@test")
    _write_data_files(data_dir, output / "data")
    stats_path = output / "models.json"
    stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
    tf_keras = _keras.tf_keras()
    for name in only or EPOCHS:
        if name == f"{KERAS3_MODEL}_keras3":
            stats.update(_make_keras3_models(train, test, output, seed))
            continue
        model = _train(
            zoo.build(name, tf_keras), train, EPOCHS[name], seed, tf_keras, cosine_decay=name in BATCHNORM_HEAVY
        )
        if name in BATCHNORM_HEAVY:
            _reestimate_batchnorm(model, train, seed, tf_keras)
        save_atomic(output / f"{name}.h5", lambda tmp: model.save(tmp, include_optimizer=False))
        stats[f"{name}.h5"] = _stats(model, test)
    if only is None:
        stats.update(_make_keras3_models(train, test, output, seed))
    write_atomic(stats_path, (json.dumps(stats, indent=1, sort_keys=True) + "\n").encode())
    write_atomic(output / "README.md", _readme(stats).encode())
    return stats


def _make_keras3_models(train, test, output: Path, seed: int) -> dict:
    keras = _keras.keras3()
    model = _train(zoo.build(KERAS3_MODEL, keras), train, EPOCHS[KERAS3_MODEL], seed, keras)
    stats = {}
    for suffix in (".keras", ".h5"):
        name = f"{KERAS3_MODEL}_keras3{suffix}"
        save_atomic(output / name, model.save)
        stats[name] = _stats(model, test)
    return stats


def _train(model, train, epochs: int, seed: int, keras, cosine_decay: bool = False):
    keras.utils.set_random_seed(seed)
    learning_rate = 1e-3
    if cosine_decay:
        steps = epochs * -(-len(train) // _BATCH_SIZE)
        learning_rate = keras.optimizers.schedules.CosineDecay(1e-3, decay_steps=steps)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    model.fit(train.x, train.y, epochs=epochs, batch_size=_BATCH_SIZE, shuffle=True, verbose=2)
    return model


def _reestimate_batchnorm(model, train, seed: int, keras) -> None:
    """Recomputes BatchNorm moving statistics from forward passes over training batches,
    with the weights fixed (no gradient step), then restores each layer's momentum."""
    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.99
    rng = np.random.default_rng(seed)
    for _ in range(_REESTIMATION_STEPS):
        model(train.x[rng.integers(0, len(train), _BATCH_SIZE)], training=True)
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum


def _stats(model, test) -> dict:
    predictions = model.predict(test.x, batch_size=500, verbose=0)
    accuracy = float(np.mean(np.argmax(predictions, axis=1) == test.y))
    return {"params": int(model.count_params()), "float_accuracy": round(accuracy, 4)}


def _write_data_files(data_dir, folder: Path) -> None:
    """Committed subsets: raw uint8 images N×28×28×1 and labels, first N of each split."""
    for split, name, count in (
        ("train", "fashion_mnist_calib.npz", CALIBRATION_SAMPLES),
        ("test", "fashion_mnist_eval.npz", EVAL_SAMPLES),
    ):
        x, y = load_raw(f"{data_dir}@{split}")
        save_atomic(folder / name, lambda tmp: np.savez_compressed(tmp, x=x[:count], y=y[:count]))


def _readme(stats: dict) -> str:
    rows = "\n".join(
        f"| `{name}` | {entry['params']:,} | {entry['float_accuracy'] * 100:.2f}% |"
        for name, entry in sorted(stats.items())
    )
    return f"""# Sample models

Made by `python tools/make_sample_models.py` (this table too) from Debian's
`dataset-fashion-mnist`. Every model takes float32 input of shape 28×28×1 in [0, 1]
(uint8 images / 255, the default preprocessing of tfcompress) and ends in a 10-way softmax.
Accuracy is the Keras model's on the full 10,000-image Fashion-MNIST test set.

| model | params | float accuracy |
|---|---:|---:|
{rows}

`data/fashion_mnist_calib.npz`: the first {CALIBRATION_SAMPLES} training images (uint8 `x` N×28×28×1, `y`).
`data/fashion_mnist_eval.npz`: the first {EVAL_SAMPLES} test images.
"""
