import json
import zipfile

import numpy as np
import pytest

from tfcompress import keras_io, load_data
from tfcompress.errors import ModelLoadError, UnsafeModelError, UntranslatableModelError
from tfcompress.jobs import convert as convert_job
from tfcompress.runtime.interpreter import predict

import custom_layers
from conftest import CALIBRATION, EVAL, KERAS3_SAMPLES, SAMPLE_MODELS


@pytest.fixture(scope="module")
def keras3():
    from tfcompress import _keras

    return _keras.keras3()


def _inputs(shape, count=8):
    return np.random.default_rng(3).uniform(0, 1, (count,) + tuple(shape)).astype(np.float32)


def test_keras2_h5_loads_with_identical_outputs(tiny_model, tiny_h5):
    loaded = keras_io.load_model(tiny_h5)
    x = _inputs((28, 28, 1))
    np.testing.assert_allclose(loaded(x).numpy(), tiny_model(x).numpy(), atol=1e-6)


def test_saved_model_folder_loads(tiny_model, tmp_path):
    tiny_model.save(tmp_path / "saved", save_format="tf")
    loaded = keras_io.load_model(tmp_path / "saved")
    x = _inputs((28, 28, 1))
    np.testing.assert_allclose(loaded(x).numpy(), tiny_model(x).numpy(), atol=1e-6)


def _keras3_functional(keras3):
    keras3.utils.set_random_seed(0)
    layers = keras3.layers
    inputs = keras3.Input((12, 12, 1))
    x = layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    y = layers.DepthwiseConv2D(3, padding="same")(x)
    y = layers.BatchNormalization()(y)
    x = layers.Add()([x, y])
    x = layers.AveragePooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(0.1)(x)
    outputs = layers.Dense(5, activation="softmax")(x)
    model = keras3.Model(inputs, outputs)
    batch_norm = model.layers[3]
    batch_norm.set_weights([w + np.linspace(0.1, 0.5, w.shape[0]) for w in batch_norm.get_weights()])
    return model


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_keras3_files_are_translated_with_equal_outputs(keras3, tmp_path, suffix):
    original = _keras3_functional(keras3)
    path = tmp_path / f"model{suffix}"
    original.save(path)
    loaded = keras_io.load_model(path)
    assert type(loaded).__module__.startswith("tf_keras")
    x = _inputs((12, 12, 1))
    np.testing.assert_allclose(loaded(x).numpy(), np.asarray(original(x)), atol=1e-5)


def test_keras3_sequential_translates(keras3, tmp_path):
    model = keras3.Sequential([keras3.Input((6,)), keras3.layers.Dense(3, activation="tanh")])
    model.save(tmp_path / "seq.keras")
    x = _inputs((6,))
    np.testing.assert_allclose(keras_io.load_model(tmp_path / "seq.keras")(x).numpy(), np.asarray(model(x)), atol=1e-5)


@pytest.mark.parametrize("name", KERAS3_SAMPLES)
def test_keras3_sample_models_match_keras3(keras3, name):
    original = keras3.saving.load_model(SAMPLE_MODELS / name, compile=False)
    x = _inputs((28, 28, 1), 16)
    np.testing.assert_allclose(keras_io.load_model(SAMPLE_MODELS / name)(x).numpy(), np.asarray(original(x)), atol=1e-5)


@pytest.mark.parametrize("name", KERAS3_SAMPLES)
def test_keras3_samples_convert_to_int8_that_agrees_with_keras3(keras3, name):
    """Plain int8 ties near-equal top-2 classes (its softmax step is 1/256); with the
    classifier head (the last Dense and its softmax) kept float the top-1 class is Keras 3's."""
    original = keras3.saving.load_model(SAMPLE_MODELS / name, compile=False)
    evaluation = load_data(EVAL)
    keras3_top1 = np.argmax(original.predict(evaluation.x, verbose=0), axis=1)
    head = original.layers[-1].name
    report = convert_job.convert(
        SAMPLE_MODELS / name, precision="int8", calibration=CALIBRATION, keep_float=[head], latency_runs=0
    )
    assert report.float_ops == ("FULLY_CONNECTED", "SOFTMAX")
    assert np.mean(np.argmax(predict(report.tflite, evaluation.x), axis=1) == keras3_top1) >= 0.995


def _keras3_regressor(keras3, epsilon=1e-3):
    """Two Conv + BatchNormalization blocks and outputs near 150 (an age, a temperature): the two
    libraries' float32 rounding leaves its translation over 1e-5 from it."""
    keras3.utils.set_random_seed(0)
    layers = keras3.layers
    inputs = keras3.Input((16, 16, 3))
    x = inputs
    for _ in range(2):
        x = layers.Conv2D(8, 3, padding="same")(x)
        x = layers.BatchNormalization(epsilon=epsilon)(x)
        x = layers.ReLU()(x)
    x = layers.GlobalAveragePooling2D()(x)
    head = layers.Dense(1)
    model = keras3.Model(inputs, head(x))
    kernel, bias = head.get_weights()
    head.set_weights([kernel * 1000, bias])
    return model


def test_a_translation_apart_by_float32_rounding_alone_is_accepted(keras3, tmp_path):
    from tfcompress.keras_io.parity import PARITY_ATOL

    original = _keras3_regressor(keras3)
    original.save(tmp_path / "regressor.keras")
    loaded = keras_io.load_model(tmp_path / "regressor.keras")
    x = _inputs((16, 16, 3), count=4)
    expected, received = np.asarray(original(x)), loaded(x).numpy()
    assert np.abs(expected).max() > 100
    assert np.abs(expected - received).max() > PARITY_ATOL  # refused for this before float64 was asked
    np.testing.assert_allclose(received, expected, rtol=1e-6)  # float32 rounding, nothing more


def test_a_translation_that_computes_something_else_is_refused(keras3, tmp_path, monkeypatch):
    """A translation that loses a setting (here BatchNormalization's epsilon, 1e-3 → 0.3) is refused,
    however large the outputs' float32 rounding."""
    from tfcompress import keras_io as io

    _keras3_regressor(keras3).save(tmp_path / "regressor.keras")
    translate = io._translate_layer

    def losing_epsilon(layer, *args):
        translated = translate(layer, *args)
        if translated["class_name"] == "BatchNormalization":
            translated["config"]["epsilon"] = 0.3
        return translated

    monkeypatch.setattr(io, "_translate_layer", losing_epsilon)
    with pytest.raises(UntranslatableModelError, match="more than 1e-05 and more than float32 rounding moves"):
        keras_io.load_model(tmp_path / "regressor.keras")


def test_keras3_arithmetic_with_numbers_and_hard_activations_translate(keras3, tmp_path):
    """MobileNetV3's way: `relu6(x + 3) * (1 / 6)` as operations on numbers, and hard silu/sigmoid
    activations (Keras 3's hard sigmoid is not tf_keras's), rewritten as tf_keras layers."""
    keras3.utils.set_random_seed(0)
    layers = keras3.layers
    inputs = keras3.Input((6, 6, 2))
    x = layers.Conv2D(4, 3, padding="same")(inputs)
    gate = layers.ReLU(6.0)(x + 3.0) * (1.0 / 6.0)
    x = layers.Multiply()([x, gate])
    x = layers.Activation("hard_silu")(x * 4.0)
    x = 1.0 - layers.Activation("hard_sigmoid")(x / 2.0 - 0.5)
    outputs = layers.Dense(3)(layers.Flatten()(x))
    original = keras3.Model(inputs, outputs)
    original.save(tmp_path / "hard.keras")
    loaded = keras_io.load_model(tmp_path / "hard.keras")
    assert {type(layer).__name__ for layer in loaded.layers} >= {"Rescaling", "ReLU", "Multiply"}
    x = _inputs((6, 6, 2)) * 4 - 2  # across the hard curves' bends at -3 and 3
    np.testing.assert_allclose(loaded(x).numpy(), np.asarray(original(x)), atol=1e-5)
    from tfcompress.runtime.inspect import inspect_tflite

    converted = convert_job.convert(loaded, precision="float32", latency_runs=0)
    # Fused as tf_keras' MobileNetV3's: x times the gate written with numbers, and the hard_silu.
    assert inspect_tflite(converted.tflite).ops.get("HARD_SWISH") == 2
    np.testing.assert_allclose(predict(converted.tflite, x), np.asarray(original(x)), atol=1e-4)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_keras3_convnext_layer_scale_translates_to_tf_keras_own(keras3, tmp_path, suffix):
    """ConvNeXt's LayerScale is Keras's own code in both libraries, though neither registers it."""
    from keras.src.applications.convnext import LayerScale

    keras3.utils.set_random_seed(0)
    inputs = keras3.Input((4, 4, 3))
    x = keras3.layers.Conv2D(8, 1)(inputs)
    outputs = LayerScale(0.5, 8, name="scale")(x)
    original = keras3.Model(inputs, outputs)
    original.get_layer("scale").set_weights([np.linspace(-1, 1, 8).astype("float32")])
    original.save(tmp_path / f"convnext_like{suffix}")
    loaded = keras_io.load_model(tmp_path / f"convnext_like{suffix}")
    assert type(loaded.get_layer("scale")).__module__.startswith("tf_keras")
    x = _inputs((4, 4, 3))
    np.testing.assert_allclose(loaded(x).numpy(), np.asarray(original(x)), atol=1e-6)


def test_keras3_arithmetic_with_an_array_is_refused_in_one_line(keras3, tmp_path):
    inputs = keras3.Input((4,))
    keras3.Model(inputs, inputs + np.arange(4, dtype="float32")).save(tmp_path / "array.keras")
    with pytest.raises(UntranslatableModelError, match="called with a constant argument"):
        keras_io.load_model(tmp_path / "array.keras")


def test_untranslatable_keras3_option_names_the_layer(keras3, tmp_path):
    model = keras3.Sequential([keras3.Input((4,)), keras3.layers.Dense(3, name="adapter")])
    model.save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(files["config.json"])
    config["config"]["layers"][1]["config"]["lora_rank"] = 4
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(tmp_path / "lora.keras", "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    with pytest.raises(UntranslatableModelError, match="'adapter'.*lora_rank=4"):
        keras_io.load_model(tmp_path / "lora.keras")


def _lambda_model(tf_keras, marker):
    layers = tf_keras.layers
    return tf_keras.Sequential(
        [
            tf_keras.Input((4,)),
            layers.Lambda(lambda x, path=str(marker): (open(path, "w").write("ran"), x)[1], name="sneaky"),
            layers.Dense(2),
        ]
    )


def test_lambda_is_refused_before_any_stored_code_runs(tf_keras, tmp_path):
    marker = tmp_path / "marker"
    _lambda_model(tf_keras, marker).save(tmp_path / "lambda.h5")
    marker.unlink()
    with pytest.raises(UnsafeModelError, match=r"Lambda layer \('sneaky'\).*--trust_model_code"):
        keras_io.load_model(tmp_path / "lambda.h5")
    assert not marker.exists()
    # The same file with trust does run the stored code: the check above can fail.
    keras_io.load_model(tmp_path / "lambda.h5", trust_model_code=True)
    assert marker.exists()


def test_custom_layer_needs_its_module(tf_keras, tmp_path):
    model = tf_keras.Sequential([tf_keras.Input((3,)), custom_layers.ScaleBy(3.0, name="scale")])
    model.save(tmp_path / "custom.h5")
    with pytest.raises(ModelLoadError, match=r"custom layer class ScaleBy \('scale'\).*--custom_objects"):
        keras_io.load_model(tmp_path / "custom.h5")
    objects = keras_io.load_custom_objects(custom_layers.__file__)
    loaded = keras_io.load_model(tmp_path / "custom.h5", custom_objects=objects)
    np.testing.assert_allclose(loaded(np.ones((1, 3), np.float32)).numpy(), [[3.0, 3.0, 3.0]])


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing.h5", "not found"),
        (lambda p: p, "is a folder"),
        (
            lambda p: (p / "noise.h5").write_bytes(np.random.default_rng(0).bytes(5000)) and p / "noise.h5",
            "cannot be read as HDF5",
        ),
        (lambda p: (p / "model.onnx").write_bytes(b"x") and p / "model.onnx", "Unsupported model file"),
        (lambda p: (p / "m.keras").write_bytes(b"PK\x03\x04junk") and p / "m.keras", "not a readable .keras"),
    ],
)
def test_bad_model_files_name_the_problem(tmp_path, make, message):
    with pytest.raises(ModelLoadError, match=message):
        keras_io.load_model(make(tmp_path))


def test_truncated_h5_is_a_clear_error(tiny_h5, tmp_path):
    data = tiny_h5.read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="truncated"):
        keras_io.load_model(tmp_path / "cut.h5")


@pytest.mark.parametrize("name", ["lenet5_keras3.keras", "lenet5_keras3.h5"])
def test_keras3_sample_models_convert_to_int8_agreeing_with_keras3(keras3, name):
    from tfcompress.data import load_data
    from tfcompress.export.tflite import ConvertOptions, to_tflite
    from tfcompress.runtime.interpreter import predict

    from conftest import CALIBRATION, EVAL

    evaluation, calibration = load_data(EVAL), load_data(CALIBRATION)
    original = keras3.saving.load_model(SAMPLE_MODELS / name, compile=False)
    tflite = to_tflite(keras_io.load_model(SAMPLE_MODELS / name), ConvertOptions("int8"), calibration)
    expected = np.asarray(original.predict(evaluation.x, verbose=0)).argmax(1)
    outputs = predict(tflite, evaluation.x)
    top_two = np.sort(outputs, axis=1)[:, -2:]
    decided = top_two[:, 1] > top_two[:, 0]  # int8 softmax steps are 1/256: near-ties tie
    assert np.mean(outputs.argmax(1) == expected) >= 0.99
    assert np.mean(outputs[decided].argmax(1) == expected[decided]) >= 0.995


def test_untested_tensorflow_fails_fast(monkeypatch):
    import tensorflow

    from tfcompress import _keras
    from tfcompress.errors import UnsupportedVersionError

    monkeypatch.setattr(tensorflow, "__version__", "2.99.0")
    monkeypatch.delenv("TFCOMPRESS_ALLOW_UNTESTED_TENSORFLOW", raising=False)
    with pytest.raises(UnsupportedVersionError, match=r"tested with TensorFlow 2\.21.*2\.99\.0"):
        _keras.tensorflow()
    monkeypatch.setenv("TFCOMPRESS_ALLOW_UNTESTED_TENSORFLOW", "1")
    assert _keras.tensorflow() is tensorflow


def test_keras3_attention_and_recurrent_layers_translate(tmp_path):
    """MultiHeadAttention called with (query, value) and an LSTM come into tf_keras (outputs proven
    equal on load). Back out, the LSTM model gives a Keras 3 file with the same outputs; Keras 3
    cannot rebuild tf_keras' attention call, which is refused in one line naming it, nothing written."""
    from tfcompress import _keras, keras_io
    from tfcompress.errors import UntranslatableModelError

    keras = _keras.keras3()
    keras.utils.set_random_seed(0)
    inputs = keras.Input((10, 16))
    recurrent = keras.layers.LSTM(8)(keras.layers.LayerNormalization()(inputs))
    keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(recurrent)).save(tmp_path / "lstm.keras")
    attended = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8)(inputs, inputs)
    keras.Model(inputs, keras.layers.GlobalAveragePooling1D()(attended)).save(tmp_path / "attention.keras")

    lstm = keras_io.load_model(tmp_path / "lstm.keras")
    assert keras_io.save_model(lstm, tmp_path / "out.keras") == keras_io.KERAS3_FORMAT
    x = np.random.default_rng(0).uniform(0, 1, (4, 10, 16)).astype(np.float32)
    back = keras.saving.load_model(tmp_path / "out.keras", compile=False)
    np.testing.assert_allclose(np.asarray(back(x)), lstm(x).numpy(), atol=1e-5)

    attention = keras_io.load_model(tmp_path / "attention.keras")
    with pytest.raises(UntranslatableModelError, match="MultiHeadAttention.*write it as .h5"):
        keras_io.save_model(attention, tmp_path / "attention-out.keras")
    assert not (tmp_path / "attention-out.keras").exists()
