"""`tfcompress run`: a recipe's steps on a real model, judged against its budgets."""

import json

import numpy as np
import pytest

from tfcompress.data import load_data
from tfcompress.errors import DataError
from tfcompress.pipeline import run as run_job
from tfcompress.runtime import metrics
from tfcompress.runtime.inspect import constant_tensors
from tfcompress.runtime.interpreter import predict

from conftest import CALIBRATION, CONTRACT_KEYS, EVAL, SAMPLE_MODELS

MODEL = SAMPLE_MODELS / "lenet_300_100.h5"


def test_builtin_mobile_int8_meets_its_budget_and_matches_keras(run_cli, tmp_path, tf_keras):
    code, out, err = run_cli("run", "mobile_int8", "--model", MODEL, "-o", tmp_path)
    assert code == 0, err
    assert "PASSED" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert CONTRACT_KEYS <= set(report)
    assert report["output"] == "model.tflite" and report["passed"] is True
    assert report["budgets"] == [
        {"name": "max_accuracy_drop", "limit": 1.0, "value": report["accuracy_drop"], "passed": True}
    ]
    # Data came from sample_models/tfcompress-data.yaml; the numbers are the model's real ones.
    evaluation = load_data(EVAL)
    keras_outputs = tf_keras.models.load_model(MODEL, compile=False).predict(evaluation.x, verbose=0)
    tflite_outputs = predict((tmp_path / "model.tflite").read_bytes(), evaluation.x)
    assert report["reference"]["accuracy"] == pytest.approx(metrics.accuracy(keras_outputs, evaluation.y))
    assert report["accuracy"] == pytest.approx(metrics.accuracy(tflite_outputs, evaluation.y))
    assert metrics.fidelity(tflite_outputs, keras_outputs).top1_agreement >= 0.98
    assert report["size_bytes"] < MODEL.stat().st_size / 3


def test_a_chain_is_deterministic_and_its_drop_is_against_the_original(tmp_path, tf_keras):
    recipe = tmp_path / "chain.yaml"
    recipe.write_text(
        "steps:\n  - prune: {target_sparsity: 0.5, epochs: 1, batch_size: 64}\n"
        "  - convert: {precision: int8, per_tensor_dense: true}\n"
        "budgets: {max_accuracy_drop: 5, max_size_bytes: 400000, max_latency_us: 1000000}\n"
    )
    first = run_job.run_recipe(
        recipe, MODEL, tmp_path / "a", train=CALIBRATION, calibration=CALIBRATION, eval_data=EVAL
    )
    second = run_job.run_recipe(
        recipe, MODEL, tmp_path / "b", train=CALIBRATION, calibration=CALIBRATION, eval_data=EVAL
    )
    assert (tmp_path / "a" / "model.tflite").read_bytes() == (tmp_path / "b" / "model.tflite").read_bytes()
    assert [step["output"] for step in first.steps] == ["01-prune.h5", "model.tflite"]
    assert first.steps[1]["report"]["model"] == "01-prune.h5"  # paths inside the folder are relative
    evaluation = load_data(EVAL)
    original = tf_keras.models.load_model(MODEL, compile=False)
    original_accuracy = metrics.accuracy(original.predict(evaluation.x, verbose=0), evaluation.y)
    assert first.result["reference"]["accuracy"] == pytest.approx(original_accuracy)
    assert first.result["accuracy_drop"] == pytest.approx((original_accuracy - first.result["accuracy"]) * 100)
    assert first.passed and second.passed
    # The pruned kernels reached the .tflite: about half of the big Dense weights are zero.
    kernel = max(
        (array for _, _, array in constant_tensors((tmp_path / "a" / "model.tflite").read_bytes())), key=np.size
    )
    assert 0.45 <= float(np.mean(kernel == 0)) <= 0.6


def test_a_broken_budget_exits_1_and_says_which(run_cli, tmp_path):
    recipe = tmp_path / "tight.yaml"
    recipe.write_text("steps:\n  - convert: {precision: float16}\nbudgets:\n  max_size_bytes: 1000\n")
    code, out, err = run_cli("run", recipe, "--model", MODEL, "-o", tmp_path / "out")
    assert code == 1, err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert f"budget max_size_bytes ≤ 1,000: {report['size_bytes']:,} → FAILED" in out
    assert report["passed"] is False and report["budgets"][0]["value"] == report["size_bytes"]
    assert (tmp_path / "out" / "model.tflite").stat().st_size == report["size_bytes"]


def test_a_steps_warnings_are_in_the_run_report_once(run_cli, tmp_path):
    """Clustering without preserve_sparsity undoes the pruning before it: `run` says so, naming the step."""
    recipe = tmp_path / "regrow.yaml"
    recipe.write_text(
        "steps:\n  - prune: {target_sparsity: 0.8, epochs: 1}\n  - cluster: {clusters: 8, epochs: 1}\n"
        "  - convert: {precision: int8, per_tensor_dense: true}\nbudgets: {max_accuracy_drop: 100}\n"
    )
    code, out, err = run_cli("run", recipe, "--model", MODEL, "-o", tmp_path / "out")
    assert code == 0, err
    assert out.count("WARNING: cluster: cluster let the pruned zeros grow back in dense (80% → 0%)") == 1
    assert "grow back" not in err
    steps = json.loads((tmp_path / "out" / "report.json").read_text())["steps"]
    assert [bool(step["report"].get("warnings")) for step in steps] == [False, True, False]


def test_missing_data_fails_before_any_step_trains(tmp_path, monkeypatch):
    from tfcompress.jobs import prune as prune_job

    monkeypatch.setattr(prune_job, "prune", lambda *a, **k: pytest.fail("prune ran"))
    isolated = tmp_path / "models"
    isolated.mkdir()
    (isolated / "m.h5").write_bytes(MODEL.read_bytes())
    with pytest.raises(DataError, match=r"step 1 \(prune, line 10\) trains, so it needs training data: pass --train"):
        run_job.run_recipe(
            "deep_compression", isolated / "m.h5", tmp_path / "out", calibration=CALIBRATION, eval_data=EVAL
        )
    with pytest.raises(DataError, match="max_accuracy_drop needs labelled eval data"):
        run_job.run_recipe("mobile_int8", isolated / "m.h5", tmp_path / "out", calibration=CALIBRATION)


def test_run_errors_are_one_line(run_cli, tmp_path):
    code, out, err = run_cli("run", "mobile_int4", "--model", MODEL, "-o", tmp_path)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "no built-in recipe of that name" in err
    code, out, err = run_cli("run", "mobile_int8", "-o", tmp_path)
    assert code == 2 and "run needs --model MODEL and -o DIR" in err


def test_deep_compression_mcu_shrinks_flash_with_lut(tmp_path):
    report = run_job.run_recipe(
        "deep_compression_mcu", MODEL, tmp_path, train=CALIBRATION, calibration=CALIBRATION, eval_data=EVAL
    )
    assert [step["step"] for step in report.steps] == ["prune", "cluster", "micro"]
    micro = report.steps[2]["report"]
    compressed = [tensor for tensor in micro["lut"]["tensors"] if tensor["bits"] is not None]
    assert len(compressed) == 3 and all(tensor["bits"] <= 4 for tensor in compressed)  # 16 clusters: 4 bits
    flash = (tmp_path / "micro" / "model.tflite").stat().st_size
    assert report.result["size_bytes"] == flash and report.result["output"] == "micro/model.tflite"
    assert flash < 0.6 * micro["lut"]["bytes_before"]  # int8 → int8 + LUT
    assert report.result["arena_bytes"] == micro["arena_bytes"] > 0
    assert report.passed, report.budgets  # on the bundled model and data


def test_deep_compression_passes_its_budget_on_the_bundled_model_and_data(run_cli, tmp_path):
    """As the README's user runs it: the data comes from sample_models/tfcompress-data.yaml (1,000 images)."""
    code, _, err = run_cli("run", "deep_compression", "--model", MODEL, "-o", tmp_path / "out")
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["passed"] and report["budgets"][0]["value"] <= 2.0, report["budgets"]
    prune = report["steps"][0]["report"]
    assert all(layer["sparsity"] >= 0.59 for layer in prune["layers"].values())
    assert prune["accuracy_check"]["warning"] is None, prune["accuracy_check"]


def test_a_distill_step_reads_unlabelled_data_and_augments(run_cli, tmp_path):
    calibration = np.load(CALIBRATION)
    np.savez(tmp_path / "labelled.npz", x=calibration["x"][:300], y=calibration["y"][:300])
    np.save(tmp_path / "unlabeled.npy", calibration["x"][300:])
    recipe = tmp_path / "student.yaml"
    recipe.write_text(
        "steps:\n  - distill: {width_multiplier: 0.5, epochs: 1, batch_size: 100, augment: [shift, mixup]}\n"
        "  - convert: {precision: float16}\n"
    )
    code, _, err = run_cli(
        "run",
        recipe,
        "--model",
        MODEL,
        "--train",
        tmp_path / "labelled.npz",
        "--unlabeled",
        tmp_path / "unlabeled.npy",
        "--eval",
        EVAL,
        "-o",
        tmp_path / "out",
    )
    assert code == 0, err
    distilled = json.loads((tmp_path / "out" / "report.json").read_text())["steps"][0]["report"]
    assert distilled["samples"] == {"labelled": 300, "unlabeled": 700}
    assert distilled["options"]["augment"] == ["shift", "mixup"]


def test_mcu_int8_passes_its_budget_on_the_bundled_model_and_data(run_cli, tmp_path):
    code, _, err = run_cli("run", "mcu_int8", "--model", SAMPLE_MODELS / "lenet5.h5", "-o", tmp_path / "out")
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["passed"] and report["steps"][0]["report"]["micro"]["verification"]["passed"], report["budgets"]
