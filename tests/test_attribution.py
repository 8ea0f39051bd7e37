"""One op → layer attribution: `check`, `analyze` and `--keep_float` name the ops of a model alike."""

import numpy as np
import pytest

from tfcompress.export.calibration import attribute_ops, layers_of_tensor
from tfcompress.jobs.analyze import analyze
from tfcompress.jobs.check import check
from tfcompress.jobs.convert import convert
from tfcompress.runtime.inspect import OperatorInfo

FUSED = "model/re_lu/Relu;model/batch_normalization/FusedBatchNormV3;model/conv2d/BiasAdd;model/conv2d/Conv2D"
LAYERS = {"conv2d", "batch_normalization", "re_lu", "flatten", "dense"}


def test_a_fused_op_belongs_to_its_first_layer_and_names_all_of_them():
    assert layers_of_tensor(FUSED, LAYERS) == ("conv2d", "batch_normalization", "re_lu")
    operators = [
        OperatorInfo("QUANTIZE", ("serving_default_input:0_int8",), False),
        OperatorInfo("CONV_2D", (FUSED,), False),
        OperatorInfo("RESHAPE", ("model/flatten/Reshape",), False),
        OperatorInfo("FULLY_CONNECTED", ("model/dense/MatMul;model/dense/BiasAdd",), False),
        OperatorInfo("SOFTMAX", ("StatefulPartitionedCall:0",), False),
        OperatorInfo("DEQUANTIZE", ("StatefulPartitionedCall:01",), False),
    ]
    assert [layer for layer, _ in attribute_ops(operators, LAYERS)] == [
        None,
        "conv2d",
        "flatten",
        "dense",
        "dense",
        None,
    ]
    assert attribute_ops(operators, LAYERS)[1][1] == ("conv2d", "batch_normalization", "re_lu")


@pytest.fixture(scope="module")
def fused_model(tf_keras):
    tf_keras.utils.set_random_seed(3)
    layers = tf_keras.layers
    inputs = tf_keras.Input((10, 10, 1))
    x = layers.Conv2D(6, 3, name="conv2d")(inputs)
    x = layers.BatchNormalization(name="batch_normalization")(x)
    x = layers.ReLU(name="re_lu")(x)
    x = layers.Flatten(name="flatten")(x)
    outputs = layers.Dense(4, activation="softmax", name="dense")(x)
    model = tf_keras.Model(inputs, outputs)
    bn = model.get_layer("batch_normalization")  # a BN that is not the identity, so folding shows
    bn.set_weights(
        [np.linspace(0.5, 1.5, 6), np.linspace(-0.2, 0.2, 6), np.linspace(-0.1, 0.1, 6), np.linspace(0.5, 2.0, 6)]
    )
    return model


@pytest.fixture(scope="module")
def inputs():
    return np.random.default_rng(0).uniform(0, 1, (64, 10, 10, 1)).astype(np.float32)


def test_check_and_analyze_name_the_fused_conv_and_the_softmax_alike(fused_model, inputs):
    from tfcompress.data import Dataset

    data = Dataset(inputs, None, "seeded")
    rows = {layer.name: layer.ops for layer in check(fused_model, calibration=data).layers}
    assert rows["conv2d"] == ("CONV_2D",) and rows["dense"] == ("FULLY_CONNECTED", "SOFTMAX")
    assert rows["batch_normalization"] == rows["re_lu"] == ()
    analyzed = analyze(fused_model, data, samples=16)
    assert [layer.layer for layer in analyzed.layers] == ["conv2d", "flatten", "dense", "dense"]


@pytest.mark.parametrize(
    "name, float_ops",
    [
        ("conv2d", {"CONV_2D"}),
        ("batch_normalization", {"CONV_2D"}),
        ("re_lu", {"CONV_2D"}),
        ("dense", {"FULLY_CONNECTED", "SOFTMAX"}),
    ],
)
def test_keep_float_takes_any_name_check_or_analyze_gives(fused_model, inputs, name, float_ops):
    from tfcompress.data import Dataset

    report = convert(
        fused_model, calibration=Dataset(inputs, None, "seeded"), keep_float=[name], latency_runs=0, skip_check=True
    )
    assert set(report.float_ops) == float_ops
    assert report.fidelity.samples == 64 and report.fidelity.max_abs_error < 0.05  # against the Keras model


@pytest.fixture(scope="module")
def regressor(tf_keras):
    tf_keras.utils.set_random_seed(4)
    inputs = tf_keras.Input((8,))
    hidden = tf_keras.layers.Dense(16, activation="relu", name="hidden")(inputs)
    return tf_keras.Model(inputs, tf_keras.layers.Dense(2, name="head")(hidden))


def test_the_layer_that_makes_the_model_output_is_named_by_check_analyze_and_keep_float(regressor):
    """A regressor's last Dense writes its op under the signature's output name, not its own: it is
    still that layer's (before, analyze gave it to the layer before, and --keep_float head was refused)."""
    from tfcompress.data import Dataset

    data = Dataset(np.random.default_rng(1).normal(size=(64, 8)).astype(np.float32), None, "seeded")
    rows = {layer.name: layer.ops for layer in check(regressor, calibration=data).layers}
    assert rows["head"] == ("FULLY_CONNECTED",)
    assert [layer.layer for layer in analyze(regressor, data, samples=16).layers] == ["hidden", "head"]
    report = convert(regressor, calibration=data, keep_float=["head"], latency_runs=0, skip_check=True)
    assert list(report.float_ops) == ["FULLY_CONNECTED"] and report.fidelity.relative_error < 0.05
