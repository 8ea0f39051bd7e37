"""--strategy multi_worker: two worker processes on 127.0.0.1 train one model; only the chief writes."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

_WORKER = textwrap.dedent(
    """
    import hashlib, sys
    import tfcompress
    from tfcompress.transforms.distribute import strategy_named

    model, data, output = sys.argv[1:4]
    result = tfcompress.prune(
        model, data, output=output, target_sparsity=0.5, epochs=2, batch_size=32, strategy="multi_worker"
    )
    weights = hashlib.sha256(b"".join(w.tobytes() for w in result.keras_model.get_weights())).hexdigest()
    print("replicas", strategy_named("multi_worker").num_replicas_in_sync, "weights", weights, flush=True)
    """
)


def _free_ports(count: int) -> list:
    sockets = [socket.socket() for _ in range(count)]
    for each in sockets:
        each.bind(("127.0.0.1", 0))
    ports = [each.getsockname()[1] for each in sockets]
    for each in sockets:
        each.close()
    return ports


@pytest.fixture
def small_model_and_data(tmp_path, tf_keras):
    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential(
        [tf_keras.Input((12,)), tf_keras.layers.Dense(32, activation="relu"), tf_keras.layers.Dense(3)]
    )
    model.save(tmp_path / "model.h5")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 12)).astype(np.float32)
    np.savez(tmp_path / "train.npz", x=x, y=(x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0))
    return tmp_path / "model.h5", tmp_path / "train.npz"


def _two_workers(command) -> list:
    """Runs `command(index)` as worker 0 and 1 of one TF_CONFIG cluster; (stdout, stderr) of each."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    workers = [
        subprocess.Popen(
            list(map(str, command(index))),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={
                **os.environ,
                "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
            },
        )
        for index in range(2)
    ]
    finished = [worker.communicate(timeout=300) for worker in workers]
    for worker, (_, stderr) in zip(workers, finished):
        assert worker.returncode == 0, stderr[-3000:]
    return finished


def test_two_workers_train_one_model_and_only_the_chief_writes(tmp_path, small_model_and_data):
    model, data = small_model_and_data
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    finished = _two_workers(lambda index: [sys.executable, script, model, data, tmp_path / f"w{index}.h5"])
    printed = [stdout.strip().splitlines()[-1].split() for stdout, _ in finished]
    assert all(words[:2] == ["replicas", "2"] for words in printed), printed
    assert printed[0][3] == printed[1][3]  # both trained the same weights
    assert (tmp_path / "w0.h5").is_file() and not (tmp_path / "w1.h5").exists()  # only the chief wrote


def test_a_recipe_step_trains_on_two_workers_through_the_cli(tmp_path, small_model_and_data):
    model, data = small_model_and_data
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "steps:\n  - prune: {target_sparsity: 0.5, epochs: 1, batch_size: 32, strategy: multi_worker}\n"
        "  - convert: {precision: float16}\n"
    )
    command = [sys.executable, "-m", "tfcompress", "run", recipe, "--model", model, "--train", data]
    _two_workers(lambda index: [*command, "-o", tmp_path / f"out{index}"])
    report = json.loads((tmp_path / "out0" / "report.json").read_text())
    assert report["steps"][0]["report"]["options"]["strategy"] == "multi_worker"
    layers = report["steps"][0]["report"]["layers"].values()
    assert len(layers) == 2 and all(layer["sparsity"] == pytest.approx(0.5, abs=0.01) for layer in layers)
    assert not (tmp_path / "out1").exists()


def test_multi_worker_without_tf_config_is_a_one_line_error(tmp_path, monkeypatch, run_cli):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    code, out, err = run_cli(
        "prune",
        "sample_models/lenet_300_100.h5",
        "--train",
        "sample_models/data/fashion_mnist_calib.npz",
        "--strategy",
        "multi_worker",
        "-o",
        tmp_path / "out.h5",
    )
    assert code == 2 and "needs TF_CONFIG" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.h5").exists()
