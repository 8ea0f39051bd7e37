"""Fidelity in the terms of the model's task: models that are not softmax classifiers on [0, 1] images."""

import json

import numpy as np
import pytest

import tfcompress
from tfcompress.runtime import metrics
from tfcompress.runtime.inspect import inspect_tflite
from tfcompress.runtime.interpreter import predict
from tfcompress.runtime.task import detect_task

FEATURES = 16


def _inputs(count=200, seed=0):
    return np.random.default_rng(seed).normal(0, 1, (count, FEATURES)).astype(np.float32)


def _dense_model(tf_keras, widths, last_width, last_activation=None, seed=0):
    tf_keras.utils.set_random_seed(seed)
    layers = [tf_keras.Input((FEATURES,))]
    layers += [tf_keras.layers.Dense(width, activation="relu") for width in widths]
    layers.append(tf_keras.layers.Dense(last_width, activation=last_activation))
    return tf_keras.Sequential(layers)


@pytest.fixture(scope="module")
def task_models(tf_keras, tmp_path_factory):
    """name → saved .h5 path, one model per kind of output."""
    folder = tmp_path_factory.mktemp("tasks")
    models = {
        "softmax": _dense_model(tf_keras, [12], 5, "softmax"),
        "sigmoid": _dense_model(tf_keras, [12], 1, "sigmoid"),
        "multilabel": _dense_model(tf_keras, [12], 4, "sigmoid"),
        "regression": _dense_model(tf_keras, [12], 3),
        "reconstruction": _dense_model(tf_keras, [8, 4, 8], FEATURES),
    }
    paths = {}
    for name, model in models.items():
        paths[name] = folder / f"{name}.h5"
        model.save(paths[name])
    x = _inputs()
    np.savez(folder / "x.npz", x=x)
    np.savez(folder / "xy.npz", x=x, y=(x.sum(axis=1) > 0).astype(np.int64))
    return paths, folder


@pytest.mark.parametrize(
    "name, task",
    [
        ("softmax", "softmax"),
        ("sigmoid", "sigmoid"),
        ("multilabel", "sigmoid"),
        ("regression", "regression"),
        ("reconstruction", "reconstruction"),
    ],
)
def test_the_task_is_read_from_the_converted_model(task_models, name, task):
    paths, folder = task_models
    for precision in ("float16", "int8"):
        report = tfcompress.convert(paths[name], precision=precision, calibration=folder / "x.npz")
        assert detect_task(inspect_tflite(report.tflite)) == task
        assert report.fidelity.task == task


def test_a_regression_gets_snr_and_relative_error_not_agreement(task_models):
    paths, folder = task_models
    report = tfcompress.convert(paths["regression"], precision="int8", calibration=folder / "x.npz")
    keras_outputs = tfcompress.load_model(paths["regression"]).predict(_inputs(), verbose=0)
    tflite_outputs = predict(report.tflite, _inputs())
    error = tflite_outputs - keras_outputs
    expected_snr = 10 * np.log10(
        np.mean(keras_outputs.astype(np.float64) ** 2) / np.mean(error.astype(np.float64) ** 2)
    )
    assert report.fidelity.snr_db == pytest.approx(expected_snr, abs=0.01)
    assert report.fidelity.relative_error == pytest.approx(10 ** (-expected_snr / 20), rel=1e-3)
    assert report.fidelity.top1_agreement is None and report.fidelity.threshold_agreement is None
    assert 20 < report.fidelity.snr_db < 80  # int8 of a small float model: neither broken nor exact


def test_labels_that_do_not_fit_a_regression_are_not_turned_into_an_accuracy(task_models):
    paths, folder = task_models
    report = tfcompress.convert(
        paths["regression"], precision="int8", calibration=folder / "x.npz", eval_data=folder / "xy.npz"
    )
    assert report.accuracy is None and report.reference.accuracy is None
    assert any("--task logits" in warning for warning in report.warnings)
    told = tfcompress.convert(
        paths["regression"], calibration=folder / "x.npz", eval_data=folder / "xy.npz", task="regression"
    )
    assert [warning for warning in told.warnings if "labels are not used" in warning] == [
        "the eval labels are not used: the model's output reads as regression as --task says"
    ]
    as_logits = tfcompress.convert(
        paths["regression"], precision="int8", calibration=folder / "x.npz", eval_data=folder / "xy.npz", task="logits"
    )
    assert as_logits.fidelity.task == "logits" and as_logits.fidelity.top1_agreement >= 0.9
    assert as_logits.accuracy is None or 0 <= as_logits.accuracy <= 1


def test_a_single_sigmoid_is_judged_at_its_threshold_not_by_argmax(task_models):
    paths, folder = task_models
    report = tfcompress.convert(
        paths["sigmoid"], precision="int8", calibration=folder / "x.npz", eval_data=folder / "xy.npz"
    )
    data = np.load(folder / "xy.npz")
    keras_outputs = tfcompress.load_model(paths["sigmoid"]).predict(data["x"], verbose=0)[:, 0]
    assert report.reference.accuracy == pytest.approx(np.mean((keras_outputs > 0.5) == data["y"]))
    tflite_outputs = predict(report.tflite, data["x"])[:, 0]
    assert report.fidelity.threshold_agreement == pytest.approx(
        np.mean((tflite_outputs > 0.5) == (keras_outputs > 0.5))
    )
    assert report.fidelity.top1_agreement is None  # arg-max of one output is always 0: 100%, meaningless


def test_a_reconstruction_reports_how_well_anomaly_scores_keep_their_order(task_models):
    paths, folder = task_models
    report = tfcompress.convert(paths["reconstruction"], precision="int8", calibration=folder / "x.npz")
    assert report.fidelity.score_correlation > 0.95
    # Against reconstructions whose errors are random per sample, the correlation collapses.
    x = _inputs()
    keras_outputs = tfcompress.load_model(paths["reconstruction"]).predict(x, verbose=0)
    rng = np.random.default_rng(1)
    scrambled = x + rng.normal(0, 1, x.shape).astype(np.float32) * rng.uniform(0, 3, (len(x), 1)).astype(np.float32)
    assert abs(metrics.fidelity(scrambled, keras_outputs, "reconstruction", x).score_correlation) < 0.3


def test_a_model_whose_output_never_changes_is_warned_about(tf_keras, tmp_path):
    model = _dense_model(tf_keras, [8], 3, "softmax")
    model.layers[0].set_weights([np.zeros((FEATURES, 8), np.float32), np.ones(8, np.float32)])
    model.save(tmp_path / "constant.h5")
    np.savez(tmp_path / "x.npz", x=_inputs())
    report = tfcompress.convert(tmp_path / "constant.h5", precision="int8", calibration=tmp_path / "x.npz")
    assert any("the same for all 200 inputs" in warning for warning in report.warnings)
    varied = tfcompress.convert(
        _dense_model(tf_keras, [8], 3, "softmax"), precision="int8", calibration=tmp_path / "x.npz"
    )
    assert not any("the same for all" in warning for warning in varied.warnings)


def test_benchmark_compares_a_regression_by_snr(task_models, tmp_path, run_cli):
    paths, folder = task_models
    tflite = tmp_path / "regression.tflite"
    convert = ("convert", str(paths["regression"]), "--precision", "int8", "--calibration", str(folder / "x.npz"))
    assert run_cli(*convert, "-o", str(tflite))[0] == 0
    code, out, err = run_cli(
        "benchmark",
        str(tflite),
        "--reference",
        str(paths["regression"]),
        "--eval",
        str(folder / "x.npz"),
        "--runs",
        "5",
        "--warmup",
        "1",
        "--json",
        str(tmp_path / "b.json"),
    )
    assert code == 0, err
    (row,) = json.loads((tmp_path / "b.json").read_text())["models"]
    assert row["fidelity"]["task"] == "regression" and row["fidelity"]["top1_agreement"] is None
    assert f"SNR {row['fidelity']['snr_db']:.1f} dB" in out


def test_data_scaled_twice_is_warned_about_and_the_scaling_is_recorded(tf_keras, tmp_path):
    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential(
        [
            tf_keras.Input((8, 8, 1)),
            tf_keras.layers.Rescaling(1 / 255, name="rescaling"),  # named: auto-names count up per process
            tf_keras.layers.Flatten(),
            tf_keras.layers.Dense(4, activation="softmax"),
        ]
    )
    np.savez(tmp_path / "pixels.npz", x=np.random.default_rng(0).integers(0, 256, (50, 8, 8, 1), dtype=np.uint8))
    report = tfcompress.convert(model, precision="int8", calibration=tmp_path / "pixels.npz")
    assert report.preprocessing == {"stored_dtype": "uint8", "scale": 1 / 255, "offset": 0.0, "default_scale": True}
    assert any("'rescaling' (Rescaling)" in warning and "--input_scale 1" in warning for warning in report.warnings)
    raw = tfcompress.convert(model, precision="int8", calibration=tmp_path / "pixels.npz", input_scale=1.0)
    assert raw.preprocessing["scale"] == 1.0 and not raw.preprocessing["default_scale"]
    assert not any("Rescaling" in warning for warning in raw.warnings)


def test_micro_says_when_per_tensor_dense_costs_fidelity_with_the_per_channel_numbers(tf_keras, tmp_path):
    """Half the hidden units have weights 20 times smaller (the next layer scales them back): one
    weight scale per tensor leaves those columns a few steps each, one per channel does not."""
    small = 0.05
    model = _dense_model(tf_keras, [12], 6)
    kernel, bias = model.layers[0].get_weights()
    kernel[:, :6] *= small
    bias[:6] *= small
    model.layers[0].set_weights([kernel, bias])
    kernel, bias = model.layers[1].get_weights()
    kernel[:6, 3:], kernel[6:, :3] = 0, 0
    kernel[:6, :3] /= small
    model.layers[1].set_weights([kernel, bias])
    np.savez(tmp_path / "x.npz", x=_inputs())
    report = tfcompress.to_micro(model, tmp_path / "micro", calibration=tmp_path / "x.npz")
    per_tensor, per_channel = report.fidelity, report.per_channel_dense_fidelity
    assert per_tensor.relative_error > 1.5 * per_channel.relative_error
    (warning,) = [warning for warning in report.warnings if "per-tensor Dense" in warning]
    assert per_channel.headline() in warning and "--noper_tensor_dense" in warning
    saved = json.loads((tmp_path / "micro" / "report.json").read_text())
    assert saved["per_channel_dense_fidelity"]["relative_error"] == pytest.approx(per_channel.relative_error)


def test_a_calibration_method_that_costs_fidelity_is_told_with_the_min_max_numbers(task_models):
    paths, folder = task_models
    # Clipping every range to its 80th percentile cuts off the regression's larger outputs.
    report = tfcompress.convert(
        paths["regression"], precision="int8", calibration=folder / "x.npz",
        calibration_method="percentile", percentile=80.0, latency_runs=0,
    )  # fmt: skip
    minmax = tfcompress.convert(paths["regression"], precision="int8", calibration=folder / "x.npz", latency_runs=0)
    assert report.fidelity.relative_error > 1.5 * minmax.fidelity.relative_error
    (warning,) = [warning for warning in report.warnings if "costs fidelity" in warning]
    assert report.fidelity.headline() in warning and minmax.fidelity.headline() in warning
    assert not [warning for warning in minmax.warnings if "costs fidelity" in warning]


def test_a_keras_archive_written_by_tf_keras_loads_as_tf_keras(tf_keras, tmp_path):
    model = _dense_model(tf_keras, [8], 3, "softmax")
    model.save(tmp_path / "model.keras")
    loaded = tfcompress.load_model(tmp_path / "model.keras")
    x = _inputs(20)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
