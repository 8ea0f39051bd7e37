"""int4 weights: `qat --weight_bits 4` trains them, `convert` stores them packed as INT4 tensors
(`--weight_bits 4` rounds an int8 model's kernels after calibration), `micro` runs them in TFLite
Micro, and the `mcu_int4` recipe passes its budget on the bundled data."""

import shutil
import subprocess

import numpy as np
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
    assert report.faithfulness.passed and not report.accepted_difference, report.faithfulness.describe()
    # LiteRT has no reference int4 kernels, so this is against its optimized ones, whose rounding follows
    # the CPU: on an AVX-512 machine 2 of 20,000 softmax outputs were 2 steps off, the rest 0 or 1.
    assert report.max_diff_steps <= 2, report.diff_steps_by_kernels
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


def _few_level_kernels(tf_keras):
    """`_conv_dw_dense` with every kernel channel holding at most 15 symmetric levels (k x step, |k| <= 7):
    what 4 bits store exactly, so post-training int4 must lose nothing int8 kept."""
    model = _conv_dw_dense(tf_keras)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        kind = type(layer).__name__
        if kind in ("Conv2D", "DepthwiseConv2D", "Dense"):
            kernel, bias = layer.get_weights()
            channels = kernel.shape[2] if kind == "DepthwiseConv2D" else kernel.shape[-1]
            levels = rng.integers(-7, 8, kernel.shape).reshape(-1, channels)
            levels[0] = 7  # every output channel reaches its largest level
            steps = rng.uniform(0.02, 0.2, channels)
            bias = rng.normal(0, 0.5, bias.shape).astype(np.float32)  # rescaled with the kernel: must not be 0
            layer.set_weights([(levels * steps).reshape(kernel.shape).astype(np.float32), bias])
    return model


def test_post_training_int4_packs_every_kernel_and_loses_nothing_on_15_levels(tf_keras, tmp_path):
    from tfcompress import convert

    model = _few_level_kernels(tf_keras)
    model.save(tmp_path / "levels.h5")
    common = {"precision": "int8", "io_type": "int8", "calibration": CALIBRATION, "latency_runs": 0}
    eight = convert(tmp_path / "levels.h5", eval_data=EVAL, **common)
    four = convert(tmp_path / "levels.h5", eval_data=EVAL, weight_bits=4, **common)
    kernels = [weight for weight in four.weights if weight["dtype"] in ("INT4", "INT8")]
    assert [weight["bits"] for weight in kernels] == [4, 4, 4, 4], four.weights
    eight_kernels = [weight["bytes"] for weight in eight.weights if weight["dtype"] == "INT8"]
    assert [weight["bytes"] for weight in kernels] == [-(-size // 2) for size in eight_kernels]  # two per byte
    assert four.options["weight_bits"] == 4 and four.size_bytes < eight.size_bytes
    # the file's parts add up, and only the kernels shrank
    assert sum(four.file_bytes.values()) == four.size_bytes and four.file_bytes["graph_and_metadata"] > 0
    assert four.file_bytes["kernels"] == sum(weight["bytes"] for weight in kernels)
    assert four.file_bytes["quantization_parameters"] == eight.file_bytes["quantization_parameters"]
    # the int4 file runs (biases rescaled to the new kernel scales) and is as close to Keras as int8
    assert four.fidelity.mean_abs_error <= 1.25 * eight.fidelity.mean_abs_error, (four.fidelity, eight.fidelity)
    assert four.fidelity.top1_agreement >= eight.fidelity.top1_agreement - 0.01
    assert abs(four.accuracy - eight.accuracy) <= 0.01
    (warning,) = four.warnings  # no int4 loss to point at QAT; its 15-level Dense kernel reads as clustered
    assert "are clustered" in warning and "--per_tensor_dense" in warning


def test_nibbles_are_packed_low_first_and_a_large_post_training_loss_points_at_qat():
    from tfcompress.export.int4 import pack_int4
    from tfcompress.jobs.convert import _post_training_int4_loss
    from tfcompress.runtime.metrics import Fidelity

    assert pack_int4(np.array([1, -2, 3], np.int8)).tolist() == [0xE1, 0x03]
    (message,) = _post_training_int4_loss(0.90, 0.85, None)
    assert "5.00 pt" in message and "qat --weight_bits 4" in message
    assert _post_training_int4_loss(0.90, 0.895, None) == ()
    (message,) = _post_training_int4_loss(None, None, Fidelity(0.5, 0.1, 100, top1_agreement=0.9))
    assert "10.0% of the Keras model's top-1 predictions" in message


def test_analyze_suggests_keeping_at_8_bits_the_layer_4_bits_hurt_most(tf_keras):
    """The first Dense's weights from the corner pixel (black in every image) are huge: they change
    nothing in float, but set its 4-bit scale so coarse that its other weights round to zero."""
    from tfcompress import analyze
    from tfcompress.jobs.analyze import format_sensitivity

    tf_keras.utils.set_random_seed(0)
    layers = tf_keras.layers
    inputs = tf_keras.Input((28, 28, 1))
    hidden = layers.Dense(32, activation="relu")(layers.Dense(32, activation="relu")(layers.Flatten()(inputs)))
    model = tf_keras.Model(inputs, layers.Dense(10)(hidden))
    first = model.layers[2]
    kernel, bias = first.get_weights()
    kernel[0, :] = 50 * np.abs(kernel).max()
    first.set_weights([kernel, bias])
    assert np.load(CALIBRATION)["x"].reshape(-1, 784)[:, 0].max() == 0
    before = [weights.copy() for weights in model.get_weights()]
    report = analyze(model, CALIBRATION, weight_bits=4, samples=50)
    assert [layer.layer for layer in report.int4_layers] == [layer.name for layer in model.layers[2:]]
    assert report.keep_at_8_bits == (first.name,), report.int4_layers
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # each kernel was put back
    assert f"--layer_bits {first.name}=8" in format_sensitivity(report)
