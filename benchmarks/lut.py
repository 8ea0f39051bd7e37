"""Flash on a microcontroller after clustering: int8 vs int8 + LUT compression, full Fashion-MNIST.

For LeNet-300-100, lenet5 and dscnn (the bundled models) at 16, 8 and 4 clusters:
`tfcompress cluster` (fine-tuned on the 60k training images), then `tfcompress micro
--compress lut`. Flash of the float32 `.tflite`, the int8 model and the int8 + LUT
model; the arena with DECODE expanding into it and with a separate decompression
memory; accuracy on the 10k test images (LiteRT, int8) against the float model; TFLite
Micro latency compressed vs uncompressed; and whether TFLite Micro's outputs of the
compressed model equal the uncompressed model's on 500 test images. Part "samples": every
bundled sample model, as it is, through `micro --compress lut`. Part "recipe": the built-in
`deep_compression_mcu` recipe (prune → cluster keeping zeros → micro --compress lut) on
LeNet-300-100 with the 60k training images, judged on the 10k test images.
Writes results/lut.json (replacing only the parts run) and the table in benchmarks/README.md.
"""

import tempfile
import time
from pathlib import Path

from absl import app, flags

import tfcompress
from tfcompress.errors import TfcompressError
from tfcompress.report import library_versions, machine_info

import render

ROOT = Path(__file__).resolve().parents[1]
_DATA_DIR = flags.DEFINE_string(
    "data_dir", "/usr/share/datasets/fashion-mnist", "Fashion-MNIST IDX folder (apt-get install dataset-fashion-mnist)."
)
_MODELS = flags.DEFINE_list("models", ["lenet_300_100", "lenet5", "dscnn"], "Bundled sample models.")
_CLUSTERS = flags.DEFINE_list("clusters", ["16", "8", "4"], "Cluster counts.")
_TRAIN_SAMPLES = flags.DEFINE_integer("train_samples", None, "Use only this many training images (a smoke run).")
_PARTS = flags.DEFINE_list(
    "parts",
    ["clustered", "samples", "recipe"],
    "clustered: the table; samples: every sample model; recipe: deep_compression_mcu.",
)
SAMPLE_MODELS = ["lenet_300_100.h5", "lenet5.h5", "dscnn.h5", "resnet8.h5", "mobilenetv2_035.h5", "lenet5_keras3.keras"]

BATCH, EPOCHS, LEARNING_RATE = 128, 3, 1e-4


def main(argv):
    del argv
    train = tfcompress.load_data(f"{_DATA_DIR.value}@train").take(_TRAIN_SAMPLES.value)
    test = tfcompress.load_data(f"{_DATA_DIR.value}@test")
    calibration = ROOT / "sample_models/data/fashion_mnist_calib.npz"
    result = render.stored_result("lut", {"rows": [], "samples": [], "recipe": None})
    if "clustered" in _PARTS.value:
        result["rows"] = [row for name in _MODELS.value for row in model_rows(name, train, test, calibration)]
    if "samples" in _PARTS.value:
        result["samples"] = [sample_row(name, calibration) for name in SAMPLE_MODELS]
    if "recipe" in _PARTS.value:
        result["recipe"] = recipe_row(f"{_DATA_DIR.value}@train", f"{_DATA_DIR.value}@test", calibration)
    result.update(
        {
            "benchmark": "lut",
            "train_samples": len(train),
            "test_samples": len(test),
            "epochs": EPOCHS,
            "learning_rate": LEARNING_RATE,
            "machine": machine_info(threads=1),
            "versions": library_versions(),
        }
    )
    render.write_result("lut", result)
    render.render_all()


def sample_row(name, calibration) -> dict:
    """A bundled model as it is (not clustered): it must pass, with its tensors kept and why."""
    with tempfile.TemporaryDirectory() as folder:
        try:
            micro = tfcompress.to_micro(
                ROOT / "sample_models" / name, Path(folder) / "out", calibration=calibration, compress="lut"
            )
        except TfcompressError as error:
            return {"model": name, "passed": False, "error": str(error)}
    kept = [tensor.reason for tensor in micro.lut.tensors if not tensor.compressed]
    return {
        "model": name,
        "passed": True,
        "weight_tensors": len(micro.lut.tensors),
        "compressed": len(micro.lut.tensors) - len(kept),
        "flash_bytes": micro.size_bytes,
        "kept_need_8_bits": sum("index bits" in reason for reason in kept),
        "kept_not_smaller": sum("not be smaller" in reason for reason in kept),
    }


def recipe_row(train, test, calibration) -> dict:
    """The deep_compression_mcu recipe, end to end, on LeNet-300-100 (its default epochs and rates)."""
    path = ROOT / "sample_models" / "lenet_300_100.h5"
    float32 = tfcompress.convert(path, precision="float32", latency_runs=0)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        run = tfcompress.run_recipe(
            "deep_compression_mcu", path, folder, train=train, calibration=calibration, eval_data=test
        )
    result = run.result
    row = {
        "recipe": "deep_compression_mcu",
        "model": path.name,
        "float32_bytes": float32.size_bytes,
        "flash_bytes": result["size_bytes"],
        "flash_ratio": float32.size_bytes / result["size_bytes"],
        "arena_bytes": result["arena_bytes"],
        "original_accuracy": result["reference"]["accuracy"],
        "accuracy": result["accuracy"],
        "drop_pt": result["accuracy_drop"],
        "passed": run.passed,
        "steps": {step["step"]: step["seconds"] for step in run.steps},
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(
        f"deep_compression_mcu: flash {row['flash_ratio']:.1f}x vs float32, drop {row['drop_pt']:+.2f} pt, "
        f"arena {row['arena_bytes']:,} B, passed {row['passed']}",
        flush=True,
    )
    return row


def model_rows(name, train, test, calibration) -> list:
    path = ROOT / "sample_models" / f"{name}.h5"
    float32 = tfcompress.convert(path, precision="float32", eval_data=test, latency_runs=0)
    rows = []
    for clusters in map(int, _CLUSTERS.value):
        started = time.perf_counter()
        clustered = tfcompress.cluster(
            path,
            train,
            options=tfcompress.ClusterOptions(clusters=clusters),
            epochs=EPOCHS,
            batch_size=BATCH,
            learning_rate=LEARNING_RATE,
            verbose=2,
        )
        with tempfile.TemporaryDirectory() as folder:
            micro = tfcompress.to_micro(
                clustered.keras_model, Path(folder) / name, calibration=calibration, eval_data=test, compress="lut"
            )
        lut = micro.lut
        row = {
            "model": name,
            "clusters": clusters,
            "float32_bytes": float32.size_bytes,
            "int8_bytes": lut.bytes_before,
            "lut_bytes": lut.bytes_after,
            "int8_ratio": float32.size_bytes / lut.bytes_before,
            "lut_ratio": float32.size_bytes / lut.bytes_after,
            "bits": {tensor.name: tensor.bits for tensor in lut.tensors},
            "kept": {tensor.name: tensor.reason for tensor in lut.tensors if not tensor.compressed},
            "uncompressed_arena_bytes": lut.uncompressed_arena_bytes,
            "arena_bytes": lut.arena_bytes,
            "alt_decompression_bytes": lut.alt_decompression_bytes,
            "arena_with_alt_memory_bytes": lut.arena_with_alt_memory_bytes,
            "identical_samples": lut.identical_samples,
            "float_accuracy": float32.accuracy,
            "accuracy": micro.accuracy,
            "drop_pt": round((float32.accuracy - micro.accuracy) * 100, 2),
            "micro_p50_us": {stage: latency.p50 for stage, latency in lut.latency.items()},
            "seconds": round(time.perf_counter() - started, 1),
        }
        print(
            f"{name} {clusters} clusters: flash {row['lut_ratio']:.1f}x vs float32 (int8 {row['int8_ratio']:.1f}x), "
            f"drop {row['drop_pt']:+.2f} pt, arena {row['arena_bytes']:,} B",
            flush=True,
        )
        rows.append(row)
    return rows


if __name__ == "__main__":
    app.run(main)
