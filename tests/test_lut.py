"""`micro --compress lut`: clustered weights become bit-packed indices, TFLite Micro's outputs stay
bit-identical, flash shrinks by about 8/bits, and the RAM the DECODE op needs is measured."""

import json
import shutil
import subprocess

import numpy as np
import pytest

import tfcompress

from conftest import CALIBRATION, EVAL, SAMPLE_MODELS


def _snapped(kernel, clusters):
    """The kernel with every value replaced by the nearest of `clusters` quantile centroids."""
    centroids = np.quantile(kernel, (np.arange(clusters) + 0.5) / clusters)
    return centroids[np.abs(kernel[..., None] - centroids).argmin(axis=-1)].astype(np.float32)


@pytest.fixture(scope="module")
def clustered_lenet(tmp_path_factory):
    """LeNet-300-100 whose kernels hold 8, 8 and 4 values: what `cluster` leaves after stripping."""
    model = tfcompress.load_model(SAMPLE_MODELS / "lenet_300_100.h5")
    for layer, clusters in zip(model.layers[1:], (8, 8, 4)):
        kernel, bias = layer.get_weights()
        layer.set_weights([_snapped(kernel, clusters), bias])
    path = tmp_path_factory.mktemp("lut") / "clustered.h5"
    model.save(path, include_optimizer=False)
    return path


@pytest.fixture(scope="module")
def lut_package(clustered_lenet, tmp_path_factory):
    folder = tmp_path_factory.mktemp("lut") / "package"
    report = tfcompress.to_micro(clustered_lenet, folder, calibration=CALIBRATION, eval_data=EVAL, compress="lut")
    plain = tfcompress.to_micro(clustered_lenet, folder.with_name("plain"), calibration=CALIBRATION, eval_data=EVAL)
    return folder, report, plain


def test_clustered_tensors_get_the_fewest_lossless_bits_and_flash_shrinks(lut_package):
    folder, report, plain = lut_package
    bits = {tensor.name.split("/")[1]: tensor.bits for tensor in report.lut.tensors}
    assert bits == {"dense": 3, "dense_1": 3, "dense_2": 2}
    assert report.size_bytes == len((folder / "model.tflite").read_bytes()) == report.lut.bytes_after
    assert report.lut.bytes_before == plain.size_bytes
    # 3-bit indices for 265,200 of the 266,200 weights: 8/3 smaller, less the graph and tables.
    assert report.size_bytes < 0.4 * plain.size_bytes, (report.size_bytes, plain.size_bytes)
    assert "TFLM_DECODE" in report.ops


def test_compressed_outputs_are_bit_identical_and_the_ram_cost_is_measured(lut_package):
    folder, report, plain = lut_package
    assert report.lut.identical_samples == 500
    assert report.accuracy == plain.accuracy
    # DECODE expands the 235,200-byte kernel into the arena, or into a separate memory of that size.
    assert report.arena_bytes > 235_200 > plain.arena_bytes
    assert report.lut.alt_decompression_bytes == 235_200
    assert report.lut.arena_with_alt_memory_bytes < 2 * plain.arena_bytes
    saved = json.loads((folder / "report.json").read_text())
    assert saved["size_bytes"] == report.size_bytes and saved["lut"]["tensors"][0]["bits"] in (2, 3)
    assert "identical to the uncompressed model's on 500 inputs" in (folder / "report.md").read_text()


def test_per_channel_quantized_convs_get_a_table_per_channel_and_stay_exact(tmp_path):
    """One table for a per-channel quantized conv kernel gave wrong TFLite Micro outputs
    (seen on lenet5); a table per output channel is exact, and the check would have caught it."""
    model = tfcompress.load_model(SAMPLE_MODELS / "lenet5.h5")
    for layer in model.layers:
        if layer.get_weights():
            kernel, bias = layer.get_weights()
            layer.set_weights([_snapped(kernel, 8), bias])
    report = tfcompress.to_micro(model, tmp_path / "lenet5", calibration=CALIBRATION, eval_data=EVAL, compress="lut")
    axes = {tensor.name.split("/")[1]: tensor.per_channel_axis for tensor in report.lut.tensors}
    assert axes == {"dense_5": None, "dense_4": None, "dense_3": None, "conv2d_1": 0, "conv2d": 0}
    assert all(tensor.bits == 3 for tensor in report.lut.tensors if tensor.compressed)
    assert report.lut.identical_samples == 500


def test_an_unclustered_model_passes_with_every_tensor_kept_and_why(tmp_path, run_cli):
    code, out, err = run_cli(
        "micro",
        SAMPLE_MODELS / "lenet5.h5",
        "-o",
        tmp_path / "lenet5",
        "--calibration",
        CALIBRATION,
        "--compress",
        "lut",
    )
    assert code == 0, err
    report = json.loads((tmp_path / "lenet5" / "report.json").read_text())
    assert report["lut"]["bytes_after"] == report["lut"]["bytes_before"] == report["size_bytes"]
    reasons = [tensor["reason"] for tensor in report["lut"]["tensors"] if tensor["bits"] is None]
    assert len(reasons) == len(report["lut"]["tensors"]) == 5
    assert sum("need 8 index bits" in reason for reason in reasons) == 3  # Dense: 135 to 183 values
    # The convs: per-channel tables of 2^7 and 2^5 entries outweigh 2,400 and 150 bytes of kernel.
    assert sum("would not be smaller" in reason for reason in reasons) == 2
    assert "TFLM_DECODE" not in report["ops"]


STUB_RESOLVER_H = r"""
// Stands in for TFLite Micro's headers: the registration type and the DECODE kernel.
#pragma once
struct TFLMRegistration { int id; };
namespace tflite { inline TFLMRegistration Register_DECODE() { return TFLMRegistration{7}; } }
"""

MAIN_CC = r"""
#include <cstring>
#include "model_data.h"

struct CountingResolver {
  int added = 0;
  bool decode = false;
  int AddCustom(const char* name, const TFLMRegistration* registration) {
    decode = std::strcmp(name, "TFLM_DECODE") == 0 && registration->id == 7;
    return ++added, 0;
  }
  int AddFullyConnected() { return ++added, 0; }
  int AddReshape() { return ++added, 0; }
  int AddSoftmax() { return ++added, 0; }
};

int main() {
  CountingResolver resolver;
  if (!model_register_ops(resolver) || resolver.added != static_cast<int>(kModelOpCount)) return 2;
  return resolver.decode ? 0 : 3;
}
"""


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
def test_generated_header_registers_the_decode_kernel(lut_package, tmp_path):
    folder, _, _ = lut_package
    stub = tmp_path / "tensorflow" / "lite" / "micro"
    stub.mkdir(parents=True)
    (stub / "micro_mutable_op_resolver.h").write_text(STUB_RESOLVER_H)
    (tmp_path / "main.cc").write_text(MAIN_CC)
    subprocess.run(
        [
            "g++",
            "-std=c++17",
            f"-I{folder}",
            f"-I{tmp_path}",
            str(tmp_path / "main.cc"),
            str(folder / "model_data.cc"),
            "-o",
            str(tmp_path / "check"),
        ],
        check=True,
    )
    assert subprocess.run([str(tmp_path / "check")]).returncode == 0


def test_cluster_preserving_qat_that_adds_values_is_refused(tf_keras):
    from tfcompress.errors import PreflightError
    from tfcompress.transforms.qat import check_clusters_kept

    def dense_model(kernel):
        model = tf_keras.Sequential([tf_keras.Input((6,)), tf_keras.layers.Dense(5, name="dense")])
        model.layers[0].set_weights([kernel, np.zeros(5, np.float32)])
        return model

    kernel = np.random.default_rng(0).normal(size=(6, 5)).astype(np.float32)
    clustered = dense_model(_snapped(kernel, 4))
    check_clusters_kept(clustered, dense_model(_snapped(kernel, 4)))  # the same values: fine
    with pytest.raises(PreflightError, match=r"dense 4 → 30 distinct values"):
        check_clusters_kept(clustered, dense_model(kernel))
