"""The pre-flight check: verdicts and fixes for models that used to fail late, and the
sample models, which must all be ready."""

import json

import pytest

from conftest import CALIBRATION, SAMPLE_MODELS, subclassed_classifier


def _functional(tf_keras, build):
    inputs = tf_keras.Input((28, 28, 1))
    return tf_keras.Model(inputs, build(inputs, tf_keras.layers))


def bn_after_activation(tf_keras):
    return _functional(
        tf_keras,
        lambda x, layers: layers.Dense(10, activation="softmax")(
            layers.Flatten()(layers.BatchNormalization()(layers.ReLU()(layers.Conv2D(4, 3)(x))))
        ),
    )


def conv_relu_then_bn(tf_keras):
    return _functional(
        tf_keras,
        lambda x, layers: layers.Dense(10, activation="softmax")(
            layers.Flatten()(layers.BatchNormalization()(layers.Conv2D(4, 3, activation="relu")(x)))
        ),
    )


def bn_after_dense_relu(tf_keras):
    return _functional(
        tf_keras,
        lambda x, layers: layers.Dense(10, activation="softmax")(
            layers.BatchNormalization()(layers.Dense(16, activation="relu")(layers.Flatten()(x)))
        ),
    )


def nested_sequential(tf_keras):
    layers = tf_keras.layers
    inner = tf_keras.Sequential([layers.Conv2D(4, 3, activation="relu"), layers.Flatten()], name="inner")
    return _functional(tf_keras, lambda x, layers: layers.Dense(10, activation="softmax")(inner(x)))


def tf_op_lambda(tf_keras):
    import tensorflow as tf

    return _functional(
        tf_keras,
        lambda x, layers: layers.Dense(10, activation="softmax")(
            layers.Flatten()(tf.nn.relu6(layers.Conv2D(4, 3)(x)[:, :, :, :2]))
        ),
    )


def layer_norm(tf_keras):
    return _functional(
        tf_keras,
        lambda x, layers: layers.Dense(10, activation="softmax")(
            layers.LayerNormalization()(layers.Dense(16)(layers.Flatten()(x)))
        ),
    )


def bn_after_input(tf_keras):
    return _functional(
        tf_keras,
        lambda x, layers: layers.Dense(10, activation="softmax")(
            layers.Flatten()(layers.Conv2D(4, 3)(layers.BatchNormalization()(x)))
        ),
    )


def subclassed(tf_keras):
    return subclassed_classifier(tf_keras)


def gelu_dense(tf_keras):
    return _functional(
        tf_keras,
        lambda x, layers: layers.Dense(10, activation="softmax")(
            layers.Dense(16, activation="gelu")(layers.Flatten()(x))
        ),
    )


# model, target, verdict, the layer the problem is on (or None), a word the fix must contain
PROBLEM_MODELS = [
    (bn_after_activation, "mobile", "ready", "batch_normalization", "move"),
    (conv_relu_then_bn, "micro", "ready", "batch_normalization", "activation=None"),
    (bn_after_dense_relu, "mobile", "ready", "batch_normalization", "activation=None"),
    (bn_after_input, "micro", "ready", "batch_normalization", "no Conv2D/Dense before"),
    (nested_sequential, "micro", "ready", None, None),
    (tf_op_lambda, "mobile", "ready", "tf.nn.relu6", "Keras layer"),
    (layer_norm, "mobile", "ready", "layer_normalization", "calibrat"),
    (layer_norm, "micro", "ready", "layer_normalization", "calibrat"),
    (subclassed, "mobile", "ready", "classifier", "Functional"),
    (gelu_dense, "mobile", "ready", None, None),
    (gelu_dense, "micro", "not deployable", "dense", "relu"),
]


@pytest.mark.parametrize(
    "build, target, verdict, layer, fix_word",
    PROBLEM_MODELS,
    ids=[f"{case[0].__name__}-{case[1]}" for case in PROBLEM_MODELS],
)
def test_problem_models_get_the_right_verdict_and_a_fix(tf_keras, build, target, verdict, layer, fix_word):
    from tfcompress.jobs.check import check_model

    report = check_model(build(tf_keras), target=target)
    assert report.verdict == verdict, report.summary()
    if layer is None:
        assert not [p for p in report.problems if p.severity != "note"], report.summary()
        return
    if verdict == "ready":  # what QAT keeps float is told apart from the deployed model's float ops
        assert not [p for p in report.problems if p.severity == "fallback"], report.summary()
    problems = [p for p in report.problems if p.layer.startswith(layer)]
    assert problems, report.summary()
    assert any(fix_word in p.fix for p in problems), [p.fix for p in problems]


def test_nested_model_is_flattened_for_qat(tf_keras):
    from tfcompress.jobs.check import check_model

    report = check_model(nested_sequential(tf_keras), target="mobile")
    actions = {layer.name: layer.qat.action for layer in report.layers}
    assert actions["inner"] == "flatten"
    assert all(action in ("quantize", "flatten") for action in actions.values()), actions
    ops = {op for layer in report.layers for op in layer.ops}
    assert {"CONV_2D", "FULLY_CONNECTED"} <= ops


def test_layer_rows_name_their_ops_and_bytes(tf_keras):
    from tfcompress.jobs.check import check_model

    report = check_model(conv_relu_then_bn(tf_keras), target="micro")
    rows = {layer.layer_type: layer for layer in report.layers}
    assert "CONV_2D" in rows["Conv2D"].ops
    assert rows["Dense"].param_bytes == {
        "float32": (2704 * 10 + 10) * 4,
        "float16": (2704 * 10 + 10) * 2,
        "int8": 2704 * 10 + 10 * 4,
    }
    assert report.to_dict()["param_bytes"]["int8"] == sum(layer.param_bytes["int8"] for layer in report.layers)


def test_micro_op_list_comes_from_the_interpreter():
    from tfcompress.runtime.micro_ops import micro_op_names

    available = micro_op_names()
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "SOFTMAX", "MEAN"} <= available
    assert not {"GELU", "TOPK_V2", "TILE"} & available


# mobilenetv2_035 takes about 100 s here; benchmarks/check.py checks it with the others.
@pytest.mark.parametrize("sample", ["lenet_300_100.h5", "lenet5.h5", "dscnn.h5", "resnet8.h5", "lenet5_keras3.keras"])
def test_every_sample_model_is_ready_for_mobile_and_micro(sample):
    from tfcompress.jobs.check import check

    for target in ("mobile", "micro"):
        report = check(SAMPLE_MODELS / sample, target=target, calibration=CALIBRATION)
        assert report.verdict == "ready", report.summary()
        assert report.micro_run is None
    assert report.micro_verification.reference == "keras" and report.micro_verification.passed


def test_micro_target_blocks_a_tflite_micro_less_faithful_than_litert(tflm_off_by_twenty):
    """micro's own test: an injected TFLite Micro 20 steps off on every output is not deployable."""
    from tfcompress.jobs.check import check

    report = check(SAMPLE_MODELS / "lenet5.h5", target="micro", calibration=CALIBRATION)
    assert report.verdict == "not deployable" and not report.micro_verification.passed
    assert any("less faithfully than LiteRT" in problem.problem for problem in report.problems), report.summary()


def test_check_cli_writes_json_and_exits_1_when_not_deployable(run_cli, tmp_path, tf_keras):
    path = tmp_path / "gelu.h5"
    gelu_dense(tf_keras).save(path)
    code, out, err = run_cli("check", path, "--target", "micro", "--json", tmp_path / "check.json")
    assert code == 1, err
    assert "verdict (micro): not deployable" in out
    saved = json.loads((tmp_path / "check.json").read_text())
    assert saved["verdict"] == "not deployable"
    assert saved["problems"][0]["layer"].startswith("dense") and "GELU" in saved["problems"][0]["problem"]
    code, out, _ = run_cli("check", path, "--target", "mobile")
    assert code == 0 and "verdict (mobile): ready" in out


def test_micro_fails_early_with_the_check_message(run_cli, tmp_path, tf_keras):
    path = tmp_path / "gelu.h5"
    gelu_dense(tf_keras).save(path)
    code, _, err = run_cli("micro", path, "-o", tmp_path / "out", "--calibration", CALIBRATION)
    assert code == 2
    assert "pre-flight check" in err and "GELU" in err and "relu" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
