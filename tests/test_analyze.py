"""Per-layer sensitivity, layers kept float, and the calibration choices, on real conversions."""

import numpy as np
import pytest

from tfcompress.errors import OptionError
from tfcompress.export.tflite import ConvertOptions
from tfcompress.jobs import analyze as analyze_job
from tfcompress.jobs import convert as convert_job
from tfcompress.runtime.inspect import constant_tensors, inspect_tflite
from tfcompress.runtime.interpreter import make_interpreter

from conftest import CALIBRATION, EVAL, SAMPLE_MODELS

LENET5 = SAMPLE_MODELS / "lenet5.h5"


def test_analyze_ranks_the_keras_layers_and_measures_keeping_one_float(tmp_path, tf_keras):
    report = analyze_job.analyze(
        LENET5,
        CALIBRATION,
        eval_data=EVAL,
        samples=30,
        try_float=1,
        json_path=tmp_path / "s.json",
        plot_path=tmp_path / "s.png",
    )
    model = tf_keras.models.load_model(LENET5, compile=False)
    weighted = {layer.name for layer in model.layers if layer.weights}
    assert weighted <= {layer.layer for layer in report.layers}  # every conv/dense op found, by Keras name
    assert all(layer.rmse_over_scale > 0 and np.isfinite(layer.sqnr_db) for layer in report.layers)
    ranked = report.ranked()
    errors = [layer.rmse_over_scale for layer in ranked]
    assert errors == sorted(errors, reverse=True)
    # The int8 accuracy is what convert measures on the same data.
    int8 = convert_job.convert(LENET5, calibration=CALIBRATION, eval_data=EVAL, latency_runs=0)
    assert report.int8_accuracy == pytest.approx(int8.accuracy)
    assert report.float_accuracy == pytest.approx(int8.reference.accuracy)
    tried = [layer for layer in report.layers if layer.accuracy_kept_float is not None]
    assert {layer.layer for layer in tried} == {ranked[0].layer}
    assert abs(tried[0].accuracy_kept_float - report.int8_accuracy) < 0.02
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    assert ranked[0].layer in analyze_job.format_sensitivity(report)


def test_a_regressor_is_judged_without_labels_by_its_relative_error(run_cli, tmp_path, tf_keras):
    """A model whose output is a quantity has no class labels: each conversion is held against the Keras
    outputs, as `auto --max_relative_error` and convert hold it. A classifier still needs labels."""
    tf_keras.utils.set_random_seed(0)
    layers = tf_keras.layers
    model = tf_keras.Sequential([tf_keras.Input((8,)), layers.Dense(32, "relu"), layers.Dense(3)])
    model.save(tmp_path / "regressor.h5")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calibration.npz", x=rng.normal(size=(200, 8)).astype(np.float32))
    np.savez(tmp_path / "eval.npz", x=rng.normal(size=(100, 8)).astype(np.float32))
    data = {"calibration": tmp_path / "calibration.npz", "eval_data": tmp_path / "eval.npz"}

    report = analyze_job.analyze(tmp_path / "regressor.h5", samples=20, try_float=1, **data)
    int8 = convert_job.convert(tmp_path / "regressor.h5", latency_runs=0, **data)
    assert report.int8_relative_error == pytest.approx(int8.fidelity.relative_error)
    assert 0 < report.int8_relative_error < 0.1 and report.int8_accuracy is None
    tried = [layer for layer in report.layers if layer.relative_error_kept_float is not None]
    assert [layer.layer for layer in tried] == [report.ranked()[0].layer]
    assert tried[0].relative_error_kept_float < report.int8_relative_error  # less of the model rounded
    assert f"{tried[0].relative_error_kept_float:.2%} error" in analyze_job.format_sensitivity(report)
    tf_keras.Sequential([tf_keras.Input((8,)), model, layers.Softmax()]).save(tmp_path / "classifier.h5")
    code, _, err = run_cli(
        "analyze", tmp_path / "classifier.h5", "--calibration", data["calibration"], "--eval", data["eval_data"]
    )
    assert code == 2 and "has no labels (y)" in err


def test_a_layer_of_two_ops_has_a_row_for_each_named_by_its_op(tmp_path, tf_keras):
    """A Dense with a sigmoid becomes FULLY_CONNECTED and LOGISTIC: two rows, which must not read alike."""
    tf_keras.utils.set_random_seed(0)
    layers = tf_keras.layers
    model = tf_keras.Sequential([tf_keras.Input((8,)), layers.Dense(16, "relu"), layers.Dense(1, "sigmoid")])
    model.save(tmp_path / "yes_no.h5")
    x = np.random.default_rng(0).normal(size=(200, 8)).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)

    report = analyze_job.analyze(tmp_path / "yes_no.h5", tmp_path / "x.npz", samples=20)
    head = model.layers[-1].name
    assert sorted(layer.op for layer in report.layers if layer.layer == head) == ["FULLY_CONNECTED", "LOGISTIC"]
    table = analyze_job.format_sensitivity(report)
    assert f"{head} (FULLY_CONNECTED)" in table and f"{head} (LOGISTIC)" in table
    assert f"{model.layers[0].name} (" not in table  # a layer of one op keeps its plain name


def test_keep_float_leaves_exactly_that_layer_in_float(tf_keras):
    model = tf_keras.models.load_model(LENET5, compile=False)
    dense = next(layer.name for layer in model.layers if isinstance(layer, tf_keras.layers.Dense))
    report = convert_job.convert(LENET5, calibration=CALIBRATION, eval_data=EVAL, keep_float=[dense], latency_runs=0)
    ops = inspect_tflite(report.tflite)
    assert report.float_ops and set(report.float_ops) <= {"FULLY_CONNECTED"}
    assert ops.ops.get("CONV_2D") and "CONV_2D" not in report.float_ops
    assert any(dense in warning for warning in report.warnings)
    weights = [array for _, _, array in constant_tensors(report.tflite) if array.ndim >= 2]
    assert [array.dtype for array in weights].count(np.float32) == 1  # that Dense kernel, and only it
    assert [array.dtype for array in weights].count(np.int8) == len(weights) - 1
    plain = convert_job.convert(LENET5, calibration=CALIBRATION, eval_data=EVAL, latency_runs=0)
    assert report.size_bytes > plain.size_bytes  # float weights for that layer
    assert abs(report.accuracy - plain.accuracy) < 0.02
    with pytest.raises(OptionError, match="keep_float names layers the model does not have: nope"):
        convert_job.convert(LENET5, calibration=CALIBRATION, keep_float=["nope"], latency_runs=0)


def _activation_scales(model_bytes) -> list:
    interpreter = make_interpreter(model_bytes, xnnpack=False)
    return [
        detail["quantization"][0]
        for detail in interpreter.get_tensor_details()
        if detail["dtype"] == np.int8 and detail["quantization"][0] > 0
    ]


def test_percentile_clips_ranges_and_input_range_sets_the_input_scale():
    minmax = convert_job.convert(LENET5, calibration=CALIBRATION, latency_runs=0)
    clipped = convert_job.convert(
        LENET5,
        calibration=CALIBRATION,
        eval_data=EVAL,
        calibration_method="percentile",
        percentile=99.0,
        latency_runs=0,
    )
    pairs = list(zip(_activation_scales(minmax.tflite), _activation_scales(clipped.tflite)))
    assert len(pairs) > 5 and all(after <= before * 1.0001 for before, after in pairs)
    assert sum(after < before * 0.95 for before, after in pairs) >= 3  # real clipping happened
    assert clipped.accuracy > 0.8
    ranged = convert_job.convert(LENET5, calibration=CALIBRATION, input_range=(0.0, 2.0), latency_runs=0)
    details = make_interpreter(ranged.tflite, xnnpack=False).get_tensor_details()
    scales = [d["quantization"][0] for d in details if d["dtype"] == np.int8]
    assert any(scale == pytest.approx(2.0 / 255, rel=1e-3) for scale in scales), scales[:5]  # the quantized input
    with pytest.raises(OptionError, match="need precision int8"):
        ConvertOptions(precision="float16", calibration_method="percentile")
