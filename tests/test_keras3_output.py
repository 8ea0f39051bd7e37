"""Keras 3 in, Keras 3 out: training-time steps write `.keras` files that Keras 3 loads and keeps training.

Each step runs on the Keras 3 sample model and writes `-o out.keras`; the file is loaded with
Keras 3 itself, its outputs compared with the tf_keras result, its zeros and distinct values
counted, and it is fine-tuned one step in Keras 3.
"""

import json

import numpy as np
import pytest

from conftest import CALIBRATION, SAMPLE_MODELS

KERAS3_MODEL = SAMPLE_MODELS / "lenet5_keras3.keras"


@pytest.fixture(scope="module")
def train_arrays():
    from tfcompress.data import load_data

    data = load_data(CALIBRATION).take(256)
    return data.x, data.y


def _step(kind, folder, train_arrays, source=KERAS3_MODEL):
    import tfcompress
    from tfcompress.transforms.cluster import ClusterOptions
    from tfcompress.transforms.lowrank import LowRankOptions
    from tfcompress.transforms.prune import PruneOptions

    output = folder / f"{kind}.keras"
    if kind == "prune":
        report = tfcompress.prune(
            source,
            train_arrays,
            output=output,
            epochs=1,
            verbose=0,
            options=PruneOptions(target_sparsity=0.6, end_step=4),
        )
    elif kind == "cluster":
        report = tfcompress.cluster(
            source, train_arrays, output=output, epochs=1, verbose=0, options=ClusterOptions(clusters=8)
        )
    elif kind == "distill":
        report = tfcompress.distill(source, train_arrays, width_multiplier=0.5, output=output, epochs=1, verbose=0)
    else:
        report = tfcompress.lowrank(source, options=LowRankOptions(energy=0.9), output=output)
    return output, report


def _kernels(model) -> dict:
    return {
        layer.name: layer.get_weights()[0]
        for layer in model.layers
        if layer.get_weights() and layer.get_weights()[0].ndim >= 2
    }


@pytest.mark.parametrize("kind", ["prune", "cluster", "distill", "lowrank"])
def test_step_writes_a_keras3_file_equal_to_its_result(kind, tmp_path, train_arrays):
    from tfcompress import _keras
    from tfcompress.keras_io import KERAS3_FORMAT

    output, report = _step(kind, tmp_path, train_arrays)
    assert report.output_format == KERAS3_FORMAT
    keras = _keras.keras3()
    loaded = keras.saving.load_model(output, compile=False)
    x = np.random.default_rng(0).uniform(0, 1, (8, 28, 28, 1)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(loaded(x)), report.keras_model(x).numpy(), atol=1e-5)
    # Weights are copied bit for bit: zeros and shared values are exactly those of the tf_keras result.
    for name, kernel in _kernels(report.keras_model).items():
        np.testing.assert_array_equal(loaded.get_layer(name).get_weights()[0], kernel)
    loaded.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    history = loaded.fit(train_arrays[0][:32], train_arrays[1][:32], epochs=1, batch_size=32, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_pruned_and_clustered_values_are_as_reported_and_inspect_shows_them(tmp_path, train_arrays, run_cli):
    from tfcompress import _keras

    pruned, prune_report = _step("prune", tmp_path, train_arrays)
    clustered, cluster_report = _step("cluster", tmp_path, train_arrays, source=pruned)
    model = _keras.keras3().saving.load_model(clustered, compile=False)
    for name, values in cluster_report.layers.items():
        kernel = model.get_layer(name).get_weights()[0]
        assert np.unique(kernel).size == values["unique_values"] <= 8
        assert np.mean(kernel == 0) == pytest.approx(values["sparsity"])
    code, out, _ = run_cli("inspect", clustered, "--json", tmp_path / "details.json")
    assert code == 0
    details = {layer["name"]: layer for layer in json.loads((tmp_path / "details.json").read_text())["layers"]}
    for name, values in cluster_report.layers.items():
        assert details[name]["distinct_values"] == values["unique_values"]
        assert details[name]["sparsity"] == pytest.approx(values["sparsity"])
    assert prune_report.layers and all(values["sparsity"] > 0.3 for values in prune_report.layers.values())


def test_qat_to_keras3_is_one_line_and_writes_nothing(run_cli, tmp_path):
    code, _, err = run_cli("qat", KERAS3_MODEL, "-o", tmp_path / "qat.keras", "--train", CALIBRATION)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "no Keras 3 form" in lines[0] and ".h5" in lines[0]
    assert not list(tmp_path.iterdir())


def test_no_suffix_follows_the_input_and_says_why(tmp_path):
    import tfcompress
    from tfcompress.transforms.lowrank import LowRankOptions

    report = tfcompress.lowrank(KERAS3_MODEL, options=LowRankOptions(energy=0.9), output=tmp_path / "factored")
    assert report.output_format.startswith("Keras 3") and "no .keras or .h5 suffix" in report.output_format
    assert report.to_dict()["output_format"] == report.output_format
    h5 = tfcompress.lowrank(KERAS3_MODEL, options=LowRankOptions(energy=0.9), output=tmp_path / "factored.h5")
    assert h5.output_format.startswith("tf_keras")
