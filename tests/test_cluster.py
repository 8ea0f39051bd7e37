"""`tfcompress cluster`, the collaborative QAT variants and Deep Compression size accounting:
k shared values survive stripping and int8 conversion, pruned zeros survive clustering and
PCQAT, the coded sizes add up, and bad options are one line."""

import math
import re

import numpy as np
import pytest

from conftest import CALIBRATION, EVAL, SAMPLE_MODELS

LENET = SAMPLE_MODELS / "lenet_300_100.h5"


@pytest.fixture(scope="module")
def pruned_then_clustered(tmp_path_factory):
    """LeNet-300-100 pruned to 80% then clustered to 8 values (4 in the last layer), zeros kept."""
    from tfcompress import cluster, prune
    from tfcompress.transforms.cluster import ClusterOptions
    from tfcompress.transforms.prune import PruneOptions

    folder = tmp_path_factory.mktemp("clustered")
    # 1,000 images, 32 steps per epoch: sparsity ramps up over 3 epochs, 3 more to recover.
    pruned = prune(
        LENET,
        CALIBRATION,
        options=PruneOptions(target_sparsity=0.8, end_step=96),
        epochs=6,
        learning_rate=5e-4,
        verbose=0,
    )
    options = ClusterOptions(clusters=8, preserve_sparsity=True, layer_clusters={"dense_2": 4})
    report = cluster(
        pruned.keras_model,
        CALIBRATION,
        output=folder / "clustered.h5",
        options=options,
        epochs=2,
        learning_rate=1e-4,
        verbose=0,
    )
    return folder / "clustered.h5", report


def test_clusters_and_zeros_survive_stripping(pruned_then_clustered):
    from tfcompress import load_model
    from tfcompress.transforms.cluster import cluster_counts

    path, report = pruned_then_clustered
    assert {name: values["clusters"] for name, values in report.layers.items()} == {
        "dense": 8,
        "dense_1": 8,
        "dense_2": 4,
    }
    for values in report.layers.values():
        assert values["unique_values"] <= values["clusters"]
        assert values["sparsity"] > 0.78, report.layers  # zeros were kept, not clustered away
    assert cluster_counts(load_model(path)) == {name: v["unique_values"] for name, v in report.layers.items()}


@pytest.mark.parametrize("preserve_sparsity", [True, False])
def test_zeros_of_a_pruned_layer_left_unclustered_survive_only_when_asked(pruned_then_clustered, preserve_sparsity):
    """Clustering only the last layer still fine-tunes the others: with preserve_sparsity their pruned
    zeros stay zeros (a callback puts them back after each batch), without it they grow back."""
    from tfcompress import cluster, load_model
    from tfcompress.transforms.prune import layer_sparsity

    path, _ = pruned_then_clustered
    clustered = cluster(
        load_model(path),
        CALIBRATION,
        clusters=4,
        layers="^dense_2$",
        preserve_sparsity=preserve_sparsity,
        epochs=2,
        learning_rate=1e-3,
        verbose=0,
    )
    before, after = layer_sparsity(load_model(path)), layer_sparsity(clustered.keras_model)
    if preserve_sparsity:
        assert after["dense"] == before["dense"] and after["dense_1"] == before["dense_1"] > 0.78
    else:
        assert after["dense"] < 0.5 and after["dense_1"] < 0.5, after  # 10% and 13% when measured
    assert clustered.layers["dense_2"]["unique_values"] <= 4


def test_clustered_int8_model_holds_at_most_k_values_and_codes_small(pruned_then_clustered):
    from tfcompress import code_weights, convert

    path, _ = pruned_then_clustered
    dense = convert(LENET, precision="int8", calibration=CALIBRATION, eval_data=EVAL, latency_runs=0)
    clustered = convert(
        path, precision="int8", calibration=CALIBRATION, eval_data=EVAL, per_tensor_dense=True, latency_runs=0
    )
    # Fine-tuned on 1,000 images only: the benchmark measures what the full training set keeps.
    assert clustered.reference.accuracy > dense.accuracy - 0.06, (clustered.reference.accuracy, dense.accuracy)
    assert abs(clustered.accuracy - clustered.reference.accuracy) < 0.01  # int8 of k values is faithful
    coding = code_weights(clustered.tflite)
    limits = {"dense/": 8, "dense_1/": 8, "dense_2/": 4}
    for tensor in coding.tensors:
        limit = next(k for prefix, k in limits.items() if f"/{prefix}" in tensor.name + "/")
        assert tensor.unique_values <= limit, tensor
        assert tensor.entropy_bits <= math.log2(tensor.unique_values) + 1e-9
    first = max(coding.tensors, key=lambda t: t.raw_bytes)  # the 784×300 kernel
    assert first.sparsity > 0.78 and first.coding.startswith("sparse")
    assert first.huffman_bytes < 0.35 * first.raw_bytes
    # Sparse coding can beat the i.i.d. entropy bound: pruned zeros come in runs.
    assert max(coding.entropy_bound_bytes, coding.huffman_bytes) < coding.gzip_bytes < 0.5 * dense.gzip_bytes
    assert code_weights(dense.tflite).huffman_bytes > 0.9 * dense.size_bytes  # dense int8 hardly codes


def test_a_clustered_model_converted_with_a_scale_per_dense_channel_is_warned_of(pruned_then_clustered):
    """Per-channel scales turn each Dense layer's shared values into many bytes: larger after gzip."""
    from tfcompress import convert

    path, _ = pruned_then_clustered
    reports = {
        per_tensor: convert(
            path, precision="int8", calibration=CALIBRATION, per_tensor_dense=per_tensor, latency_runs=0
        ).to_dict()
        for per_tensor in (False, True)
    }
    (warning,) = [w for w in reports[False]["warnings"] if "clustered" in w]
    assert (
        warning.startswith("the Dense layers dense, dense_1, dense_2 are clustered") and "--per_tensor_dense" in warning
    )
    assert not any("clustered" in w for w in reports[True]["warnings"])
    assert reports[False]["gzip_bytes"] > 1.05 * reports[True]["gzip_bytes"], reports
    plain = convert(LENET, precision="int8", calibration=CALIBRATION, latency_runs=0).to_dict()
    assert not any("clustered" in w for w in plain["warnings"])


def test_auto_converts_a_clustered_model_with_one_scale_per_dense_tensor(pruned_then_clustered, tmp_path):
    from tfcompress import auto, convert

    path, _ = pruned_then_clustered
    report = auto(path, calibration=CALIBRATION, eval_data=EVAL, max_accuracy_drop=1.0, output=tmp_path / "a.tflite")
    int8 = next(c for c in report.candidates if c.name == "int8")
    assert int8.options == {"per_tensor_dense": True}
    assert all(c.options.get("per_tensor_dense") for c in report.candidates if c.precision in ("int8", "int16x8"))
    spread = convert(path, precision="int8", calibration=CALIBRATION, latency_runs=0)
    assert int8.gzip_bytes < 0.95 * spread.gzip_bytes, (int8.gzip_bytes, spread.gzip_bytes)


def test_clustered_means_few_shared_values_among_the_weights_pruning_kept():
    from tfcompress.transforms.cluster import is_clustered

    rng = np.random.default_rng(0)
    trained = rng.normal(size=(784, 300)).astype(np.float32)
    nearly_all_pruned = np.where(rng.random(trained.shape) < 0.999, 0.0, trained)  # ~235 values, none shared
    clustered = rng.choice(np.linspace(-1, 1, 8), size=trained.shape) * (rng.random(trained.shape) < 0.2)
    assert is_clustered(clustered)
    assert not any(map(is_clustered, (trained, nearly_all_pruned, np.zeros_like(trained))))


def test_pcqat_keeps_zeros_and_clusters_and_its_file_converts_without_calibration(pruned_then_clustered, tmp_path):
    from tfcompress import code_weights, convert, quantize_aware

    path, before = pruned_then_clustered
    report = quantize_aware(
        path,
        CALIBRATION,
        output=tmp_path / "pcqat.h5",
        preserve="both",
        epochs=1,
        learning_rate=1e-5,
        skip_check=True,
        verbose=0,
    )
    assert report.options["preserve"] == "both"
    converted = convert(tmp_path / "pcqat.h5", precision="int8", eval_data=EVAL, latency_runs=0)
    assert converted.calibration["samples"] == 0
    for tensor in code_weights(converted.tflite).tensors:
        layer = re.search(r"quant_(dense(?:_\d)?)/", tensor.name).group(1)
        assert tensor.sparsity > 0.78, tensor
        assert tensor.unique_values <= before.layers[layer]["clusters"], tensor


def test_huffman_bits_are_those_of_an_optimal_prefix_code():
    import heapq

    from tfcompress.runtime.weight_coding import huffman_bits

    def one_merge_at_a_time(counts):  # the textbook algorithm: every merge adds its weight to the total
        heap, bits = list(counts), 0
        heapq.heapify(heap)
        while len(heap) > 1:
            merged = heapq.heappop(heap) + heapq.heappop(heap)
            bits += merged
            heapq.heappush(heap, merged)
        return bits

    assert huffman_bits([5, 2, 1, 1]) == 15  # 5·1 + 2·2 + 1·3 + 1·3
    assert huffman_bits([1] * 8) == 24 and huffman_bits([100, 1]) == 101 and huffman_bits([7]) == 7
    rng = np.random.default_rng(0)
    for size in (2, 3, 17, 300, 5000):
        for counts in (rng.integers(1, 50, size), rng.geometric(0.3, size), [1] * size + [size * 10]):
            assert huffman_bits(counts) == one_merge_at_a_time(list(map(int, counts))), (size, counts[:5])


def test_inspect_shows_sparsity_and_distinct_values(pruned_then_clustered, run_cli, tmp_path):
    path, _ = pruned_then_clustered
    out = tmp_path / "clustered.tflite"
    assert run_cli("convert", path, "-o", out, "--calibration", CALIBRATION, "--per_tensor_dense")[0] == 0
    code, printed, _ = run_cli("inspect", out)
    assert code == 0
    assert "Huffman-coded" in printed
    row = next(line for line in printed.splitlines() if "/dense/MatMul" in line and "sparse" in line)
    sparsity, distinct = row.split()[1:3]
    assert float(sparsity) > 0.78 and int(distinct) <= 8


def test_cluster_api_takes_arrays_and_a_tf_data_dataset(tf_keras):
    import tensorflow as tf

    from tfcompress import cluster
    from tfcompress.data import load_raw
    from tfcompress.transforms.cluster import ClusterOptions

    x, y = load_raw(CALIBRATION)
    x, y = x[:64], y[:64]
    options = ClusterOptions(clusters=4, layers="dense_1")
    from_arrays = cluster(LENET, (x, y), options=options, epochs=1, verbose=0)
    from_tf_data = cluster(
        LENET, tf.data.Dataset.from_tensor_slices((x, y)).batch(16), options=options, epochs=1, verbose=0
    )
    assert list(from_arrays.layers) == list(from_tf_data.layers) == ["dense_1"]
    assert from_arrays.layers["dense_1"]["unique_values"] <= 4
    np.testing.assert_allclose(from_arrays.keras_model.get_weights()[2], from_tf_data.keras_model.get_weights()[2])


def test_per_channel_clustering_of_conv2d(tf_keras):
    from tfcompress import cluster
    from tfcompress.transforms.cluster import ClusterOptions

    report = cluster(
        SAMPLE_MODELS / "lenet5.h5",
        CALIBRATION,
        options=ClusterOptions(clusters=4, per_channel=True, layers="conv2d"),
        epochs=1,
        verbose=0,
    )
    assert report.layers["conv2d_1"]["per_channel"] and report.layers["conv2d_1"]["unique_values"] <= 4
    kernel = report.keras_model.get_layer("conv2d_1").get_weights()[0]
    assert len(np.unique(kernel)) > 4  # more than 4 overall, at most 4 per channel


def test_cluster_does_not_damage_the_callers_model(tf_keras):
    from tfcompress import cluster, load_model, prune
    from tfcompress.transforms.cluster import ClusterOptions

    model = load_model(LENET)
    weights = [w.copy() for w in model.get_weights()]
    cluster(model, CALIBRATION, options=ClusterOptions(clusters=4, layers="dense_2"), epochs=1, verbose=0)
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)
    prune(model, CALIBRATION, epochs=1, verbose=0)  # tfmot alone fails here: kernels turned to tensors


@pytest.mark.parametrize(
    "args, message",
    [
        (["--clusters", "1"], "clusters must be a whole number ≥ 2"),
        (["--layer_clusters", "nope=4"], "layer_clusters names layers the model does not have: nope"),
        (["--layers", "^conv"], "has no layer to cluster"),
        (["--init", "spiral"], "init"),
    ],
)
def test_cluster_cli_bad_options_are_one_line(run_cli, tmp_path, args, message):
    code, _, err = run_cli("cluster", LENET, "-o", tmp_path / "out.h5", "--train", CALIBRATION, *args)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out.h5").exists()


def test_preserving_what_an_earlier_step_did_not_make_is_refused(run_cli, tmp_path):
    code, _, err = run_cli(
        "qat", LENET, "-o", tmp_path / "out.h5", "--train", CALIBRATION, "--preserve", "clusters", "--skip_check"
    )
    assert code == 2
    assert "run `tfcompress cluster` first" in err
