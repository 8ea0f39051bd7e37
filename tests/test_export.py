import numpy as np
import pytest

from tfcompress import keras_io
from tfcompress.data import load_data
from tfcompress.errors import ConversionError, OptionError
from tfcompress.export.tflite import ConvertOptions, to_tflite
from tfcompress.runtime.inspect import inspect_tflite
from tfcompress.runtime.interpreter import predict

from conftest import CALIBRATION, EVAL, SAMPLE_MODELS

# How far each precision's softmax outputs may be from the Keras model's.
TOLERANCE = {"float32": 1e-5, "float16": 5e-3, "dynamic": 5e-2, "int16x8": 5e-2, "int8": 0.1}


@pytest.fixture(scope="module")
def lenet5():
    return keras_io.load_model(SAMPLE_MODELS / "lenet5.h5")


@pytest.fixture(scope="module")
def int8_lenet5(lenet5, calibration):
    return to_tflite(lenet5, ConvertOptions("int8"), calibration)


@pytest.mark.parametrize("precision", list(TOLERANCE))
def test_each_precision_matches_keras(lenet5, calibration, precision):
    tflite = to_tflite(lenet5, ConvertOptions(precision), calibration)
    x = calibration.x[:100]
    expected = lenet5(x).numpy()
    received = predict(tflite, x)
    np.testing.assert_allclose(received, expected, atol=TOLERANCE[precision])
    agreement = np.mean(received.argmax(1) == expected.argmax(1))
    assert agreement >= 0.97


def test_int8_model_computes_only_in_int8(int8_lenet5):
    summary = inspect_tflite(int8_lenet5)
    assert summary.float_ops == ()
    weights = [t for t in summary.tensors if t.is_constant and len(t.shape) >= 2]
    assert weights and all(t.dtype == "INT8" for t in weights)
    assert set(summary.ops) >= {"CONV_2D", "FULLY_CONNECTED", "QUANTIZE", "DEQUANTIZE"}


def _dense_weight_scales(tflite):
    summary = inspect_tflite(tflite)
    return [len(t.scales) for t in summary.tensors if t.is_constant and len(t.shape) == 2]


def test_dense_weights_per_channel_by_default_and_per_tensor_on_request(lenet5, calibration, int8_lenet5):
    assert all(scales > 1 for scales in _dense_weight_scales(int8_lenet5))
    per_tensor = to_tflite(lenet5, ConvertOptions("int8", per_tensor_dense=True), calibration)
    assert _dense_weight_scales(per_tensor) == [1, 1, 1]
    conv_scales = [len(t.scales) for t in inspect_tflite(per_tensor).tensors if t.is_constant and len(t.shape) == 4]
    assert all(scales > 1 for scales in conv_scales)


@pytest.mark.parametrize("io_type, dtype", [("int8", np.int8), ("uint8", np.uint8)])
def test_integer_io(lenet5, calibration, io_type, dtype):
    tflite = to_tflite(lenet5, ConvertOptions("int8", io_type=io_type), calibration)
    summary = inspect_tflite(tflite)
    assert summary.inputs[0].dtype == io_type.upper() and summary.outputs[0].dtype == io_type.upper()
    x = calibration.x[:50]
    np.testing.assert_allclose(predict(tflite, x), lenet5(x).numpy(), atol=TOLERANCE["int8"])


def test_same_inputs_give_the_same_bytes(lenet5, calibration, int8_lenet5):
    assert to_tflite(lenet5, ConvertOptions("int8"), calibration) == int8_lenet5


def test_int8_without_calibration_is_refused(lenet5):
    with pytest.raises(ConversionError, match="needs calibration data"):
        to_tflite(lenet5, ConvertOptions("int8"), None)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"precision": "int4"}, "precision must be one of"),
        ({"precision": "float16", "io_type": "int8"}, "Integer I/O needs precision int8"),
        ({"calibration_samples": 0}, "at least 1"),
    ],
)
def test_bad_options_say_what_is_accepted(kwargs, message):
    with pytest.raises(OptionError, match=message):
        ConvertOptions(**kwargs)


def test_fidelity_counts_ties_of_the_top_two_outputs():
    from tfcompress.runtime.metrics import fidelity

    outputs = np.array([[0.5, 0.5, 0.0], [0.1, 0.7, 0.2], [0.3, 0.3, 0.4]])
    reference = np.array([[0.4, 0.6, 0.0], [0.1, 0.8, 0.1], [0.2, 0.3, 0.5]])
    result = fidelity(outputs, reference)
    assert result.top1_ties == 1  # only the first row: its top two are equal
    assert result.top1_agreement == pytest.approx(2 / 3)


def _hard_swish_net(tf_keras):
    """x * relu6(x + 3) / 6, the layers the converter fuses into HARD_SWISH (MobileNetV3's activation)."""
    layers = tf_keras.layers
    inputs = tf_keras.Input((28, 28, 1))
    x = layers.Conv2D(4, 3, kernel_initializer=tf_keras.initializers.RandomNormal(seed=0))(inputs)
    x = layers.Rescaling(1 / 6)(layers.Multiply()([x, layers.ReLU(6.0)(layers.Rescaling(1.0, 3.0)(x))]))
    return tf_keras.Model(inputs, layers.Dense(10, activation="softmax")(layers.Flatten()(x)))


def test_int16x8_without_a_kernel_is_one_line_naming_the_op_and_float_when_allowed(run_cli, tf_keras, tmp_path):
    """The calibrator raises a RuntimeError, one line per op instance, for an op with no int16x8 kernel."""
    model_path = tmp_path / "hard_swish.h5"
    _hard_swish_net(tf_keras).save(model_path)
    data = ("--calibration", CALIBRATION, "--eval", EVAL)
    code, _, err = run_cli("convert", model_path, "--precision", "int16x8", *data, "-o", tmp_path / "a.tflite")
    assert code == 2 and len(err.strip().splitlines()) == 1 and not (tmp_path / "a.tflite").exists()
    assert "no int16x8 kernel for HARD_SWISH: pass --allow_float_ops" in err
    code, out, _ = run_cli(
        "convert", model_path, "--precision", "int16x8", *data, "--allow_float_ops", "-o", tmp_path / "b.tflite"
    )
    converted = (tmp_path / "b.tflite").read_bytes()
    assert code == 0 and inspect_tflite(converted).float_ops == ("HARD_SWISH",), out
    assert "WARNING: the converter left these ops computing in float in the int16x8 model: HARD_SWISH" in out
    x = load_data(EVAL).x[:100]
    expected = keras_io.load_model(model_path)(x).numpy()
    np.testing.assert_allclose(predict(converted, x), expected, atol=TOLERANCE["int16x8"])
