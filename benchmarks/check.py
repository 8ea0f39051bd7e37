"""`tfcompress check` on every sample model and target: verdict, and how long it takes.

Each check runs twice in the same process: cold (an empty conversion cache, so the
float32 and int8 conversions really run) and warm (the same file again, conversions
read back from the cache). Times are medians of `--repeats` runs.
"""

import collections
import os
import statistics
import tempfile
import time
from pathlib import Path

from absl import app, flags

from tfcompress.jobs.check import check
from tfcompress.options import CHECK_TARGETS
from tfcompress.report import library_versions, machine_info
from tfcompress.testing.sample_models import SAMPLE_FILES

import render

ROOT = Path(__file__).resolve().parents[1]
CALIBRATION = ROOT / "sample_models/data/fashion_mnist_calib.npz"
_REPEATS = flags.DEFINE_integer("repeats", 1, "Cold/warm runs per model and target; medians reported.", lower_bound=1)


def _timed_check(path, target):
    start = time.perf_counter()
    report = check(path, target=target, calibration=CALIBRATION)
    return report, time.perf_counter() - start


def main(argv):
    del argv
    rows = []
    for sample in SAMPLE_FILES:
        for target in CHECK_TARGETS:
            cold, warm = [], []
            for _ in range(_REPEATS.value):
                with tempfile.TemporaryDirectory() as cache:
                    os.environ["TFCOMPRESS_CACHE_DIR"] = cache
                    report, seconds = _timed_check(ROOT / "sample_models" / sample, target)
                    cold.append(seconds)
                    warm.append(_timed_check(ROOT / "sample_models" / sample, target)[1])
            actions = collections.Counter(layer.qat.action for layer in report.layers)
            rows.append(
                {
                    "model": sample,
                    "target": target,
                    "verdict": report.verdict,
                    "problems": [p.to_dict() for p in report.problems],
                    "qat_actions": dict(actions),
                    "ops": report.ops,
                    "cold_s": statistics.median(cold),
                    "warm_s": statistics.median(warm),
                }
            )
            print(
                f"{sample:22s} {target:12s} {report.verdict:28s} cold {rows[-1]['cold_s']:6.1f} s  "
                f"warm {rows[-1]['warm_s']:5.1f} s  {dict(actions)}"
            )
    render.write_result(
        "check",
        {
            "benchmark": "check",
            "repeats": _REPEATS.value,
            "rows": rows,
            "calibration": str(CALIBRATION.relative_to(ROOT)),
            "machine": machine_info(threads=1),
            "versions": library_versions(),
        },
    )
    render.render_all()


if __name__ == "__main__":
    app.run(main)
