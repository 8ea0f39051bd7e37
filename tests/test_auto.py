"""`tfcompress auto`: every candidate measured, the best one within the budget written with its recipe."""

import dataclasses
import json
import re

import numpy as np
import pytest
import yaml

from tfcompress.data import load_data
from tfcompress.held_warnings import HeldWarnings, holding
from tfcompress.jobs import auto as auto_job
from tfcompress.pipeline import run as run_job
from tfcompress.runtime import metrics
from tfcompress.runtime.interpreter import predict
from tfcompress.transforms.allocation import allocation_chain, uniform_front

from conftest import CALIBRATION, EVAL, SAMPLE_MODELS

MODEL = SAMPLE_MODELS / "lenet_300_100.h5"


def test_auto_writes_the_smallest_model_within_budget_and_a_recipe_that_remakes_it(tmp_path, tf_keras):
    report = auto_job.auto(
        MODEL,
        calibration=CALIBRATION,
        eval_data=EVAL,
        max_accuracy_drop=1.0,
        output=tmp_path / "best.tflite",
        report_path=tmp_path / "auto.json",
    )
    names = [candidate.name for candidate in report.candidates]
    assert names[0] == "int8" and "float16" in names and "int16x8" in names
    assert any(name.startswith("int8, float: ") for name in names) and any("percentile" in name for name in names)
    chosen = report.chosen
    within = [c for c in report.candidates if c.within_budget]
    assert chosen.gzip_bytes == min(c.gzip_bytes for c in within)  # what a download ships
    assert chosen.gzip_bytes < report.float32.gzip_bytes and chosen.size_bytes < report.float32.size_bytes
    # Measured again, independently: the written model is within the budget on the eval data.
    evaluation = load_data(EVAL)
    keras_accuracy = metrics.accuracy(
        tf_keras.models.load_model(MODEL, compile=False).predict(evaluation.x, verbose=0), evaluation.y
    )
    written = (tmp_path / "best.tflite").read_bytes()
    assert (keras_accuracy - metrics.accuracy(predict(written, evaluation.x), evaluation.y)) * 100 <= 1.0
    assert (tmp_path / "best.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "auto.json").read_text())["chosen"] == chosen.name
    assert any(c.pareto for c in report.candidates) and chosen.pareto
    assert auto_job.format_auto_report(report).endswith(f"plot {tmp_path / 'best.png'}")
    without_matplotlib = auto_job.format_auto_report(dataclasses.replace(report, plot=None))
    assert without_matplotlib.endswith("plot not drawn (no matplotlib: pip install 'tfcompress[plot]')")
    remade = run_job.run_recipe(
        tmp_path / "best.recipe.yaml", MODEL, tmp_path / "remade", calibration=CALIBRATION, eval_data=EVAL
    )
    assert (tmp_path / "remade" / "model.tflite").read_bytes() == written and remade.passed


def test_no_candidate_within_budget_exits_1_naming_the_closest(run_cli, tmp_path):
    code, out, err = run_cli(
        "auto",
        MODEL,
        "--calibration",
        CALIBRATION,
        "--eval",
        EVAL,
        "--max-accuracy-drop",
        "-5",
        "-o",
        tmp_path / "x.tflite",
    )
    assert code == 1, err
    assert "no candidate within the budget; closest: " in out
    assert not (tmp_path / "x.tflite").exists()


def test_a_model_no_precision_converts_exits_1_with_each_reason(run_cli, tmp_path, tf_keras):
    """MaxPool3D has no TFLite op: every candidate fails, and the sensitivity ranking for the "float:"
    candidates (an int8 conversion of its own) fails too, which used to end auto with a traceback."""
    layers = tf_keras.layers
    model = tf_keras.Sequential(
        [tf_keras.Input((4, 8, 8, 1)), layers.Conv3D(2, 3, padding="same"), layers.MaxPooling3D(), layers.Flatten()]
        + [layers.Dense(3, activation="softmax")]
    )
    model.save(tmp_path / "video.h5")
    x = np.random.default_rng(0).uniform(0, 1, (16, 4, 8, 8, 1)).astype(np.float32)
    np.savez(tmp_path / "data.npz", x=x, y=model.predict(x, verbose=0).argmax(1))
    data = tmp_path / "data.npz"
    code, out, err = run_cli("auto", tmp_path / "video.h5", "--calibration", data, "--eval", data, "-o", tmp_path / "x")
    assert code == 1 and "Traceback" not in err, err
    assert out.count("'tf.MaxPool3D' op is neither a custom op nor a flex op") == 8, out
    assert "no candidate converted (each one's reason is above)" in out and not (tmp_path / "x").exists()


def test_the_chosen_models_conversion_warnings_are_shown_once(run_cli, tmp_path, tf_keras):
    """Every candidate of a model that rescales its own input warns that the uint8 data was scaled too;
    the report says it once, for the model written, and the other candidates' warnings stay in the file."""
    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential(
        [
            tf_keras.Input((28, 28, 1)),
            tf_keras.layers.Rescaling(1 / 255, name="rescaling"),  # named: auto-names count up per process
            tf_keras.layers.Flatten(),
            tf_keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.save(tmp_path / "rescales.h5")
    code, out, err = run_cli(
        "auto",
        tmp_path / "rescales.h5",
        "--calibration",
        CALIBRATION,
        "--eval",
        EVAL,
        "--max_accuracy_drop",
        "100",
        "-o",
        tmp_path / "best.tflite",
        "--report",
        tmp_path / "auto.json",
    )
    assert code == 0
    assert out.count("WARNING: the model's first layer 'rescaling' (Rescaling) scales its input") == 1
    report = json.loads((tmp_path / "auto.json").read_text())
    assert all(candidate["warnings"] for candidate in report["candidates"] if not candidate["error"])
    others = {warning for candidate in report["candidates"] for warning in candidate["warnings"]}
    assert not [warning for warning in others if warning in err and warning not in out], err
    assert "preserve_all_tensors" not in err  # LiteRT's note that keeping every tensor is for debugging


@pytest.mark.parametrize("outputs", [3, 16], ids=["regression", "reconstruction"])
def test_a_model_without_classes_is_judged_by_relative_error(run_cli, tmp_path, tf_keras, outputs):
    """A regressor (3 outputs) or an autoencoder (its input back): no labels, a budget on the error against Keras."""
    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential(
        [
            tf_keras.Input((16,)),
            tf_keras.layers.Dense(64, activation="relu"),
            tf_keras.layers.Dense(8, activation="relu"),
            tf_keras.layers.Dense(outputs),
        ]
    )
    model.save(tmp_path / "model.h5")
    inputs = np.random.default_rng(0).normal(size=(400, 16)).astype(np.float32)
    np.savez(tmp_path / "inputs.npz", x=inputs)
    data = ("--calibration", tmp_path / "inputs.npz", "--eval", tmp_path / "inputs.npz")

    code, _, err = run_cli("auto", tmp_path / "model.h5", *data, "-o", tmp_path / "refused.tflite")
    assert code == 2 and "has no labels" in err and "pass --max_relative_error" in err
    budget = ("--max_relative_error", "0.03", "--report", tmp_path / "auto.json")

    code, out, err = run_cli("auto", tmp_path / "model.h5", *data, *budget, "-o", tmp_path / "best.tflite")
    assert code == 0, err
    assert "budget 3.00% relative error" in out and "relative error" in out.splitlines()[1]
    report = json.loads((tmp_path / "auto.json").read_text())
    assert report["max_relative_error"] == 0.03 and report["max_accuracy_drop"] is None
    within = [c for c in report["candidates"] if c["within_budget"]]
    chosen = next(c for c in report["candidates"] if c["name"] == report["chosen"])
    assert chosen["gzip_bytes"] == min(c["gzip_bytes"] for c in within)
    assert all((c["relative_error"] <= 0.03) == c["within_budget"] for c in report["candidates"])
    # Measured again, independently: the written model is within the budget.
    written = (tmp_path / "best.tflite").read_bytes()
    reference = model.predict(inputs, verbose=0)
    error = predict(written, inputs) - reference
    assert np.sqrt(np.mean(error**2) / np.mean(reference**2)) == pytest.approx(chosen["relative_error"], rel=1e-3)
    code, out, err = run_cli(
        "run", tmp_path / "best.recipe.yaml", "--model", tmp_path / "model.h5", *data, "-o", tmp_path / "remade"
    )
    assert code == 0, err
    assert re.search(r"budget max_relative_error ≤ 3\.00%: \d+\.\d\d% → ok", out), out
    assert (tmp_path / "remade" / "model.tflite").read_bytes() == written


def test_auto_with_training_shrinks_a_model_without_classes_within_its_error(run_cli, tmp_path, tf_keras):
    """No labels anywhere: the scan prices each layer by the outputs' relative error, the probes
    fine-tune towards the model's own outputs, and the budget judges them as it judges the rest."""
    tf_keras.utils.set_random_seed(0)
    layers = tf_keras.layers
    model = tf_keras.Sequential(
        [
            tf_keras.Input((16,)),
            layers.Dense(128, activation="relu", name="wide"),
            layers.Dense(64, activation="relu", name="narrow"),
            layers.Dense(3),
        ]
    )
    model.save(tmp_path / "model.h5")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "train.npz", x=rng.normal(size=(2000, 16)).astype(np.float32))
    np.savez(tmp_path / "eval.npz", x=rng.normal(size=(500, 16)).astype(np.float32))
    report = auto_job.auto(
        tmp_path / "model.h5",
        calibration=tmp_path / "eval.npz",
        eval_data=tmp_path / "eval.npz",
        train=tmp_path / "train.npz",
        max_relative_error=0.05,
        prune_epochs=2,
        cluster_epochs=1,
        output=tmp_path / "best.tflite",
    )
    scans = report.search.scans
    assert [scan.name for scan in scans] == ["wide", "narrow"]  # named: auto-names count up per process
    # One-shot, a layer's outputs move further the more of it goes (relative error in percent).
    assert all(scan.prune_drop[0.99] > scan.prune_drop[0.5] > 5 for scan in scans), scans
    probes = [c for c in report.candidates if c.name.startswith("pruned+clustered")]
    assert probes and all(probe.error is None and probe.accuracy_drop is None for probe in probes)
    assert all((probe.relative_error <= 0.05) == probe.within_budget for probe in probes)
    within = [c for c in report.candidates if c.within_budget]
    assert report.chosen.gzip_bytes == min(c.gzip_bytes for c in within)
    assert report.chosen in probes, report.chosen.name  # pruned and clustered: far smaller than any conversion
    # Measured again, independently, and made again by its recipe.
    written = (tmp_path / "best.tflite").read_bytes()
    inputs = np.load(tmp_path / "eval.npz")["x"]
    reference = model.predict(inputs, verbose=0)
    error = predict(written, inputs) - reference
    assert np.sqrt(np.mean(error**2) / np.mean(reference**2)) == pytest.approx(report.chosen.relative_error, rel=1e-3)
    data = ("--train", tmp_path / "train.npz", "--calibration", tmp_path / "eval.npz", "--eval", tmp_path / "eval.npz")
    code, out, err = run_cli(
        "run", tmp_path / "best.recipe.yaml", "--model", tmp_path / "model.h5", *data, "-o", tmp_path / "remade"
    )
    assert code == 0, err
    assert (tmp_path / "remade" / "model.tflite").read_bytes() == written


def test_an_autoencoder_ending_in_a_sigmoid_is_told_with_task(run_cli, tmp_path, tf_keras):
    """Its last op reads as yes/no scores; --task reconstruction says what it is, and its recipe says so too."""
    tf_keras.utils.set_random_seed(0)
    layers = tf_keras.layers
    model = tf_keras.Sequential(
        [tf_keras.Input((16,)), layers.Dense(8, activation="relu"), layers.Dense(16, activation="sigmoid")]
    )
    model.save(tmp_path / "model.h5")
    np.savez(tmp_path / "inputs.npz", x=np.random.default_rng(0).uniform(size=(300, 16)).astype(np.float32))
    data = ("--calibration", tmp_path / "inputs.npz", "--eval", tmp_path / "inputs.npz")
    budget = ("--max_relative_error", "0.05", "-o", tmp_path / "best.tflite")
    code, _, err = run_cli("auto", tmp_path / "model.h5", *data, *budget)
    assert code == 2 and "--task reconstruction" in err and not list(tmp_path.glob("best*"))
    code, out, err = run_cli("auto", tmp_path / "model.h5", *data, *budget, "--task", "reconstruction")
    assert code == 0, err
    assert "task: reconstruction" in (tmp_path / "best.recipe.yaml").read_text()
    code, out, err = run_cli(
        "run", tmp_path / "best.recipe.yaml", "--model", tmp_path / "model.h5", *data, "-o", tmp_path / "remade"
    )
    assert code == 0 and re.search(r"budget max_relative_error ≤ 5\.00%: \d+\.\d\d% → ok", out), out + err


def test_a_logits_classifier_is_told_with_task(run_cli, tmp_path, tf_keras):
    """No softmax at the end: its outputs read as a quantity, so top-1 accuracy needs --task logits."""
    tf_keras.utils.set_random_seed(0)
    layers = tf_keras.layers
    model = tf_keras.Sequential([tf_keras.Input((28, 28, 1)), layers.Flatten(), layers.Dense(10, name="logits")])
    model.save(tmp_path / "model.h5")
    data = ("--calibration", CALIBRATION, "--eval", EVAL, "--report", tmp_path / "auto.json")
    code, _, err = run_cli("auto", tmp_path / "model.h5", *data, "-o", tmp_path / "refused.tflite")
    assert code == 2 and "--task logits" in err and not (tmp_path / "auto.json").exists()
    code, _, err = run_cli("auto", tmp_path / "model.h5", *data, "--task", "logits", "-o", tmp_path / "m.tflite")
    assert code in (0, 1), err
    report = json.loads((tmp_path / "auto.json").read_text())
    assert all(c["accuracy"] is not None for c in report["candidates"] if not c["error"])


def test_relative_error_is_refused_for_a_classifier(run_cli, tmp_path):
    data = ("--calibration", CALIBRATION, "--eval", EVAL)
    code, _, err = run_cli("auto", MODEL, *data, "--max_relative_error", "0.02", "-o", tmp_path / "m.tflite")
    assert (
        code == 2
        and "reads as class scores (a softmax or sigmoid makes it): use --max_accuracy_drop" in err
        and not list(tmp_path.iterdir())
    )


def test_arena_objective_with_a_qat_candidate(tmp_path):
    report = auto_job.auto(
        MODEL,
        calibration=CALIBRATION,
        eval_data=EVAL,
        max_accuracy_drop=1.0,
        objective="arena",
        train=CALIBRATION,
        prune_epochs=1,
        cluster_epochs=1,
    )
    (qat,) = [c for c in report.candidates if c.training and "qat" in c.training[0]]
    assert qat.name.startswith("QAT int8") and qat.error is None and abs(qat.accuracy_drop) < 3
    assert qat.arena_bytes is not None
    measured = [c for c in report.candidates if c.arena_bytes is not None]
    assert measured and all(c.precision == "int8" for c in measured)
    assert not any(c.arena_bytes for c in report.candidates if c.precision != "int8")
    smallest_arena = min(c.arena_bytes for c in measured if c.within_budget)
    assert report.chosen.arena_bytes == smallest_arena
    # Pruning and clustering leave the arena as it was: among equal arenas the smaller download wins.
    same_arena = [c for c in measured if c.within_budget and c.arena_bytes == smallest_arena]
    assert any("prune" in c.training[0] or "cluster" in c.training[0] for c in same_arena if c.training)
    assert report.chosen.gzip_bytes == min(c.gzip_bytes for c in same_arena)


def test_auto_for_micro_tries_only_what_tflite_micro_runs_and_its_recipe_remakes_the_bytes(tmp_path):
    from tfcompress import auto, run_recipe
    from tfcompress.runtime.inspect import inspect_tflite, is_full_integer

    lenet5 = SAMPLE_MODELS / "lenet5.h5"
    report = auto(lenet5, calibration=CALIBRATION, eval_data=EVAL, target="micro", output=tmp_path / "m.tflite")
    assert {candidate.precision for candidate in report.candidates} == {"int8"}
    assert all(candidate.arena_bytes > 0 for candidate in report.candidates), report.candidates
    assert not any("keep_float" in candidate.options for candidate in report.candidates)
    assert is_full_integer(inspect_tflite((tmp_path / "m.tflite").read_bytes()))
    recipe = yaml.safe_load((tmp_path / "m.recipe.yaml").read_text())
    assert list(recipe["steps"][-1]) == ["micro"]
    remade = run_recipe(
        tmp_path / "m.recipe.yaml", lenet5, tmp_path / "remade", calibration=CALIBRATION, eval_data=EVAL
    )
    assert (
        remade.passed
        and (tmp_path / "remade" / "micro" / "model.tflite").read_bytes() == (tmp_path / "m.tflite").read_bytes()
    )


def test_auto_with_training_scans_bisects_resumes_and_its_recipe_remakes_the_bytes(tmp_path, monkeypatch):
    from tfcompress import run_recipe
    from tfcompress.jobs import prune as prune_job

    def search(output, budget=1.0):
        return auto_job.auto(
            MODEL,
            calibration=CALIBRATION,
            eval_data=EVAL,
            train=CALIBRATION,
            max_accuracy_drop=budget,
            prune_epochs=1,
            cluster_epochs=1,
            output=output,
            state_dir=tmp_path / "state",
        )

    with holding(HeldWarnings()) as held:
        report = search(tmp_path / "best.tflite")
    # Probes over the budget are the search's business, not the user's: no training step warns of them.
    assert not [message for message in held.messages if message.startswith("accuracy fell")], held.messages
    scans = report.search.scans
    assert [scan.name for scan in scans] == ["dense", "dense_1", "dense_2"]
    # Pruned alone, a layer loses more the more of it goes (one-shot, allowing 1 pt of noise).
    assert all(scan.prune_drop[0.99] > scan.prune_drop[0.5] + 1 for scan in scans)
    probes = [c for c in report.candidates if c.name.startswith("pruned+clustered")]
    labels = [p.name.split(":")[0].removeprefix("pruned+clustered ") for p in probes]  # "14/36", "14/36 -2", ...
    on_chain = [p for p, label in zip(probes, labels) if re.fullmatch(r"\d+/\d+", label)]
    relief = [p for p, label in zip(probes, labels) if re.fullmatch(r"\d+/\d+ -\d+", label)]
    uniform = [p for p, label in zip(probes, labels) if label.startswith("uniform ")]
    assert probes == on_chain + relief + uniform, labels  # chain, relief, then uniform settings
    assert 3 <= len(on_chain) <= report.search.chain_length.bit_length() + 1, labels
    # Then the step over the budget, with its least-saving earlier moves taken back, bisected too.
    steps_over = [p.name.split(":")[0].split()[1] for p in on_chain if not p.within_budget]
    over = min(steps_over, key=lambda step: int(step.split("/")[0]))  # where the bisection ended
    assert relief and all(p.name.startswith(f"pruned+clustered {over} -") for p in relief), labels
    # Last, uniform settings, only those the scan estimates smaller than the chain's best step within the budget.
    front = dict(uniform_front(report.search.scans))
    best_step = max(int(label.split("/")[0]) for p, label in zip(probes, labels) if p in on_chain and p.within_budget)
    best_estimate = allocation_chain(report.search.scans)[best_step].estimated_bytes
    assert all(front[label].estimated_bytes < best_estimate for label in labels[len(on_chain) + len(relief) :])
    assert all(p.error is None and p.training for p in probes)
    within = [c for c in report.candidates if c.within_budget]
    assert report.chosen.gzip_bytes == min(c.gzip_bytes for c in within)
    assert report.chosen.gzip_bytes < min(c.gzip_bytes for c in report.candidates if not c.training)
    assert (tmp_path / "best.layers.png").read_bytes()[:4] == b"\x89PNG"
    recipe = yaml.safe_load((tmp_path / "best.recipe.yaml").read_text())
    assert [next(iter(step)) for step in recipe["steps"]][-1] == "convert"
    remade = run_recipe(
        tmp_path / "best.recipe.yaml",
        MODEL,
        tmp_path / "remade",
        train=CALIBRATION,
        calibration=CALIBRATION,
        eval_data=EVAL,
    )
    assert remade.passed and (tmp_path / "remade/model.tflite").read_bytes() == (tmp_path / "best.tflite").read_bytes()

    # Killed after the last probe finished training but before its record: only that probe trains again.
    max((tmp_path / "state").glob("probe-*.json"), key=lambda record: record.stat().st_mtime_ns).unlink()
    trained = []
    original = prune_job.prune
    monkeypatch.setattr(prune_job, "prune", lambda *args, **kwargs: trained.append(1) or original(*args, **kwargs))
    again = search(tmp_path / "again.tflite")
    assert len(trained) == sum("prune" in step for step in probes[-1].training)
    assert [c.name for c in again.candidates] == [c.name for c in report.candidates]
    assert (tmp_path / "again.tflite").read_bytes() == (tmp_path / "best.tflite").read_bytes()

    # A tighter budget reuses the probes it passes through, judged against the new budget.
    tight = search(tmp_path / "tight.tflite", budget=0.0)
    first = {c.name: c for c in probes}
    reused = [c for c in tight.candidates if c.name in first]
    assert reused and all(c.gzip_bytes == first[c.name].gzip_bytes for c in reused)
    assert all(c.within_budget == (c.accuracy_drop <= 0.0) for c in tight.candidates)


def test_time_budget_stops_the_search_before_a_probe_would_start(tf_keras):
    import time

    from tfcompress.data import load_data
    from tfcompress.jobs.auto_train import training_search
    from tfcompress.options import AutoOptions, LoadOptions, ShrinkOptions

    model = tf_keras.models.load_model(MODEL, compile=False)
    data = load_data(EVAL)
    weights = [w.copy() for w in model.get_weights()]
    settings = (AutoOptions(), ShrinkOptions(), LoadOptions())
    search = training_search(model, data, data, settings, measure=None, deadline=time.monotonic() - 1)
    assert search.probes == () and "--time_budget" in search.stopped and len(search.scans) == 3
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights()))  # the scan put every kernel back


def test_flash_objective_writes_the_lut_compressed_model_its_recipe_remakes(tmp_path):
    from tfcompress import run_recipe

    report = auto_job.auto(
        MODEL,
        calibration=CALIBRATION,
        eval_data=EVAL,
        train=CALIBRATION,
        target="micro",
        objective="flash",
        prune_epochs=1,
        cluster_epochs=1,
        output=tmp_path / "m.tflite",
    )
    within = [c for c in report.candidates if c.within_budget]
    assert report.chosen.flash_bytes == min(c.flash_bytes for c in within)
    assert report.chosen.flash_bytes < 0.6 * report.chosen.size_bytes  # clustered: few index bits per weight
    # LUT stores whole index bits: pruning a clustered layer adds the zero as a value and saves nothing.
    assert all(not step.get("prune") for step in report.chosen.training)
    recipe = yaml.safe_load((tmp_path / "m.recipe.yaml").read_text())
    assert recipe["steps"][-1] == {"micro": {"per_tensor_dense": True, "compress": "lut"}}
    run_recipe(
        tmp_path / "m.recipe.yaml",
        MODEL,
        tmp_path / "remade",
        train=CALIBRATION,
        calibration=CALIBRATION,
        eval_data=EVAL,
    )
    assert (tmp_path / "remade/micro/model.tflite").read_bytes() == (tmp_path / "m.tflite").read_bytes()


def test_flash_objective_needs_the_micro_target():
    from tfcompress.errors import OptionError
    from tfcompress.options import AutoOptions

    with pytest.raises(OptionError, match="add --target micro"):
        AutoOptions(objective="flash")
