"""A training step measures accuracy before and after, and a large drop is a warning that names its causes."""

import json

from conftest import CALIBRATION, EVAL, SAMPLE_MODELS

LENET5 = SAMPLE_MODELS / "lenet5.h5"


def test_a_prune_that_collapses_accuracy_warns_with_the_causes_it_can_see(run_cli, tmp_path):
    """The bundled 1,000 images are too few to recover from 80% sparsity in 64 steps."""
    code, out, err = run_cli("prune", LENET5, "--train", CALIBRATION, "-o", tmp_path / "pruned.h5", "--report",
                             tmp_path / "report.json")  # fmt: skip
    assert code == 0, err
    check = json.loads((tmp_path / "report.json").read_text())["accuracy_check"]
    assert check["drop"] > 10 and check["after"] < check["before"], check
    assert "1,000 training samples for 80% sparsity" in check["warning"]
    assert "64 training steps" in check["warning"] and "not held out" in check["data"]
    assert "WARNING: accuracy fell" in out


def test_a_gentle_step_measures_on_the_validation_data_and_does_not_warn(tmp_path):
    from tfcompress import prune

    report = prune(LENET5, CALIBRATION, val=EVAL, target_sparsity=0.2, epochs=1, verbose=0)
    check = report.accuracy_check
    assert check["data"] == "the validation data (2,000 samples)" and check["warning"] is None, check
    assert abs(check["drop"]) <= 3.0
    # the same step with a limit it cannot meet warns
    strict = prune(LENET5, CALIBRATION, val=EVAL, target_sparsity=0.2, epochs=1, verbose=0, warn_accuracy_drop=-100)
    assert strict.accuracy_check["warning"].startswith("accuracy fell")


def test_a_drop_of_exactly_the_limit_does_not_warn():
    """97.4% to 94.4% on 500 samples is 3.0000000000000027 pt in floats: it warned "fell 3.0 pt, more than 3"."""
    from tfcompress.transforms.guardrail import AccuracyCheck

    assert AccuracyCheck("500 samples", 0.974, 0.944, limit=3.0).warning is None
    assert AccuracyCheck("500 samples", 0.974, 0.942, limit=3.0).warning.startswith("accuracy fell 3.2 pt")


def test_distill_checks_the_student_against_the_teacher(tmp_path):
    from tfcompress import distill

    report = distill(LENET5, CALIBRATION, width_multiplier=0.25, epochs=1, verbose=0, warn_accuracy_drop=1.0)
    check = report.accuracy_check
    assert check["before_is"] == "the teacher" and check["before"] > check["after"], check
    assert "from the teacher's" in check["warning"] and "training steps" in check["warning"]


def _pruned_lenet5(tf_keras, path):
    """lenet5 with its Dense kernels 90% zeros by magnitude, as `prune` leaves them."""
    from tfcompress.transforms.kernel_bytes import magnitude_pruned

    model = tf_keras.models.load_model(LENET5, compile=False)
    for layer in model.layers:
        if isinstance(layer, tf_keras.layers.Dense):
            layer.kernel.assign(magnitude_pruned(layer.kernel.numpy(), 0.9))
    model.save(path, include_optimizer=False)
    return path


def test_steps_that_let_pruned_zeros_grow_back_say_so_and_name_the_flag_that_keeps_them(tf_keras, run_cli, tmp_path):
    pruned = _pruned_lenet5(tf_keras, tmp_path / "pruned.h5")
    code, out, err = run_cli("qat", pruned, "--train", CALIBRATION, "-o", tmp_path / "qat.h5", "--report",
                             tmp_path / "qat.json")  # fmt: skip
    assert code == 0, err
    (warning,) = json.loads((tmp_path / "qat.json").read_text())["warnings"]
    assert (
        warning.startswith("qat let the pruned zeros grow back in dense_3 (90% → ") and "--preserve sparsity" in warning
    )
    assert f"WARNING: {warning}" in out

    from tfcompress import cluster, distill

    loose = cluster(pruned, CALIBRATION, clusters=8, epochs=1, verbose=0)
    (warning,) = loose.warnings
    assert "dense_3 (90% → 0%)" in warning and "--preserve_sparsity" in warning, warning
    kept = cluster(pruned, CALIBRATION, clusters=8, preserve_sparsity=True, epochs=1, verbose=0)
    assert kept.warnings == () and kept.layers["dense_3"]["sparsity"] >= 0.9
    taught = distill(LENET5, CALIBRATION, student=pruned, epochs=1, verbose=0)
    (warning,) = taught.warnings
    assert warning.startswith("distill let the pruned zeros grow back") and "prune the student after" in warning


def test_a_step_that_keeps_the_zeros_or_had_none_does_not_warn(tf_keras, tmp_path):
    from tfcompress import quantize_aware

    pruned = _pruned_lenet5(tf_keras, tmp_path / "pruned.h5")
    assert quantize_aware(pruned, CALIBRATION, preserve="sparsity", epochs=1, verbose=0).warnings == ()
    assert quantize_aware(LENET5, CALIBRATION, epochs=1, verbose=0).warnings == ()
