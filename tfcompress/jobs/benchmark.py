"""The benchmark job: `.tflite` files (and optional eval data and reference) → one comparison.

Runs without TensorFlow unless the reference is a Keras model, which is loaded
lazily, with the same safety checks as everywhere else.
"""

import dataclasses
from pathlib import Path
from typing import Optional

from tfcompress.data import Preprocessing, input_data
from tfcompress.errors import ModelLoadError
from tfcompress._io.files import check_writable, write_atomic
from tfcompress.report import BenchmarkReport, Reference, machine_info, markdown_benchmark, write_json
from tfcompress.runtime import metrics
from tfcompress.runtime.benchmark import BenchmarkOptions, benchmark_models, comparison_inputs
from tfcompress.runtime.inspect import inspect_tflite, read_tflite
from tfcompress.runtime.interpreter import predict

__all__ = ["benchmark"]


def benchmark(models, *, eval_data=None, reference=None, threads: int = 1, warmup: int = 20,
              runs: int = 200, repeat: int = 1, xnnpack: bool = True, micro: bool = False,
              preprocessing: Preprocessing = Preprocessing(), reshape_data: bool = False,
              json_path=None, markdown_path=None, plot_path=None,
              trust_model_code: bool = False, custom_objects: Optional[dict] = None) -> BenchmarkReport:
    """Measures each `.tflite` in `models` and compares them with the first (and `reference`).

    `reference` is a `.tflite` or a Keras model file (the latter needs TensorFlow); its
    outputs on the eval data (or on seeded noise) give every model's fidelity.
    """
    options = BenchmarkOptions(threads=threads, warmup=warmup, runs=runs, repeat=repeat,
                               xnnpack=xnnpack, micro=micro)
    for path in (json_path, markdown_path, plot_path):
        check_writable(path)
    if plot_path is not None:
        from tfcompress import plots

        plots.require_matplotlib()
    named_models = [(str(path), read_tflite(path)) for path in models]
    if not named_models:
        raise ModelLoadError("benchmark needs at least one .tflite model.")
    first_input = inspect_tflite(named_models[0][1], named_models[0][0]).inputs[0]
    evaluation = input_data(eval_data, (None,) + first_input.shape[1:], preprocessing, reshape=reshape_data)
    eval_x = evaluation.x if evaluation is not None else None
    labels = evaluation.y if evaluation is not None else None
    inputs = comparison_inputs(named_models[0][1], eval_x)
    reference_info, reference_outputs = _reference(reference, inputs, labels, trust_model_code, custom_objects)
    results = benchmark_models(named_models, options, inputs=inputs, labels=labels,
                               reference_outputs=reference_outputs, eval_x=eval_x)
    report = BenchmarkReport(results, reference_info, evaluation.source if evaluation else None,
                             dataclasses.asdict(options), machine_info(threads))
    if json_path is not None:
        write_json(report, json_path)
    if markdown_path is not None:
        write_atomic(markdown_path, markdown_benchmark(report).encode())
    if plot_path is not None:
        plots.plot_benchmark(report, plot_path)
    return report


def _reference(reference, inputs, labels, trust_model_code, custom_objects):
    """(Reference, its outputs on `inputs`), or (None, None) without a reference."""
    if reference is None:
        return None, None
    path = Path(reference)
    if path.suffix == ".tflite":
        outputs = predict(read_tflite(path), inputs)
    else:
        from tfcompress import keras_io

        model = keras_io.load_model(path, trust_model_code=trust_model_code, custom_objects=custom_objects)
        outputs = model.predict(inputs, batch_size=250, verbose=0)
    size = path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*"))
    return Reference(str(path), size, metrics.accuracy(outputs, labels)), outputs
