"""The fast subset of the coverage suite (benchmarks/coverage.py runs every architecture)."""

import numpy as np
import pytest

import tfcompress
from tfcompress import _keras
from tfcompress.errors import TfcompressError
from tfcompress.testing.field_zoo import FAST_SUBSET, FIELD_MODELS, build_field_model, sample_inputs, settle_batch_norm

# How far int8 may move each task's outputs from the Keras model's on random weights.
_MAX_MEAN_ABS_ERROR = {"softmax": 0.01, "sigmoid": 0.02}
_MAX_RELATIVE_ERROR = 0.1


def _saved(tf_keras, name, folder):
    model = build_field_model(name, tf_keras)
    settle_batch_norm(model, sample_inputs(name, model, 64, seed=3))
    model.save(folder / "model.h5")
    np.savez(folder / "calibration.npz", x=sample_inputs(name, model, 64, seed=1))
    np.savez(folder / "eval.npz", x=sample_inputs(name, model, 64, seed=2))
    return folder / "model.h5"


@pytest.mark.parametrize("name", FAST_SUBSET)
def test_an_architecture_from_the_field_converts_to_int8_measured_for_its_task(tf_keras, tmp_path, name):
    path = _saved(tf_keras, name, tmp_path)
    expected = FIELD_MODELS[name].task
    report = tfcompress.convert(
        path,
        precision="int8",
        calibration=tmp_path / "calibration.npz",
        eval_data=tmp_path / "eval.npz",
        latency_runs=0,
        task="logits" if expected == "logits" else "auto",
    )
    fidelity = report.fidelity
    assert fidelity.task == expected and not report.float_ops
    assert not [warning for warning in report.warnings if "the same for all" in warning], report.warnings
    if expected in ("regression", "reconstruction"):
        assert fidelity.relative_error < _MAX_RELATIVE_ERROR, fidelity
        assert fidelity.top1_agreement is None and fidelity.threshold_agreement is None
    elif expected == "logits":
        assert fidelity.top1_agreement >= 0.9 and fidelity.snr_db is None, fidelity
    else:
        assert fidelity.mean_abs_error < _MAX_MEAN_ABS_ERROR[expected], fidelity
    if FIELD_MODELS[name].tokens:  # token ids go in as int32, never through an int8 input scale
        assert report.io["inputs"][0]["dtype"] == "INT32"
    if expected == "reconstruction":
        assert fidelity.score_correlation > 0.9, fidelity


def test_a_recurrent_loop_converts_at_batch_1_and_is_unrolled_for_int8(tf_keras, tmp_path):
    path = _saved(tf_keras, "GRU classifier", tmp_path)
    data = {"eval_data": tmp_path / "eval.npz", "latency_runs": 0}
    report = tfcompress.convert(path, precision="float16", **data)
    assert report.io["inputs"][0]["shape"][0] == 1 and "WHILE" in report.ops
    assert any("batch 1 for the recurrent layers (gru)" in warning for warning in report.warnings)
    assert report.fidelity.mean_abs_error < 1e-3
    # Calibrating the loop crashes TF 2.21's converter; unrolled, it is full int8 and as faithful.
    report = tfcompress.convert(path, precision="int8", calibration=tmp_path / "calibration.npz", **data)
    assert "WHILE" not in report.ops and not report.float_ops and report.ops["FULLY_CONNECTED"] > 20
    assert any("unrolled gru over their timesteps for int8" in warning for warning in report.warnings)
    assert report.fidelity.mean_abs_error < _MAX_MEAN_ABS_ERROR["softmax"], report.fidelity
    # With a constant zero first state the converter left a SPLIT float in 4 of 6 conversions.
    again = tfcompress.convert(path, precision="int8", calibration=tmp_path / "calibration.npz", **data)
    assert again.tflite == report.tflite
    # With no WHILE left it runs in TFLite Micro (no TILE either: the zero state is a broadcast MUL).
    micro = tfcompress.to_micro(path, tmp_path / "micro", calibration=tmp_path / "calibration.npz")
    assert micro.faithfulness.passed and "WHILE" not in micro.ops and "TILE" not in micro.ops


@pytest.mark.parametrize("name", ["GRU classifier", "LSTM classifier"])
def test_analyze_ranks_a_recurrent_models_layers_as_convert_converts_it(tf_keras, tmp_path, name):
    """At batch 1, the GRU's loop unrolled: analyze's own conversions used to fail in the converter."""
    path = _saved(tf_keras, name, tmp_path)
    report = tfcompress.analyze(path, tmp_path / "calibration.npz", samples=16)
    assert "Dense" in {layer.kind for layer in report.layers}
    assert all(np.isfinite(layer.sqnr_db) for layer in report.layers)


def test_an_lstm_converts_with_percentile_ranges(tf_keras, tmp_path):
    """Its fused op's state tensors read back empty; they keep their min-max range."""
    path = _saved(tf_keras, "LSTM classifier", tmp_path)
    data = {"calibration": tmp_path / "calibration.npz", "eval_data": tmp_path / "eval.npz", "latency_runs": 0}
    report = tfcompress.convert(path, precision="int8", calibration_method="percentile", percentile=99.9, **data)
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in report.ops and not report.float_ops
    assert report.fidelity.mean_abs_error < _MAX_MEAN_ABS_ERROR["softmax"], report.fidelity


def test_an_lstm_is_measured_from_a_fresh_state_per_sequence_and_the_app_is_told_to_reset(tf_keras, tmp_path):
    """The fused LSTM op keeps its state in variable tensors from one invoke to the next: measured without
    a reset, each sequence began where the last ended (the float32 model itself 31.5% off Keras)."""
    path = _saved(tf_keras, "LSTM sequence regression", tmp_path)
    data = {"calibration": tmp_path / "calibration.npz", "eval_data": tmp_path / "eval.npz", "latency_runs": 0}
    float32 = tfcompress.convert(path, precision="float32", **data)
    assert float32.fidelity.relative_error < 1e-5, float32.fidelity
    int8 = tfcompress.convert(path, precision="int8", **data)
    assert int8.fidelity.relative_error < 0.05, int8.fidelity
    state = [warning for warning in int8.warnings if "keeps state between invokes" in warning]
    assert state and state[0].startswith("UNIDIRECTIONAL_SEQUENCE_LSTM") and "reset_all_variables()" in state[0]
    assert any("keeps state between invokes" in warning for warning in float32.warnings)


def test_latency_of_a_token_id_model_is_timed_on_ids_it_accepts(tf_keras, tmp_path):
    """Random int32 ids sent GATHER out of bounds: LiteRT raised mid-measurement."""
    path = _saved(tf_keras, "Embedding text classifier", tmp_path)
    report = tfcompress.convert(path, precision="int8", calibration=tmp_path / "calibration.npz", latency_runs=5)
    assert report.latency.runs == 5 and "GATHER" in report.ops


def test_a_recurrent_loop_without_a_fixed_length_is_refused_for_int8_before_it_crashes(tf_keras, tmp_path):
    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential([tf_keras.Input((None, 4)), tf_keras.layers.SimpleRNN(4), tf_keras.layers.Dense(2)])
    calibration = np.random.default_rng(0).uniform(0, 1, (8, 6, 4)).astype(np.float32)
    with pytest.raises(TfcompressError, match="simple_rnn: .*unrolls it, which needs a fixed number of timesteps"):
        tfcompress.convert(model, precision="int8", calibration=calibration, latency_runs=0)


@pytest.mark.parametrize("name", ["Bidirectional LSTM", "TimeDistributed Dense", "LeakyReLU/PReLU CNN"])
def test_keras3_wrapped_and_renamed_layers_translate_with_the_same_outputs(tmp_path, name):
    keras3 = _keras.keras3()
    model = build_field_model(name, keras3)
    model.save(tmp_path / "model.keras")
    x = sample_inputs(name, model, 8)
    translated = tfcompress.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(translated.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


def test_token_ids_reach_tflite_micro_as_indices_every_invoke(tf_keras, tmp_path):
    """TFLite Micro reuses an input's arena bytes once read: ids are set again before every invoke."""
    path = _saved(tf_keras, "Embedding text classifier", tmp_path)
    report = tfcompress.to_micro(path, tmp_path / "micro", calibration=tmp_path / "calibration.npz")
    assert report.faithfulness.passed and "GATHER" in report.ops
    assert report.io["inputs"][0]["dtype"] == "INT32"


def test_a_layer_class_of_tf_keras_applications_loads_without_custom_objects(tf_keras, tmp_path):
    """ConvNeXt's LayerScale is tf_keras's own code, but tf_keras does not register it."""
    from tf_keras.src.applications.convnext import LayerScale

    model = tf_keras.Sequential([tf_keras.Input((4, 4, 8)), LayerScale(0.5, 8), tf_keras.layers.Flatten()])
    model.save(tmp_path / "layer_scale.h5")
    x = np.random.default_rng(0).normal(size=(2, 4, 4, 8)).astype(np.float32)
    np.testing.assert_allclose(
        tfcompress.load_model(tmp_path / "layer_scale.h5").predict(x, verbose=0), 0.5 * x.reshape(2, -1)
    )
