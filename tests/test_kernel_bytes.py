"""The scan's size prices: kernels quantized as the converter stores them, and what they save after gzip
in a real int8 file."""

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from tfcompress.data import Dataset
from tfcompress.export.tflite import ConvertOptions, to_tflite
from tfcompress.runtime.inspect import gzip_size
from tfcompress.transforms.kernel_bytes import int8_kernel, kernel_bytes, magnitude_pruned


@pytest.fixture(scope="module")
def model(tf_keras):
    """A conv with output channels of very different scales (one int8 scale each), then a Dense."""
    keras = tf_keras
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 4))
    features = keras.layers.Conv2D(32, 3, activation="relu", name="conv")(inputs)
    outputs = keras.layers.Dense(10, name="dense")(keras.layers.Flatten()(features))
    model = keras.Model(inputs, outputs)
    conv = model.get_layer("conv")
    conv.kernel.assign(conv.kernel.numpy() * np.geomspace(0.1, 10.0, 32).astype(np.float32))
    return model


@pytest.fixture(scope="module")
def calibration():
    return Dataset(np.random.default_rng(1).normal(size=(64, 12, 12, 4)).astype(np.float32), None, "random")


def _int8_file(model, calibration) -> bytes:
    return to_tflite(model, ConvertOptions("int8", per_tensor_dense=True), calibration)


def test_int8_kernels_are_the_weights_the_converter_writes(model, calibration):
    """The converter's rounding differs from numpy's on a rare value a hair from .5: at most one step, rarely."""
    tflite = _int8_file(model, calibration)
    interpreter = Interpreter(model_content=tflite)
    interpreter.allocate_tensors()
    shapes = {tuple(d["shape"]): d["index"] for d in interpreter.get_tensor_details()}
    for name, per_channel in (("conv", True), ("dense", False)):
        ours = int8_kernel(model.get_layer(name).kernel.numpy(), per_channel)
        kernel_shape = model.get_layer(name).kernel.shape  # Keras: output channels last; TFLite: first
        theirs = interpreter.get_tensor(shapes[(kernel_shape[-1], *kernel_shape[:-1])]).reshape(ours.shape)
        assert np.abs(ours.astype(int) - theirs).max() <= 1 and np.mean(ours != theirs) < 1e-3, name
    conv = model.get_layer("conv").kernel.numpy()  # one scale for its channels would be another file
    assert np.mean(int8_kernel(conv, per_channel=False) != int8_kernel(conv, per_channel=True)) > 0.5


def test_the_bytes_a_notch_saves_are_what_it_saves_in_the_gzipped_file(model, calibration, tf_keras):
    """Each layer pruned to 90% and clustered to 4 values (zeros kept) in a copy of the model: the gzip of the
    converted file falls by the scan's price within 15%. The entropy formula that priced notches before
    (a bit for where the zeros are, log2(values) for each kept weight, 8 for int8) said 0.4x of it for the conv."""
    original = gzip_size(_int8_file(model, calibration))
    for name, notch in (("conv", (0.9, None)), ("dense", (0.9, None)), ("conv", (0.0, 4)), ("dense", (0.0, 4))):
        layer = model.get_layer(name)
        priced = kernel_bytes(layer, [notch[0]] if notch[0] else [], [notch[1]] if notch[1] else [])
        expected = priced[0.0, None] - priced[notch]
        assert priced == kernel_bytes(layer, [notch[0]] if notch[0] else [], [notch[1]] if notch[1] else [])
        copy = tf_keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
        kernel = layer.kernel.numpy()
        if notch[1]:  # the nonzero values at 4 evenly spaced quantiles' nearest, as tfmot would share them
            centroids = np.quantile(kernel, [0.125, 0.375, 0.625, 0.875])
            kernel = centroids[np.abs(kernel[..., None] - centroids).argmin(-1)].astype(np.float32)
        copy.get_layer(name).kernel.assign(magnitude_pruned(kernel, notch[0]))
        saved = original - gzip_size(_int8_file(copy, calibration))
        assert saved == pytest.approx(expected, rel=0.15), (name, notch)
