"""`tfcompress lowrank`: a kernel of rank r is reproduced exactly by its two factors, the graph
around a factored layer stays wired (residual adds too), and the params drop where promised."""

import json

import numpy as np
import pytest

from conftest import CALIBRATION, EVAL, SAMPLE_MODELS

LENET = SAMPLE_MODELS / "lenet_300_100.h5"


def _low_rank_model(tf_keras, rank):
    """Dense 64→48 and Conv2D 3×3×8→16 kernels of rank `rank`, then a 10-way head."""
    rng = np.random.default_rng(0)
    inputs = tf_keras.Input((6, 6, 8))
    conv = tf_keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv")
    dense = tf_keras.layers.Dense(48, activation="relu", name="dense")
    head = tf_keras.layers.Dense(10, name="head")
    outputs = head(dense(tf_keras.layers.Flatten()(conv(inputs))[:, :64]))
    model = tf_keras.Model(inputs, outputs)
    conv.set_weights(
        [(rng.normal(size=(72, rank)) @ rng.normal(size=(rank, 16))).reshape(3, 3, 8, 16) / 10, rng.normal(size=16)]
    )
    dense.set_weights([rng.normal(size=(64, rank)) @ rng.normal(size=(rank, 48)) / 10, rng.normal(size=48)])
    head.set_weights([rng.normal(size=(48, 10)), np.zeros(10)])
    return model


def test_a_rank_r_kernel_is_reproduced_by_its_factors(tf_keras):
    from tfcompress.transforms.lowrank import LowRankOptions, factorize

    model = _low_rank_model(tf_keras, rank=3)
    factored, layers, skipped = factorize(model, LowRankOptions(energy=0.999999))
    assert {layer.layer: layer.rank for layer in layers} == {"conv": 3, "dense": 3}
    assert "head" in skipped  # the output layer is left whole by default
    x = np.random.default_rng(1).normal(size=(4, 6, 6, 8)).astype(np.float32)
    np.testing.assert_allclose(factored.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-4, atol=1e-4)
    assert factored.count_params() == model.count_params() - sum(f.params_before - f.params_after for f in layers)
    assert [layer.name for layer in factored.layers if "lowrank" in layer.name] == ["conv_lowrank", "dense_lowrank"]
    assert factored.get_layer("conv").kernel.shape == (1, 1, 3, 16)


def test_factoring_a_residual_network_keeps_it_wired_and_leaves_the_original_alone():
    from tfcompress import LowRankOptions, load_model, lowrank

    model = load_model(SAMPLE_MODELS / "resnet8.h5")
    weights = [w.copy() for w in model.get_weights()]
    report = lowrank(model, options=LowRankOptions(rank_ratio=0.5), val=EVAL)
    assert report.params_ratio < 0.8
    assert sum(type(layer).__name__ == "Add" for layer in report.keras_model.layers) == 3
    assert report.accuracy["factored"] < report.accuracy["original"]  # rank 1/2 of a conv net costs accuracy
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), weights))


def test_lenet_300_100_at_energy_0_8_halves_the_params_and_keeps_its_accuracy(tmp_path, run_cli):
    from tfcompress import load_model

    output, report_path = tmp_path / "lowrank.h5", tmp_path / "lowrank.json"
    code, out, err = run_cli(
        "lowrank",
        LENET,
        "-o",
        output,
        "--energy",
        "0.8",
        "--val",
        EVAL,
        "--train",
        CALIBRATION,
        "--epochs",
        "1",
        "--report",
        report_path,
    )
    assert code == 0, err
    report = json.loads(report_path.read_text())
    assert report["params"]["ratio"] < 0.5, report["params"]
    assert [layer["layer"] for layer in report["layers"]] == ["dense", "dense_1"]
    accuracy = report["accuracy"]
    assert accuracy["factored"] > accuracy["original"] - 0.01, accuracy
    assert accuracy["fine_tuned"] > accuracy["original"] - 0.02, accuracy  # 1,000 images, 1 epoch
    assert "left alone: dense_2 (the output layer" in out
    assert "val_loss" in report["metrics"], report["metrics"]  # --val is Keras' validation, as in the other steps
    x = np.load(EVAL)["x"][:20].astype(np.float32) / 255
    assert load_model(output).count_params() == report["params"]["factored"]
    assert load_model(output).predict(x, verbose=0).shape == (20, 10)


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "Give exactly one of energy and rank_ratio"),
        (["--energy", "0.9", "--rank_ratio", "0.5"], "Give exactly one of energy and rank_ratio"),
        (["--energy", "1.5"], "energy must be in (0, 1]"),
        (["--rank_ratio", "0.5", "--layers", "("], "layers must be a regular expression"),
    ],
)
def test_bad_lowrank_options_are_one_line(run_cli, tmp_path, args, message):
    code, _, err = run_cli("lowrank", LENET, "-o", tmp_path / "out.h5", *args)
    assert code == 2
    assert message in err and "Traceback" not in err, err
    assert not (tmp_path / "out.h5").exists()
