"""`tfcompress benchmark`: several precisions in one table, TFLite Micro, no TensorFlow needed."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tfcompress
from tfcompress.data import load_data
from tfcompress.runtime import metrics
from tfcompress.runtime.interpreter import predict

from conftest import CALIBRATION, EVAL, SAMPLE_MODELS

PRECISIONS = ["float32", "float16", "dynamic", "int8"]


@pytest.fixture(scope="module")
def lenet5_models(tmp_path_factory):
    """lenet5 at four precisions, plus int8 with int8 I/O for TFLite Micro."""
    folder = tmp_path_factory.mktemp("lenet5")
    paths = {}
    for name, options in [
        *((p, {"precision": p}) for p in PRECISIONS),
        ("int8_io", {"precision": "int8", "io_type": "int8"}),
    ]:
        paths[name] = folder / f"lenet5_{name}.tflite"
        tfcompress.convert(
            SAMPLE_MODELS / "lenet5.h5",
            calibration=CALIBRATION,
            output=paths[name],
            latency_runs=0,
            calibration_samples=200,
            **options,
        )
    return paths


def test_one_call_compares_precisions(lenet5_models, tmp_path, run_cli):
    models = [lenet5_models[p] for p in PRECISIONS]
    code, out, _ = run_cli(
        "benchmark",
        *models,
        "--eval",
        EVAL,
        "--reference",
        lenet5_models["float32"],
        "--runs",
        "20",
        "--warmup",
        "2",
        "--repeat",
        "2",
        "--json",
        tmp_path / "b.json",
        "--markdown",
        tmp_path / "b.md",
    )
    assert code == 0
    report = json.loads((tmp_path / "b.json").read_text())
    rows = report["models"]
    assert [row["precision"] for row in rows] == PRECISIONS
    evaluation = load_data(EVAL)
    for row, path in zip(rows, models):
        expected = metrics.accuracy(predict(path.read_bytes(), evaluation.x), evaluation.y)
        assert row["accuracy"] == pytest.approx(expected)
        assert row["size_bytes"] == path.stat().st_size and row["gzip_bytes"] < row["size_bytes"]
        latency = row["latency_us"]
        assert latency["min"] <= latency["p50"] <= latency["p90"] <= latency["p99"]
        assert latency["runs"] == 40 and len(latency["p50_spread"]) == 2
        assert row["init_ms"] > 0
    assert rows[0]["fidelity"]["max_abs_error"] == 0.0
    assert rows[3]["fidelity"]["top1_agreement"] >= 0.98
    assert rows[3]["size_bytes"] < rows[1]["size_bytes"] < rows[0]["size_bytes"]
    assert report["machine"]["threads"] == 1 and report["versions"]["ai_edge_litert"]
    markdown = (tmp_path / "b.md").read_text()
    assert markdown.count("\n| ") == 4 and "lenet5_int8.tflite" in markdown
    assert "size x" in out and "0.50" not in out.splitlines()[1]  # first model's ratios are 1.00


def test_micro_measures_the_arena_and_agrees_with_litert(lenet5_models, tmp_path):
    report = tfcompress.benchmark(
        [lenet5_models["int8_io"], lenet5_models["float32"]], eval_data=EVAL, runs=5, warmup=1, micro=True
    )
    micro = report.models[0].micro
    assert micro["max_diff_steps"] <= 1
    assert 1000 < micro["arena_bytes"] < 100_000 and micro["arena_bytes"] % 16 == 0
    assert "integer" in report.models[1].micro["error"]
    # The model really runs in TFLite Micro with exactly the reported arena, and not in much less.
    from tflite_micro import runtime

    data = lenet5_models["int8_io"].read_bytes()
    interpreter = runtime.Interpreter.from_bytes(data, arena_size=micro["arena_bytes"])
    interpreter.set_input(np.zeros((1, 28, 28, 1), np.int8), 0)
    interpreter.invoke()
    with pytest.raises(RuntimeError):
        runtime.Interpreter.from_bytes(data, arena_size=micro["arena_bytes"] - 256)


def test_plot_is_a_png(lenet5_models, tmp_path, run_cli):
    pytest.importorskip("matplotlib")
    code, _, _ = run_cli(
        "benchmark",
        lenet5_models["float32"],
        lenet5_models["int8"],
        "--eval",
        EVAL,
        "--runs",
        "10",
        "--plot",
        tmp_path / "b.png",
    )
    assert code == 0
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


BLOCK_TENSORFLOW = textwrap.dedent("""
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("tensorflow", "tf_keras", "keras", "tensorflow_model_optimization"):
                raise ImportError(f"{name} is blocked in this test")
    sys.meta_path.insert(0, Block())
    from tfcompress import cli
    code = cli.main(["tfcompress", "benchmark", *sys.argv[1:]])
    assert not any(m.split(".")[0] in ("tensorflow", "tf_keras", "keras") for m in sys.modules), "imported"
    sys.exit(code)
""")


def test_benchmark_runs_without_tensorflow(lenet5_models):
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            BLOCK_TENSORFLOW,
            str(lenet5_models["int8_io"]),
            str(lenet5_models["float32"]),
            "--eval",
            str(EVAL),
            "--reference",
            str(lenet5_models["float32"]),
            "--micro",
            "--runs",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "lenet5_int8_io.tflite: arena" in result.stdout


def _truncated(folder, models):
    data = models["int8"].read_bytes()
    (folder / "cut.tflite").write_bytes(data[: len(data) // 2])
    return [folder / "cut.tflite"]


BAD_INPUTS = {
    "keras file": (lambda d, m: [SAMPLE_MODELS / "lenet5.h5"], "not a .tflite model"),
    "truncated tflite": (_truncated, "TFLite"),
    "eval of the wrong shape": (
        lambda d, m: [m["int8"], "--eval", _npz(d / "e.npz", np.zeros((4, 32, 32, 3), np.uint8))],
        "(32, 32, 3)",
    ),
    "zero runs": (lambda d, m: [m["int8"], "--runs", "0"], "--runs"),
    "missing file": (lambda d, m: [d / "none.tflite"], "not found"),
}


def _npz(path, x):
    np.savez(path, x=x)
    return path


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gives_one_clear_line(lenet5_models, tmp_path, run_cli, case):
    make_args, expected = BAD_INPUTS[case]
    code, _, err = run_cli("benchmark", *make_args(tmp_path, lenet5_models), "--json", tmp_path / "b.json")
    assert code == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], err
    assert not (tmp_path / "b.json").exists()
