"""The 20 trained models the batch benchmarks run (benchmarks/pipeline.py, tool_speed.py): the four small
zoo architectures, five seeds each, trained one epoch. Without flags of its own, so both import it."""

from pathlib import Path

import numpy as np

from tfcompress import _keras
from tfcompress.data import load_data
from tfcompress.testing import zoo

ROOT = Path(__file__).resolve().parents[1]
FASHION_MNIST = "/usr/share/datasets/fashion-mnist"  # apt-get install dataset-fashion-mnist
ARCHITECTURES = ("lenet_300_100", "lenet5", "dscnn", "resnet8")
TRAIN_SAMPLES = 10_000


def make_models(folder: Path, data_dir: str, seeds: int) -> Path:
    """Trained models that differ (architecture × seed), and the data defaults beside them; models
    already in `folder` are kept."""
    folder.mkdir(parents=True, exist_ok=True)
    keras = _keras.tf_keras()
    train = load_data(f"{data_dir}@train").take(TRAIN_SAMPLES)
    for name in ARCHITECTURES:
        for seed in range(seeds):
            path = folder / f"{name}_s{seed}.h5"
            if path.exists():
                continue
            keras.utils.set_random_seed(seed)
            model = zoo.build(name, keras)
            model.compile(
                optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
            )
            model.fit(train.x, train.y.astype(np.int64), epochs=1, batch_size=128, verbose=2)
            model.save(path, include_optimizer=False)
    data = ROOT / "sample_models" / "data"
    (folder / "tfcompress-data.yaml").write_text(
        f"calibration: {data / 'fashion_mnist_calib.npz'}\neval: {data / 'fashion_mnist_eval.npz'}\n"
    )
    return folder


def tflite_files(folder: Path) -> dict:
    """Each model's .tflite in a batch's output folder, by its path there: to compare two runs byte for byte."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.glob("*/model.tflite"))}
