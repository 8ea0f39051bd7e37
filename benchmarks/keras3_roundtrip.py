"""Keras 3 models of many shapes through `tfcompress prune -o OUT.keras`, as a user runs it.

Each architecture is built by Keras 3 with seeded random weights and saved as `.keras`; the
CLI prunes it for one epoch on random data of its input shape and writes a Keras 3 file;
Keras 3 then loads that file, and its pruned kernels and outputs are checked. A model the
round trip cannot carry must fail with one line naming the layer.
Run: python benchmarks/keras3_roundtrip.py   (a few minutes) → results/keras3_roundtrip.json.
"""

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from tfcompress import _keras  # noqa: E402

import render  # noqa: E402

SAMPLES = 64


def architectures(keras) -> dict:
    """Name → a function building the model (seeded by the caller)."""
    layers = keras.layers

    def sequential(shape, *stack):
        return keras.Sequential([keras.Input(shape), *stack])

    def residual():
        inputs = keras.Input((16, 16, 3))
        x = layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
        y = layers.Conv2D(8, 3, padding="same")(x)
        x = layers.ReLU()(layers.Add()([x, layers.BatchNormalization()(y)]))
        return keras.Model(inputs, layers.Dense(4, activation="softmax")(layers.GlobalAveragePooling2D()(x)))

    def attention():
        inputs = keras.Input((10, 16))
        x = layers.MultiHeadAttention(num_heads=2, key_dim=8)(inputs, inputs)
        x = layers.LayerNormalization()(layers.Add()([inputs, x]))
        return keras.Model(inputs, layers.Dense(3, activation="softmax")(layers.GlobalAveragePooling1D()(x)))

    def nested():
        block = keras.Sequential([keras.Input((20,)), layers.Dense(16, activation="relu")], name="block")
        inputs = keras.Input((20,))
        return keras.Model(inputs, layers.Dense(5, activation="softmax")(block(inputs)))

    return {
        "mlp": lambda: sequential((20,), layers.Dense(32, activation="relu"), layers.Dense(5, activation="softmax")),
        "cnn_batchnorm": lambda: sequential(
            (16, 16, 3),
            layers.Conv2D(8, 3),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(4, activation="softmax"),
        ),
        "depthwise_separable": lambda: sequential(
            (16, 16, 3),
            layers.Conv2D(8, 3, activation="relu"),
            layers.DepthwiseConv2D(3, activation="relu"),
            layers.SeparableConv2D(16, 3, activation="relu"),
            layers.GlobalAveragePooling2D(),
            layers.Dense(4, activation="softmax"),
        ),
        "residual_add": residual,
        "conv1d": lambda: sequential(
            (32, 4),
            layers.Conv1D(8, 5, activation="relu"),
            layers.GlobalMaxPooling1D(),
            layers.Dense(3, activation="softmax"),
        ),
        "lstm": lambda: sequential((10, 6), layers.LSTM(8), layers.Dense(3, activation="softmax")),
        "gru_sequences": lambda: sequential(
            (10, 6), layers.GRU(8, return_sequences=True), layers.Flatten(), layers.Dense(3, activation="softmax")
        ),
        "simple_rnn": lambda: sequential((10, 6), layers.SimpleRNN(8), layers.Dense(3, activation="softmax")),
        "embedding_text": lambda: sequential(
            (12,), layers.Embedding(50, 8), layers.GlobalAveragePooling1D(), layers.Dense(2, activation="softmax")
        ),
        "attention_layernorm": attention,
        "gelu_swish_activations": lambda: sequential(
            (20,),
            layers.Dense(16, activation="gelu"),
            layers.Dense(16, activation="swish"),
            layers.Dense(3, activation="softmax"),
        ),
        "nested_model": nested,
        "upsampling_transpose": lambda: sequential(
            (8, 8, 2),
            layers.UpSampling2D(),
            layers.Conv2DTranspose(4, 3, activation="relu"),
            layers.Flatten(),
            layers.Dense(3, activation="softmax"),
        ),
        "regularized_dropout": lambda: sequential(
            (20,),
            layers.Dense(
                16,
                activation="relu",
                kernel_regularizer=keras.regularizers.L2(1e-3),
                kernel_constraint=keras.constraints.MaxNorm(3),
            ),
            layers.Dropout(0.2),
            layers.Dense(3, activation="softmax"),
        ),
    }


def round_trip(name, build, keras, folder: Path) -> dict:
    keras.utils.set_random_seed(0)
    model = build()
    source, output, data = folder / f"{name}.keras", folder / f"{name}-pruned.keras", folder / f"{name}.npz"
    model.save(source)
    rng = np.random.default_rng(0)
    shape = (SAMPLES,) + tuple(model.inputs[0].shape[1:])
    x = rng.integers(0, 50, shape) if "int" in str(model.inputs[0].dtype) else rng.uniform(0, 1, shape)
    classes = int(model.outputs[0].shape[-1])
    np.savez(data, x=x.astype(np.float32), y=rng.integers(0, classes, SAMPLES))
    command = [
        sys.executable,
        "-m",
        "tfcompress",
        "prune",
        str(source),
        "-o",
        str(output),
        "--train",
        str(data),
        "--epochs",
        "1",
        "--batch_size",
        "16",
        "--target_sparsity",
        "0.5",
        "--end_step",
        "2",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    row = {
        "architecture": name,
        "layers": sorted({type(layer).__name__ for layer in model.layers}),
        "exit": result.returncode,
        "message": "",
        "passed": False,
        "pruned_kernels": 0,
        "sparsity": None,
    }
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    if result.returncode != 0:
        row["message"] = lines[-1] if lines else ""
        row["passed"] = result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr
        return row
    loaded = keras.saving.load_model(output, compile=False)
    kernels = [
        layer.get_weights()[0]
        for layer in loaded.layers
        if layer.get_weights() and layer.get_weights()[0].ndim >= 2 and np.mean(layer.get_weights()[0] == 0) > 0.3
    ]
    outputs = np.asarray(loaded(x[:8].astype(np.float32)))
    row.update(
        pruned_kernels=len(kernels),
        sparsity=float(np.mean([np.mean(k == 0) for k in kernels])) if kernels else None,
        passed=bool(kernels) and bool(np.all(np.isfinite(outputs))),
    )
    return row


def main() -> None:
    keras = _keras.keras3()
    with tempfile.TemporaryDirectory(prefix="tfcompress-keras3-") as temporary:
        rows = []
        for name, build in architectures(keras).items():
            row = round_trip(name, build, keras, Path(temporary))
            print(
                f"{name:24} exit {row['exit']} pruned kernels {row['pruned_kernels']} "
                f"{'ok' if row['passed'] else 'FAILED'} {row['message']}",
                flush=True,
            )
            rows.append(row)
    render.write_result("keras3_roundtrip", {"rows": rows, "samples": SAMPLES})
    render.render_all()


if __name__ == "__main__":
    main()
