"""`tfcompress micro`: a verified TFLite Micro package, C++ sources that compile, clear refusals."""

import json
import shutil
import subprocess

import numpy as np
import pytest

import tfcompress
from tfcompress.errors import ConversionError, PreflightError
from tfcompress.export.micro import arena_with_margin, resolver_method
from tfcompress.runtime.inspect import inspect_tflite

from conftest import CALIBRATION, EVAL, MAIN_CC, SAMPLE_MODELS


@pytest.fixture(scope="module")
def lenet5_package(tmp_path_factory):
    folder = tmp_path_factory.mktemp("micro") / "lenet5"
    report = tfcompress.to_micro(SAMPLE_MODELS / "lenet5.h5", folder, calibration=CALIBRATION)
    return folder, report


def test_package_is_full_integer_with_measured_arena(lenet5_package):
    folder, report = lenet5_package
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["model.tflite", "model_data.cc", "model_data.h", "report.json", "report.md"]
    )
    summary = inspect_tflite((folder / "model.tflite").read_bytes())
    assert summary.inputs[0].dtype == "INT8" and summary.outputs[0].dtype == "INT8"
    assert summary.float_ops == () and summary.inputs[0].shape[0] == 1
    dense_scales = [len(t.scales) for t in summary.tensors if t.is_constant and len(t.shape) == 2]
    assert dense_scales and set(dense_scales) == {1}  # per-tensor Dense by default
    saved = json.loads((folder / "report.json").read_text())
    assert saved["arena_bytes"] == report.arena_bytes and saved["size_bytes"] == summary.size_bytes
    assert saved["micro"]["max_diff_steps"] <= 1
    assert report.arena_with_margin_bytes == arena_with_margin(report.arena_bytes, 1.1)
    assert "kModelTensorArenaSize = %d;" % report.arena_with_margin_bytes in (folder / "model_data.h").read_text()


def test_model_runs_in_tflite_micro_with_the_reported_arena(lenet5_package):
    from tflite_micro import runtime

    folder, report = lenet5_package
    data = (folder / "model.tflite").read_bytes()
    interpreter = runtime.Interpreter.from_bytes(data, arena_size=report.arena_bytes)
    x = np.load(EVAL)["x"][:1].astype(np.int16) - 128
    interpreter.set_input(x.astype(np.int8), 0)
    interpreter.invoke()
    assert interpreter.get_output(0).shape == (1, 10)


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
def test_sources_compile_and_hold_the_model(lenet5_package, tmp_path):
    folder, _ = lenet5_package
    subprocess.run(
        ["g++", "-std=c++17", "-c", str(folder / "model_data.cc"), "-o", str(tmp_path / "data.o")], check=True
    )
    (tmp_path / "main.cc").write_text(MAIN_CC)
    subprocess.run(
        [
            "g++",
            "-std=c++17",
            f"-I{folder}",
            str(tmp_path / "main.cc"),
            str(tmp_path / "data.o"),
            "-o",
            str(tmp_path / "check"),
        ],
        check=True,
    )
    result = subprocess.run([str(tmp_path / "check")], capture_output=True)
    assert result.returncode == 0
    assert result.stdout == (folder / "model.tflite").read_bytes()


def test_per_channel_dense_on_request(tmp_path):
    report = tfcompress.to_micro(
        SAMPLE_MODELS / "lenet_300_100.h5", tmp_path / "pc", calibration=CALIBRATION, per_tensor_dense=False
    )
    per_tensor = tfcompress.to_micro(SAMPLE_MODELS / "lenet_300_100.h5", tmp_path / "pt", calibration=CALIBRATION)
    summary = inspect_tflite((tmp_path / "pc" / "model.tflite").read_bytes())
    assert all(len(t.scales) > 1 for t in summary.tensors if t.is_constant and len(t.shape) == 2)
    assert report.arena_bytes >= per_tensor.arena_bytes


def test_int8_tflite_is_packaged_as_it_is(lenet5_package, tmp_path):
    folder, _ = lenet5_package
    report = tfcompress.to_micro(folder / "model.tflite", tmp_path / "again", eval_data=EVAL)
    assert (tmp_path / "again" / "model.tflite").read_bytes() == (folder / "model.tflite").read_bytes()
    assert report.accuracy is not None and report.accuracy > 0.8


@pytest.mark.parametrize(
    "op, method",
    [
        ("CONV_2D", "AddConv2D"),
        ("DEPTHWISE_CONV_2D", "AddDepthwiseConv2D"),
        ("MAX_POOL_2D", "AddMaxPool2D"),
        ("L2_NORMALIZATION", "AddL2Normalization"),
        ("PADV2", "AddPadV2"),
        ("BATCH_TO_SPACE_ND", "AddBatchToSpaceNd"),
    ],
)
def test_resolver_method_names(op, method):
    assert resolver_method(op) == method


def _gelu_model(tf_keras, path):
    model = tf_keras.Sequential(
        [tf_keras.Input((28, 28, 1)), tf_keras.layers.Flatten(), tf_keras.layers.Dense(8, activation="gelu")]
    )
    model.save(path)
    return path


def _float_tflite(folder, models):
    path = folder / "float.tflite"
    tfcompress.convert(SAMPLE_MODELS / "lenet5.h5", precision="float32", output=path, latency_runs=0)
    return path


@pytest.mark.parametrize(
    "case, make_args, expected",
    [
        ("float-only tflite", lambda d, k: [_float_tflite(d, None), "--eval", EVAL], "not a full-integer int8 model"),
        (
            "op TFLite Micro lacks",
            lambda d, k: [_gelu_model(k, d / "gelu.h5"), "--calibration", CALIBRATION],
            "pre-flight check: ",
        ),
        (
            "op TFLite Micro lacks, check skipped",
            lambda d, k: [_gelu_model(k, d / "gelu.h5"), "--calibration", CALIBRATION, "--skip_check"],
            "TFLite Micro has no kernel for: GELU",
        ),
        ("no calibration", lambda d, k: [SAMPLE_MODELS / "lenet5.h5"], "needs --calibration"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_written(run_cli, tf_keras, tmp_path, case, make_args, expected):
    args = make_args(tmp_path, tf_keras)
    code, _, err = run_cli("micro", *args, "-o", tmp_path / "out")
    assert code == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and expected in err, err
    assert not (tmp_path / "out").exists()


def test_int8_conversion_refuses_float_ops_unless_allowed(tf_keras, tmp_path, calibration):
    import tensorflow as tf

    inputs = tf_keras.Input((28, 28, 1))
    outputs = tf.math.cumsum(tf_keras.layers.Flatten()(inputs), axis=1)
    model = tf_keras.Model(inputs, outputs)
    with pytest.raises(PreflightError, match="CUMSUM computes in float"):
        tfcompress.convert(model, calibration=calibration, latency_runs=0)
    with pytest.raises(ConversionError, match="in float in the int8 model: CUMSUM"):
        tfcompress.convert(model, calibration=calibration, latency_runs=0, skip_check=True)
    report = tfcompress.convert(model, calibration=calibration, latency_runs=0, allow_float_ops=True)
    assert report.float_ops == ("CUMSUM",) and "CUMSUM" in report.warnings[0]


def test_ethos_u_target_compiles_with_vela(lenet5_package, tmp_path):
    pytest.importorskip("ethosu.vela")
    folder, _ = lenet5_package
    report = tfcompress.to_micro(folder / "model.tflite", tmp_path / "npu", npu="ethos-u55-128")
    summary = inspect_tflite((tmp_path / "npu" / "model_vela.tflite").read_bytes())
    assert "ethos-u" in summary.ops  # the NPU custom op
    assert report.ethos_u["npu_operators"] > 0 and report.ethos_u["sram_bytes"] > 0
    assert json.loads((tmp_path / "npu" / "report.json").read_text())["ethos_u"]["target"] == "ethos-u55-128"


def test_unknown_ethos_u_target_is_refused_before_writing(lenet5_package, tmp_path, run_cli):
    folder, _ = lenet5_package
    code, _, err = run_cli("micro", folder / "model.tflite", "-o", tmp_path / "npu", "--target", "ethos-x9")
    assert code == 2 and "ethos-u55-128" in err and not (tmp_path / "npu").exists()


def test_outputs_further_from_keras_than_litert_are_refused_unless_accepted(tflm_off_by_twenty, tmp_path):
    """An injected TFLite Micro that is 20 steps off on every output: refused, nothing written; with the
    override it is packaged, and the report says so."""
    lenet5 = SAMPLE_MODELS / "lenet5.h5"
    with pytest.raises(ConversionError, match="less faithfully than LiteRT.*mean abs error from the Keras outputs"):
        tfcompress.to_micro(lenet5, tmp_path / "refused", calibration=CALIBRATION, eval_data=EVAL)
    assert not (tmp_path / "refused").exists()
    report = tfcompress.to_micro(
        lenet5, tmp_path / "accepted", calibration=CALIBRATION, eval_data=EVAL, accept_micro_difference=True
    )
    saved = json.loads((tmp_path / "accepted" / "report.json").read_text())
    verification = saved["micro"]["verification"]
    assert saved["micro"]["accepted_difference"] and not verification["passed"]
    assert verification["micro_error"] > 5 * max(verification["litert_errors"].values())
    assert any("--accept_micro_difference" in warning for warning in report.warnings)
    markdown = (tmp_path / "accepted" / "report.md").read_text()
    assert "NOT as faithful as LiteRT (accepted)" in markdown
    assert "WARNING: packaged with --accept_micro_difference although" in markdown


def test_a_residual_net_passes_when_tflite_micro_is_as_close_to_keras_as_litert(tmp_path):
    """resnet8 (ADD, MEAN) with int4 weights: TFLite Micro rounds several steps away from LiteRT's
    kernels, which the step rule refused; measured against Keras it is as close as LiteRT is."""
    report = tfcompress.to_micro(
        SAMPLE_MODELS / "resnet8.h5", tmp_path / "resnet8", calibration=CALIBRATION, eval_data=EVAL, weight_bits=4
    )
    faithfulness = report.faithfulness
    assert faithfulness.reference == "keras" and faithfulness.passed, faithfulness.describe()
    assert faithfulness.micro_error <= 1.25 * max(faithfulness.litert_errors.values()) + 1 / 512
    assert not report.accepted_difference and report.max_diff_steps >= 0
