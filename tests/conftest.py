"""Shared fixtures: the committed sample models and data, tiny models, and a CLI runner."""

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

# Conversions the pre-flight check caches go to a throwaway folder, not the user's ~/.cache.
os.environ.setdefault("TFCOMPRESS_CACHE_DIR", tempfile.mkdtemp(prefix="tfcompress-test-cache-"))

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_MODELS = ROOT / "sample_models"
CALIBRATION = SAMPLE_MODELS / "data" / "fashion_mnist_calib.npz"
EVAL = SAMPLE_MODELS / "data" / "fashion_mnist_eval.npz"
# The report contract (DESIGN.md), restated here so the tests check the library against it.
CONTRACT_KEYS = {
    "model",
    "output",
    "precision",
    "size_bytes",
    "gzip_bytes",
    "reference",
    "accuracy",
    "accuracy_drop",
    "fidelity",
    "latency_us",
    "ops",
    "float_ops",
    "arena_bytes",
    "versions",
}
# A main() that links the generated C array and counts the ops it registers (TFLite Micro resolver stand-in).
MAIN_CC = r"""
#include <cstdint>
#include <cstdio>
#include "model_data.h"

// Stands in for tflite::MicroMutableOpResolver: the method names of TFLite Micro's resolver.
struct CountingResolver {
  int added = 0;
  int AddConv2D() { return ++added, 0; }
  int AddDepthwiseConv2D() { return ++added, 0; }
  int AddFullyConnected() { return ++added, 0; }
  int AddMaxPool2D() { return ++added, 0; }
  int AddReshape() { return ++added, 0; }
  int AddSoftmax() { return ++added, 0; }
};

int main() {
  CountingResolver resolver;
  if (!model_register_ops(resolver) || resolver.added != static_cast<int>(kModelOpCount)) return 2;
  if (reinterpret_cast<std::uintptr_t>(model_tflite) % 16 != 0) return 3;
  fwrite(model_tflite, 1, model_tflite_len, stdout);
  return 0;
}
"""
KERAS2_SAMPLES = ["lenet_300_100", "lenet5", "dscnn", "resnet8", "mobilenetv2_035"]
KERAS3_SAMPLES = ["lenet5_keras3.keras", "lenet5_keras3.h5"]


def saved_field_model(tf_keras, name: str, path):
    """A field_zoo architecture with its seeded random weights, saved to `path`: (the model, path)."""
    from tfcompress.testing.field_zoo import build_field_model

    model = build_field_model(name, tf_keras)
    model.save(path, include_optimizer=False)
    return model, path


@pytest.fixture(scope="session")
def tf_keras():
    from tfcompress import _keras

    return _keras.tf_keras()


@pytest.fixture(scope="session")
def tiny_model(tf_keras):
    """A small CNN with BatchNorm and Dense, deterministic weights: converts in seconds."""
    tf_keras.utils.set_random_seed(1)
    layers = tf_keras.layers
    model = tf_keras.Sequential(
        [
            tf_keras.Input((28, 28, 1)),
            layers.Conv2D(4, 3, strides=2),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.DepthwiseConv2D(3),
            layers.Flatten(),
            layers.Dense(16, activation="relu"),
            layers.Dense(10, activation="softmax"),
        ],
        name="tiny",
    )
    # Non-trivial BatchNorm statistics, so folding it is really exercised.
    batch_norm = model.layers[1]
    batch_norm.set_weights(
        [np.linspace(0.5, 1.5, 4), np.linspace(-0.2, 0.2, 4), np.linspace(-0.1, 0.1, 4), np.linspace(0.5, 2.0, 4)]
    )
    return model


def subclassed_classifier(tf_keras):
    """A subclassed model (no config, no graph): what tfmot QAT refuses outright."""

    class Classifier(tf_keras.Model):
        def __init__(self):
            super().__init__(name="classifier")
            self.flatten = tf_keras.layers.Flatten()
            self.dense = tf_keras.layers.Dense(10, activation="softmax")

        def call(self, inputs):
            return self.dense(self.flatten(inputs))

    model = Classifier()
    model(np.zeros((1, 28, 28, 1), np.float32))
    return model


@pytest.fixture(scope="session")
def tiny_h5(tiny_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "tiny.h5"
    tiny_model.save(path, include_optimizer=False)
    return path


@pytest.fixture(scope="session")
def calibration():
    from tfcompress.data import load_data

    return load_data(CALIBRATION).take(200)


@pytest.fixture
def run_cli(capsys):
    """Runs `tfcompress ARGS...` in-process; returns (exit code, stdout, stderr)."""
    from tfcompress import cli

    def run(*args):
        code = cli.main(["tfcompress", *map(str, args)])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture(scope="session", autouse=True)
def reports_match_their_schemas(tmp_path_factory):
    """After the session: every JSON report the tests wrote validates against its shipped schema."""
    yield
    import json

    import jsonschema

    from tfcompress.report_schema import KINDS, schema

    validators = {kind: jsonschema.Draft202012Validator(schema(kind)) for kind in KINDS}
    invalid = []
    for path in tmp_path_factory.getbasetemp().rglob("*.json"):
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(report, dict) or "schema_version" not in report:
            continue
        kind = str(report["schema_version"]).split("/")[0]
        errors = list(validators[kind].iter_errors(report)) if kind in validators else ["unknown kind"]
        invalid += [f"{path}: {getattr(error, 'message', error)}" for error in errors[:3]]
    assert not invalid, "reports that do not match their schema:\n" + "\n".join(invalid[:20])


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """A real S3 server (moto's) on 127.0.0.1 with the bucket `tfcompress-cache`; the AWS_* variables point at it."""
    from tfcompress.testing.s3_server import local_s3_server

    with local_s3_server("tfcompress-cache", tmp_path_factory.mktemp("moto") / "server.log") as environ:
        yield environ


@pytest.fixture
def tflm_off_by_twenty(monkeypatch):
    """A TFLite Micro whose every raw output is 20 steps off: what micro's and check's faithfulness test must catch."""
    from tfcompress.runtime import tflm

    real_outputs = tflm.micro_outputs

    def off_by_twenty(*args, **kwargs):
        outputs = real_outputs(*args, **kwargs)
        return np.clip(outputs.astype(np.int32) + 20, -128, 127).astype(outputs.dtype)

    monkeypatch.setattr(tflm, "micro_outputs", off_by_twenty)
