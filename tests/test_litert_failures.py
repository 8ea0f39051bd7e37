"""Models LiteRT fails on: a kernel that aborts the process is named by limits that agree with
LiteRT itself; a model the XNNPACK delegate cannot run is measured without it."""

import signal

import numpy as np
import pytest

from tfcompress.data import as_dataset
from tfcompress.errors import ModelLoadError
from tfcompress.export.tflite import ConvertOptions, to_tflite
from tfcompress.runtime.inspect import inspect_tflite
from tfcompress.runtime.interpreter import make_interpreter, predict
from tfcompress.runtime.isolated import run_isolated
from tfcompress.runtime.kernel_limits import ops_litert_aborts_on

# Ops whose int8 output range shrinks with the offset, on inputs over [0, 10); the offsets straddle
# the kernel's limit (SQUARED_DIFFERENCE takes offsets above about 0.01, ADD above about 2e-5).
OPS = {
    "SQUARED_DIFFERENCE": (lambda tf, x, offset: tf.math.squared_difference(x, x + offset), (1e-4, 8e-3, 1.2e-2, 1.0)),
    "ADD": (lambda tf, x, offset: x + (offset - x), (1e-7, 5e-6, 2.5e-5, 1e-3)),
}


@pytest.fixture(scope="module")
def near_the_limit(tf_keras):
    """{(op, offset): int8 model}, calibrated on inputs over [0, 10)."""
    import tensorflow as tf

    calibration = as_dataset(10 * np.random.default_rng(0).random((64, 8), dtype=np.float32))
    models = {}
    for op, (layer, offsets) in OPS.items():
        for offset in offsets:
            inputs = tf_keras.Input((8,))
            model = tf_keras.Model(inputs, layer(tf, inputs, offset))
            models[op, offset] = to_tflite(model, ConvertOptions("int8"), calibration)
    return models


def _litert_aborts(model_bytes: bytes) -> bool:
    from ai_edge_litert.interpreter import Interpreter

    child = run_isolated(lambda: Interpreter(model_content=model_bytes).allocate_tensors())
    return child.signal == signal.SIGABRT


@pytest.mark.parametrize("op", OPS)
def test_the_named_ops_are_the_ones_litert_aborts_on(near_the_limit, op):
    models = {offset: model for (each, offset), model in near_the_limit.items() if each == op}
    aborts = {offset: _litert_aborts(model) for offset, model in models.items()}
    named = {offset: ops_litert_aborts_on(inspect_tflite(model)) for offset, model in models.items()}
    assert {offset: bool(ops) for offset, ops in named.items()} == aborts
    assert list(aborts.values()) == [True, True, False, False], "the offsets should straddle the kernel's limit"
    assert all(len(ops) == 1 and ops[0].startswith(f"{op} ") for ops in named.values() if ops)


def test_make_interpreter_refuses_the_model_naming_the_op(near_the_limit):
    with pytest.raises(ModelLoadError, match=r"LiteRT crashes \(SIGABRT\).*: ADD '.*needs above"):
        make_interpreter(near_the_limit["ADD", 1e-7])
    output = make_interpreter(near_the_limit["ADD", 1e-3]).get_output_details()[0]
    assert output["dtype"] == np.float32


def test_a_model_xnnpack_cannot_run_is_measured_without_it(tf_keras, monkeypatch, run_cli, tmp_path):
    """XNNPACK failed a QAT ConvNeXtTiny with one LayerNormalization kept float at its first invoke
    ("failed to create XNNPACK runtime"); no small model found here does that, so LiteRT's
    interpreter is given that failure wherever it would use the default delegate. The model is this
    test's own: LiteRT runs each model in a child once per process, and another test's ran there."""
    import json

    from ai_edge_litert import interpreter as litert

    tf_keras.utils.set_random_seed(60815)
    model = tf_keras.Sequential([tf_keras.Input((12,)), tf_keras.layers.Dense(5, activation="tanh")])
    model.save(tmp_path / "tanh.h5")
    x = np.random.default_rng(0).random((20, 12), dtype=np.float32)
    np.savez(tmp_path / "x.npz", x=x)

    class FailsWithXnnpack(litert.Interpreter):
        def __init__(self, *args, experimental_op_resolver_type=litert.OpResolverType.AUTO, **kwargs):
            super().__init__(*args, experimental_op_resolver_type=experimental_op_resolver_type, **kwargs)
            self.delegated = experimental_op_resolver_type == litert.OpResolverType.AUTO

        def invoke(self):
            if self.delegated:
                raise RuntimeError("failed to create XNNPACK runtimeNode number 9 (TfLiteXNNPackDelegate) failed")
            super().invoke()

    monkeypatch.setattr(litert, "Interpreter", FailsWithXnnpack)
    code, out, err = run_cli(
        "convert", tmp_path / "tanh.h5", "--precision", "float32", "--eval", tmp_path / "x.npz",
        "-o", tmp_path / "tanh.tflite", "--report", tmp_path / "report.json",
    )  # fmt: skip
    assert code == 0, err
    warned = "XNNPACK delegate cannot run this model (failed to create XNNPACK runtime"
    assert (out + err).count(warned) == 1, out + err
    assert any(warned in warning for warning in json.loads((tmp_path / "report.json").read_text())["warnings"])
    model_bytes = (tmp_path / "tanh.tflite").read_bytes()
    np.testing.assert_allclose(predict(model_bytes, x), model(x).numpy(), atol=1e-5)
    code, out, err = run_cli("benchmark", tmp_path / "tanh.tflite", "--runs", "5", "--json", tmp_path / "b.json")
    assert code == 0, err
    assert (out + err).count(warned) == 1, out + err
    (measured,) = json.loads((tmp_path / "b.json").read_text())["models"]
    assert any(warned in warning for warning in measured["warnings"])
