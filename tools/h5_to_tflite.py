"""Converts one Keras model to a verified .tflite (int8 by default) with tfcompress.convert.

python tools/h5_to_tflite.py model.h5 model.tflite --calibration data.npz --eval test.npz
"""

from absl import app, flags

import tfcompress
from tfcompress.cli import run_tool

_PRECISION = flags.DEFINE_enum(
    "precision",
    "int8",
    ["float32", "float16", "dynamic", "int8", "int16x8"],
    "Weights/activations precision; int8 and int16x8 need --calibration.",
)
_CALIBRATION = flags.DEFINE_string("calibration", None, "Calibration data (.npz/.npy/image folder/IDX@split).")
_EVAL = flags.DEFINE_string("eval", None, "Labelled data: accuracy of the Keras model and of the .tflite.")
_REPORT = flags.DEFINE_string("report", None, "Also write the JSON report here.")


def main(argv):
    if len(argv) != 3:
        raise app.UsageError("usage: h5_to_tflite.py MODEL OUT.tflite [flags]", exitcode=2)
    report = tfcompress.convert(
        argv[1],
        output=argv[2],
        precision=_PRECISION.value,
        calibration=_CALIBRATION.value,
        eval_data=_EVAL.value,
        report_path=_REPORT.value,
    )
    tfcompress.print_report(report)
    return 0


if __name__ == "__main__":
    run_tool(main)
