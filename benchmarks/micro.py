"""TFLite Micro: flash and measured arena of every sample model as full-integer int8.

Each model is converted with int8 I/O, once with per-channel Dense weights and once
per-tensor, then run through `tfcompress.benchmark(..., micro=True)`: the arena is the
smallest one TFLite Micro really allocated and ran in, and its outputs are compared with
LiteRT's built-in kernels on the first 50 eval images.
"""

import tempfile
from pathlib import Path

from absl import app, flags

import tfcompress
from tfcompress.report import library_versions, machine_info

import render

ROOT = Path(__file__).resolve().parents[1]
CALIBRATION = ROOT / "sample_models/data/fashion_mnist_calib.npz"
EVAL = ROOT / "sample_models/data/fashion_mnist_eval.npz"
_MODELS = flags.DEFINE_list("models", ["lenet_300_100.h5", "lenet5.h5", "dscnn.h5", "resnet8.h5",
                                       "mobilenetv2_035.h5", "lenet5_keras3.keras"], "Sample models.")


def main(argv):
    del argv
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in _MODELS.value:
            model = tfcompress.load_model(ROOT / "sample_models" / name)
            paths = {}
            for dense in ("per-channel", "per-tensor"):
                paths[dense] = Path(folder) / f"{Path(name).stem}_{dense}.tflite"
                tfcompress.convert(model, precision="int8", io_type="int8", calibration=CALIBRATION,
                                   per_tensor_dense=dense == "per-tensor", output=paths[dense], latency_runs=0)
            report = tfcompress.benchmark(list(paths.values()), eval_data=EVAL, runs=50, micro=True)
            for dense, measured in zip(paths, report.models):
                rows.append({"model": name, "dense": dense, "flash_bytes": measured.size_bytes,
                             "accuracy": measured.accuracy, **measured.micro})
                print(f"{name:22} {dense:12} flash {measured.size_bytes:>9,} B  arena "
                      f"{measured.micro.get('arena_bytes', 0):>9,} B  diff {measured.micro.get('max_diff_steps')}",
                      flush=True)
    render.write_result("micro", {"benchmark": "micro", "eval": str(EVAL.relative_to(ROOT)),
                                  "machine": machine_info(threads=1), "versions": library_versions(),
                                  "rows": rows})
    render.render_all()


if __name__ == "__main__":
    app.run(main)
