"""`tfcompress distill`: the KD loss is Hinton's, logits are taken before a softmax, students
derived by width keep the output, and a trained student saves as an ordinary classifier."""

import numpy as np
import pytest

from conftest import CALIBRATION, EVAL, SAMPLE_MODELS

LENET5 = SAMPLE_MODELS / "lenet5.h5"


def _softmax(logits, temperature=1.0):
    scaled = logits / temperature
    exp = np.exp(scaled - scaled.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def test_loss_is_temperature_scaled_kl_plus_label_cross_entropy():
    from tfcompress.transforms.distill import DistillOptions, distillation_loss, packed_targets

    rng = np.random.default_rng(0)
    teacher, student = rng.normal(size=(5, 10)) * 3, rng.normal(size=(5, 10)) * 3
    labels = rng.integers(0, 10, 5)
    temperature, alpha = 3.0, 0.7
    soft_teacher, soft_student = _softmax(teacher, temperature), _softmax(student, temperature)
    kl = np.sum(soft_teacher * (np.log(soft_teacher) - np.log(soft_student)), axis=-1)
    cross_entropy = -np.log(_softmax(student)[np.arange(5), labels])
    expected = alpha * temperature**2 * kl + (1 - alpha) * cross_entropy

    loss = distillation_loss(DistillOptions(temperature, alpha))
    received = loss(packed_targets(labels, teacher), student.astype(np.float32)).numpy()
    np.testing.assert_allclose(received, expected, rtol=1e-4)


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
