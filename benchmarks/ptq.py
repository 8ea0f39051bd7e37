"""Post-training quantization of every sample model on the full Fashion-MNIST test set.

Each sample model × {float32, float16, dynamic, int8, int8 with per-tensor Dense, int8
with the classifier head in float}: size, gzip size, accuracy on the 10k test images,
drop vs the Keras model, top-1 agreement (for the files Keras 3 wrote, also against
Keras 3's own outputs), and LiteRT latency p50 on 1 thread (≥200 invokes after
warm-up), all in one run. Writes results/ptq.json and the tables in benchmarks/README.md
and README.md.
"""

import time
from pathlib import Path

import numpy as np
from absl import app, flags

import tfcompress
from tfcompress import _keras
from tfcompress.report import library_versions, machine_info
from tfcompress.runtime.interpreter import predict
from tfcompress.testing.sample_models import SAMPLE_FILES

import render

ROOT = Path(__file__).resolve().parents[1]
_DATA_DIR = flags.DEFINE_string(
    "data_dir", "/usr/share/datasets/fashion-mnist", "Fashion-MNIST IDX folder (apt-get install dataset-fashion-mnist)."
)
_MODELS = flags.DEFINE_list(
    "models",
    list(SAMPLE_FILES),
    "Sample model files to measure.",
)
_RUNS = flags.DEFINE_integer("runs", 300, "Timed invokes per model for latency.", lower_bound=200)

KERAS3_FILES = ("lenet5_keras3.keras", "lenet5_keras3.h5")  # written by Keras 3 (tools/make_sample_models.py)


def variants(model) -> list:
    head = model.layers[-1].name  # the classifier Dense, whose softmax stays float with it
    return [
        ("float32", {"precision": "float32"}),
        ("float16", {"precision": "float16"}),
        ("dynamic", {"precision": "dynamic"}),
        ("int8", {"precision": "int8"}),
        ("int8 per-tensor Dense", {"precision": "int8", "per_tensor_dense": True}),
        ("int8 float head", {"precision": "int8", "keep_float": [head]}),
    ]


def main(argv):
    del argv
    test = tfcompress.load_data(f"{_DATA_DIR.value}@test")
    calibration = tfcompress.load_data(ROOT / "sample_models/data/fashion_mnist_calib.npz")
    rows = []
    for name in _MODELS.value:
        model = tfcompress.load_model(ROOT / "sample_models" / name)
        keras3_top1 = _keras3_top1(ROOT / "sample_models" / name, test) if name in KERAS3_FILES else None
        for variant, options in variants(model):
            started = time.perf_counter()
            report = tfcompress.convert(
                model, calibration=calibration, eval_data=test, latency_runs=_RUNS.value, **options
            )
            rows.append(
                {
                    "model": name,
                    "variant": variant,
                    "size_bytes": report.size_bytes,
                    "gzip_bytes": report.gzip_bytes,
                    "keras_accuracy": report.reference.accuracy,
                    "accuracy": report.accuracy,
                    "accuracy_drop": report.accuracy_drop,
                    "top1_agreement": report.fidelity.top1_agreement,
                    "top1_ties": report.fidelity.top1_ties,
                    "top1_agreement_keras3": None
                    if keras3_top1 is None
                    else float(np.mean(np.argmax(predict(report.tflite, test.x), axis=1) == keras3_top1)),
                    "latency_us": report.latency.to_dict(),
                    "float_ops": list(report.float_ops),
                    "seconds": round(time.perf_counter() - started, 1),
                }
            )
            print(
                f"{name:22} {variant:22} {report.size_bytes:>9,} B  acc {report.accuracy:.4f}  "
                f"drop {report.accuracy_drop:+.2f} pt  p50 {report.latency.p50:8.1f} us",
                flush=True,
            )
    result = {
        "benchmark": "ptq",
        "test_samples": len(test),
        "calibration_samples": 500,
        "threads": 1,
        "machine": machine_info(threads=1),
        "versions": library_versions(),
        "rows": rows,
    }
    render.write_result("ptq", result)
    render.render_all()


def _keras3_top1(path: Path, test) -> np.ndarray:
    """Keras 3's own top-1 classes, read with Keras 3 (tfcompress converts its tf_keras translation)."""
    original = _keras.keras3().saving.load_model(path, compile=False)
    return np.argmax(original.predict(test.x, batch_size=250, verbose=0), axis=1)


if __name__ == "__main__":
    app.run(main)
