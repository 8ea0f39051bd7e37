"""`tfcompress prune`: the targets are reached layer by layer, the zeros survive stripping
and int8 conversion (gzip shrinks), N:M structure holds, and bad options are one line."""

import numpy as np
import pytest

from conftest import CALIBRATION, EVAL, SAMPLE_MODELS

LENET = SAMPLE_MODELS / "lenet_300_100.h5"


@pytest.fixture(scope="module")
def pruned_lenet(tmp_path_factory):
    from tfcompress import prune
    from tfcompress.transforms.prune import PruneOptions

    folder = tmp_path_factory.mktemp("pruned")
    # 1,000 images, 8 epochs (32 steps each): sparsity ramps up over 5 epochs, 3 more to recover.
    options = PruneOptions(target_sparsity=0.8, layer_sparsity={"dense": 0.9}, skip_last=True, end_step=160)
    report = prune(
        LENET, CALIBRATION, output=folder / "pruned.h5", epochs=8, learning_rate=5e-4, options=options, verbose=0
    )
    return folder / "pruned.h5", report


def test_each_layer_reaches_its_target(pruned_lenet):
    from tfcompress import load_model
    from tfcompress.transforms.prune import layer_sparsity

    path, report = pruned_lenet
    assert set(report.layers) == {"dense", "dense_1"}  # the last Dense is skipped
    assert report.layers["dense"]["target"] == 0.9 and report.layers["dense_1"]["target"] == 0.8
    for values in report.layers.values():
        assert abs(values["sparsity"] - values["target"]) < 0.01, report.layers
    saved = layer_sparsity(load_model(path))  # stripped: plain Dense, zeros kept
    assert saved["dense"] == pytest.approx(report.layers["dense"]["sparsity"])
    assert saved["dense_2"] < 0.01


def test_pruned_model_keeps_accuracy_and_shrinks_gzip(pruned_lenet):
    from tfcompress import convert

    path, _ = pruned_lenet
    dense = convert(LENET, precision="int8", calibration=CALIBRATION, eval_data=EVAL, latency_runs=0)
    pruned = convert(path, precision="int8", calibration=CALIBRATION, eval_data=EVAL, latency_runs=0)
    assert pruned.size_bytes == pytest.approx(dense.size_bytes, rel=0.02)  # zeros cost the same raw bytes
    assert pruned.gzip_bytes < 0.5 * dense.gzip_bytes
    assert pruned.accuracy > dense.accuracy - 0.03, (pruned.accuracy, dense.accuracy)


def test_two_of_four_structure(tiny_h5):
    from tfcompress import prune
    from tfcompress.transforms.prune import PruneOptions

    report = prune(tiny_h5, CALIBRATION, options=PruneOptions(structured="2:4", layers="^dense"), epochs=1, verbose=0)
    dense = next(layer for layer in report.keras_model.layers if layer.name.startswith("dense"))
    kernel = dense.get_weights()[0]  # (inputs, outputs); groups run along inputs
    groups = kernel.T.reshape(kernel.shape[1], -1, 4)
    assert np.all(np.sum(groups == 0.0, axis=-1) >= 2)


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--target_sparsity", "1.0"], "target_sparsity must be in [0, 1)"),
        (["--layers", "^nothing$"], "no layer to prune"),
        (["--layer_sparsity", "conv9=0.5"], "layer_sparsity names layers the model does not have: conv9"),
        (["--layer_sparsity", "dense"], "NAME=VALUE"),
        (["--structured", "2-4"], "structured must look like 2:4"),
    ],
)
def test_bad_options_are_one_line(run_cli, tmp_path, flags, expected):
    code, _, err = run_cli("prune", LENET, "-o", tmp_path / "out.h5", "--train", CALIBRATION, *flags)
    assert code == 2
    assert expected in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.h5").exists()


def test_a_prune_then_cluster_chain_gives_the_same_weights_from_the_api_and_the_cli(run_cli, tmp_path):
    """The API once pruned the caller's own model in place (tfmot wraps the layers it is given), so a
    script that pruned one model twice started its second run from the first's result."""
    import tfcompress

    model = tfcompress.load_model(LENET)
    original = [weights.copy() for weights in model.get_weights()]
    prune_flags = {"target_sparsity": 0.8, "layer_sparsity": {"dense": 0.9}, "epochs": 1, "batch_size": 100}
    cluster_flags = {"clusters": 8, "preserve_sparsity": True, "epochs": 1, "batch_size": 100}
    pruned = tfcompress.prune(model, CALIBRATION, verbose=0, **prune_flags)
    clustered = tfcompress.cluster(pruned.keras_model, CALIBRATION, verbose=0, **cluster_flags)
    assert all(np.array_equal(kept, now) for kept, now in zip(original, model.get_weights()))

    common = ("--train", CALIBRATION, "--epochs", "1", "--batch_size", "100")
    code, _, err = run_cli(
        "prune", LENET, "-o", tmp_path / "p.h5", "--target_sparsity", "0.8", "--layer_sparsity", "dense=0.9", *common
    )
    assert code == 0, err
    code, _, err = run_cli(
        "cluster", tmp_path / "p.h5", "-o", tmp_path / "c.h5", "--clusters", "8", "--preserve_sparsity", *common
    )
    assert code == 0, err
    from_cli = tfcompress.load_model(tmp_path / "c.h5").get_weights()
    assert all(np.array_equal(api, cli) for api, cli in zip(clustered.keras_model.get_weights(), from_cli))
