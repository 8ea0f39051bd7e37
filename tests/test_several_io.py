"""Models with several inputs and outputs: converted in the Keras order, verified per output, run in TFLite Micro."""

import json

import numpy as np
import pytest

import tfcompress
from tfcompress.errors import DataError
from tfcompress.runtime.inspect import inspect_tflite
from tfcompress.runtime.interpreter import predict, quantize_inputs
from tfcompress.runtime.tflm import measure_arena, micro_outputs


def _two_by_two(tf_keras):
    """Inputs and outputs named so that the converter's sorted order is the reverse of the Keras one."""
    tf_keras.utils.set_random_seed(4)
    layers = tf_keras.layers
    image, meta = tf_keras.Input((8, 8, 1), name="zz_image"), tf_keras.Input((4,), name="aa_meta")
    extra = tf_keras.Input((2,), name="mm_extra")
    x = layers.Flatten()(layers.Conv2D(4, 3, activation="relu")(image))
    x = layers.Concatenate(name="join")([x, layers.Dense(8, activation="relu")(meta), extra])
    label = layers.Dense(3, activation="softmax", name="zz_label")(x)
    box = layers.Dense(2, name="aa_box")(x)
    return tf_keras.Model([image, meta, extra], [label, box])


@pytest.fixture(scope="module")
def several(tf_keras, tmp_path_factory):
    """(model, its .h5, data named by input, data numbered x0/x1, the arrays)."""
    folder = tmp_path_factory.mktemp("several")
    model = _two_by_two(tf_keras)
    path = folder / "two_by_two.h5"
    model.save(path)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (120, 8, 8, 1), dtype=np.uint8)
    meta = rng.normal(0, 1, (120, 4)).astype(np.float32)
    extra = rng.uniform(-2, 2, (120, 2)).astype(np.float32)
    named, numbered = folder / "named.npz", folder / "numbered.npz"
    np.savez(named, mm_extra=extra, zz_image=image, aa_meta=meta, y=rng.integers(0, 3, 120))
    np.savez(numbered, x0=image[:60], x1=meta[:60], x2=extra[:60])
    return model, path, named, numbered, (image.astype(np.float32) / 255, meta, extra)


def test_convert_keeps_the_keras_order_and_names_and_matches_keras_per_output(several, tf_keras, tmp_path):
    import tensorflow as tf

    model, path, named, _, inputs = several
    stock = inspect_tflite(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    assert stock.input_keys == ("zz_image", "mm_extra", "aa_meta")  # what positional callers get from the stock one
    assert stock.output_keys == ("aa_box", "zz_label")

    report = tfcompress.convert(path, precision="int8", calibration=named, eval_data=named, latency_runs=0)
    summary = inspect_tflite(report.tflite)
    assert summary.input_keys == ("zz_image", "aa_meta", "mm_extra")
    assert [t.shape[1:] for t in summary.inputs] == [(8, 8, 1), (4,), (2,)]
    assert summary.output_keys == ("zz_label", "aa_box")

    label, box = predict(report.tflite, inputs)
    keras_label, keras_box = model.predict(list(inputs), verbose=0)
    assert np.mean(np.argmax(label, 1) == np.argmax(keras_label, 1)) >= 0.95
    assert np.abs(box - keras_box).max() < 0.05 * np.abs(keras_box).max()

    by_output = {fidelity.output: fidelity for fidelity in report.fidelity_by_output}
    assert by_output["zz_label"].task == "softmax" and by_output["zz_label"].top1_agreement >= 0.95
    assert by_output["aa_box"].task == "regression" and by_output["aa_box"].relative_error < 0.05
    assert report.accuracy is None  # one label column cannot be both outputs' labels
    assert any("labels are not used" in warning for warning in report.warnings)
    assert set(report.preprocessing["per_input"]) == {"zz_image", "aa_meta", "mm_extra"}
    assert report.preprocessing["per_input"]["zz_image"]["stored_dtype"] == "uint8"


def test_a_fixed_batch_conversion_has_the_keras_names_and_order(several):
    model, _, named, _, inputs = several
    report = tfcompress.convert(model, precision="float32", batch_size=1, eval_data=named, latency_runs=0)
    summary = inspect_tflite(report.tflite)
    assert summary.input_keys == ("zz_image", "aa_meta", "mm_extra")
    assert summary.output_keys == ("zz_label", "aa_box")
    first = tuple(array[:5] for array in inputs)
    label, box = predict(report.tflite, first)
    keras_label, keras_box = model.predict(list(first), verbose=0)
    np.testing.assert_allclose(label, keras_label, atol=1e-5)
    np.testing.assert_allclose(box, keras_box, atol=1e-5)


def test_micro_runs_every_input_and_output_and_judges_each(several, tmp_path):
    _, path, named, numbered, inputs = several
    report = tfcompress.to_micro(path, tmp_path / "out", calibration=named, eval_data=numbered)
    assert report.faithfulness.passed and report.faithfulness.output in ("zz_label", "aa_box")
    assert [fidelity.output for fidelity in report.fidelity_by_output] == ["zz_label", "aa_box"]
    model_bytes = (tmp_path / "out" / "model.tflite").read_bytes()
    summary = inspect_tflite(model_bytes)
    arena, _ = measure_arena(model_bytes)
    first = tuple(array[:20] for array in inputs)
    label, box = micro_outputs(model_bytes, quantize_inputs(first, summary.input_details()), arena)
    litert_label, litert_box = predict(model_bytes, first)
    assert label.shape == (20, 3) and box.shape == (20, 2)
    np.testing.assert_allclose(summary.outputs[0].scales[0] * (label.astype(float) - summary.outputs[0].zero_points[0]),
                               litert_label, atol=2 * summary.outputs[0].scales[0])  # fmt: skip
    assert np.abs(box.astype(float) - np.round(litert_box / summary.outputs[1].scales[0]
                                               + summary.outputs[1].zero_points[0])).max() <= 2  # fmt: skip
    written = json.loads((tmp_path / "out" / "report.json").read_text())
    assert len(written["fidelity_by_output"]) == 2
    assert "output 'aa_box'" in (tmp_path / "out" / "report.md").read_text()


def test_benchmark_and_the_cli_measure_each_output(several, run_cli, tmp_path):
    _, path, named, numbered, _ = several
    tflite = tmp_path / "two.tflite"
    code, out, err = run_cli("convert", path, "--precision", "int8", "--io_type", "int8", "--calibration", numbered,
                             "--eval", named, "-o", tflite)  # fmt: skip
    assert code == 0, err
    assert "output 'zz_label'" in out and "output 'aa_box'" in out
    code, out, err = run_cli("benchmark", tflite, "--reference", path, "--eval", named, "--micro", "--runs", 5,
                             "--json", tmp_path / "bench.json")  # fmt: skip
    assert code == 0, err
    (result,) = json.loads((tmp_path / "bench.json").read_text())["models"]
    assert [fidelity["output"] for fidelity in result["fidelity_by_output"]] == ["zz_label", "aa_box"]
    assert result["fidelity_by_output"][0]["top1_agreement"] >= 0.95
    assert result["micro"]["verification"]["passed"]


def test_data_that_does_not_name_the_inputs_is_refused_with_what_to_do(several, tmp_path):
    _, path, _, _, (image, meta, extra) = several
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, pixels=image, aa_meta=meta, mm_extra=extra)
    with pytest.raises(DataError, match=r"named by input \(zz_image, aa_meta, mm_extra\) or x0 to x2"):
        tfcompress.convert(path, precision="int8", calibration=wrong, latency_runs=0)
    single = tmp_path / "single.npz"
    np.savez(single, x=image)
    with pytest.raises(DataError, match="1 input array"):
        tfcompress.convert(path, precision="int8", calibration=single, latency_runs=0)


def test_training_takes_several_inputs_and_outputs_keeping_their_names_and_order(several):
    _, path, _, numbered, _ = several
    report = tfcompress.prune(path, train=numbered, target_sparsity=0.5, epochs=1, verbose=0)
    pruned = report.keras_model
    assert pruned.input_names == ["zz_image", "aa_meta", "mm_extra"] and pruned.output_names == ["zz_label", "aa_box"]
    check = report.output_check
    assert (check["output"], check["classifier_output"]) == ("aa_box", "zz_label") and report.accuracy_check is None
    assert all(layer["sparsity"] == pytest.approx(0.5, abs=0.05) for layer in report.layers.values()), report.layers


def test_check_gives_each_output_head_its_own_ops_and_judges_tflite_micro_per_output(several):
    _, path, named, _, _ = several
    report = tfcompress.check(path, target="micro", calibration=named)
    ops = {layer.name: layer.ops for layer in report.layers}
    assert ops["join"] == ("CONCATENATION",)  # the box head's op was put here before
    assert ops["aa_box"] == ("FULLY_CONNECTED",) and ops["zz_label"] == ("FULLY_CONNECTED", "SOFTMAX")
    assert report.verdict == "ready" and report.micro_verification.passed and report.micro_verification.output
