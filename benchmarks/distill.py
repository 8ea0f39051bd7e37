"""Smaller networks on the full Fashion-MNIST train/test sets: knowledge distillation and low-rank factorization.

(a) Distillation, per teacher architecture (lenet5, resnet8), in one run with the same
    epochs, batch size, cosine learning-rate decay and seed: the teacher trained on
    labels; a student at width 0.5 trained with KD (T 4, alpha 0.9); the same student
    trained on labels only (alpha 0, the same code path); then the KD student as int8.
(b) Low-rank: the bundled LeNet-300-100 factored at two energy levels, accuracy before
    and after fine-tuning, with the unfactored model fine-tuned as long as a control.
(c) Part "sweep": KD settings (temperature, alpha) for the lenet5 student, each against the
    same run's teacher and labels-only student.
(d) Part "long": (a) for lenet5 with every model trained 40 epochs, to see whether KD only
    needs a longer schedule.
(e) Part "few_labels": a lenet5 teacher trained on all 60,000 labels stands for a model trained
    where labels were plentiful; the student's team has 6,000 labelled and 54,000 unlabelled
    images. The KD student (`distill --unlabeled`, through the CLI) against the same student on
    the 6,000 labels alone (the same epochs, and as many steps as the KD student), and on the
    6,000 labels plus the teacher's hard labels for the rest (pseudo-labels).
(f) Part "function_matching": all labels, `--augment shift,flip,mixup`, a long schedule: the KD
    student (through the CLI) against the labels-only student with the same augmentation, epochs
    and seed.
(g) Part "no_labels": no labels at all: the KD student of (e) trained on all 60,000 training images
    without their labels (`distill --train` of images alone: the teacher's outputs supervise them all),
    through the CLI, for as many epochs as (e).
Parts "few_labels_sweep" and "function_matching_sweep" train the KD student of (e) or (f) at other
temperatures and alphas (`--kd_settings`); their teacher is the same (training is deterministic,
and its accuracy is recorded to show it).
The students of (e) and (f) decay the learning rate along a cosine per step
(`--learning_rate_schedule cosine`), so the CLI runs exactly what the API runs; one labels-only
student is trained both ways to show it. Their teacher is trained as in (a).
Writes results/distill.json (replacing only the parts run), results/distill.png and the tables
in benchmarks/README.md.
"""

import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from absl import app, flags

import tfcompress
from tfcompress import _keras
from tfcompress.data import load_raw
from tfcompress.options import TrainOptions
from tfcompress.plots import require_matplotlib
from tfcompress.report import library_versions, machine_info
from tfcompress.testing import zoo
from tfcompress.transforms.training import fine_tune, fit_targets, keras_accuracy, output_tasks

import render

ROOT = Path(__file__).resolve().parents[1]
_DATA_DIR = flags.DEFINE_string(
    "data_dir", "/usr/share/datasets/fashion-mnist", "Fashion-MNIST IDX folder (apt-get install dataset-fashion-mnist)."
)
_TEACHERS = flags.DEFINE_list("teachers", ["lenet5", "resnet8"], "Teacher architectures (tfcompress.testing.zoo).")
_TRAIN_SAMPLES = flags.DEFINE_integer("train_samples", None, "Use only this many training images (a smoke run).")
_PARTS = flags.DEFINE_list(
    "parts",
    ["main"],
    "main: (a) and (b); sweep: (c); long: (d); few_labels: (e); function_matching: (f); no_labels: (g); "
    "few_labels_sweep, "
    "function_matching_sweep: the KD student of (e) or (f) at the --kd_settings, against the same teacher.",
)
_KD_SETTINGS = flags.DEFINE_list("kd_settings", ["2:0.9"], "TEMPERATURE:ALPHA pairs the sweep parts try.")
_FEW_EPOCHS = flags.DEFINE_integer("few_labels_epochs", 30, "Epochs of every student in part (e).")
_MATCHING_EPOCHS = flags.DEFINE_integer("matching_epochs", 40, "Epochs of both students in part (f).")

EPOCHS = {"lenet5": 15, "resnet8": 10}
BATCH, LEARNING_RATE, SEED, WIDTH = 128, 1e-3, 0, 0.5
KD = tfcompress.DistillOptions(temperature=4.0, alpha=0.9)
LABELS_ONLY = tfcompress.DistillOptions(temperature=4.0, alpha=0.0)
LOWRANK_ENERGIES, LOWRANK_EPOCHS, LOWRANK_LR = (0.7, 0.8), 3, 1e-4
SWEEP_TEACHER, SWEEP_SETTINGS = "lenet5", ((2.0, 0.5), (4.0, 0.5), (2.0, 0.9))
LONG_TEACHER, LONG_EPOCHS = "lenet5", 40
FEW_LABELS, FEW_TEACHER = 6000, "lenet5"
AUGMENT = ("shift", "flip", "mixup")
UNLABELLED_PARTS = ("few_labels", "function_matching", "no_labels", "few_labels_sweep", "function_matching_sweep")


def main(argv):
    del argv
    train = tfcompress.load_data(f"{_DATA_DIR.value}@train").take(_TRAIN_SAMPLES.value)
    test = tfcompress.load_data(f"{_DATA_DIR.value}@test")
    calibration = tfcompress.load_data(ROOT / "sample_models/data/fashion_mnist_calib.npz")
    result = render.stored_result("distill", {})
    if "main" in _PARTS.value:
        result.update(
            {
                "distillation": [
                    row
                    for name in _TEACHERS.value
                    for row in distillation(name, EPOCHS[name], train, test, calibration)
                ],
                "lowrank": lowrank(train, test),
            }
        )
    if "sweep" in _PARTS.value:
        result["sweep"] = sweep(train, test)
    if "long" in _PARTS.value:
        result["long"] = teacher_and_students(LONG_TEACHER, LONG_EPOCHS, train, test)[1]
    if set(UNLABELLED_PARTS) & set(_PARTS.value):
        with tempfile.TemporaryDirectory(prefix="distill-benchmark-") as work:
            result.update(unlabelled_parts(Path(work), train, test))
    result.update(
        {
            "benchmark": "distill",
            "train_samples": len(train),
            "test_samples": len(test),
            "batch_size": BATCH,
            "width_multiplier": WIDTH,
            "temperature": KD.temperature,
            "alpha": KD.alpha,
            "machine": machine_info(threads=1),
            "versions": library_versions(),
        }
    )
    render.write_result("distill", result)
    plot(result, render.RESULTS / "distill.png")
    render.render_all()


def distillation(name, epochs, train, test, calibration) -> list:
    (teacher, student), (teacher_row, kd_row, labels_row) = teacher_and_students(name, epochs, train, test)
    int8 = tfcompress.convert(student, precision="int8", calibration=calibration, eval_data=test, latency_runs=0)
    float32 = tfcompress.convert(teacher, precision="float32", latency_runs=0)
    int8_row = {
        **kd_row,
        "model": "student, KD, int8",
        "accuracy": int8.accuracy,
        "size_bytes": int8.size_bytes,
        "drop_vs_teacher_pt": round((teacher_row["accuracy"] - int8.accuracy) * 100, 2),
    }
    teacher_row["size_bytes"] = float32.size_bytes
    return [teacher_row, kd_row, labels_row, int8_row]


def teacher_and_students(name, epochs, train, test) -> tuple:
    """((teacher, KD student), [teacher row, KD student row, labels-only student row])."""
    trained = _trainer(name, epochs, train, test)
    teacher, teacher_row = _trained_teacher(name, trained)
    student, kd_row = trained("student, KD", teacher, KD, width_multiplier=WIDTH)
    _, labels_row = trained("student, labels only", teacher, LABELS_ONLY, width_multiplier=WIDTH)
    for row in (teacher_row, kd_row, labels_row):
        row["params_ratio"] = row["params"] / teacher_row["params"]
        row["drop_vs_teacher_pt"] = round((teacher_row["accuracy"] - row["accuracy"]) * 100, 2)
    return (teacher, student), [teacher_row, kd_row, labels_row]


def sweep(train, test) -> list:
    """KD students at other (temperature, alpha), against this run's teacher and labels-only student."""
    epochs = EPOCHS[SWEEP_TEACHER]
    trained = _trainer(SWEEP_TEACHER, epochs, train, test)
    teacher, teacher_row = _trained_teacher(SWEEP_TEACHER, trained)
    rows = [teacher_row, trained("student, labels only", teacher, LABELS_ONLY, width_multiplier=WIDTH)[1]]
    for temperature, alpha in SWEEP_SETTINGS:
        options = tfcompress.DistillOptions(temperature=temperature, alpha=alpha)
        _, row = trained(f"student, KD T {temperature:g} alpha {alpha:g}", teacher, options, width_multiplier=WIDTH)
        rows.append({**row, "temperature": temperature, "alpha": alpha})
    for row in rows:
        row["drop_vs_teacher_pt"] = round((teacher_row["accuracy"] - row["accuracy"]) * 100, 2)
    return rows


def _trainer(name, epochs, train, test, *, per_step_cosine=False):
    """Trains one model through `tfcompress.distill` with this benchmark's settings; (model, row).

    The learning rate decays along a cosine: per epoch by a callback (parts a-d), or per step by
    the option the CLI has too (parts e, f)."""

    def trained(role, teacher, options, **student):
        started = time.perf_counter()
        report = tfcompress.distill(
            teacher,
            train,
            val=test,
            options=options,
            epochs=epochs,
            batch_size=BATCH,
            learning_rate=LEARNING_RATE,
            seed=SEED,
            learning_rate_schedule="cosine" if per_step_cosine else "constant",
            callbacks=[] if per_step_cosine else [_cosine_decay(epochs)],
            verbose=2,
            **student,
        )
        row = {
            "teacher": name,
            "model": role,
            "epochs": epochs,
            "params": report.params["student"],
            "accuracy": report.accuracy["student"],
            "seconds": round(time.perf_counter() - started, 1),
        }
        print(f"{name} {role}: {row['params']:,} params, {row['accuracy'] * 100:.2f}%", flush=True)
        return report.keras_model, row

    return trained


def _trained_teacher(name, trained):
    """The architecture trained from scratch by the same code on labels only (alpha 0 ignores the
    "teacher" it is given)."""
    keras = _keras.tf_keras()
    keras.utils.set_random_seed(SEED)
    fresh = zoo.build(name, keras)
    return trained("teacher", fresh, LABELS_ONLY, student=fresh)


def _cosine_decay(epochs):
    keras = _keras.tf_keras()
    return keras.callbacks.LearningRateScheduler(
        lambda epoch: LEARNING_RATE * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
    )


def unlabelled_parts(work: Path, train, test) -> dict:
    """Parts (e) and (f): one teacher, trained on every label, shared by both."""
    teacher, teacher_row = _trained_teacher(FEW_TEACHER, _trainer(FEW_TEACHER, EPOCHS[FEW_TEACHER], train, test))
    teacher_path = work / "teacher.h5"
    teacher.save(teacher_path)
    files = _data_files(work, teacher)
    parts = {}
    if "few_labels" in _PARTS.value:
        parts["few_labels"] = few_labels(work, teacher, teacher_path, teacher_row, files, test)
    if "function_matching" in _PARTS.value:
        parts["function_matching"] = function_matching(work, teacher, teacher_path, teacher_row, files, train, test)
    if "no_labels" in _PARTS.value:
        parts["no_labels"] = no_labels(work, teacher_path, teacher_row, files)
    if "few_labels_sweep" in _PARTS.value:
        data = {"train": "labelled", "unlabeled": files["unlabeled"]}
        parts["few_labels_sweep"] = kd_sweep(work, teacher_path, teacher_row, files, _FEW_EPOCHS.value, (), data)
    if "function_matching_sweep" in _PARTS.value:
        data = {"train": "all"}
        parts["function_matching_sweep"] = kd_sweep(
            work, teacher_path, teacher_row, files, _MATCHING_EPOCHS.value, AUGMENT, data
        )
    return parts


def kd_sweep(work, teacher_path, teacher_row, files, epochs, augment, data) -> list:
    """The KD student at each of --kd_settings, through the CLI, after the teacher's row."""
    rows = [teacher_row]
    for setting in _KD_SETTINGS.value:
        temperature, alpha = map(float, setting.split(":"))
        options = tfcompress.DistillOptions(temperature=temperature, alpha=alpha, augment=augment)
        role = f"student, KD T {temperature:g} alpha {alpha:g}"
        rows.append(_cli_student(work, role, teacher_path, files, epochs, options, **data))
    labelled, unlabeled = _split_sizes(files)
    described = f"{labelled:,} labelled + {unlabeled:,} unlabelled" if "unlabeled" in data else "all labels"
    return _compared(rows, teacher_row, {**{row["model"]: described for row in rows}, "teacher": "all labels"})


def _split_sizes(files) -> tuple:
    """(labelled, unlabelled) sample counts of the few-labels split."""
    return tuple(len(np.load(files[name])["x"]) for name in ("labelled", "unlabeled"))


def _data_files(work: Path, teacher) -> dict:
    """The splits as files the CLI reads: the first 6,000 training images labelled, the rest not, the
    same 6,000 with the teacher's hard labels for the rest (the pseudo-label baseline), and every image
    without its label."""
    x, y = load_raw(f"{_DATA_DIR.value}@train")
    count = _TRAIN_SAMPLES.value or len(x)
    x, y = x[:count], y[:count]
    labelled = min(FEW_LABELS, count // 10)
    pseudo = teacher.predict(x[labelled:].astype(np.float32) / 255, batch_size=256, verbose=0).argmax(axis=1)
    files = {name: work / f"{name}.npz" for name in ("all", "labelled", "unlabeled", "pseudo", "images")}
    np.savez(files["all"], x=x, y=y)
    np.savez(files["images"], x=x)
    np.savez(files["labelled"], x=x[:labelled], y=y[:labelled])
    np.savez(files["unlabeled"], x=x[labelled:])
    np.savez(files["pseudo"], x=x, y=np.concatenate([y[:labelled], pseudo]))
    return {**files, "test": f"{_DATA_DIR.value}@test"}


def few_labels(work, teacher, teacher_path, teacher_row, files, test) -> list:
    epochs = _FEW_EPOCHS.value
    labelled, unlabeled = _split_sizes(files)
    same_steps = epochs * (labelled + unlabeled) // labelled

    def student(role, data, student_epochs=epochs):
        trained = _trainer(FEW_TEACHER, student_epochs, files[data], test, per_step_cosine=True)
        return trained(role, teacher, LABELS_ONLY, width_multiplier=WIDTH)[1]

    rows = [
        teacher_row,
        _cli_student(work, "student, KD", teacher_path, files, epochs, KD, unlabeled=files["unlabeled"]),
        student("student, labels only", "labelled"),
        _cli_student(work, "student, labels only (CLI)", teacher_path, files, epochs, LABELS_ONLY),
        student("student, labels only, as many steps as KD", "labelled", same_steps),
        student("student, labels + teacher's hard labels", "pseudo"),
    ]
    data = {
        "teacher": "all labels",
        "student, KD": f"{labelled:,} labelled + {unlabeled:,} unlabelled",
        "student, labels + teacher's hard labels": f"{labelled:,} labelled + {unlabeled:,} pseudo-labelled",
    }
    return _compared(
        rows, teacher_row, {row["model"]: data.get(row["model"], f"{labelled:,} labelled") for row in rows}
    )


def no_labels(work, teacher_path, teacher_row, files) -> list:
    images = len(np.load(files["images"])["x"])
    student = _cli_student(work, "student, KD, no labels", teacher_path, files, _FEW_EPOCHS.value, KD, train="images")
    data = {"teacher": "all labels", student["model"]: f"{images:,} unlabelled, no labels"}
    return _compared([teacher_row, student], teacher_row, data)


def function_matching(work, teacher, teacher_path, teacher_row, files, train, test) -> list:
    epochs = _MATCHING_EPOCHS.value
    matching = tfcompress.DistillOptions(temperature=KD.temperature, alpha=KD.alpha, augment=AUGMENT)
    labels_only = tfcompress.DistillOptions(temperature=KD.temperature, alpha=0.0, augment=AUGMENT)
    rows = [
        teacher_row,
        _cli_student(work, "student, KD, function matching", teacher_path, files, epochs, matching, train="all"),
        _trainer(FEW_TEACHER, epochs, files["all"], test, per_step_cosine=True)(
            "student, labels only, same augmentation", teacher, labels_only, width_multiplier=WIDTH
        )[1],
    ]
    return _compared(rows, teacher_row, {row["model"]: "all labels" for row in rows})


def _compared(rows, teacher_row, data: dict) -> list:
    """The rows with their training data and their distance from the teacher."""
    return [
        {
            **row,
            "data": data[row["model"]],
            "drop_vs_teacher_pt": round((teacher_row["accuracy"] - row["accuracy"]) * 100, 2),
        }
        for row in rows
    ]


def _cli_student(work, role, teacher_path, files, epochs, options, *, train="labelled", unlabeled=None) -> dict:
    """A width-0.5 student trained by `tfcompress distill` exactly as a user types it."""
    slug = "".join(c if c.isalnum() else "-" for c in role)
    report_path = work / f"{slug}.json"
    command = [
        sys.executable,
        "-m",
        "tfcompress",
        "distill",
        f"--teacher={teacher_path}",
        f"--width_multiplier={WIDTH}",
        f"--train={files[train]}",
        f"--val={files['test']}",
        f"--temperature={options.temperature}",
        f"--alpha={options.alpha}",
        f"--epochs={epochs}",
        f"--batch_size={BATCH}",
        f"--learning_rate={LEARNING_RATE}",
        "--learning_rate_schedule=cosine",
        f"--seed={SEED}",
        f"--report={report_path}",
        f"-o={work / f'{slug}.h5'}",
    ]
    command += [f"--unlabeled={unlabeled}"] if unlabeled else []
    command += [f"--augment={','.join(options.augment)}"] if options.augment else []
    started = time.perf_counter()
    subprocess.run(command, check=True)
    report = json.loads(report_path.read_text())
    row = {
        "teacher": FEW_TEACHER,
        "model": role,
        "epochs": epochs,
        "params": report["params"]["student"],
        "accuracy": report["accuracy"]["student"],
        "samples": report["samples"],
        "seconds": round(time.perf_counter() - started, 1),
        "command": "tfcompress "
        + " ".join(part for part in command[3:] if not part.startswith(("--report", "-o"))).replace(f"{work}/", ""),
    }
    print(f"{role}, through the CLI: {row['accuracy'] * 100:.2f}%", flush=True)
    return row


def lowrank(train, test) -> list:
    path = ROOT / "sample_models/lenet_300_100.h5"
    rows = []
    for energy in LOWRANK_ENERGIES:
        started = time.perf_counter()
        report = tfcompress.lowrank(
            path,
            options=tfcompress.LowRankOptions(energy=energy),
            train=train,
            val=test,
            epochs=LOWRANK_EPOCHS,
            batch_size=BATCH,
            learning_rate=LOWRANK_LR,
            verbose=2,
        )
        rows.append(
            {
                "model": "lenet_300_100",
                "energy": energy,
                "params": report.params,
                "params_ratio": report.params_ratio,
                "accuracy": report.accuracy,
                "ranks": {layer.layer: f"{layer.rank}/{layer.full_rank}" for layer in report.layers},
                "drop_pt": round((report.accuracy["original"] - report.accuracy["fine_tuned"]) * 100, 2),
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
        print(f"lowrank energy {energy}: {report.params_ratio:.2f}x params, {report.accuracy}", flush=True)
    control = tfcompress.load_model(path)
    fine_tune(
        control,
        train,
        fit_targets(control, train, None, output_tasks(control, labelled=True)),
        TrainOptions(epochs=LOWRANK_EPOCHS, batch_size=BATCH, learning_rate=LOWRANK_LR),
        verbose=2,
    )
    for row in rows:
        row["unfactored_fine_tuned_accuracy"] = keras_accuracy(control, test)
    return rows


def plot(result: dict, path: Path) -> None:
    pyplot = require_matplotlib()
    figure, axes = pyplot.subplots(figsize=(7, 4.5))
    for row in result["distillation"]:
        if row["model"].endswith("int8"):
            continue
        axes.scatter(row["params"], row["accuracy"] * 100, marker="o" if "KD" in row["model"] else "s")
        axes.annotate(f"{row['teacher']} {row['model']}", (row["params"], row["accuracy"] * 100), fontsize=7)
    for row in result["lowrank"]:
        for stage, params in (("original", row["params"]["original"]), ("fine_tuned", row["params"]["factored"])):
            if stage == "original" and row is not result["lowrank"][0]:
                continue
            axes.scatter(params, row["accuracy"][stage] * 100, marker="^")
            label = "lenet_300_100" if stage == "original" else f"low-rank, energy {row['energy']}"
            axes.annotate(label, (params, row["accuracy"][stage] * 100), fontsize=7)
    axes.set_xscale("log")
    axes.set_xlabel("parameters")
    axes.set_ylabel("test accuracy (%)")
    axes.set_title("Smaller networks: distillation and low-rank (full Fashion-MNIST test set)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    app.run(main)
