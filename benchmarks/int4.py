"""int4 weights on full Fashion-MNIST, through the CLI: trained (QAT) against post-training (AI Edge Quantizer).

For each bundled sample model (trained on the 60,000 training images), in one run:
  - float32: `tfcompress convert --precision float32`;
  - int8 PTQ: `tfcompress convert --precision int8` (calibrated on the committed 1,000 images);
  - int4 PTQ: the same with `--weight_bits 4` (the int8 model's kernels rounded to 4 bits);
  - int8 QAT, int4 QAT (every Conv2D/DepthwiseConv2D/Dense at 4 bits) and int4 QAT with the first and
    last layers with weights at 8 bits: `tfcompress qat [--weight_bits 4 [--layer_bits first=8,last=8]]`
    on all 60,000 images, the same epochs, batch size, learning rate and seed, then `convert` and
    `micro` (TFLite Micro: flash, measured arena, its verification against the Keras model, and its
    agreement with LiteRT in quantized steps);
  - LUT 16 clusters: `tfcompress cluster --clusters 16` (same epochs and settings), then `micro
    --compress lut`: kernels stored as 4-bit indices into per-channel tables (TFLite Micro's DECODE);
    its size is micro's flash;
  - AI Edge Quantizer's int4-weight recipe (`dynamic_wi4_afp32`) on the same float32 `.tflite`,
    run in its own venv (`--aeq_python`; it pins its own packages), its accuracy measured with
    `tfcompress benchmark` (LiteRT). It keeps float activations, so TFLite Micro cannot run it.
Accuracy is on the 10,000 test images. A run of some `--models` keeps the other models' rows, each
with the epochs it was trained for. Writes results/int4.json, results/int4.png (size against
accuracy) and the table in benchmarks/README.md.
"""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from absl import app, flags

from tfcompress.plots import require_matplotlib
from tfcompress.report import library_versions, machine_info

import render

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_models"
CALIBRATION = SAMPLES / "data" / "fashion_mnist_calib.npz"
_DATA_DIR = flags.DEFINE_string(
    "data_dir", "/usr/share/datasets/fashion-mnist", "Fashion-MNIST IDX folder (apt-get install dataset-fashion-mnist)."
)
_MODELS = flags.DEFINE_list("models", ["lenet5", "dscnn", "lenet_300_100"], "Bundled sample models to compare.")
_WORK_DIR = flags.DEFINE_string("work_dir", "/tmp/tfcompress-int4-benchmark", "Where the models and reports go.")
_EPOCHS = flags.DEFINE_integer("epochs", 3, "QAT (and clustering) epochs on the 60,000 training images.")
_VARIANTS = flags.DEFINE_list("variants", [], "Measure only these variants; the others keep their stored rows.")
_AEQ_PYTHON = flags.DEFINE_string(
    "aeq_python",
    "/tmp/aeq/bin/python",
    "Python of a venv with ai-edge-quantizer (python3 -m venv /tmp/aeq && /tmp/aeq/bin/pip install "
    "ai-edge-quantizer==0.10.0).",
)
QAT = {"batch_size": 128, "learning_rate": 1e-4, "seed": 0}
INT4 = ("--weight_bits", "4")
LUT_VARIANT = "LUT 16 clusters"
LUT_CLUSTERING = ("--clusters", "16")
VARIANTS = {
    "int8 QAT": (),
    "int4 QAT": ("--weight_bits", "4"),
    "int4 QAT, first/last 8-bit": ("--weight_bits", "4", "--layer_bits", "first=8,last=8"),
}
AEQ_RECIPE = "dynamic_wi4_afp32"
_AEQ_SCRIPT = """
import sys
from ai_edge_quantizer import quantizer, recipe
qt = quantizer.Quantizer(sys.argv[1])
qt.load_quantization_recipe(getattr(recipe, sys.argv[3])())
qt.quantize().export_model(sys.argv[2], overwrite=True)
"""


def main(argv):
    del argv
    work = Path(_WORK_DIR.value)
    work.mkdir(parents=True, exist_ok=True)
    test, train = f"{_DATA_DIR.value}@test", f"{_DATA_DIR.value}@train"
    result = render.stored_result("int4", {"benchmark": "int4", "models": {}})
    stored_epochs = result.pop("epochs", None)  # what runs before per-model epochs recorded
    epochs = result.get("epochs_by_model") or {name: stored_epochs for name in result["models"] if stored_epochs}
    for name in _MODELS.value:
        result["models"][name] = compare(name, work / name, train, test, result["models"].get(name, []))
        if not _VARIANTS.value:
            epochs = {**epochs, name: _EPOCHS.value}
        result.update(
            epochs_by_model=epochs,
            qat=QAT,
            aeq_recipe=AEQ_RECIPE,
            machine=machine_info(threads=1),
            versions=library_versions(),
        )
        render.write_result("int4", result)
    plot(result, render.RESULTS / "int4.png")
    render.render_all()
    print(json.dumps(result["models"], indent=1))


def compare(name: str, folder: Path, train: str, test: str, stored: list) -> list:
    """Every variant of one sample model: a row each; variants not in `--variants` keep their stored rows."""
    folder.mkdir(parents=True, exist_ok=True)
    model = SAMPLES / f"{name}.h5"
    calibrated = ("--calibration", str(CALIBRATION))
    measure = {
        "float32": lambda: converted("float32", model, folder / "float32", test, "--precision", "float32"),
        "int8 PTQ": lambda: with_micro(
            converted("int8 PTQ", model, folder / "int8_ptq", test, *calibrated), model, folder / "int8_ptq", test
        ),
        "int4 PTQ": lambda: with_micro(
            converted("int4 PTQ", model, folder / "int4_ptq", test, *calibrated, *INT4),
            model,
            folder / "int4_ptq",
            test,
            *INT4,
        ),
        **{
            variant: _trained(variant, "qat", flags_given, model, folder, train, test)
            for variant, flags_given in VARIANTS.items()
        },
        LUT_VARIANT: _trained(LUT_VARIANT, "cluster", LUT_CLUSTERING, model, folder, train, test, "--compress", "lut"),
        f"AI Edge Quantizer {AEQ_RECIPE}": lambda: ai_edge_quantizer(folder, test),
    }
    kept = {row["variant"]: row for row in stored}
    chosen = _VARIANTS.value or list(measure)
    rows = [measure[variant]() if variant in chosen or variant not in kept else kept[variant] for variant in measure]
    float_accuracy = rows[0]["accuracy"]
    for row in rows:
        row["drop_vs_float"] = None if row["accuracy"] is None else round((float_accuracy - row["accuracy"]) * 100, 2)
    for row in rows:
        print(f"{name}: {row}", flush=True)
    return rows


def _trained(variant: str, command: str, flags_given, model, folder: Path, train: str, test: str, *micro_flags):
    """A row-maker: `tfcompress qat|cluster` on the training images, then `convert` and `micro`."""

    def row() -> dict:
        stem = folder / variant.replace(" ", "_").replace(",", "").replace("/", "")
        started = time.perf_counter()
        tfcompress(
            command, model, "--train", train, "-o", f"{stem}.h5", "--epochs", _EPOCHS.value,
            *(f"--{key}={value}" for key, value in QAT.items()), *flags_given,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        measured = converted(variant, f"{stem}.h5", stem, test, "--calibration", str(CALIBRATION))
        measured = with_micro(measured, f"{stem}.h5", stem, test, *micro_flags)
        if micro_flags:  # LUT: the file that ships is micro's compressed one, its kernels as indices and tables
            measured.update(
                size_bytes=measured.get("flash_bytes"),
                gzip_bytes=measured.get("flash_gzip_bytes"),
                weight_bytes_by_dtype={"LUT": measured.get("lut_kernel_bytes")},
            )
        return {**measured, "training_seconds": round(seconds, 1), "epochs": _EPOCHS.value}

    return row


def converted(variant: str, model, stem: Path, test: str, *flags_given) -> dict:
    """`tfcompress convert` of a model: its size, weight widths and accuracy on the test set."""
    report = tfcompress_report(
        stem.with_suffix(".json"),
        "convert", model, "-o", stem.with_suffix(".tflite"), "--eval", test, "--per_tensor_dense", *flags_given,
    )  # fmt: skip
    widths = {}
    for weight in report["weights"]:
        widths[weight["dtype"]] = widths.get(weight["dtype"], 0) + weight["bytes"]
    return {
        "variant": variant,
        "size_bytes": report["size_bytes"],
        "gzip_bytes": report["gzip_bytes"],
        "weight_bytes_by_dtype": widths,
        "accuracy": report["accuracy"],
    }


def with_micro(row: dict, model, stem: Path, test: str, *flags_given) -> dict:
    """The row with `tfcompress micro`'s flash, measured arena, verification against Keras and agreement
    with LiteRT; or with micro's one-line refusal, when TFLite Micro is less faithful than LiteRT."""
    folder = stem.with_name(stem.name + "_micro")
    shutil.rmtree(folder, ignore_errors=True)  # micro writes only into a new folder
    refused = tfcompress(
        "micro", model, "-o", folder, "--calibration", CALIBRATION, "--eval", test, *flags_given, check=False
    )
    if refused:
        return {**row, "micro_refused": refused}
    report = json.loads((folder / "report.json").read_text())
    verification = report["micro"]["verification"]
    return {
        **row,
        "flash_bytes": report["size_bytes"],
        "arena_bytes": report["arena_bytes"],
        "micro_max_diff_steps": report["micro"]["max_diff_steps"],
        "micro_error_vs_keras": round(verification["micro_error"], 5),
        "litert_error_vs_keras": round(max(e for e in verification["litert_errors"].values() if e is not None), 5),
        "micro_accuracy": report["accuracy"],
        "flash_gzip_bytes": report["gzip_bytes"],
        "lut_kernel_bytes": sum(tensor["bytes_after"] for tensor in report["lut"]["tensors"])
        if report["lut"]
        else None,
    }


def ai_edge_quantizer(folder: Path, test: str) -> dict:
    """AI Edge Quantizer's int4-weight recipe on the float32 .tflite, measured by `tfcompress benchmark`."""
    output = folder / "aeq_int4.tflite"
    subprocess.run(
        [_AEQ_PYTHON.value, "-c", _AEQ_SCRIPT, str(folder / "float32.tflite"), str(output), AEQ_RECIPE],
        check=True,
        capture_output=True,
    )
    report = tfcompress_report(folder / "aeq_int4_benchmark.json", "benchmark", output, "--eval", test)
    measured = report["models"][0]
    return {
        "variant": f"AI Edge Quantizer {AEQ_RECIPE}",
        "size_bytes": measured["size_bytes"],
        "gzip_bytes": measured["gzip_bytes"],
        "weight_bytes_by_dtype": None,
        "accuracy": measured["accuracy"],
    }


def tfcompress(*args, check: bool = True) -> str:
    """Runs the CLI; with `check=False`, returns its error line instead of raising ("" when it succeeded)."""
    command = [sys.executable, "-m", "tfcompress", *map(str, args)]
    print("$ tfcompress " + " ".join(map(str, args)), flush=True)
    finished = subprocess.run(command, check=check, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return finished.stderr.strip().splitlines()[-1] if finished.returncode else ""


def tfcompress_report(report: Path, *args) -> dict:
    tfcompress(*args, "--report" if args[0] != "benchmark" else "--json", report)
    return json.loads(Path(report).read_text())


def plot(result: dict, path: Path) -> None:
    """Size against accuracy drop, a marker per variant, a panel per model."""
    plt = require_matplotlib()
    models = list(result["models"])
    figure, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4), squeeze=False)
    for axis, name in zip(axes[0], models):
        for row in result["models"][name]:
            axis.scatter(row["size_bytes"] / 1000, row["drop_vs_float"], label=row["variant"])
        axis.set_title(name)
        axis.set_xlabel(".tflite size (kB)")
        axis.set_ylabel("accuracy drop vs float32 (pt, 10k test images)")
        axis.axhline(1.0, color="grey", linewidth=0.5, linestyle="--")
    axes[0][0].legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


if __name__ == "__main__":
    app.run(main)
