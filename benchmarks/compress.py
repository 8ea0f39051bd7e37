"""Training-time compression on the full Fashion-MNIST train/test sets, ours vs tfmot by hand.

(a) LeNet-300-100: prune → cluster (sparsity preserved) → int8 by calibration (PTQ), and
    the same with PCQAT instead of PTQ, at 90% / 16 clusters, 95% / 8 clusters and
    per-layer settings: gzip bytes, Huffman bytes and the entropy bound (Deep
    Compression accounting) against the float32 `.tflite`, and the accuracy drop.
(b) lenet5 and dscnn: QAT int8 vs PTQ int8 vs float, and as a control the float model
    fine-tuned for as many epochs as QAT, then PTQ int8.
(c) The same recipes written with tfmot's documented calls and TFLiteConverter, with
    the same epochs, learning rates and seed, in the same run.
Writes results/compress.json (replacing only the parts run), results/compress.png and the
tables in benchmarks/README.md.
"""

import time
from pathlib import Path

from absl import app, flags

import tfcompress
from tfcompress import _keras
from tfcompress.data import fit_to_input
from tfcompress.plots import require_matplotlib
from tfcompress.report import library_versions, machine_info
from tfcompress.runtime.interpreter import predict
from tfcompress.runtime.metrics import accuracy
from tfcompress.transforms.cluster import ClusterOptions
from tfcompress.transforms.prune import PruneOptions
from tfcompress.transforms.training import label_task

import render

ROOT = Path(__file__).resolve().parents[1]
_DATA_DIR = flags.DEFINE_string(
    "data_dir", "/usr/share/datasets/fashion-mnist", "Fashion-MNIST IDX folder (apt-get install dataset-fashion-mnist)."
)
_PARTS = flags.DEFINE_list("parts", ["a", "b"], "a: LeNet-300-100 pipelines, b: QAT vs PTQ. Each with (c).")
_SETTINGS = flags.DEFINE_list(
    "settings", None, "Part (a): run only these settings (0-based indexes); the stored rows of the others are kept."
)
_TRAIN_SAMPLES = flags.DEFINE_integer("train_samples", None, "Use only this many training images (a smoke run).")

BATCH = 128
PRUNE_EPOCHS, PRUNE_END_EPOCH, PRUNE_LR = 10, 7, 2e-4
CLUSTER_EPOCHS, CLUSTER_LR = 4, 5e-5
PCQAT_EPOCHS, QAT_EPOCHS, QAT_LR = 2, 2, 1e-5
# (label, prune options, cluster options, fine-tuning that differs from the constants above)
SETTINGS = [
    ("90% / 16", {"target_sparsity": 0.90}, {"clusters": 16}, {}),
    ("95% / 8", {"target_sparsity": 0.95}, {"clusters": 8}, {}),
    (
        "per layer 97/92/70% / 8,8,16",
        {"target_sparsity": 0.92, "layer_sparsity": {"dense": 0.97, "dense_2": 0.70}},
        {"clusters": 8, "layer_clusters": {"dense_2": 16}},
        {},
    ),
    (
        "per layer 96/90/50% / 8,8,16",
        {"target_sparsity": 0.90, "layer_sparsity": {"dense": 0.96, "dense_2": 0.50}},
        {"clusters": 8, "layer_clusters": {"dense_2": 16}},
        {},
    ),
    (  # the same per-layer setting, fine-tuned longer and faster: what the short schedule above costs
        "per layer 97/92/70% / 8,8,16, 30+6 epochs at 1e-3/1e-4",
        {"target_sparsity": 0.92, "layer_sparsity": {"dense": 0.97, "dense_2": 0.70}},
        {"clusters": 8, "layer_clusters": {"dense_2": 16}},
        {"prune_epochs": 30, "prune_end_epoch": 20, "prune_lr": 1e-3, "cluster_epochs": 6, "cluster_lr": 1e-4},
    ),
]


def main(argv):
    del argv
    train = tfcompress.load_data(f"{_DATA_DIR.value}@train").take(_TRAIN_SAMPLES.value)
    test = tfcompress.load_data(f"{_DATA_DIR.value}@test")
    calibration = tfcompress.load_data(ROOT / "sample_models/data/fashion_mnist_calib.npz")
    kept = render.stored_result("compress", {"pipelines": [], "qat": []})
    result = {
        "benchmark": "compress",
        "train_samples": len(train),
        "test_samples": len(test),
        "batch_size": BATCH,
        "machine": machine_info(threads=1),
        "versions": library_versions(),
        "pipelines": kept["pipelines"],
        "qat": kept["qat"],
    }  # parts not run this time are kept
    if "a" in _PARTS.value:
        chosen = [SETTINGS[int(i)] for i in _SETTINGS.value] if _SETTINGS.value else SETTINGS
        fresh = pipelines(chosen, train, test, calibration)
        labels = [label for label, *_ in SETTINGS]
        rows = [row for row in result["pipelines"] if row["setting"] in labels] + fresh
        rows = {(row["setting"], row["how"], row["quantization"]): row for row in rows}.values()
        result["pipelines"] = sorted(rows, key=lambda row: labels.index(row["setting"]))
    if "b" in _PARTS.value:
        result["qat"] = [
            row for name in ("lenet5.h5", "dscnn.h5") for row in qat_vs_ptq(name, train, test, calibration)
        ]
    render.write_result("compress", result)
    if result["pipelines"]:
        plot(result["pipelines"], render.RESULTS / "compress.png")
    render.render_all()


def pipelines(settings, train, test, calibration) -> list:
    model = tfcompress.load_model(ROOT / "sample_models/lenet_300_100.h5")
    baseline = tfcompress.convert(model, precision="float32", eval_data=test, latency_runs=0)
    steps = -(-len(train) // BATCH)
    rows = []
    for label, prune_options, cluster_options, tuning in settings:
        started = time.perf_counter()
        end_step = tuning.get("prune_end_epoch", PRUNE_END_EPOCH) * steps
        pruned = tfcompress.prune(
            model,
            train,
            options=PruneOptions(end_step=end_step, **prune_options),
            epochs=tuning.get("prune_epochs", PRUNE_EPOCHS),
            batch_size=BATCH,
            learning_rate=tuning.get("prune_lr", PRUNE_LR),
            verbose=2,
        )
        stages = {
            "pruned float": tfcompress.convert(
                pruned.keras_model, precision="float32", eval_data=test, latency_runs=0
            ).accuracy
        }
        clustered = tfcompress.cluster(
            pruned.keras_model,
            train,
            options=ClusterOptions(preserve_sparsity=True, **cluster_options),
            epochs=tuning.get("cluster_epochs", CLUSTER_EPOCHS),
            batch_size=BATCH,
            learning_rate=tuning.get("cluster_lr", CLUSTER_LR),
            verbose=2,
        )
        stages["clustered float"] = tfcompress.convert(
            clustered.keras_model, precision="float32", eval_data=test, latency_runs=0
        ).accuracy
        ptq = tfcompress.convert(
            clustered.keras_model, precision="int8", calibration=calibration, per_tensor_dense=True, latency_runs=0
        )
        rows.append(_pipeline_row("tfcompress", label, "PTQ", ptq.tflite, test, baseline, started, stages))
        pcqat = tfcompress.quantize_aware(
            clustered.keras_model,
            train,
            preserve="both",
            epochs=PCQAT_EPOCHS,
            batch_size=BATCH,
            learning_rate=QAT_LR,
            skip_check=True,
            verbose=2,
        )
        converted = tfcompress.convert(pcqat.keras_model, precision="int8", latency_runs=0, skip_check=True)
        rows.append(_pipeline_row("tfcompress", label, "PCQAT", converted.tflite, test, baseline, started, stages))
        if label.startswith("per layer"):
            continue
        started = time.perf_counter()
        ptq_bytes, pcqat_bytes = by_hand_pipeline(
            train, calibration, prune_options["target_sparsity"], cluster_options["clusters"], end_step
        )
        rows.append(_pipeline_row("tfmot by hand", label, "PTQ", ptq_bytes, test, baseline, started))
        rows.append(_pipeline_row("tfmot by hand", label, "PCQAT", pcqat_bytes, test, baseline, started))
    return rows


def _pipeline_row(how, label, quantization, model_bytes, test, baseline, started, stages=None) -> dict:
    coding = tfcompress.code_weights(model_bytes)
    tested = _accuracy(model_bytes, test)
    float_bytes = baseline.size_bytes
    row = {
        "how": how,
        "setting": label,
        "quantization": quantization,
        "size_bytes": coding.model_bytes,
        "gzip_bytes": coding.gzip_bytes,
        "huffman_bytes": coding.huffman_bytes,
        "entropy_bound_bytes": coding.entropy_bound_bytes,
        "float32_bytes": float_bytes,
        "gzip_ratio": float_bytes / coding.gzip_bytes,
        "huffman_ratio": float_bytes / coding.huffman_bytes,
        "entropy_ratio": float_bytes / coding.entropy_bound_bytes,
        "float_accuracy": baseline.accuracy,
        "accuracy": tested,
        "accuracy_drop": round((baseline.accuracy - tested) * 100, 2),
        "sparsity": {t.name: round(t.sparsity, 4) for t in coding.tensors},
        "unique_values": {t.name: t.unique_values for t in coding.tensors},
        "stage_accuracy": stages or {},
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(
        f"{how:14} {label:30} {quantization:6} gzip {row['gzip_ratio']:5.1f}x  Huffman "
        f"{row['huffman_ratio']:5.1f}x  entropy {row['entropy_ratio']:5.1f}x  acc {tested:.4f} "
        f"drop {row['accuracy_drop']:+.2f} pt",
        flush=True,
    )
    return row


def qat_vs_ptq(name, train, test, calibration) -> list:
    model = tfcompress.load_model(ROOT / "sample_models" / name)
    float_report = tfcompress.convert(model, precision="float32", eval_data=test, latency_runs=0)
    rows = []

    def add(how, variant, model_bytes, started):
        tested = _accuracy(model_bytes, test)
        rows.append(
            {
                "model": name,
                "how": how,
                "variant": variant,
                "size_bytes": len(model_bytes),
                "float_accuracy": float_report.accuracy,
                "accuracy": tested,
                "accuracy_drop": round((float_report.accuracy - tested) * 100, 2),
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
        print(f"{name:12} {how:14} {variant:9} acc {tested:.4f} drop {rows[-1]['accuracy_drop']:+.2f} pt", flush=True)

    started = time.perf_counter()
    ptq = tfcompress.convert(model, precision="int8", calibration=calibration, latency_runs=0)
    add("tfcompress", "PTQ int8", ptq.tflite, started)
    # The control: QAT trains QAT_EPOCHS more, so train the float model as long and quantize it too.
    started = time.perf_counter()
    tuned = _keras.tf_keras().models.clone_model(model)
    tuned.set_weights(model.get_weights())
    _keras.tf_keras().utils.set_random_seed(0)
    _fit(tuned, *_arrays(train, model), QAT_EPOCHS, QAT_LR, label_task(model) != "softmax")
    add("float fine-tuned", "float32", tfcompress.convert(tuned, precision="float32", latency_runs=0).tflite, started)
    add(
        "float fine-tuned",
        "PTQ int8",
        tfcompress.convert(tuned, precision="int8", calibration=calibration, latency_runs=0).tflite,
        started,
    )
    started = time.perf_counter()
    qat = tfcompress.quantize_aware(model, train, epochs=QAT_EPOCHS, batch_size=BATCH, learning_rate=QAT_LR, verbose=2)
    converted = tfcompress.convert(qat.keras_model, precision="int8", latency_runs=0, skip_check=True)
    add("tfcompress", "QAT int8", converted.tflite, started)
    started = time.perf_counter()
    try:
        add("tfmot by hand", "QAT int8", by_hand_qat(name, train), started)
    except (ValueError, RuntimeError) as error:  # quantize_model refuses the whole model
        rows.append({"model": name, "how": "tfmot by hand", "variant": "QAT int8", "error": str(error)[:200]})
        print(f"{name:12} tfmot by hand  QAT int8  failed: {str(error)[:120]}", flush=True)
    return rows


# ---------------------------------------------------------------- tfmot's documented calls, as a user writes them


def by_hand_pipeline(train, calibration, sparsity, clusters, end_step) -> tuple:
    """Pruning, clustering and PCQAT guides of tensorflow.org/model_optimization, in order.

    The model is loaded afresh: tfmot's cluster_weights breaks the layers of the model it
    is given (their kernels become tensors), so a model clustered once cannot be pruned again.
    """
    tf, keras, tfmot = _tf(), _keras.tf_keras(), _keras.tfmot()
    model = keras.models.load_model(ROOT / "sample_models/lenet_300_100.h5", compile=False)
    x, y = _arrays(train, model)
    from_logits = label_task(model) != "softmax"
    keras.utils.set_random_seed(0)
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=sparsity, begin_step=0, end_step=end_step
    )
    pruned = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
    _fit(pruned, x, y, PRUNE_EPOCHS, PRUNE_LR, from_logits, [tfmot.sparsity.keras.UpdatePruningStep()])
    pruned = tfmot.sparsity.keras.strip_pruning(pruned)
    clustered = tfmot.clustering.keras.cluster_weights(
        pruned,
        number_of_clusters=clusters,
        cluster_centroids_init=tfmot.clustering.keras.CentroidInitialization.KMEANS_PLUS_PLUS,
        preserve_sparsity=True,
    )
    _fit(clustered, x, y, CLUSTER_EPOCHS, CLUSTER_LR, from_logits)
    clustered = tfmot.clustering.keras.strip_clustering(clustered)

    converter = tf.lite.TFLiteConverter.from_keras_model(clustered)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    calibration_x = _arrays(calibration, model)[0]
    converter.representative_dataset = lambda: ([calibration_x[i : i + 1]] for i in range(len(calibration_x)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    ptq_bytes = converter.convert()

    annotated = tfmot.quantization.keras.quantize_annotate_model(clustered)
    pcqat = tfmot.quantization.keras.quantize_apply(
        annotated, tfmot.experimental.combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True)
    )
    _fit(pcqat, x, y, PCQAT_EPOCHS, QAT_LR, from_logits)
    converter = tf.lite.TFLiteConverter.from_keras_model(pcqat)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return ptq_bytes, converter.convert()


def by_hand_qat(name, train) -> bytes:
    """tensorflow.org's quantization-aware training guide: quantize_model, fit, convert."""
    tf, keras, tfmot = _tf(), _keras.tf_keras(), _keras.tfmot()
    model = keras.models.load_model(ROOT / "sample_models" / name, compile=False)
    x, y = _arrays(train, model)
    keras.utils.set_random_seed(0)
    qat = tfmot.quantization.keras.quantize_model(model)
    _fit(qat, x, y, QAT_EPOCHS, QAT_LR, label_task(model) != "softmax")
    converter = tf.lite.TFLiteConverter.from_keras_model(qat)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


def _fit(model, x, y, epochs, learning_rate, from_logits, callbacks=()):
    keras = _keras.tf_keras()
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
        metrics=["accuracy"],
    )
    model.fit(x, y, batch_size=BATCH, epochs=epochs, callbacks=list(callbacks), verbose=2)


def _arrays(data, model):
    fitted = fit_to_input(data, tuple(model.inputs[0].shape), reshape=True)
    return fitted.x, fitted.y


def _tf():
    import tensorflow as tf

    return tf


def _accuracy(model_bytes, test) -> float:
    from tfcompress.runtime.inspect import inspect_tflite

    shape = inspect_tflite(model_bytes).inputs[0].shape
    return accuracy(predict(model_bytes, test.x.reshape((-1,) + tuple(shape[1:]))), test.y)


def plot(rows, path) -> None:
    """Accuracy drop vs compression ratio: gzip and the entropy bound, per pipeline."""
    plt = require_matplotlib()
    figure, axis = plt.subplots(figsize=(9, 5))
    for row in rows:
        marker = "o" if row["how"] == "tfcompress" else "x"
        label = f"{row['how']}, {row['setting']}, {row['quantization']}"
        axis.scatter(row["gzip_ratio"], row["accuracy_drop"], marker=marker)
        axis.annotate(label, (row["gzip_ratio"], row["accuracy_drop"]), fontsize=7)
    axis.set_xlim(right=max(row["gzip_ratio"] for row in rows) * 1.5)  # room for the labels
    axis.axvline(60, linestyle=":", color="grey")  # issue #21's goal: 60x within 1 pt
    axis.axhline(1.0, linestyle=":", color="grey")
    axis.set_xlabel("float32 .tflite bytes / gzip bytes")
    axis.set_ylabel("accuracy drop vs float (pt)")
    axis.set_title("LeNet-300-100 on Fashion-MNIST: compression vs accuracy", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    app.run(main)
