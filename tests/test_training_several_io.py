"""Models with several inputs through the training steps, analyze and auto (data matched to the inputs
by name, or x0, x1, ... in the model's order; fine-tuned and converted to an int8 file that agrees with
the trained model), and with several outputs through the training steps and `run` (each output
fine-tuned towards the model's own, the one that moved most reported)."""

import json

import numpy as np
import pytest

import tfcompress
from tfcompress.errors import DataError, ModelLoadError, OptionError
from tfcompress.runtime.interpreter import predict
from tfcompress.runtime.metrics import fidelity
from tfcompress.testing.pruned import one_shot_pruned

SAMPLES = 2400


def _image_and_features(tf_keras):
    """A classifier of an 8×8 image and 6 features whose Dense layers are big enough to prune and factor."""
    tf_keras.utils.set_random_seed(7)
    layers = tf_keras.layers
    image, features = tf_keras.Input((8, 8, 1), name="image"), tf_keras.Input((6,), name="features")
    x = layers.Flatten()(layers.Conv2D(8, 3, activation="relu")(image))
    x = layers.Concatenate()([x, layers.Dense(16, activation="relu")(features)])
    x = layers.Dense(64, activation="relu")(x)
    return tf_keras.Model([image, features], layers.Dense(4, activation="softmax")(x))


@pytest.fixture(scope="module")
def two_inputs(tf_keras, tmp_path_factory):
    """(model trained on a rule that needs both inputs, its .h5, the data files: named by input in the other
    order, the same numbered x0/x1, inputs only, held-out with and without labels; the held-out arrays)."""
    folder = tmp_path_factory.mktemp("two_inputs")
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 1, (SAMPLES + 500, 8, 8, 1)).astype(np.float32)
    features = rng.normal(0, 1, (SAMPLES + 500, 6)).astype(np.float32)
    labels = (image[:, :4].mean(axis=(1, 2, 3)) > image[:, 4:].mean(axis=(1, 2, 3))) * 2 + (features[:, 0] > 0)
    model = _image_and_features(tf_keras)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit([image[:SAMPLES], features[:SAMPLES]], labels[:SAMPLES], epochs=10, verbose=0)
    path = folder / "two_inputs.h5"
    model.save(path, include_optimizer=False)
    files = {name: folder / f"{name}.npz" for name in ("named", "numbered", "inputs", "val", "val_inputs")}
    train = slice(0, SAMPLES)
    np.savez(files["named"], features=features[train], image=image[train], y=labels[train])
    np.savez(files["numbered"], x0=image[train], x1=features[train], y=labels[train])
    np.savez(files["inputs"], x0=image[train], x1=features[train])
    np.savez(files["val"], x0=image[SAMPLES:], x1=features[SAMPLES:], y=labels[SAMPLES:])
    np.savez(files["val_inputs"], x0=image[SAMPLES:], x1=features[SAMPLES:])
    return model, path, files, (image[SAMPLES:], features[SAMPLES:], labels[SAMPLES:])


def _agreement(tflite: bytes, keras_model, held_out) -> float:
    image, features, _ = held_out
    reference = keras_model.predict([image, features], verbose=0)
    return fidelity(predict(tflite, (image, features)), reference).top1_agreement


def test_prune_and_cluster_match_data_to_inputs_by_name_and_convert_to_what_they_trained(two_inputs):
    _, path, files, held_out = two_inputs
    settings = {"target_sparsity": 0.6, "epochs": 2, "learning_rate": 1e-3, "verbose": 0}
    named = tfcompress.prune(path, files["named"], val=files["val"], **settings)
    numbered = tfcompress.prune(path, files["numbered"], val=files["val"], **settings)
    for by_name, by_order in zip(named.keras_model.get_weights(), numbered.keras_model.get_weights()):
        np.testing.assert_array_equal(by_name, by_order)
    assert all(layer["sparsity"] == pytest.approx(0.6, abs=0.02) for layer in named.layers.values()), named.layers
    assert named.accuracy_check["after"] > 0.85, named.accuracy_check

    clustered = tfcompress.cluster(named.keras_model, files["numbered"], val=files["val"], clusters=8,
                                   preserve_sparsity=True, epochs=1, learning_rate=1e-4, verbose=0)  # fmt: skip
    assert all(layer["unique_values"] <= 9 for layer in clustered.layers.values()), clustered.layers
    converted = tfcompress.convert(clustered.keras_model, precision="int8", calibration=files["inputs"],
                                   eval_data=files["val"], per_tensor_dense=True, latency_runs=0)  # fmt: skip
    assert converted.fidelity.top1_agreement >= 0.95, converted.fidelity
    assert _agreement(converted.tflite, clustered.keras_model, held_out) == converted.fidelity.top1_agreement


def _pruned_without_labels(run_cli, path, files, folder) -> tuple:
    """`tfcompress prune` to 60% on the inputs alone, held-out inputs as --val, into folder/pruned.h5:
    (the report's output_check, what it printed)."""
    report_path = folder / "report.json"
    code, out, err = run_cli("prune", path, "--train", files["inputs"], "--val", files["val_inputs"],
                             "--target_sparsity", "0.6", "--epochs", "2", "--learning_rate", "1e-3",
                             "-o", folder / "pruned.h5", "--report", report_path)  # fmt: skip
    assert code == 0, err
    return json.loads(report_path.read_text())["output_check"], out


def test_without_labels_a_two_input_model_is_fine_tuned_towards_its_own_outputs(two_inputs, run_cli, tmp_path):
    """Written: 21% of the outputs' RMS moved, top-1 kept on 93% of held-out samples; pruned the same
    in one shot, 96% and 50%."""
    model, path, files, (image, features, _) = two_inputs
    check, out = _pruned_without_labels(run_cli, path, files, tmp_path)
    reference = model.predict([image, features], verbose=0)
    pruned = tfcompress.load_model(tmp_path / "pruned.h5")
    after = pruned.predict([image, features], verbose=0)
    moved = fidelity(after, reference, task="regression")
    one_shot = one_shot_pruned(model, 0.6).predict([image, features], verbose=0)
    assert moved.relative_error < fidelity(one_shot, reference, task="regression").relative_error / 3
    kept = fidelity(after, reference).top1_agreement
    assert kept >= 0.85 and check["top1_kept"] == pytest.approx(kept) and check["relative_error"] is None, check
    assert check["accuracy_drop"] == pytest.approx(_expected_drop(reference, after), abs=1e-4)
    assert f"top-1 class kept on {kept:.2%}" in out


def _expected_drop(before, after) -> float:
    """Points of accuracy lost if `before`'s probabilities are how likely each class is right."""
    rows = np.arange(len(before))
    return 100 * float(np.mean(before[rows, before.argmax(-1)] - before[rows, after.argmax(-1)]))


def test_qat_lowrank_and_distill_take_two_inputs(two_inputs, tmp_path):
    model, path, files, held_out = two_inputs
    qat = tfcompress.quantize_aware(path, files["numbered"], val=files["val"], epochs=1, learning_rate=1e-4, verbose=0)
    converted = tfcompress.convert(qat.keras_model, precision="int8", calibration=files["inputs"],
                                   eval_data=files["val"], latency_runs=0)  # fmt: skip
    assert _agreement(converted.tflite, qat.keras_model, held_out) >= 0.97

    factored = tfcompress.lowrank(path, train=files["numbered"], val=files["val"], energy=0.9, epochs=1,
                                  verbose=0)  # fmt: skip
    assert factored.params_ratio < 0.9 and factored.accuracy["fine_tuned"] > 0.85, factored

    distilled = tfcompress.distill(path, files["numbered"], val=files["val"], unlabeled=files["inputs"],
                                   width_multiplier=0.5, epochs=3, learning_rate=3e-3, verbose=0)  # fmt: skip
    assert distilled.samples == {"labelled": SAMPLES, "unlabeled": SAMPLES}
    student = distilled.keras_model
    assert [tuple(t.shape) for t in student.inputs] == [tuple(t.shape) for t in model.inputs]
    assert distilled.accuracy_check["after"] > 0.7, distilled.accuracy_check
    with pytest.raises(OptionError, match="augment=mixup needs a model with one input, but it takes 2"):
        tfcompress.distill(path, files["numbered"], width_multiplier=0.5, augment=("mixup",), epochs=1)


def test_analyze_and_auto_feed_every_input_and_the_recipe_remakes_the_choice(two_inputs, run_cli, tmp_path):
    """The converter orders the inputs by name (features, image); analyze's debug model and auto's
    candidates get them in the Keras order, or their shapes would not fit."""
    model, path, files, (image, features, labels) = two_inputs
    sensitivity = tfcompress.analyze(path, files["inputs"], eval_data=files["val"], samples=50)
    kernels = {layer.name for layer in model.layers if hasattr(layer, "kernel")}
    assert {layer.layer for layer in sensitivity.layers} >= kernels and len(kernels) == 4
    assert all(0 <= layer.rmse_over_scale < 1 for layer in sensitivity.layers), sensitivity.layers
    assert sensitivity.int8_accuracy >= sensitivity.float_accuracy - 0.02, sensitivity

    data = ("--calibration", files["inputs"], "--eval", files["val"])
    code, out, err = run_cli("auto", path, *data, "--max_accuracy_drop", "1", "--report", tmp_path / "auto.json",
                             "-o", tmp_path / "best.tflite")  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "auto.json").read_text())
    chosen = next(c for c in report["candidates"] if c["name"] == report["chosen"])
    written = (tmp_path / "best.tflite").read_bytes()
    accuracy = float(np.mean(np.argmax(predict(written, (image, features)), axis=1) == labels))
    assert accuracy == pytest.approx(chosen["accuracy"], abs=1e-9) and chosen["accuracy_drop"] <= 1.0, chosen
    code, out, err = run_cli("run", tmp_path / "best.recipe.yaml", "--model", path, *data, "-o", tmp_path / "remade")
    assert code == 0, err
    assert (tmp_path / "remade" / "model.tflite").read_bytes() == written


def _two_heads(tf_keras):
    """An image classifier with a second, regression head (a box, say) on the same trunk."""
    tf_keras.utils.set_random_seed(8)
    layers = tf_keras.layers
    image = tf_keras.Input((8, 8, 1), name="image")
    x = layers.Dense(64, activation="relu")(layers.Flatten()(layers.Conv2D(8, 3, activation="relu")(image)))
    return tf_keras.Model(
        image, [layers.Dense(4, activation="softmax", name="label")(x), layers.Dense(2, name="box")(x)]
    )


@pytest.fixture(scope="module")
def two_heads(tf_keras, tmp_path_factory):
    """(model trained on both heads, its .h5, the data files: inputs only, held-out inputs, labelled;
    the held-out inputs)."""
    folder = tmp_path_factory.mktemp("two_heads")
    image = np.random.default_rng(1).uniform(0, 1, (SAMPLES + 500, 8, 8, 1)).astype(np.float32)
    top, left = image[:, :4].mean(axis=(1, 2, 3)), image[:, :, :4].mean(axis=(1, 2, 3))
    bottom, right = image[:, 4:].mean(axis=(1, 2, 3)), image[:, :, 4:].mean(axis=(1, 2, 3))
    labels, box = (top > bottom) * 2 + (left > right), np.stack([top, left], axis=1)
    model = _two_heads(tf_keras)
    model.compile("adam", ["sparse_categorical_crossentropy", "mse"])
    model.fit(image[:SAMPLES], [labels[:SAMPLES], box[:SAMPLES]], epochs=10, verbose=0)
    path = folder / "two_heads.h5"
    model.save(path, include_optimizer=False)
    files = {name: folder / f"{name}.npz" for name in ("inputs", "val_inputs", "labelled")}
    np.savez(files["inputs"], x=image[:SAMPLES])
    np.savez(files["val_inputs"], x=image[SAMPLES:])
    np.savez(files["labelled"], x=image[:SAMPLES], y=labels[:SAMPLES])
    return model, path, files, image[SAMPLES:]


def test_each_head_of_a_two_output_model_is_fine_tuned_towards_its_own_outputs(two_heads, run_cli, tmp_path):
    """Written: the label head's outputs moved 21% (37% pruned in one shot), keeping top-1 on 92% of
    held-out samples (78%); the box head's 26% (216%). The check judges the label head by the accuracy it
    can be expected to have lost, the box by how far it moved."""
    model, path, files, held_out = two_heads
    check, out = _pruned_without_labels(run_cli, path, files, tmp_path)
    pruned = tfcompress.load_model(tmp_path / "pruned.h5")
    assert pruned.output_names == ["label", "box"]
    one_shot = one_shot_pruned(model, 0.6).predict(held_out, verbose=0)
    moved = {}
    for name, after, before, untrained in zip(
        model.output_names, pruned.predict(held_out, verbose=0), model.predict(held_out, verbose=0), one_shot
    ):
        moved[name] = fidelity(after, before, task="regression").relative_error
        assert moved[name] < 0.7 * fidelity(untrained, before, task="regression").relative_error, name
        if name == "label":
            kept, kept_one_shot = (fidelity(outputs, before).top1_agreement for outputs in (after, untrained))
            assert kept >= max(0.88, kept_one_shot + 0.08), (kept, kept_one_shot)
            label = (before, after)
    assert check["output"] == "box" and check["relative_error"] == pytest.approx(moved["box"], rel=1e-4), check
    assert check["classifier_output"] == "label" and check["accuracy_drop"] == pytest.approx(_expected_drop(*label))
    assert f"output 'box' moved {moved['box']:.2%}" in out and "output 'label': top-1 class kept on" in out
    assert " label_loss " in out and " val_box_loss " in out and "prune_low_magnitude" not in out, out

    factored = tfcompress.lowrank(path, train=files["inputs"], energy=0.9, epochs=1, verbose=0)
    assert {"label", "box"} <= set(factored.skipped) and factored.layers, factored.skipped


def test_labels_for_a_two_output_model_are_refused_saying_what_to_do(two_heads):
    _, path, files, _ = two_heads
    for step in (tfcompress.prune, tfcompress.distill):
        with pytest.raises(DataError, match="model has 2 outputs and labels fit one. Leave y out"):
            step(path, files["labelled"], epochs=1, **({"width_multiplier": 0.5} if step is tfcompress.distill else {}))
    with pytest.raises(ModelLoadError, match=r"2 outputs \('label', 'box'\); analyze and auto"):
        tfcompress.analyze(path, files["inputs"])


def test_a_two_output_teacher_is_distilled_head_by_head(two_heads, run_cli, tmp_path):
    """A half-width student matches each head of the teacher, with the head's own loss, and comes closer
    to both than it started; the guard judges the label head by its expected drop, the box by its distance."""
    import json

    from tfcompress.transforms.distill import scale_width

    model, path, files, held_out = two_heads
    code, out, err = run_cli("distill", "--teacher", path, "--width_multiplier", "0.5", "--train", files["inputs"],
                             "--val", files["val_inputs"], "--epochs", "10", "--learning_rate", "3e-3",
                             "-o", tmp_path / "student.h5", "--report", tmp_path / "r.json")  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["matched"] == "the teacher's outputs, by CategoricalCrossentropy, MeanSquaredError", report
    student = tfcompress.load_model(tmp_path / "student.h5")
    assert student.output_names == ["label", "box"] and student.count_params() < 0.6 * model.count_params()
    untrained = scale_width(model, 0.5).predict(held_out, verbose=0)
    outputs = zip(student.predict(held_out, verbose=0), model.predict(held_out, verbose=0), untrained)
    for name, (after, teacher, start) in zip(("label", "box"), outputs):
        distance = fidelity(after, teacher, task="regression").relative_error
        assert distance < 0.7 * fidelity(start, teacher, task="regression").relative_error, name
        if name == "box":
            assert report["output_check"]["relative_error"] == pytest.approx(distance, rel=1e-3)
        else:
            assert fidelity(after, teacher).top1_agreement > 0.8
    check = report["output_check"]
    assert check["output"] == "box" and check["classifier_output"] == "label" and check["before_is"] == "the teacher"


def test_a_recipe_on_a_two_output_model_judges_its_quantity_output_against_the_input_model(
    two_heads, run_cli, tmp_path
):
    """The relative-error budget of `run` measures the outputs that are quantities (the box; the label is
    a class) against the input model's, over the training step: it read "not measured" before."""
    model, path, files, held_out = two_heads
    recipe = tmp_path / "heads.yaml"
    recipe.write_text(
        "name: heads\nsteps:\n  - prune: {target_sparsity: 0.5, epochs: 2, learning_rate: 1.0e-3}\n"
        "  - convert: {precision: int8}\nbudgets:\n  max_relative_error: 0.5\n"
    )
    code, out, err = run_cli("run", recipe, "--model", path, "--train", files["inputs"], "--calibration",
                             files["inputs"], "--eval", files["val_inputs"], "-o", tmp_path / "out")  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    box = predict((tmp_path / "out" / "model.tflite").read_bytes(), held_out)[model.output_names.index("box")]
    expected = fidelity(box, model.predict(held_out, verbose=0)[1], task="regression").relative_error
    assert report["relative_error"] == pytest.approx(expected, rel=1e-4) and 0 < expected < 0.5, report
    assert f"budget max_relative_error ≤ 50.00%: {expected:.2%} → ok" in out
