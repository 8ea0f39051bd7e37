"""Training steps on data without labels (a regressor's, an autoencoder's, any model's unlabelled
inputs) fine-tune towards the outputs of the model they started from, and say how far those moved."""

import json

import numpy as np
import pytest

from tfcompress.keras_io import load_model
from tfcompress.runtime.metrics import fidelity
from tfcompress.testing.field_zoo import sample_inputs
from tfcompress.testing.pruned import one_shot_pruned

from conftest import CALIBRATION, EVAL, SAMPLE_MODELS, saved_field_model

REGRESSOR = "regression head"
AUTOENCODER = "dense autoencoder (anomaly detection)"


def _moved(model, original, inputs) -> float:
    """RMS change of the outputs over their RMS, measured here, apart from the guard."""
    reference = original.predict(inputs, verbose=0)
    return fidelity(model.predict(inputs, verbose=0), reference, task="regression").relative_error


def test_a_pruned_regressor_is_fine_tuned_towards_its_own_outputs(tf_keras, tmp_path):
    from tfcompress import prune

    original, path = saved_field_model(tf_keras, REGRESSOR, tmp_path / "regressor.h5")
    train, val = (sample_inputs(REGRESSOR, original, count, seed) for count, seed in ((3000, 0), (500, 1)))
    report = prune(path, train, val=val, target_sparsity=0.7, epochs=3, learning_rate=1e-3, verbose=0)

    assert report.accuracy_check is None and set(report.metrics) == {"loss", "val_loss"}
    assert all(layer["sparsity"] == pytest.approx(0.7, abs=0.02) for layer in report.layers.values()), report.layers
    check = report.output_check
    assert check["data"] == "the validation data (500 samples)"
    assert check["relative_error"] == pytest.approx(_moved(report.keras_model, original, val), rel=1e-4)
    one_shot = _moved(one_shot_pruned(original, 0.7), original, val)
    assert check["relative_error"] < one_shot / 2, (check, one_shot)


def test_an_autoencoder_clusters_from_the_command_line_without_labels(tf_keras, run_cli, tmp_path):
    original, path = saved_field_model(tf_keras, AUTOENCODER, tmp_path / "autoencoder.h5")
    np.savez(tmp_path / "inputs.npz", x=sample_inputs(AUTOENCODER, original, 1000))
    report_path = tmp_path / "report.json"
    code, out, err = run_cli("cluster", path, "--train", tmp_path / "inputs.npz", "--clusters", "16", "--epochs", "2",
                             "-o", tmp_path / "clustered.h5", "--report", report_path)  # fmt: skip
    assert code == 0, err
    report = json.loads(report_path.read_text())
    assert report["accuracy_check"] is None and "accuracy" not in report["metrics"]
    assert all(layer["unique_values"] <= 16 for layer in report["layers"].values()), report["layers"]
    check = report["output_check"]
    assert "not held out" in check["data"] and f"outputs moved {check['relative_error']:.2%}" in out
    clustered = tf_keras.models.load_model(tmp_path / "clustered.h5", compile=False)
    inputs = sample_inputs(AUTOENCODER, original, 1000)
    assert check["relative_error"] == pytest.approx(_moved(clustered, original, inputs), rel=1e-4)


def test_a_classifier_without_labels_keeps_its_predictions(tf_keras):
    """A softmax output is fitted with cross-entropy to its own probabilities: more of lenet5's top-1
    predictions on held-out images survive 50% pruning than without fine-tuning (0.94 against 0.895
    when written; fine-tuning on the labels kept 0.923). The check expects 1.3 pt of accuracy lost, and
    the labelled held-out images lost 1.2, so it does not warn; by the RMS change of the probabilities,
    18.6%, it did."""
    from tfcompress import prune
    from tfcompress.data import load_data

    train, evaluation = load_data(CALIBRATION), load_data(EVAL)
    report = prune(SAMPLE_MODELS / "lenet5.h5", train.x, target_sparsity=0.5, epochs=2, verbose=0)
    check = report.output_check
    assert report.accuracy_check is None and check["relative_error"] is None and check["warning"] is None, check
    original = load_model(SAMPLE_MODELS / "lenet5.h5")
    lost = (_accuracy(original, evaluation) - _accuracy(report.keras_model, evaluation)) * 100
    assert 0 < check["accuracy_drop"] < 3 and abs(check["accuracy_drop"] - lost) < 1.0, (check, lost)

    def agreement(model):
        predicted = model.predict(evaluation.x, verbose=0)
        return np.mean(np.argmax(predicted, -1) == np.argmax(original.predict(evaluation.x, verbose=0), -1))

    one_shot = agreement(one_shot_pruned(original, 0.5))
    assert agreement(report.keras_model) >= max(0.9, one_shot + 0.02), one_shot


def _accuracy(model, data) -> float:
    return float(np.mean(np.argmax(model.predict(data.x, verbose=0), -1) == data.y))


def test_the_expected_drop_costs_a_changed_class_what_the_model_before_gave_it():
    from tfcompress.transforms.guardrail import expected_accuracy_drop, top1_kept

    before = np.array([[0.6, 0.4, 0.0], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5]])
    after = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.0, 1.0, 0.0]])
    assert expected_accuracy_drop(before, after) == pytest.approx(100 * (0.2 + 0 + 0.2) / 3)
    assert top1_kept(before, after) == pytest.approx(1 / 3)
    pixels = np.stack([before, after], axis=1)  # a per-pixel softmax: every position counts
    assert expected_accuracy_drop(pixels, pixels[:, ::-1]) == pytest.approx(100 * (0.2 + 0.8 + 0 + 0 + 0.2 + 1.0) / 6)


def test_of_several_outputs_of_a_kind_the_check_names_the_one_that_moved_most():
    from tfcompress.options import TrainOptions
    from tfcompress.transforms.guardrail import output_check

    before = [np.full((8, 2), 1.0), np.full((8, 3), 2.0)]
    check = output_check("8 samples", before, [before[0] * 1.05, before[1] * 1.5], TrainOptions(), (), ("a", "b"))
    assert (check.output, check.quantity_outputs, check.accuracy_drop) == ("b", 2, None)
    assert check.relative_error == pytest.approx(0.5)
    assert check.warning.startswith("output 'b' (of 2, the one that moved most) moved 50.0% (RMS"), check.warning


def test_a_one_logit_warning_names_the_side_of_0_and_a_told_task_gets_no_hint():
    """One logit is a yes/no score: what changed is its side of 0, not a top-1 class. A quantity the user
    named with --task is not a guess, so the warning does not suggest --task logits."""
    from tfcompress.options import TrainOptions
    from tfcompress.transforms.guardrail import output_check

    logits = np.linspace(-3, 3, 10)[:, None]
    flipped = output_check("10 samples", logits, -logits, TrainOptions(), (), tasks=("logits",))
    assert (flipped.yes_at, flipped.top1_kept) == (0.0, 0.0)
    assert "the side of 0 changed on 100.0% of 10 samples" in flipped.warning, flipped.warning
    sigmoid = output_check("10 samples", 1 / (1 + np.exp(-logits)), 1 / (1 + np.exp(logits)), TrainOptions(), (),
                           tasks=("sigmoid",))  # fmt: skip
    assert sigmoid.yes_at == 0.5 and "the side of 0.5 changed" in sigmoid.warning, sigmoid.warning
    guessed, told = (output_check("10 samples", logits, logits * 2, TrainOptions(), (), task_told=told)
                     for told in (False, True))  # fmt: skip
    assert "--task logits" in guessed.warning and "--task logits" not in told.warning, told.warning
    assert told.yes_at is None and told.warning.startswith("the outputs moved 100.0%"), told.warning


def test_a_classifier_that_loses_its_predictions_warns_by_the_accuracy_it_can_be_expected_to_lose(run_cli, tmp_path):
    np.savez(tmp_path / "images.npz", x=np.load(CALIBRATION)["x"])
    code, out, err = run_cli("prune", SAMPLE_MODELS / "lenet5.h5", "--train", tmp_path / "images.npz",
                             "--target_sparsity", "0.9", "--learning_rate", "0.05", "--epochs", "1",
                             "-o", tmp_path / "pruned.h5")  # fmt: skip
    assert code == 0, err
    (warning,) = [line for line in out.splitlines() if line.startswith("WARNING:")]
    assert "accuracy can be expected to have fallen" in warning and "--warn_accuracy_drop 3" in warning, warning
    assert "learning rate 0.05" in warning and "1,000 training samples for 90% sparsity" in warning


def test_a_step_that_moves_the_outputs_too_far_warns_once_with_its_causes(tf_keras, run_cli, tmp_path):
    original, path = saved_field_model(tf_keras, REGRESSOR, tmp_path / "regressor.h5")
    np.savez(tmp_path / "inputs.npz", x=sample_inputs(REGRESSOR, original, 500))
    code, out, err = run_cli("prune", path, "--train", tmp_path / "inputs.npz", "--target_sparsity", "0.9",
                             "--learning_rate", "0.1", "-o", tmp_path / "pruned.h5")  # fmt: skip
    assert code == 0, err
    (warning,) = [line for line in out.splitlines() if line.startswith("WARNING:")]
    assert "the outputs moved" in warning and "--warn_relative_error 0.1" in warning
    assert "learning rate 0.1" in warning and "500 training samples for 90% sparsity" in warning
    assert "outputs moved" not in err


def test_labelled_training_data_needs_labelled_validation_data(tiny_model, calibration):
    from tfcompress import prune
    from tfcompress.errors import DataError

    with pytest.raises(DataError, match="validation data .* has no labels"):
        prune(tiny_model, calibration, val=calibration.x, target_sparsity=0.5, verbose=0)
