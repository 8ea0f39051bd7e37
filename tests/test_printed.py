"""What each command prints for a sample model, against a committed snapshot in tests/snapshots/.

Only what is deterministic is compared: latencies, step times and the paths of this run are
masked, and so are accuracies and errors, which float calibration on another CPU may move in the
last digit (their values are tested against bounds elsewhere); analyze's table keeps its ranking.
After a deliberate change of the printed text, rewrite the snapshots with
`TFCOMPRESS_UPDATE_SNAPSHOTS=1 python -m pytest tests/test_printed.py` and review the diff.
"""

import os
import re
from pathlib import Path

import pytest

from conftest import CALIBRATION, EVAL, ROOT, SAMPLE_MODELS

SNAPSHOTS = Path(__file__).parent / "snapshots"
LENET5 = SAMPLE_MODELS / "lenet5.h5"
_MASKS = (
    (re.compile(r"[\d,]+(\.\d+)? us\b"), "<us>"),
    (re.compile(r"\(\d+\.\d s\)"), "(<s>)"),
    (re.compile(r"\d+\.\d+%"), "<%>"),
    (re.compile(r"[-+]\d+\.\d+ pt"), "<pt>"),
    (re.compile(r"(max abs error +)\S+"), r"\1<error>"),
    (re.compile(r"\d+ (tied|quantized step)"), r"<n> \1"),
    (re.compile(r"kernels \d+"), "kernels <n>"),
    (re.compile(r"((?:TFLite Micro|optimized|reference|allowed) )\d[\d.e-]*"), r"\1<error>"),
)
_DECIMALS = re.compile(r"\b\d+\.\d+\b")

COMMANDS = {
    "convert_int8": ("convert", LENET5, "--calibration", CALIBRATION, "--eval", EVAL, "-o", "{tmp}/int8.tflite"),
    "convert_float16": ("convert", LENET5, "--precision", "float16", "-o", "{tmp}/float16.tflite"),
    "micro": ("micro", LENET5, "--calibration", CALIBRATION, "--eval", EVAL, "-o", "{tmp}/micro"),
    "check_micro": ("check", SAMPLE_MODELS / "resnet8.h5", "--target", "micro"),
    "inspect_keras": ("inspect", LENET5),
    "inspect_tflite": ("inspect", "{tmp}/float16.tflite"),
    "analyze": ("analyze", LENET5, "--calibration", CALIBRATION, "--samples", "20"),
    "lowrank": ("lowrank", LENET5, "--energy", "0.9", "--val", EVAL, "-o", "{tmp}/lowrank.h5"),
    "run": ("run", "mobile_float16", "--model", LENET5, "--eval", EVAL, "-o", "{tmp}/run"),
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("printed")


def _masked(name: str, text: str, folder: Path) -> str:
    text = text.replace(str(folder), "<tmp>").replace(str(ROOT), "<root>")
    for pattern, mask in _MASKS:
        text = pattern.sub(mask, text)
    return _DECIMALS.sub("<x>", text) if name == "analyze" else text


def _run(name, folder, run_cli):
    return run_cli(*[str(arg).replace("{tmp}", str(folder)) for arg in COMMANDS[name]], "--quiet")


@pytest.mark.parametrize("name", list(COMMANDS))
def test_printed_text_matches_its_snapshot(name, folder, run_cli):
    if name == "inspect_tflite" and not (folder / "float16.tflite").exists():  # another worker converted it
        assert _run("convert_float16", folder, run_cli)[0] == 0
    code, out, err = _run(name, folder, run_cli)
    assert code == 0, err
    printed = _masked(name, out, folder)
    snapshot = SNAPSHOTS / f"{name}.txt"
    if os.environ.get("TFCOMPRESS_UPDATE_SNAPSHOTS") or not snapshot.exists():
        snapshot.parent.mkdir(exist_ok=True)
        snapshot.write_text(printed)
        if not os.environ.get("TFCOMPRESS_UPDATE_SNAPSHOTS"):
            pytest.fail(f"no snapshot {snapshot.name} yet: written; review and commit it")
    assert printed == snapshot.read_text()
