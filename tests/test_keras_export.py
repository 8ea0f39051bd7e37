"""One SavedModel export shared by several conversions gives the bytes of separate conversions,
and a clean first-time `convert` exports the model once."""

import tempfile

import numpy as np
import pytest

import tfcompress
from tfcompress import _keras
from tfcompress.data import Dataset
from tfcompress.export.keras_export import SharedExport
from tfcompress.export.tflite import ConvertOptions, to_tflite
from tfcompress.testing import zoo

from conftest import CALIBRATION

keras = _keras.tf_keras()


def _two_inputs():
    image = keras.Input((8, 8, 1), name="image")
    extra = keras.Input((3,), name="extra")
    features = keras.layers.Flatten()(keras.layers.Conv2D(4, 3, activation="relu")(image))
    joined = keras.layers.Concatenate()([features, keras.layers.Dense(4)(extra)])
    return keras.Model([image, extra], keras.layers.Dense(2)(joined))


def _lstm():
    inputs = keras.Input((6, 4))
    return keras.Model(inputs, keras.layers.Dense(3)(keras.layers.LSTM(8)(inputs)))


_OPTIONS = (
    ConvertOptions(precision="float32"),
    ConvertOptions(precision="float16"),
    ConvertOptions(precision="dynamic"),
    ConvertOptions(precision="int8", calibration_samples=20),
    ConvertOptions(precision="int8", io_type="int8", per_tensor_dense=True, batch_size=1, calibration_samples=20),
    ConvertOptions(precision="int16x8", calibration_samples=20),
)


def test_conversions_sharing_an_export_write_the_same_bytes_as_separate_ones():
    keras.utils.set_random_seed(0)
    model = zoo.build("lenet5", keras)
    calibration = Dataset(np.random.default_rng(0).random((20, 28, 28, 1), dtype=np.float32), None, "noise")
    first_dense = next(layer.name for layer in model.layers if "dense" in layer.name)  # names count up per session
    keep_dense_float = ConvertOptions(precision="int8", keep_float=(first_dense,), calibration_samples=20)
    with SharedExport(model) as export:
        for options in (*_OPTIONS, keep_dense_float):
            shared = to_tflite(model, options, calibration, export=export)
            assert shared == to_tflite(model, options, calibration), options


@pytest.mark.parametrize("build", [_two_inputs, _lstm])
def test_models_of_other_shapes_convert_the_same_through_a_shared_export(build):
    keras.utils.set_random_seed(0)
    model = build()
    with SharedExport(model) as export:
        options = ConvertOptions(precision="dynamic", batch_size=1)  # an LSTM needs a static batch
        assert to_tflite(model, options, export=export) == to_tflite(model, options)


def test_an_export_of_another_model_is_refused():
    first, second = _two_inputs(), _two_inputs()
    with SharedExport(first) as export, pytest.raises(ValueError, match="export is of model"):
        to_tflite(second, ConvertOptions(precision="float32"), export=export)


def test_a_clean_int8_conversion_exports_the_model_once_and_leaves_no_folder(tmp_path, monkeypatch, tiny_h5):
    """The pre-flight check and the float32 size reference reuse the conversion's export."""
    from tensorflow.lite.python import lite

    monkeypatch.setenv("TFCOMPRESS_CACHE_DIR", "off")
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    exports = []
    real_save = lite._save.save
    monkeypatch.setattr(lite._save, "save", lambda *args, **kwargs: exports.append(1) or real_save(*args, **kwargs))
    report = tfcompress.convert(tiny_h5, precision="int8", calibration=CALIBRATION, output=tmp_path / "m.tflite")
    assert len(exports) == 1
    assert report.float32_bytes > 2 * report.size_bytes
    assert not list(temporary.glob("tfcompress-export-*"))
