"""`tfcompress distill`: the KD loss is Hinton's, logits are taken before a softmax, students
derived by width keep the output, and a trained student saves as an ordinary classifier.
Unlabelled data is supervised by the teacher alone, and with augmentation the teacher sees the
very batch the student sees."""

import numpy as np
import pytest

from conftest import CALIBRATION, EVAL, SAMPLE_MODELS, saved_field_model

LENET5 = SAMPLE_MODELS / "lenet5.h5"


def _softmax(logits, temperature=1.0):
    scaled = logits / temperature
    exp = np.exp(scaled - scaled.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def test_loss_is_temperature_scaled_kl_plus_label_cross_entropy_where_there_is_a_label():
    from tfcompress.transforms.distill import DistillOptions, distillation_loss, label_distributions, packed_targets

    rng = np.random.default_rng(0)
    teacher, student = rng.normal(size=(5, 10)) * 3, rng.normal(size=(5, 10)) * 3
    labels = rng.integers(0, 10, 3)  # the last two samples are unlabelled
    temperature, alpha = 3.0, 0.7
    soft_teacher, soft_student = _softmax(teacher, temperature), _softmax(student, temperature)
    kl = np.sum(soft_teacher * (np.log(soft_teacher) - np.log(soft_student)), axis=-1)
    cross_entropy = -np.log(_softmax(student)[np.arange(3), labels])
    expected = alpha * temperature**2 * kl + (1 - alpha) * np.concatenate([cross_entropy, [0.0, 0.0]])

    loss = distillation_loss(DistillOptions(temperature, alpha))
    targets = packed_targets(label_distributions(labels, 10, unlabelled=2), teacher)
    received = loss(targets, student.astype(np.float32)).numpy()
    np.testing.assert_allclose(received, expected, rtol=1e-4)


def test_mixup_mixes_labels_only_where_both_samples_have_one():
    from tfcompress.transforms.augment import BatchAugmenter
    from tfcompress.transforms.distill import label_distributions

    x = np.arange(8, dtype=np.float32)[:, None] * np.ones((8, 3), np.float32)  # sample i is all i
    rows = label_distributions(np.arange(4) % 3, 3, unlabelled=4)
    mixed_x, mixed_rows = (part.numpy() for part in BatchAugmenter(("mixup",), seed=0)(x, rows))

    assert not np.array_equal(mixed_x, x)
    np.testing.assert_allclose(mixed_x.min(axis=1), mixed_x.max(axis=1))  # a blend of two whole samples
    sums = mixed_rows.sum(axis=1)
    assert set(np.round(sums, 5)) <= {0.0, 1.0}, sums
    assert np.all(sums[4:] == 0)  # an unlabelled sample never gains a label
    assert 0 < np.count_nonzero(sums) <= 4


@pytest.mark.parametrize("shape", [(28, 28), (28, 28, 1), (12, 16, 3)])
def test_shift_and_flip_keep_images_whole(shape):
    from tfcompress.transforms.augment import BatchAugmenter

    x = np.random.default_rng(0).random((6, *shape), np.float32)
    rows = np.eye(6, dtype=np.float32)
    augmented, same_rows = (part.numpy() for part in BatchAugmenter(("shift", "flip"), seed=0)(x, rows))
    assert augmented.shape == x.shape
    assert not np.array_equal(augmented, x)
    assert set(np.unique(augmented)) <= set(np.unique(x))  # moved and mirrored, never interpolated
    np.testing.assert_array_equal(same_rows, rows)


def test_exposed_logits_are_the_pre_softmax_values_and_the_softmax_comes_back(tf_keras):
    from tfcompress import load_model
    from tfcompress.transforms.distill import exposed_logits

    model = load_model(LENET5)
    x = np.random.default_rng(0).random((8, 28, 28, 1), np.float32)
    probabilities = model.predict(x, verbose=0)
    with exposed_logits(model) as logits_model:
        logits = logits_model.predict(x, verbose=0)
    np.testing.assert_allclose(_softmax(logits), probabilities, atol=1e-5)
    assert not np.allclose(logits.sum(axis=-1), 1.0)
    np.testing.assert_allclose(model.predict(x, verbose=0), probabilities, atol=1e-6)

    # A separate Softmax layer is cut off rather than switched.
    inputs = tf_keras.Input((4,))
    separate = tf_keras.Model(inputs, tf_keras.layers.Softmax()(tf_keras.layers.Dense(3)(inputs)))
    with exposed_logits(separate) as logits_model:
        assert logits_model.layers[-1].__class__.__name__ == "Dense"


@pytest.mark.parametrize("name", ["lenet5", "resnet8", "dscnn"])
def test_width_multiplier_scales_the_body_and_keeps_the_classes(name):
    from tfcompress import load_model
    from tfcompress.transforms.distill import scale_width

    teacher = load_model(SAMPLE_MODELS / f"{name}.h5")
    student = scale_width(teacher, 0.5)
    assert student.outputs[0].shape[-1] == 10
    assert student.count_params() <= 0.35 * teacher.count_params(), (student.count_params(), teacher.count_params())
    assert student.predict(np.zeros((2, 28, 28, 1), np.float32), verbose=0).shape == (2, 10)


@pytest.mark.parametrize("name", ["TimeDistributed Dense", "Bidirectional LSTM"])
def test_width_multiplier_scales_the_layers_a_wrapper_holds(tf_keras, name):
    """Before, a wrapped layer kept its width and the "half-width" student had the teacher's size."""
    from tfcompress.testing.field_zoo import build_field_model, sample_inputs
    from tfcompress.transforms.distill import scale_width

    teacher = build_field_model(name, tf_keras)
    student = scale_width(teacher, 0.5)
    assert student.count_params() <= 0.6 * teacher.count_params(), (student.count_params(), teacher.count_params())
    x = sample_inputs(name, teacher, 4)
    assert student.predict(x, verbose=0).shape == teacher.predict(x, verbose=0).shape


def test_width_multiplier_keeps_the_width_a_residual_merge_with_the_input_needs(tf_keras):
    """A Transformer block adds the input to the feed-forward output: that Dense keeps the input's width
    (the student could not be built before), the one before it narrows."""
    from tfcompress.testing.field_zoo import build_field_model, sample_inputs
    from tfcompress.transforms.distill import scale_width

    name = "Transformer block (MHA + LayerNorm + GELU)"
    teacher = build_field_model(name, tf_keras)
    student = scale_width(teacher, 0.5)
    teacher_units, student_units = ({layer.name: layer.units for layer in model.layers if hasattr(layer, "units")}
                                    for model in (teacher, student))  # fmt: skip
    residual = next(name for name, units in teacher_units.items() if units == 32)
    hidden = next(name for name, units in teacher_units.items() if units == 64)
    assert student_units[residual] == 32 and student_units[hidden] == 32, student_units
    x = sample_inputs(name, teacher, 4)
    assert student.predict(x, verbose=0).shape == teacher.predict(x, verbose=0).shape
    assert student.count_params() < 0.8 * teacher.count_params()


def test_width_multiplier_narrows_a_squeeze_excite_reshape_with_its_channels(tf_keras):
    """EfficientNet's blocks reshape pooled channels to (1, 1, C) by a fixed shape: it follows the width of
    the convolution that makes C (the student could not be built before)."""
    from tfcompress.transforms.distill import scale_width

    layers = tf_keras.layers
    image = tf_keras.Input((8, 8, 3))
    features = layers.Conv2D(16, 3, activation="relu")(image)
    squeezed = layers.Reshape((1, 1, 16))(layers.GlobalAveragePooling2D()(features))
    excite = layers.Conv2D(16, 1, activation="sigmoid")(layers.Conv2D(4, 1, activation="relu")(squeezed))
    outputs = layers.Dense(10, activation="softmax")(layers.Flatten()(layers.Multiply()([features, excite])))
    teacher = tf_keras.Model(image, outputs)
    student = scale_width(teacher, 0.5)
    assert [layer.target_shape for layer in student.layers if isinstance(layer, layers.Reshape)] == [(1, 1, 8)]
    assert student.predict(np.zeros((2, 8, 8, 3), np.float32), verbose=0).shape == (2, 10)


def test_a_student_identical_to_the_teacher_has_nothing_to_learn(tmp_path):
    """With alpha 1 the loss is the KL term alone, which is zero for identical logits (a wrong
    logits exposure would break this). The learning rate is tiny because Adam scales even
    rounding-noise gradients up to full-size steps."""
    from tfcompress import DistillOptions, distill, load_model

    report = distill(
        LENET5,
        CALIBRATION,
        student=LENET5,
        output=tmp_path / "student.h5",
        val=EVAL,
        options=DistillOptions(temperature=4.0, alpha=1.0),
        epochs=1,
        batch_size=100,
        learning_rate=1e-9,
        verbose=0,
    )
    assert abs(report.metrics["loss"]) < 1e-5, report.metrics
    x = np.load(EVAL)["x"][:50].astype(np.float32) / 255
    teacher_outputs = load_model(LENET5).predict(x, verbose=0)
    np.testing.assert_allclose(load_model(tmp_path / "student.h5").predict(x, verbose=0), teacher_outputs, atol=1e-5)
    assert report.accuracy["student"] == report.accuracy["teacher"]


def test_distill_trains_a_half_width_student_that_saves_as_a_classifier(tmp_path, run_cli):
    from tfcompress import load_model

    output, report_path = tmp_path / "student.h5", tmp_path / "distill.json"
    code, out, err = run_cli(
        "distill",
        "--teacher",
        LENET5,
        "--width-multiplier",
        "0.5",
        "-o",
        output,
        "--train",
        CALIBRATION,
        "--val",
        EVAL,
        "--epochs",
        "4",
        "--report",
        report_path,
    )
    assert code == 0, err
    assert "student 15,738 (0.26x)" in out
    import json

    report = json.loads(report_path.read_text())
    # 1,000 training images and 4 epochs: far from the benchmark's numbers, far above chance (10%).
    assert report["accuracy"]["student"] > 0.6, report
    student = load_model(output)
    outputs = student.predict(np.load(EVAL)["x"][:20].astype(np.float32) / 255, verbose=0)
    np.testing.assert_allclose(outputs.sum(axis=-1), 1.0, atol=1e-5)  # the softmax is back on


@pytest.mark.parametrize(
    "args, message",
    [
        (["--width_multiplier", "0.5", "--student", str(SAMPLE_MODELS / "lenet5.h5")], "exactly one of student"),
        ([], "exactly one of student"),
        (["--width_multiplier", "1.5"], "width_multiplier must be in (0, 1]"),
        (["--width_multiplier", "0.5", "--alpha", "2"], "alpha must be in [0, 1]"),
    ],
)
def test_bad_distill_options_are_one_line(run_cli, tmp_path, args, message):
    code, _, err = run_cli("distill", "--teacher", LENET5, "-o", tmp_path / "s.h5", "--train", CALIBRATION, *args)
    assert code == 2
    assert message in err and "Traceback" not in err, err
    assert not (tmp_path / "s.h5").exists()


def test_a_student_with_other_classes_is_refused(run_cli, tmp_path, tf_keras):
    student = tf_keras.Sequential(
        [tf_keras.Input((28, 28, 1)), tf_keras.layers.Flatten(), tf_keras.layers.Dense(5, activation="softmax")]
    )
    student.save(tmp_path / "five.h5")
    code, _, err = run_cli(
        "distill",
        "--teacher",
        LENET5,
        "--student",
        tmp_path / "five.h5",
        "-o",
        tmp_path / "s.h5",
        "--train",
        CALIBRATION,
    )
    assert code == 2
    assert "outputs have shape (5,) but the teacher's have (10,)" in err, err


@pytest.mark.parametrize(
    "name, told, refused",
    [
        ("sigmoid multi-label head", (), "the model's output reads as 6 yes/no scores (a sigmoid). Leave y out"),
        ("regression head", ("--task", "regression"), "reads as a quantity (--task regression). Leave y out"),
        ("U-Net-lite segmentation", (), "output (softmax, (32, 32, 3) per sample) is not one set of class scores"),
    ],
)
def test_labels_a_teacher_without_one_set_of_class_scores_cannot_take_are_refused(
    run_cli, tmp_path, tf_keras, name, told, refused
):
    """Such teachers are distilled by matching their outputs, with no labels."""
    from tfcompress.testing.field_zoo import sample_inputs

    teacher, path = saved_field_model(tf_keras, name, tmp_path / "teacher.h5")
    x = sample_inputs(name, teacher, 64)
    np.savez(tmp_path / "train.npz", x=x, y=(x.reshape(len(x), -1)[:, 0] > 0.5).astype(np.int64))
    code, _, err = run_cli("distill", "--teacher", path, "--width_multiplier", "0.5", "--train",
                           tmp_path / "train.npz", *told, "-o", tmp_path / "s.h5")  # fmt: skip
    assert code == 2 and "Traceback" not in err and not (tmp_path / "s.h5").exists(), err
    assert refused in err, err


@pytest.mark.parametrize(
    "name, loss",
    [
        ("regression head", "MeanSquaredError"),
        ("LSTM sequence regression", "MeanSquaredError"),
        ("conv autoencoder", "MeanSquaredError"),
        ("sigmoid multi-label head", "MeanSquaredError"),
        ("U-Net-lite segmentation", "CategoricalCrossentropy"),
    ],
)
def test_a_teacher_without_one_set_of_class_scores_is_distilled_by_matching_its_outputs(
    run_cli, tmp_path, tf_keras, name, loss
):
    """Regressors, autoencoders, multi-label heads and segmenters: a half-width student trained towards
    the teacher's outputs comes closer to them than it started, and the guard measures that distance."""
    import json

    from tfcompress import load_model
    from tfcompress.runtime.metrics import fidelity
    from tfcompress.testing.field_zoo import sample_inputs
    from tfcompress.transforms.distill import scale_width

    teacher, path = saved_field_model(tf_keras, name, tmp_path / "teacher.h5")
    np.save(tmp_path / "train.npy", sample_inputs(name, teacher, 256, seed=1))
    held_out = sample_inputs(name, teacher, 64, seed=2)
    np.save(tmp_path / "val.npy", held_out)
    code, out, err = run_cli("distill", "--teacher", path, "--width_multiplier", "0.5", "--train",
                             tmp_path / "train.npy", "--val", tmp_path / "val.npy", "--epochs", "5",
                             "-o", tmp_path / "s.h5", "--report", tmp_path / "r.json")  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["matched"] == f"the teacher's outputs, by {loss}" and report["accuracy_check"] is None
    assert report["params"]["student"] < 0.6 * report["params"]["teacher"]
    assert f"matched the teacher's outputs, by {loss}" in out
    teacher_outputs = load_model(path).predict(held_out, verbose=0)
    trained = load_model(tmp_path / "s.h5").predict(held_out, verbose=0)
    untrained = scale_width(load_model(path), 0.5).predict(held_out, verbose=0)  # the CLI's student, seed 0
    distance = {key: fidelity(outputs, teacher_outputs, task="regression").relative_error
                for key, outputs in (("trained", trained), ("untrained", untrained))}  # fmt: skip
    assert distance["trained"] < 0.8 * distance["untrained"], distance
    check = report["output_check"]
    if check["relative_error"] is not None:  # a quantity: the guard's measure is the same distance
        assert check["relative_error"] == pytest.approx(distance["trained"], rel=1e-3), check


def test_a_student_identical_to_the_teacher_has_nothing_to_learn_on_augmented_batches():
    """Function matching: if the teacher saw anything but the student's augmented batch, the KL
    term between two copies of one model would not be zero."""
    from tfcompress import distill

    report = distill(
        LENET5,
        CALIBRATION,
        student=LENET5,
        unlabeled=np.load(EVAL)["x"][:200],
        augment=("shift", "flip", "mixup"),
        alpha=1.0,
        epochs=1,
        batch_size=100,
        learning_rate=1e-9,
        verbose=0,
    )
    assert abs(report.metrics["loss"]) < 1e-5, report.metrics
    assert report.samples == {"labelled": 1000, "unlabeled": 200}


def test_unlabelled_data_brings_the_student_closer_to_the_teacher():
    """100 labels alone against the same 100 plus 900 images only the teacher labels, with the same
    seed and epochs: agreement with the teacher on held-out images."""
    from tfcompress import distill, load_model

    calibration = np.load(CALIBRATION)
    x_eval = np.load(EVAL)["x"][:500].astype(np.float32) / 255
    teacher_classes = load_model(LENET5).predict(x_eval, verbose=0).argmax(axis=1)
    agreement = {}
    for name, unlabeled in (("labels only", None), ("with unlabelled", calibration["x"][100:])):
        report = distill(
            LENET5,
            (calibration["x"][:100], calibration["y"][:100]),
            unlabeled=unlabeled,
            width_multiplier=0.5,
            epochs=3,
            batch_size=50,
            verbose=0,
        )
        predicted = report.keras_model.predict(x_eval, verbose=0).argmax(axis=1)
        agreement[name] = float(np.mean(predicted == teacher_classes))
    assert agreement["with unlabelled"] > agreement["labels only"] + 0.15, agreement


def test_training_data_without_labels_is_supervised_by_the_teacher_alone(tmp_path, run_cli):
    """A user with images and no labels: the teacher labels them all, the guard reads the teacher's
    scores as the labels (its count of kept classes is the student's agreement with the teacher),
    and the student learns the task: measured against the real labels it never saw."""
    import json

    from tfcompress import load_model

    images = np.load(CALIBRATION)["x"]
    np.save(tmp_path / "images.npy", images)
    code, out, err = run_cli(
        "distill", "--teacher", LENET5, "--width_multiplier", "0.5", "--train", tmp_path / "images.npy",
        "--epochs", "4", "-o", tmp_path / "student.h5", "--report", tmp_path / "distill.json",
    )  # fmt: skip
    assert code == 0, err
    assert "trained on 0 labelled + 1,000 unlabelled" in out and "the scores of the teacher stand in" in out, out
    assert "accuracy 0.0000" not in out  # no labels to measure the training accuracy by
    report = json.loads((tmp_path / "distill.json").read_text())
    assert report["samples"] == {"labelled": 0, "unlabeled": 1000} and report["accuracy_check"] is None
    check = report["output_check"]
    assert check["data"].startswith("1,000 training samples") and check["before_is"] == "the teacher"
    x = images.astype(np.float32) / 255
    teacher, student = (
        load_model(path).predict(x, verbose=0).argmax(axis=1) for path in (LENET5, tmp_path / "student.h5")
    )
    assert abs(check["top1_kept"] - np.mean(teacher == student)) <= 0.002, check
    evaluation = np.load(EVAL)
    test_classes = load_model(tmp_path / "student.h5").predict(evaluation["x"].astype(np.float32) / 255, verbose=0)
    assert np.mean(test_classes.argmax(axis=1) == evaluation["y"]) > 0.6  # as with labels (4 epochs on 1,000)


def test_function_matching_repeats_exactly():
    from tfcompress import distill

    def trained_weights():
        report = distill(
            LENET5,
            CALIBRATION,
            width_multiplier=0.25,
            augment=("shift", "mixup"),
            epochs=1,
            batch_size=200,
            verbose=0,
        )
        return report.keras_model.get_weights()

    first, second = trained_weights(), trained_weights()
    assert all(np.array_equal(a, b) for a, b in zip(first, second))


def test_distill_cli_with_unlabelled_data_and_augmentation(tmp_path, run_cli):
    import json

    calibration = np.load(CALIBRATION)
    np.savez(tmp_path / "labelled.npz", x=calibration["x"][:200], y=calibration["y"][:200])
    np.save(tmp_path / "unlabeled.npy", calibration["x"][200:])
    code, out, err = run_cli(
        "distill",
        "--teacher",
        LENET5,
        "--width_multiplier",
        "0.5",
        "--train",
        tmp_path / "labelled.npz",
        "--unlabeled",
        tmp_path / "unlabeled.npy",
        "--augment",
        "shift,flip,mixup",
        "--val",
        EVAL,
        "--epochs",
        "1",
        "--batch_size",
        "100",
        "-o",
        tmp_path / "student.h5",
        "--report",
        tmp_path / "distill.json",
    )
    assert code == 0, err
    assert "trained on 200 labelled + 800 unlabelled" in out and "function matching (shift, flip, mixup" in out, out
    report = json.loads((tmp_path / "distill.json").read_text())
    assert report["samples"] == {"labelled": 200, "unlabeled": 800}
    assert "10 training steps (1 epoch(s) of batch 100): more epochs" in report["accuracy_check"]["causes"]
    assert report["options"]["augment"] == ["shift", "flip", "mixup"]
    assert report["training_seconds"] > 0


def test_pixel_augmentations_on_a_model_without_image_input_are_one_line(run_cli, tmp_path, tf_keras):
    teacher = tf_keras.Sequential([tf_keras.Input((64,)), tf_keras.layers.Dense(10, activation="softmax")])
    teacher.save(tmp_path / "vector.h5")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "train.npz", x=rng.random((50, 64), np.float32), y=rng.integers(0, 10, 50))
    arguments = ["--teacher", tmp_path / "vector.h5", "--width_multiplier", "0.5", "--train", tmp_path / "train.npz"]
    code, _, err = run_cli("distill", *arguments, "--augment", "shift", "-o", tmp_path / "s.h5")
    assert code == 2 and "augment=shift needs an image input" in err and "Traceback" not in err, err
    assert "augment=mixup" in err
    code, _, err = run_cli("distill", *arguments, "--augment", "rotate", "-o", tmp_path / "s.h5")
    assert code == 2 and "augment takes shift, flip, mixup. Received: augment=rotate" in err, err
    assert not (tmp_path / "s.h5").exists()
    code, _, err = run_cli("distill", *arguments, "--augment", "mixup", "--epochs", "1", "-o", tmp_path / "s.h5")
    assert code == 0, err


@pytest.mark.parametrize("name", ["sigmoid binary head", "regression head"])
def test_a_yes_no_teacher_is_distilled_as_the_two_classes_it_tells_apart(tf_keras, run_cli, tmp_path, name):
    """One sigmoid unit, or one linear unit whose 0/1 labels make it the logit of yes: distill refused
    the labels ("takes labels 0..0"). Its logit z is distilled as the classes [0, z], and each model is
    measured at its own threshold (0.5; the logit: 0)."""
    import json

    from tfcompress.runtime.task import yes_probability
    from tfcompress.testing.field_zoo import build_field_model, sample_inputs
    from tfcompress.transforms.distill import exposed_logits

    teacher = build_field_model(name, tf_keras)
    x = sample_inputs(name, teacher, 3000)
    y = (x[:, 0] + x[:, 1] > 1).astype(np.int64)
    sigmoid = name.startswith("sigmoid")
    teacher.compile(tf_keras.optimizers.Adam(1e-2), tf_keras.losses.BinaryCrossentropy(from_logits=not sigmoid))
    teacher.fit(x[:2000], y[:2000], epochs=15, batch_size=64, verbose=0)
    teacher.save(tmp_path / "teacher.h5", include_optimizer=False)
    np.savez(tmp_path / "train.npz", x=x[:2000], y=y[:2000])
    np.savez(tmp_path / "val.npz", x=x[2000:], y=y[2000:])

    outputs = teacher.predict(x[2000:], verbose=0)
    yes = outputs if sigmoid else yes_probability(outputs)
    with exposed_logits(teacher, yes_no=True) as two_classes:
        np.testing.assert_allclose(
            _softmax(two_classes.predict(x[2000:], verbose=0)), np.hstack([1 - yes, yes]), atol=1e-5
        )
    np.testing.assert_array_equal(teacher.predict(x[2000:], verbose=0), outputs)  # the sigmoid is back on

    code, _, err = run_cli("distill", "--teacher", tmp_path / "teacher.h5", "--width_multiplier", "0.5",
                           "--train", tmp_path / "train.npz", "--val", tmp_path / "val.npz", "--epochs", "15",
                           "--learning_rate", "1e-2", "--batch_size", "64", "-o", tmp_path / "student.h5",
                           "--report", tmp_path / "distill.json")  # fmt: skip
    assert code == 0, err
    accuracy = json.loads((tmp_path / "distill.json").read_text())["accuracy"]
    student = tf_keras.models.load_model(tmp_path / "student.h5", compile=False)
    at = 0.5 if sigmoid else 0.0
    measured = {role: float(np.mean((model.predict(x[2000:], verbose=0)[:, 0] > at) == y[2000:]))
                for role, model in (("teacher", teacher), ("student", student))}  # fmt: skip
    assert accuracy == pytest.approx(measured), (accuracy, measured)
    assert measured["teacher"] > 0.9 and measured["student"] > 0.85, measured
