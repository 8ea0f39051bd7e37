"""Cold start of `tfcompress benchmark model.tflite --runs 1 --warmup 0`, in fresh processes.

The benchmark command must start fast on a device: it imports no TensorFlow (importing
TensorFlow alone takes seconds). Median of 10 fresh processes by default, compared in
the same run with a process that only imports TensorFlow.
"""

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from absl import app, flags

import tfcompress
from tfcompress.report import library_versions, machine_info

import render

ROOT = Path(__file__).resolve().parents[1]
_PROCESSES = flags.DEFINE_integer("processes", 10, "Fresh processes to time.", lower_bound=3)


def _wall_seconds(command) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main(argv):
    del argv
    tfcompress_command = shutil.which("tfcompress") or sys.exit("tfcompress is not on PATH; pip install -e . first")
    with tempfile.TemporaryDirectory() as folder:
        model = Path(folder) / "lenet5_int8.tflite"
        tfcompress.convert(
            ROOT / "sample_models/lenet5.h5",
            precision="int8",
            output=model,
            latency_runs=0,
            calibration=ROOT / "sample_models/data/fashion_mnist_calib.npz",
        )
        command = [tfcompress_command, "benchmark", str(model), "--runs", "1", "--warmup", "0"]
        benchmark_seconds = [_wall_seconds(command) for _ in range(_PROCESSES.value)]
    tensorflow_seconds = [_wall_seconds([sys.executable, "-c", "import tensorflow"]) for _ in range(3)]
    result = {
        "benchmark": "cold_start",
        "command": "tfcompress benchmark lenet5.tflite --runs 1 --warmup 0",
        "processes": _PROCESSES.value,
        "median_s": statistics.median(benchmark_seconds),
        "min_s": min(benchmark_seconds),
        "max_s": max(benchmark_seconds),
        "import_tensorflow_median_s": statistics.median(tensorflow_seconds),
        "machine": machine_info(threads=1),
        "versions": library_versions(),
    }
    print(
        f"median {result['median_s']:.3f} s over {result['processes']} processes "
        f"(import tensorflow alone: {result['import_tensorflow_median_s']:.2f} s)"
    )
    render.write_result("cold_start", result)
    render.render_all()


if __name__ == "__main__":
    app.run(main)
