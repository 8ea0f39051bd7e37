"""Does the one-shot scan price clustering as fine-tuning does? dscnn's layers clustered alone, then fine-tuned.

`auto --train` orders its per-layer moves by the sensitivity scan's one-shot drops
(tfcompress/transforms/layer_scan.py). Issue #21's notes found that a chain priced that way
clusters early and keeps less of the fine-tuning's gain than the hand-picked row. Here each
scanned layer is clustered alone to each of the scan's counts through `tfcompress cluster`,
fine-tuned as auto's settle step does (1 epoch, batch 128, lr 1e-4, full Fashion-MNIST), and
measured on the 10k test set against the same fine-tuning with nothing clustered (`tfcompress
prune` to 0%, with seeds for its noise). The one-shot drops are the scan stored by
`benchmarks/shrink.py` (`results/shrink/MODEL.auto.json`, 2,000 test images).

    python benchmarks/scan_prices.py            # dscnn, about 25 min on 2 cores
"""

import json
import subprocess
import tempfile
from pathlib import Path

from absl import app, flags

import render

ROOT = Path(__file__).resolve().parents[1]
_DATA_DIR = flags.DEFINE_string(
    "data_dir", "/usr/share/datasets/fashion-mnist", "Fashion-MNIST IDX folder (apt-get install dataset-fashion-mnist)."
)
_MODEL = flags.DEFINE_string("model", "dscnn", "Bundled sample model whose shrink scan is stored.")

CONTROL_SEEDS = (0, 1, 2)
SETTLE = ("--epochs", "1", "--batch_size", "128", "--learning_rate", "1e-4")


def main(argv):
    del argv
    name = _MODEL.value
    scans = json.loads((render.RESULTS / "shrink" / f"{name}.auto.json").read_text())["search"]["scans"]
    with tempfile.TemporaryDirectory() as folder:
        control = ["--target_sparsity", "0"]
        controls = [_accuracy("prune", [*control, "--seed", str(seed)], Path(folder)) for seed in CONTROL_SEEDS]
        rows = [
            {
                "layer": scan["name"],
                "clusters": int(count),
                "one_shot_drop": one_shot,
                "accuracy": _accuracy("cluster", ["--layers", f"^{scan['name']}$", "--clusters", count], Path(folder)),
            }
            for scan in scans
            for count, one_shot in scan["cluster_drop"].items()
        ]
    render.write_result("scan_prices", {"benchmark": "scan_prices", "model": name, "controls": controls, "rows": rows})
    render.render_all()


def _accuracy(step: str, options: list, folder: Path) -> float:
    """The test-set accuracy after one `tfcompress STEP` fine-tune of the sample model."""
    data = _DATA_DIR.value
    command = ["tfcompress", step, str(ROOT / f"sample_models/{_MODEL.value}.h5"), *options, *SETTLE]
    command += ["--train", f"{data}@train", "--val", f"{data}@test", "-o", str(folder / "out.h5")]
    subprocess.run([*command, "--report", str(folder / "report.json")], check=True)
    return json.loads((folder / "report.json").read_text())["accuracy_check"]["after"]


if __name__ == "__main__":
    app.run(main)
