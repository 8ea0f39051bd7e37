"""int4 weights: `qat --weight_bits 4` trains them, `convert` stores them packed as INT4 tensors,
`micro` runs them in TFLite Micro, and the `mcu_int4` recipe passes its budget on the bundled data."""

import shutil
import subprocess

import pytest

from conftest import CALIBRATION, EVAL, MAIN_CC, SAMPLE_MODELS


def _conv_dw_dense(tf_keras):
    """Conv2D and DepthwiseConv2D (each with a BatchNorm folded in) and two Dense: the three ops with
    int4 kernels."""
    tf_keras.utils.set_random_seed(4)
    layers = tf_keras.layers
    inputs = tf_keras.Input((28, 28, 1))
    x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(8, 3, strides=2)(inputs)))
    x = layers.ReLU()(layers.BatchNormalization()(layers.DepthwiseConv2D(3, strides=2)(x)))
    x = layers.Dense(32, activation="relu")(layers.Flatten()(x))
    return tf_keras.Model(inputs, layers.Dense(10, activation="softmax")(x))


@pytest.fixture(scope="module")
def int4_qat(tf_keras, tmp_path_factory):
    """(float model path, 8-bit QAT path, 4-bit QAT path with the first conv and the classifier at 8 bits)."""
    from tfcompress import quantize_aware

    folder = tmp_path_factory.mktemp("int4")
    _conv_dw_dense(tf_keras).save(folder / "float.h5")
    common = {"epochs": 3, "learning_rate": 1e-3, "verbose": 0}
    quantize_aware(folder / "float.h5", CALIBRATION, output=folder / "qat8.h5", **common)
    report = quantize_aware(
        folder / "float.h5",
        CALIBRATION,
        output=folder / "qat4.h5",
        weight_bits=4,
        layer_bits={"first": 8, "last": 8},
        **common,
    )
    assert report.options["weight_bits"] == 4 and report.metrics["accuracy"] > 0.6, report.metrics
    return folder / "float.h5", folder / "qat8.h5", folder / "qat4.h5"


def test_int4_weights_are_stored_packed_and_agree_with_keras(int4_qat):
    from tfcompress import convert

    _, qat8, qat4 = int4_qat
    eight = convert(qat8, precision="int8", calibration=CALIBRATION, eval_data=EVAL, latency_runs=0)
    four = convert(qat4, precision="int8", calibration=CALIBRATION, eval_data=EVAL, latency_runs=0)
    bits = [weight["bits"] for weight in four.weights if weight["dtype"] in ("INT4", "INT8")]
    assert bits == [8, 4, 4, 8], four.weights  # conv, depthwise, dense, classifier
    assert {weight["bits"] for weight in eight.weights if weight["dtype"] in ("INT4", "INT8")} == {8}
    int4_bytes = sum(weight["bytes"] for weight in four.weights if weight["bits"] == 4)
    int8_bytes = sum(weight["bytes"] for weight in eight.weights if weight["bits"] == 8)
    assert int4_bytes < 0.6 * int8_bytes  # two weights per byte
    assert four.size_bytes < eight.size_bytes
    # the Keras QAT model simulates the int4 weights: the integer model stays within int8 softmax steps of it
    assert four.float_ops == () and four.fidelity.max_abs_error < 0.05, four.fidelity
    assert four.fidelity.top1_agreement >= 0.9, four.fidelity
    assert abs(four.accuracy_drop) <= 2.0


def test_int4_model_runs_in_tflite_micro(int4_qat, tmp_path):
    from tfcompress import to_micro

    _, _, qat4 = int4_qat
    report = to_micro(qat4, tmp_path / "micro", calibration=CALIBRATION, eval_data=EVAL)
    assert report.max_diff_steps <= 1, report.diff_steps_by_kernels
    assert [weight["bits"] for weight in report.weights if weight["dtype"] in ("INT4", "INT8")] == [8, 4, 4, 8]
    assert report.arena_bytes > 0 and (tmp_path / "micro" / "model_data.cc").is_file()
    assert "int4 weights | 2 tensors" in (tmp_path / "micro" / "report.md").read_text()
    assert abs(report.accuracy_drop) <= 2.0
    if shutil.which("g++"):  # the C array compiles, holds the model and registers every op
        folder = tmp_path / "micro"
        (tmp_path / "main.cc").write_text(MAIN_CC)
        sources = [tmp_path / "main.cc", folder / "model_data.cc"]
        subprocess.run(["g++", "-std=c++17", f"-I{folder}", *sources, "-o", tmp_path / "check"], check=True)
        ran = subprocess.run([tmp_path / "check"], capture_output=True)
        assert ran.returncode == 0 and ran.stdout == (folder / "model.tflite").read_bytes()


def test_bad_bit_widths_are_one_line_errors(tf_keras, tmp_path, run_cli):
    from tfcompress.errors import OptionError
    from tfcompress.transforms.qat import QatOptions

    with pytest.raises(OptionError, match="weight_bits must be 8 or 4"):
        QatOptions(weight_bits=3)
    with pytest.raises(OptionError, match="preserve works with 8-bit weights only"):
        QatOptions(weight_bits=4, preserve="sparsity")
    _conv_dw_dense(tf_keras).save(tmp_path / "float.h5")
    code, _, err = run_cli(
        "qat", tmp_path / "float.h5", "--train", CALIBRATION, "--weight_bits", 4, "--layer_bits", "nope=8",
        "-o", tmp_path / "out.h5",
    )  # fmt: skip
    assert code == 2 and "layer_bits names nope" in err and "first or last" in err
    assert not (tmp_path / "out.h5").exists()


def test_mcu_int4_recipe_passes_its_budget_on_the_bundled_model(tmp_path):
    from tfcompress import load_model, run_recipe

    report = run_recipe("mcu_int4", SAMPLE_MODELS / "lenet5.h5", tmp_path / "out")
    assert report.passed, report.budgets
    weights = report.steps[1]["report"]["weights"]
    assert {weight["bits"] for weight in weights if weight["dtype"] in ("INT4", "INT8")} == {4, 8}
    # int8 weights take a byte per parameter; with most at 4 bits the whole file is well under that
    assert report.result["size_bytes"] < 0.7 * load_model(SAMPLE_MODELS / "lenet5.h5").count_params()
