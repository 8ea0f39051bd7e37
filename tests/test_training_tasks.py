"""Training steps read a model's outputs as convert does (or as `--task` says): a one-unit sigmoid
classifier trains on 0/1 labels (and `analyze` and `auto` measure it on them, at 0.5), and without
labels sigmoid and logits outputs are judged by the accuracy they can be expected to lose, not by
how far their scores moved."""

import json

import numpy as np
import pytest

from tfcompress.runtime.interpreter import predict
from tfcompress.runtime.task import class_probabilities, yes_probability
from tfcompress.testing.field_zoo import sample_inputs
from tfcompress.transforms.guardrail import expected_accuracy_drop

from conftest import saved_field_model

BINARY = "sigmoid binary head"
MULTI_LABEL = "sigmoid multi-label head"
LOGITS = "logits classifier (no softmax)"
ONE_UNIT = "regression head"  # one linear unit: with 0/1 labels, the logit of a binary classifier


def _outputs(model, inputs):
    return model.predict(inputs, batch_size=256, verbose=0)


def _at_half(outputs, labels) -> float:
    return float(np.mean((np.reshape(outputs, -1) > 0.5) == labels))


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    """A one-unit sigmoid classifier, its labelled inputs (a rule it can learn) and an .npz of them."""
    import tf_keras

    folder = tmp_path_factory.mktemp("binary")
    model, path = saved_field_model(tf_keras, BINARY, folder / "binary.h5")
    x = sample_inputs(BINARY, model, 600, seed=2)
    y = (x[:, 0] + x[:, 1] > 1).astype(np.int64)
    np.savez(folder / "labelled.npz", x=x, y=y)
    return model, path, x, y, folder / "labelled.npz"


def test_a_binary_sigmoid_classifier_prunes_on_its_0_1_labels(tf_keras, run_cli, tmp_path):
    """Its labels were refused before ("the model outputs 1 classes. Pass labels 0..0")."""
    original, path = saved_field_model(tf_keras, BINARY, tmp_path / "binary.h5")
    x = sample_inputs(BINARY, original, 2500)
    y = (x[:, 0] + x[:, 1] > 1).astype(np.int64)  # a rule on the inputs the model can learn
    np.savez(tmp_path / "train.npz", x=x[:2000], y=y[:2000])
    np.savez(tmp_path / "val.npz", x=x[2000:], y=y[2000:])
    report_path = tmp_path / "report.json"
    code, out, err = run_cli("prune", path, "--train", tmp_path / "train.npz", "--val", tmp_path / "val.npz",
                             "--target_sparsity", "0.5", "--epochs", "4", "--learning_rate", "1e-2",
                             "-o", tmp_path / "pruned.h5", "--report", report_path)  # fmt: skip
    assert code == 0, err
    report = json.loads(report_path.read_text())
    check = report["accuracy_check"]
    pruned = tf_keras.models.load_model(tmp_path / "pruned.h5", compile=False)
    at_half = [float(np.mean((_outputs(model, x[2000:])[:, 0] > 0.5) == y[2000:])) for model in (original, pruned)]
    assert (check["before"], check["after"]) == pytest.approx(at_half), (check, at_half)
    # Keras measured the same accuracy at 0.5 (binary cross-entropy, binary accuracy), and the labels taught it
    assert report["metrics"]["val_accuracy"] == pytest.approx(at_half[1], abs=1e-6)
    assert at_half[1] > at_half[0] + 0.2 and at_half[1] > 0.85, at_half
    assert f"accuracy {at_half[0]:.2%} before, {at_half[1]:.2%} after" in out


def test_labels_that_do_not_fit_the_output_are_refused_saying_why(tf_keras, run_cli, tmp_path):
    _, binary = saved_field_model(tf_keras, BINARY, tmp_path / "binary.h5")
    multi_label, several = saved_field_model(tf_keras, MULTI_LABEL, tmp_path / "multi_label.h5")
    x = sample_inputs(MULTI_LABEL, multi_label, 64)
    np.savez(tmp_path / "three.npz", x=x, y=np.arange(64) % 3)
    np.savez(tmp_path / "two.npz", x=x, y=np.arange(64) % 2)
    cases = [
        (binary, "three.npz", [], "range over 0..2, but the model takes labels 0 and 1 for its one yes/no score"),
        (several, "two.npz", [], "reads as 6 yes/no scores (a sigmoid). Leave y out"),
        (binary, "two.npz", ["--task", "regression"], "reads as a quantity (--task regression). Leave y out"),
    ]
    for model, data, task, message in cases:
        code, out, err = run_cli("prune", model, "--train", tmp_path / data, "-o", tmp_path / "out.h5", *task)
        assert code == 2 and message in err and "Traceback" not in err, err
        assert not (tmp_path / "out.h5").exists()


def test_without_labels_a_sigmoid_output_is_judged_by_the_accuracy_it_can_be_expected_to_lose(tf_keras, tmp_path):
    """Each of the multi-label head's six units is a yes/no score: the check is the expected drop of
    its two-class distributions, computed here apart from the guard."""
    from tfcompress import prune

    original, path = saved_field_model(tf_keras, MULTI_LABEL, tmp_path / "multi_label.h5")
    train, val = sample_inputs(MULTI_LABEL, original, 2000), sample_inputs(MULTI_LABEL, original, 500, seed=1)
    report = prune(path, train, val=val, target_sparsity=0.6, epochs=2, verbose=0)

    check = report.output_check
    assert (check["classifier_task"], check["relative_error"], check["quantity_outputs"]) == ("sigmoid", None, 0)
    before, after = _outputs(original, val), _outputs(report.keras_model, val)
    two_class = [np.stack([1 - scores, scores], axis=-1) for scores in (before, after)]
    assert check["accuracy_drop"] == pytest.approx(expected_accuracy_drop(*two_class), abs=1e-6)
    assert check["top1_kept"] == pytest.approx(np.mean((before > 0.5) == (after > 0.5))) and check["yes_at"] == 0.5
    assert 0 < check["accuracy_drop"] < 3 and check["warning"] is None, check


@pytest.mark.parametrize("task", ["auto", "logits"])
def test_class_logits_are_judged_as_classes_when_task_says_so(tf_keras, tmp_path, task):
    """From the graph alone logits read as a quantity (RMS of their change); `--task logits` puts
    them through a softmax and judges the accuracy they can be expected to lose."""
    from tfcompress import prune

    original, path = saved_field_model(tf_keras, LOGITS, tmp_path / "logits.h5")
    train, val = sample_inputs(LOGITS, original, 1500), sample_inputs(LOGITS, original, 300, seed=1)
    report = prune(path, train, val=val, target_sparsity=0.5, epochs=1, verbose=0, task=task)

    check = report.output_check
    before, after = _outputs(original, val), _outputs(report.keras_model, val)
    if task == "auto":
        assert check["accuracy_drop"] is None and check["relative_error"] > 0, check
        return
    probabilities = [class_probabilities(logits, "logits") for logits in (before, after)]
    np.testing.assert_allclose(probabilities[0].sum(axis=-1), 1.0, rtol=1e-9)
    assert check["classifier_task"] == "logits" and check["relative_error"] is None and check["yes_at"] is None, check
    assert check["accuracy_drop"] == pytest.approx(expected_accuracy_drop(*probabilities), abs=1e-6)
    assert check["top1_kept"] == pytest.approx(np.mean(np.argmax(before, -1) == np.argmax(after, -1)))


def test_a_binary_classifier_with_one_logit_trains_on_0_1_labels_and_is_measured_at_0(tf_keras, run_cli, tmp_path):
    """One linear unit trained with binary cross-entropy from logits: its 0/1 labels were refused ("takes
    labels 0..0"), and a softmax of one logit agrees with anything, so --task logits measured 100% top-1."""
    from tfcompress import analyze, prune

    original, path = saved_field_model(tf_keras, ONE_UNIT, tmp_path / "one_logit.h5")
    x = sample_inputs(ONE_UNIT, original, 2500)
    y = (x[:, 0] + x[:, 1] > 1).astype(np.int64)
    np.savez(tmp_path / "train.npz", x=x[:2000], y=y[:2000])
    np.savez(tmp_path / "val.npz", x=x[2000:], y=y[2000:])
    report_path = tmp_path / "report.json"
    code, _, err = run_cli("prune", path, "--train", tmp_path / "train.npz", "--val", tmp_path / "val.npz",
                           "--target_sparsity", "0.5", "--epochs", "4", "--learning_rate", "1e-2",
                           "-o", tmp_path / "pruned.h5", "--report", report_path)  # fmt: skip
    assert code == 0, err
    report = json.loads(report_path.read_text())
    pruned = tf_keras.models.load_model(tmp_path / "pruned.h5", compile=False)
    at_zero = [float(np.mean((_outputs(model, x[2000:])[:, 0] > 0) == y[2000:])) for model in (original, pruned)]
    check = report["accuracy_check"]
    assert (check["before"], check["after"]) == pytest.approx(at_zero), (check, at_zero)
    assert report["metrics"]["val_accuracy"] == pytest.approx(at_zero[1], abs=1e-6)
    assert at_zero[1] > at_zero[0] + 0.2 and at_zero[1] > 0.85, at_zero

    convert_report = tmp_path / "convert.json"
    code, _, err = run_cli("convert", tmp_path / "pruned.h5", "--precision", "int8", "--calibration",
                           tmp_path / "train.npz", "--eval", tmp_path / "val.npz", "--task", "logits",
                           "-o", tmp_path / "pruned.tflite", "--report", convert_report)  # fmt: skip
    assert code == 0, err
    converted = json.loads(convert_report.read_text())
    logits = predict((tmp_path / "pruned.tflite").read_bytes(), x[2000:])
    assert converted["accuracy"] == pytest.approx(np.mean((logits[:, 0] > 0) == y[2000:]))
    agreement = np.mean((logits[:, 0] > 0) == (_outputs(pruned, x[2000:])[:, 0] > 0))
    assert converted["fidelity"]["threshold_agreement"] == pytest.approx(agreement)
    assert converted["fidelity"]["top1_agreement"] is None
    sensitivity = analyze(tmp_path / "pruned.h5", tmp_path / "train.npz", eval_data=tmp_path / "val.npz", try_float=1)
    assert sensitivity.float_accuracy == pytest.approx(at_zero[1])

    unlabelled = prune(path, x[:2000], val=x[2000:], target_sparsity=0.6, epochs=2, verbose=0, task="logits")
    before, after = (yes_probability(_outputs(model, x[2000:])) for model in (original, unlabelled.keras_model))
    two_class = [np.concatenate([1 - scores, scores], axis=-1) for scores in (before, after)]
    assert unlabelled.output_check["accuracy_drop"] == pytest.approx(expected_accuracy_drop(*two_class), abs=1e-6)
    assert unlabelled.output_check["top1_kept"] == pytest.approx(np.mean((before > 0.5) == (after > 0.5)))
    assert unlabelled.output_check["yes_at"] == 0.0


def test_output_tasks_reads_the_activation_through_reshapes(tf_keras):
    from tfcompress.transforms.training import output_tasks

    layers = tf_keras.layers
    inputs = tf_keras.Input((8,))
    heads = {
        "softmax": layers.Dense(4, activation="softmax")(inputs),
        "softmax_layer": layers.Softmax()(layers.Dense(4)(inputs)),
        "sigmoid_reshaped": layers.Reshape((2, 2))(layers.Dense(4, activation="sigmoid")(inputs)),
        "sigmoid_activation": layers.Flatten()(layers.Activation("sigmoid")(layers.Dense(4)(inputs))),
        "linear": layers.Dense(1)(inputs),
    }
    model = tf_keras.Model(inputs, list(heads.values()))
    read = ("softmax", "softmax", "sigmoid", "sigmoid", "regression")
    assert output_tasks(model) == read
    assert output_tasks(model, labelled=True) == read[:-1] + ("logits",)
    assert output_tasks(model, ("reconstruction",) * 5, labelled=True) == ("reconstruction",) * 5
    asked = ("auto", "logits", "auto", "regression", "auto")  # what --output_task asks of some, by name
    assert output_tasks(model, asked, labelled=True) == ("softmax", "logits", "sigmoid", "regression", "logits")


def test_analyze_and_auto_measure_a_binary_classifier_at_0_5(binary, tmp_path):
    """Both refused its 0/1 labels before; the float and int8 accuracies are checked here against the
    Keras model and the written .tflite."""
    from tfcompress import analyze, auto
    from tfcompress.runtime.interpreter import predict

    model, path, x, y, data = binary
    float_accuracy = _at_half(_outputs(model, x), y)
    sensitivity = analyze(path, data, eval_data=data, try_float=1)
    assert sensitivity.float_accuracy == pytest.approx(float_accuracy), sensitivity.float_accuracy
    assert abs(sensitivity.int8_accuracy - float_accuracy) < 0.05

    report = auto(path, calibration=data, eval_data=data, max_accuracy_drop=2.0, output=tmp_path / "chosen.tflite")
    assert report.float32.accuracy == pytest.approx(float_accuracy)
    chosen = report.chosen
    assert chosen.accuracy == pytest.approx(_at_half(predict((tmp_path / "chosen.tflite").read_bytes(), x), y))
    assert (float_accuracy - chosen.accuracy) * 100 <= 2.0 and chosen.name != "float32", chosen


def test_the_sensitivity_scan_measures_a_binary_classifier_at_0_5(binary):
    from tfcompress.data import Dataset
    from tfcompress.transforms.kernel_bytes import magnitude_pruned
    from tfcompress.transforms.layer_scan import scan_layers

    model, _, x, y, _ = binary
    first = next(layer for layer in model.layers if layer.weights)  # its hidden Dense layer
    (scan,) = scan_layers(model, Dataset(x, y, "arrays"), [first.name], sparsities=(0.9,), clusters=(), task="sigmoid")
    kernel = first.kernel
    original = kernel.numpy()
    try:
        kernel.assign(magnitude_pruned(original, 0.9))
        pruned = _at_half(_outputs(model, x), y)
    finally:
        kernel.assign(original)
    assert scan.prune_drop[0.9] == pytest.approx((_at_half(_outputs(model, x), y) - pruned) * 100, abs=1e-3)


def test_logits_fine_tune_towards_their_probabilities_by_cross_entropy(tf_keras):
    """Mean squared error of the logits lost 31.7 pt where this lost 8.6 (a 10-class CNN pruned to 80% on
    5,000 Fashion-MNIST images); the outputs that read as quantities keep mean squared error."""
    from tfcompress.data import Dataset
    from tfcompress.transforms.training import fit_targets

    inputs = tf_keras.Input((8,))
    model = tf_keras.Model(inputs, [tf_keras.layers.Dense(4)(inputs), tf_keras.layers.Dense(2)(inputs)])
    data = Dataset(np.random.default_rng(0).random((16, 8), np.float32), None, "arrays")
    targets = fit_targets(model, data, None, ("logits", "regression"))

    logits, quantities = model.predict(data.x, verbose=0)
    np.testing.assert_allclose(targets.train[0], class_probabilities(logits, "logits"), rtol=1e-6)
    np.testing.assert_array_equal(targets.train[1], quantities)
    cross_entropy, squared = targets.loss
    assert isinstance(cross_entropy, tf_keras.losses.CategoricalCrossentropy)
    assert cross_entropy.get_config()["from_logits"] and isinstance(squared, tf_keras.losses.MeanSquaredError)
    assert targets.described == "the model's own outputs (cross-entropy and mean squared error): no labels"


def _label_and_image(tf_keras):
    """A class head and an image head whose sigmoid makes pixels (a reconstruction, read as yes/no scores
    from the graph alone)."""
    tf_keras.utils.set_random_seed(5)
    layers = tf_keras.layers
    image = tf_keras.Input((8, 8, 1), name="pixels_in")
    code = layers.Dense(16, activation="relu")(layers.Flatten()(image))
    label = layers.Dense(3, activation="softmax", name="label")(code)
    pixels = layers.Reshape((8, 8, 1), name="image")(layers.Dense(64, activation="sigmoid")(code))
    return tf_keras.Model(image, [label, pixels])


def test_output_task_says_how_one_output_of_several_reads(tf_keras, run_cli, tmp_path):
    """--task is one for every output; --output_task names the image head a reconstruction, so convert and the
    training guard measure it by RMS while the class head keeps its softmax measures."""
    from tfcompress.runtime.metrics import fidelity

    model = _label_and_image(tf_keras)
    path = tmp_path / "label_and_image.h5"
    model.save(path)
    x = np.random.default_rng(1).uniform(0, 1, (400, 8, 8, 1)).astype(np.float32)
    np.savez(tmp_path / "train.npz", x=x[:300])
    np.savez(tmp_path / "val.npz", x=x[300:])
    data = ["--calibration", tmp_path / "train.npz", "--eval", tmp_path / "val.npz"]
    reconstruction = ["--output_task", "image=reconstruction"]
    for told, image_task in (([], "sigmoid"), (reconstruction, "reconstruction")):
        report_path = tmp_path / f"convert_{image_task}.json"
        code, _, err = run_cli("convert", path, "--precision", "int8", *data, *told,
                               "-o", tmp_path / f"{image_task}.tflite", "--report", report_path)  # fmt: skip
        assert code == 0, err
        by_output = {each["output"]: each for each in json.loads(report_path.read_text())["fidelity_by_output"]}
        assert (by_output["label"]["task"], by_output["image"]["task"]) == ("softmax", image_task)
        assert (by_output["image"]["relative_error"] is not None) == (image_task == "reconstruction")

    for told, counts in (([], (0, 2)), (reconstruction, (1, 1))):
        report_path, pruned_path = tmp_path / f"prune_{len(told)}.json", tmp_path / f"pruned_{len(told)}.h5"
        code, _, err = run_cli("prune", path, "--train", tmp_path / "train.npz", "--val", tmp_path / "val.npz",
                               "--target_sparsity", "0.5", "--epochs", "1", *told,
                               "-o", pruned_path, "--report", report_path)  # fmt: skip
        assert code == 0, err
        check = json.loads(report_path.read_text())["output_check"]
        assert (check["quantity_outputs"], check["classifier_outputs"]) == counts
        if told:
            pruned = tf_keras.models.load_model(pruned_path, compile=False)
            moved = fidelity(_outputs(pruned, x[300:])[1], _outputs(model, x[300:])[1], task="regression")
            assert check["output"] == "image" and check["classifier_output"] == "label"
            assert check["relative_error"] == pytest.approx(moved.relative_error, rel=1e-4)

    code, out, err = run_cli(
        "convert", path, *data, "--output_task", "pixels=reconstruction", "-o", tmp_path / "m.tflite"
    )
    assert code == 2 and not (tmp_path / "m.tflite").exists(), err
    assert "--output_task names 'pixels', but the model's outputs are 'label', 'image'; use those names." in err
    code, out, err = run_cli("convert", path, "--output_task", "image=pixels", "-o", tmp_path / "m.tflite")
    assert code == 2 and "output_task[image] must be one of auto, softmax" in err and "Traceback" not in err, err
