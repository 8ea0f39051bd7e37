"""TFLite Micro: flash and measured arena of every sample model, per-channel vs per-tensor Dense.

Each model goes through `tfcompress.to_micro` with only the committed calibration data
plus the eval data for accuracy: full integer, int8 I/O, batch 1, the arena measured in
the TFLite Micro interpreter. The two packages are then run through
`tfcompress.benchmark(..., micro=True)`, which measures the arena and the agreement with
LiteRT again on its own path.
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
_MODELS = flags.DEFINE_list(
    "models",
    ["lenet_300_100.h5", "lenet5.h5", "dscnn.h5", "resnet8.h5", "mobilenetv2_035.h5", "lenet5_keras3.keras"],
    "Sample models.",
)


def main(argv):
    del argv
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in _MODELS.value:
            packages = {}
            for dense in ("per-channel", "per-tensor"):
                output = Path(folder) / f"{Path(name).stem}_{dense}"
                packages[dense] = (
                    output,
                    tfcompress.to_micro(
                        ROOT / "sample_models" / name,
                        output,
                        calibration=CALIBRATION,
                        eval_data=EVAL,
                        per_tensor_dense=dense == "per-tensor",
                    ),
                )
            measured = tfcompress.benchmark(
                [output / "model.tflite" for output, _ in packages.values()], eval_data=EVAL, runs=50, micro=True
            )
            for (dense, (_, package)), benchmarked in zip(packages.items(), measured.models):
                rows.append(
                    {
                        "model": name,
                        "dense": dense,
                        "flash_bytes": package.size_bytes,
                        "arena_bytes": package.arena_bytes,
                        "recorded_arena_bytes": package.recorded_arena_bytes,
                        "benchmark_arena_bytes": benchmarked.micro.get("arena_bytes"),
                        "max_diff_steps": benchmarked.micro.get("max_diff_steps"),
                        "diff_steps_by_kernels": package.diff_steps_by_kernels,
                        "accuracy": package.accuracy,
                        "accuracy_drop": package.accuracy_drop,
                        "micro_p50_us": package.micro_latency["p50"],
                        "litert_p50_us": benchmarked.latency.p50,
                    }
                )
                print(
                    f"{name:22} {dense:12} flash {package.size_bytes:>9,} B  arena {package.arena_bytes:>9,} B "
                    f"(recorded {package.recorded_arena_bytes:,})  diff {rows[-1]['max_diff_steps']}",
                    flush=True,
                )
    render.write_result(
        "micro",
        {
            "benchmark": "micro",
            "eval": str(EVAL.relative_to(ROOT)),
            "machine": machine_info(threads=1),
            "versions": library_versions(),
            "rows": rows,
        },
    )
    render.render_all()


if __name__ == "__main__":
    app.run(main)
