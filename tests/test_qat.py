"""`tfcompress qat`: the check first, unsupported layers kept in float, a QAT model that
converts to int8 from its learned ranges, and a step under a MirroredStrategy."""

import re
from pathlib import Path

import numpy as np
import pytest

import custom_layers
from conftest import CALIBRATION, EVAL, subclassed_classifier


def _small_cnn(tf_keras, extra=None):
    """Conv → BatchNorm (folds) → ReLU → [extra] → Dense: trains in a second on 28×28."""
    tf_keras.utils.set_random_seed(3)
    layers = tf_keras.layers
    inputs = tf_keras.Input((28, 28, 1))
    x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(8, 3, strides=2, use_bias=False)(inputs)))
    x = layers.Flatten()(x)
    x = layers.Dense(32)(x)
    if extra is not None:
        x = extra(layers)(x)
    return tf_keras.Model(inputs, layers.Dense(10, activation="softmax")(layers.ReLU()(x)))


def test_qat_keeps_layer_norm_float(tf_keras, tmp_path):
    """How soon training starts is measured by benchmarks/qat_start.py, not here."""
    from tfcompress import convert, load_model, quantize_aware
    from tfcompress.transforms.qat import is_quantize_aware

    path = tmp_path / "layer_norm.h5"
    _small_cnn(tf_keras, lambda layers: layers.LayerNormalization()).save(path)
    report = quantize_aware(path, CALIBRATION, output=tmp_path / "qat.h5", epochs=2, learning_rate=1e-3, verbose=0)
    assert [plan.layer_type for plan in report.float_layers] == ["LayerNormalization"]
    assert report.check_verdict == "ready"  # the int8 model has no float op; QAT's float layer is listed apart
    assert report.metrics["accuracy"] > 0.5, report.metrics

    reloaded = load_model(tmp_path / "qat.h5")
    assert is_quantize_aware(reloaded)
    # Calibration only covers the float LayerNormalization; everything else uses learned ranges.
    converted = convert(tmp_path / "qat.h5", precision="int8", calibration=CALIBRATION, eval_data=EVAL, latency_runs=0)
    assert converted.float_ops == ()
    assert converted.accuracy_drop is not None and abs(converted.accuracy_drop) <= 2.0
    assert converted.fidelity.top1_agreement >= 0.95


def test_qat_model_converts_to_int8_without_calibration(tf_keras, tmp_path):
    from tfcompress import convert, quantize_aware
    from tfcompress.runtime.inspect import inspect_tflite

    path = tmp_path / "cnn.h5"
    _small_cnn(tf_keras).save(path)
    quantize_aware(path, CALIBRATION, output=tmp_path / "qat.h5", epochs=2, learning_rate=1e-3, verbose=0)
    converted = convert(tmp_path / "qat.h5", precision="int8", eval_data=EVAL, latency_runs=0)
    summary = inspect_tflite(converted.tflite)
    assert converted.float_ops == ()
    assert {"CONV_2D", "FULLY_CONNECTED"} <= set(summary.ops)
    assert converted.calibration["samples"] == 0
    assert converted.fidelity.top1_agreement >= 0.95
    assert abs(converted.accuracy_drop) <= 2.0


def test_qat_refuses_a_subclassed_model_before_any_training(tf_keras, monkeypatch):
    from tfcompress.data import load_data
    from tfcompress.errors import PreflightError
    from tfcompress.jobs import qat as qat_job
    from tfcompress.transforms import training

    model = subclassed_classifier(tf_keras)
    monkeypatch.setattr(training, "fine_tune", lambda *a, **k: pytest.fail("training started"))
    with pytest.raises(PreflightError, match="subclassed.*Functional"):
        qat_job.quantize_aware(model, load_data(CALIBRATION).take(64))


def test_qat_cli_rejects_labels_the_model_cannot_output(run_cli, tmp_path, tf_keras):
    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential(
        [tf_keras.Input((28, 28, 1)), tf_keras.layers.Flatten(), tf_keras.layers.Dense(4, activation="softmax")]
    )
    model.save(tmp_path / "four.h5")
    code, _, err = run_cli("qat", tmp_path / "four.h5", "-o", tmp_path / "out.h5", "--train", CALIBRATION)
    assert code == 2
    assert "takes labels 0..3 for its classes" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.h5").exists()


def _layer_scale(tf_keras):
    from tfcompress._keras import application_layers

    return application_layers()["LayerScale"](0.5, 32)


def _scale_by_half(tf_keras):
    return custom_layers.ScaleBy(0.5)


@pytest.mark.parametrize(
    "layer, loader_options",
    [
        (_layer_scale, ()),  # tf_keras's own, unregistered
        (_scale_by_half, ("--custom_objects", Path(custom_layers.__file__), "--trust_model_code")),
    ],
    ids=["convnext_layer_scale", "user_layer"],
)
def test_qat_takes_a_layer_class_keras_does_not_register(run_cli, tmp_path, tf_keras, layer, loader_options):
    """tfmot rebuilds the model from its config: an unregistered class came back as its name
    ("'str' object is not callable", ConvNeXtTiny in benchmarks/training_coverage.py)."""
    from tfcompress import load_model

    model = _small_cnn(tf_keras, lambda layers: lambda x: layer(tf_keras)(x))
    model.save(tmp_path / "scaled.h5")
    code, out, err = run_cli(
        "qat", tmp_path / "scaled.h5", "--train", CALIBRATION, "--epochs", "2", "--learning_rate", "1e-3",
        "-o", tmp_path / "qat.h5", *loader_options,
    )  # fmt: skip
    assert code == 0, err
    assert re.search(r"trained in float: \S+ \((LayerScale|ScaleBy)\)", out + err), out + err
    trained = load_model(tmp_path / "qat.h5", custom_objects=custom_layers.__dict__)
    assert type(layer(tf_keras)).__name__ in {type(each).__name__ for each in trained.layers}
    data = np.load(EVAL)
    accuracy = np.mean(np.argmax(trained(data["x"][:500].astype(np.float32) / 255), 1) == data["y"][:500])
    assert accuracy > 0.5, accuracy


def test_one_qat_step_under_a_mirrored_strategy(tf_keras):
    import tensorflow as tf

    from tfcompress import quantize_aware
    from tfcompress.data import load_data

    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    data = load_data(CALIBRATION).take(32)
    report = quantize_aware(_small_cnn(tf_keras), data, batch_size=32, strategy=strategy, verbose=0)
    assert np.isfinite(report.metrics["loss"])
    assert report.keras_model.optimizer.iterations.numpy() == 1
