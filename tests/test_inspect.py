import pytest

from tfcompress import keras_io
from tfcompress.errors import ModelLoadError
from tfcompress.export.tflite import ConvertOptions, to_tflite
from tfcompress.runtime.inspect import inspect_tflite


@pytest.fixture(scope="module")
def float_tflite(tiny_h5):
    return to_tflite(keras_io.load_model(tiny_h5), ConvertOptions("float32"))


def test_float_model_ops_and_io(float_tflite):
    summary = inspect_tflite(float_tflite)
    assert summary.ops == {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 1, "RESHAPE": 1, "FULLY_CONNECTED": 2, "SOFTMAX": 1}
    assert summary.inputs[0].dtype == "FLOAT32" and summary.inputs[0].shape == (1, 28, 28, 1)
    assert summary.outputs[0].shape == (1, 10)
    # BatchNorm is folded into the conv: 4×3×3×1 kernel + 4 bias values, in float32.
    conv_bytes = sorted(t.size_bytes for t in summary.tensors if t.is_constant)
    assert 4 * 3 * 3 * 4 in conv_bytes
    assert set(summary.float_ops) == set(summary.ops)


@pytest.mark.parametrize("damage", [lambda b: b[: len(b) // 3], lambda b: b"\0" * 16, lambda b: b[:6]])
def test_damaged_flatbuffers_are_clear_errors(float_tflite, damage):
    with pytest.raises(ModelLoadError, match="TFLite"):
        inspect_tflite(damage(float_tflite))


def test_inspect_command_reads_tflite_and_keras(run_cli, tiny_h5, float_tflite, tmp_path):
    path = tmp_path / "tiny.tflite"
    path.write_bytes(float_tflite)
    code, out, _ = run_cli("inspect", path, "--json", tmp_path / "details.json")
    assert code == 0 and "CONV_2D x1" in out and "FLOAT32" in out
    assert (tmp_path / "details.json").exists()
    code, out, _ = run_cli("inspect", tiny_h5)
    assert code == 0 and "DepthwiseConv2D" in out and "params" in out
