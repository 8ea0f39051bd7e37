"""Measures .tflite models side by side with tfcompress.benchmark (no TensorFlow needed).

python tools/benchmark_tflite.py model_float.tflite model_int8.tflite --eval test.npz --runs 500
"""

from absl import app, flags

import tfcompress
from tfcompress.cli import run_tool
from tfcompress.report import format_benchmark

_EVAL = flags.DEFINE_string("eval", None, "Data for accuracy and the latency inputs (labels optional).")
_RUNS = flags.DEFINE_integer("runs", 200, "Timed invokes per repeat.", lower_bound=1)
_REPEAT = flags.DEFINE_integer("repeat", 3, "Whole measurements; the report gives medians.", lower_bound=1)
_THREADS = flags.DEFINE_integer("threads", 1, "Interpreter threads.", lower_bound=1)
_JSON = flags.DEFINE_string("json", None, "Also write the JSON report here.")


def main(argv):
    if len(argv) < 2:
        raise app.UsageError("usage: benchmark_tflite.py MODEL.tflite [MODEL.tflite ...] [flags]", exitcode=2)
    report = tfcompress.benchmark(
        argv[1:],
        eval_data=_EVAL.value,
        runs=_RUNS.value,
        repeat=_REPEAT.value,
        threads=_THREADS.value,
        json_path=_JSON.value,
    )
    print(format_benchmark(report))
    return 0


if __name__ == "__main__":
    run_tool(main)
