"""SavedModels from the field: Keras metadata kept where TF 2.4 and earlier kept it, and none at all."""

import numpy as np
import pytest

import tfcompress
from tfcompress import _keras
from tfcompress.errors import ModelLoadError, UnsafeModelError
from tfcompress.runtime.interpreter import predict


def _inputs(count=120):
    return np.random.default_rng(0).normal(0, 1, (count, 16)).astype(np.float32)


@pytest.fixture(scope="module")
def keras3_export(tmp_path_factory):
    """A Keras 3 classifier exported with model.export() (no Keras metadata), and its own outputs."""
    keras3 = _keras.keras3()
    keras3.utils.set_random_seed(0)
    model = keras3.Sequential(
        [keras3.Input((16,)), keras3.layers.Dense(8, activation="relu"), keras3.layers.Dense(3, activation="softmax")]
    )
    path = tmp_path_factory.mktemp("export") / "exported"
    model.export(str(path))
    return path, model.predict(_inputs(), verbose=0)


def test_a_savedmodel_with_keras_metadata_inside_saved_model_pb_loads(tf_keras, tmp_path):
    """TF 2.4 and earlier kept each layer's metadata in the object graph, with no keras_metadata.pb."""
    from tensorflow.core.protobuf import saved_model_pb2
    from tf_keras.protobuf import saved_metadata_pb2

    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential([tf_keras.Input((16,)), tf_keras.layers.Dense(4, activation="softmax")])
    folder = tmp_path / "legacy"
    model.save(folder, save_format="tf")
    metadata = saved_metadata_pb2.SavedMetadata.FromString((folder / "keras_metadata.pb").read_bytes())
    saved_model = saved_model_pb2.SavedModel.FromString((folder / "saved_model.pb").read_bytes())
    for node in metadata.nodes:
        saved_model.meta_graphs[0].object_graph_def.nodes[node.node_id].user_object.metadata = node.metadata
    (folder / "saved_model.pb").write_bytes(saved_model.SerializeToString())
    (folder / "keras_metadata.pb").unlink()

    loaded = tfcompress.load_model(folder)
    assert type(loaded.layers[-1]).__name__ == "Dense"  # rebuilt as Keras layers, not a signature
    np.testing.assert_allclose(loaded.predict(_inputs(), verbose=0), model.predict(_inputs(), verbose=0), atol=1e-6)


def test_a_keras3_export_converts_to_int8_verified_against_its_own_outputs(keras3_export, tmp_path):
    path, keras3_outputs = keras3_export
    np.savez(tmp_path / "x.npz", x=_inputs())
    report = tfcompress.convert(path, precision="int8", calibration=tmp_path / "x.npz", eval_data=tmp_path / "x.npz")
    assert report.fidelity.samples == len(keras3_outputs) and report.fidelity.task == "softmax"
    tflite_outputs = predict(report.tflite, _inputs())
    # The report's reference is the signature itself: its error equals the error against Keras 3's outputs.
    assert report.fidelity.max_abs_error == pytest.approx(np.abs(tflite_outputs - keras3_outputs).max(), abs=1e-5)
    assert report.fidelity.top1_agreement >= 0.95
    assert "FULLY_CONNECTED" in report.ops and not report.float_ops


def test_a_keras3_export_packages_for_tflite_micro(keras3_export, tmp_path):
    path, _ = keras3_export
    np.savez(tmp_path / "x.npz", x=_inputs())
    report = tfcompress.to_micro(path, tmp_path / "micro", calibration=tmp_path / "x.npz")
    assert report.faithfulness.passed and report.arena_bytes > 0
    assert (tmp_path / "micro" / "model_data.cc").exists()


def test_training_a_serving_signature_is_refused_with_what_to_do(keras3_export, tmp_path, run_cli):
    path, _ = keras3_export
    np.savez(tmp_path / "xy.npz", x=_inputs(), y=np.zeros(120, np.int64))
    code, _, err = run_cli("prune", str(path), "--train", str(tmp_path / "xy.npz"), "-o", str(tmp_path / "p.h5"))
    assert code == 2 and "no layers to train" in err and "Traceback" not in err
    with pytest.raises(ModelLoadError, match="Save the Keras model itself"):
        tfcompress.analyze(path, calibration=tmp_path / "xy.npz")


def test_a_serving_function_that_writes_files_is_refused_unless_trusted(tmp_path):
    tf = _keras.tensorflow()
    marker = tmp_path / "MARKER"

    class Writer(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def serve(self, x):
            tf.io.write_file(str(marker), "ran")
            return {"y": x * 2.0}

    module = Writer()
    tf.saved_model.save(module, str(tmp_path / "writer"), signatures={"serving_default": module.serve})
    np.savez(tmp_path / "x.npz", x=np.ones((8, 4), np.float32))
    with pytest.raises(UnsafeModelError, match="WriteFile"):
        tfcompress.convert(tmp_path / "writer", precision="float16", calibration=tmp_path / "x.npz")
    assert not marker.exists()
    trusted = tfcompress.load_model(tmp_path / "writer", trust_model_code=True)
    np.testing.assert_allclose(trusted.predict(np.ones((2, 4), np.float32), verbose=0), 2.0)
    assert marker.exists()  # trusted: the serving function ran, so the refusal above was real
