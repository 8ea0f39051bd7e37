"""The bytes `tfcompress` writes, hashed: every sample model through `convert` at each
precision and through `micro`, run as the CLI a user types.

A refactoring that claims "no behaviour change" shows it here: run this before and after,
then compare the two files.

    python benchmarks/same_bytes.py --out /tmp/before.json          # on the old commit
    python benchmarks/same_bytes.py --out /tmp/after.json --compare /tmp/before.json --label "the #24 restructuring"

With --compare the outcome is also stored in results/same_bytes.json and rendered into
benchmarks/README.md.
"""

import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from absl import app, flags

import render

ROOT = Path(__file__).resolve().parents[1]
CALIBRATION = ROOT / "sample_models/data/fashion_mnist_calib.npz"
PRECISIONS = ("float32", "float16", "dynamic", "int8", "int16x8")
_OUT = flags.DEFINE_string("out", None, "Write the hashes here (JSON).", required=True)
_COMPARE = flags.DEFINE_string("compare", None, "Hashes from an earlier run: exit 1 if any differs.")
_LABEL = flags.DEFINE_string("label", None, "What changed between the two runs (for the rendered table).")
_MODELS = flags.DEFINE_list(
    "models", sorted(json.loads((ROOT / "sample_models/models.json").read_text())), "Sample models."
)


def _tfcompress(*args) -> None:
    subprocess.run(
        [sys.executable, "-m", "tfcompress", *map(str, args), "--quiet"], check=True, stdout=subprocess.DEVNULL
    )


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _hashes(folder: Path) -> dict:
    hashes = {}
    for name in _MODELS.value:
        model = ROOT / "sample_models" / name
        for precision in PRECISIONS:
            output = folder / f"{name}.{precision}.tflite"
            _tfcompress("convert", model, "--precision", precision, "--calibration", CALIBRATION, "-o", output)
            hashes[f"convert {name} {precision}"] = _digest(output)
        package = folder / f"{name}.micro"
        _tfcompress("micro", model, "--calibration", CALIBRATION, "-o", package)
        for path in sorted(package.iterdir()):
            if path.suffix in (".tflite", ".cc", ".h"):
                hashes[f"micro {name} {path.name}"] = _digest(path)
        print(f"{name}: done", file=sys.stderr)
    return hashes


def main(argv):
    del argv
    with tempfile.TemporaryDirectory() as folder:
        hashes = _hashes(Path(folder))
    Path(_OUT.value).write_text(json.dumps(hashes, indent=1, sort_keys=True) + "\n")
    print(f"{len(hashes)} files hashed → {_OUT.value}")
    if _COMPARE.value:
        before = json.loads(Path(_COMPARE.value).read_text())
        differing = sorted(key for key in before.keys() | hashes.keys() if before.get(key) != hashes.get(key))
        for key in differing:
            print(f"differs: {key}")
        total = len(before.keys() | hashes.keys())
        print(f"{total - len(differing)} of {total} identical")
        render.write_result(
            "same_bytes",
            {
                "label": _LABEL.value,
                "models": _MODELS.value,
                "precisions": PRECISIONS,
                "files": total,
                "identical": total - len(differing),
                "differing": differing,
            },
        )
        render.render_all()
        return 1 if differing else 0
    return 0


if __name__ == "__main__":
    app.run(main)
