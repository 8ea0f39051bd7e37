"""The training steps on the architectures users bring (tfcompress/testing/field_zoo.py), through the CLI.

Each architecture, with seeded random weights (its BatchNorm statistics settled on its inputs), is
saved by Keras 2 (.h5) and run through `tfcompress prune`, `cluster`, `qat`, `lowrank` and `distill`
(the model as the teacher of a half-width student) as a user runs them, each in its own process,
for one epoch on 512 inputs of its own kind without labels (so every architecture, classifier or
not, one output or several, trains the same way), with 128 held-out inputs as `--val`. A step
passes with its guard's check, or is refused with the one-line message a user would see (exit 2);
anything else (a traceback, a killed process, no answer within the time limit) counts as a bug.
`--steps` runs some steps and keeps the stored rows' others. Writes results/training_coverage.json.

    python benchmarks/training_coverage.py --rows_dir ROWS   # resumable; 2 cores: about 40 min for the 32
    # small architectures, 2 to 14 min for each Keras application (ResNet50: 14 min). On a loaded machine
    # NASNetMobile's and VGG16's steps passed the 900 s --time_limit; the stored rows of the last six
    # applications were measured with --time_limit 3600 (each step 30 to 180 s there)
    python benchmarks/training_coverage.py --rows_dir ROWS --steps lowrank,distill   # two steps into the rows: ~25 min
"""

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from absl import app, flags

from tfcompress.report import library_versions, machine_info
from tfcompress.testing.field_zoo import (
    FIELD_MODELS,
    build_field_model,
    sample_arrays,
    sample_inputs,
    settle_batch_norm,
)

import render

_MODELS = flags.DEFINE_list("models", list(FIELD_MODELS), "Architectures to run (names in field_zoo.FIELD_MODELS).")
_ROWS_DIR = flags.DEFINE_string(
    "rows_dir", None, "Keep each architecture's row here; a finished row found there is reused (resumes a run)."
)
_TIME_LIMIT = flags.DEFINE_integer("time_limit", 900, "Seconds a step may take before it counts as hung.")

TRAINING_SAMPLES, HELD_OUT = 512, 128
STEPS = {
    "prune": ("--target_sparsity=0.5", "--epochs=1"),
    "cluster": ("--clusters=16", "--epochs=1"),
    "qat": ("--epochs=1",),
    "lowrank": ("--rank_ratio=0.5", "--epochs=1"),
    "distill": ("--width_multiplier=0.5", "--epochs=1"),
}
_STEPS = flags.DEFINE_list("steps", list(STEPS), "Steps to run; the stored rows keep their results of the others.")
MODEL_FLAG = {"distill": "--teacher"}  # the others take the model first


def main(argv):
    del argv
    import tf_keras

    stored = render.stored_result("training_coverage", {"rows": []})
    stored_rows = {row["name"]: row for row in stored["rows"]}
    rows = []
    with tempfile.TemporaryDirectory(prefix="tfcompress-training-coverage-") as work:
        rows_dir = Path(_ROWS_DIR.value or work)
        rows_dir.mkdir(parents=True, exist_ok=True)
        for index, name in enumerate(_MODELS.value):
            print(f"[{index + 1}/{len(_MODELS.value)}] {name}", flush=True)
            row_path = rows_dir / f"{list(FIELD_MODELS).index(name)}.json"
            if not row_path.exists():
                row = _architecture_row(name, tf_keras, Path(work) / str(index), _STEPS.value)
                row_path.write_text(json.dumps({**stored_rows.get(name, {}), **row}))
            rows.append(json.loads(row_path.read_text()))
            print(rows[-1], flush=True)
    kept = [row for row in stored["rows"] if row["name"] not in {row["name"] for row in rows}]
    order = list(FIELD_MODELS)
    rows = sorted(kept + rows, key=lambda row: order.index(row["name"]) if row["name"] in order else len(order))
    render.write_result(
        "training_coverage",
        {
            "rows": rows,
            "not_run": [name for name in order if name not in {row["name"] for row in rows}],
            "steps": {command: " ".join(settings) for command, settings in STEPS.items()},
            "training_samples": TRAINING_SAMPLES,
            "held_out": HELD_OUT,
            "machine": machine_info(1),
            "versions": library_versions(),
        },
    )
    render.render_all()


def _architecture_row(name: str, keras, folder: Path, steps: list) -> dict:
    folder.mkdir(parents=True)
    model = build_field_model(name, keras)
    settle_batch_norm(model, sample_inputs(name, model, 64, seed=3))
    path = folder / "model.h5"
    model.save(path)
    train, held_out = folder / "train.npz", folder / "val.npz"
    np.savez(train, **sample_arrays(name, model, TRAINING_SAMPLES, seed=1))
    np.savez(held_out, **sample_arrays(name, model, HELD_OUT, seed=2))
    row = {"name": name, "params": int(model.count_params()), "inputs": len(model.inputs)}
    row["outputs"] = len(model.outputs)
    for command in steps:
        data = {"--train": train, "--val": held_out}
        row[command] = _step(command, path, data, STEPS[command], folder)
    return row


def _step(command: str, model: Path, data: dict, settings: tuple, folder: Path) -> dict:
    """One CLI step in its own process: ok with the guard's check (lowrank: and how many layers it
    factored; none saves params in some models, and then nothing is fine-tuned or checked), refused with
    its one line, or a bug."""
    report = folder / f"{command}.json"
    arguments = [str(part) for pair in data.items() for part in pair]
    model_arguments = [MODEL_FLAG[command], str(model)] if command in MODEL_FLAG else [str(model)]
    started = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tfcompress", command, *model_arguments, *arguments, *settings]
            + ["-o", str(folder / f"{command}.h5"), "--report", str(report), "--quiet"],
            capture_output=True,
            text=True,
            timeout=_TIME_LIMIT.value,
        )
    except subprocess.TimeoutExpired:
        return {"status": "bug", "message": f"no answer within {_TIME_LIMIT.value} s"}
    seconds = round(time.perf_counter() - started, 1)
    last_line = (done.stderr.strip().splitlines() or ["no output"])[-1]
    if done.returncode == 0:
        written = json.loads(report.read_text())
        row = {"status": "ok", "seconds": seconds, "check": written["output_check"]}
        if command == "lowrank":
            row["factored"] = len(written["layers"])  # none: nothing was fine-tuned, so nothing checked
        return row
    if done.returncode == 2 and "Traceback" not in done.stderr:
        return {"status": "refused", "seconds": seconds, "message": last_line}
    return {"status": "bug", "seconds": seconds, "message": f"exit {done.returncode}: {last_line}"}


if __name__ == "__main__":
    app.run(main)
