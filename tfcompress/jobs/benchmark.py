"""The benchmark job: `.tflite` files (and optional eval data and reference) → one comparison.

Runs without TensorFlow unless the reference is a Keras model, which is loaded
lazily, with the same safety checks as everywhere else.
"""

import dataclasses
from pathlib import Path
from typing import Optional

from absl import logging

from tfcompress._io.files import path_size
from tfcompress.data import input_data
from tfcompress.errors import ModelLoadError
from tfcompress.jobs._common import job_outputs
from tfcompress.options import LoadOptions, gather
from tfcompress.report import BenchmarkReport, Reference, machine_info, markdown_benchmark
from tfcompress.runtime import metrics
from tfcompress.runtime.benchmark import BenchmarkOptions, benchmark_models, comparison_inputs
from tfcompress.runtime.inspect import inspect_tflite, read_tflite
from tfcompress.runtime.interpreter import per_output, predict, xnnpack_warning
from tfcompress.runtime.task import resolve_tasks

__all__ = ["benchmark"]


def benchmark(
    models,
    *,
    options: Optional[BenchmarkOptions] = None,
    load: Optional[LoadOptions] = None,
    eval_data=None,
    reference=None,
    json_path=None,
    markdown_path=None,
    plot_path=None,
    **settings,
) -> BenchmarkReport:
    """Measures each `.tflite` in `models` and compares them with the first (and `reference`).

    `options` and `load` may also be given field by field as keywords (`runs=50`, `micro=True`).
    `reference` is a `.tflite` or a Keras model file (the latter needs TensorFlow); its
    outputs on the eval data (or on seeded noise) give every model's fidelity.
    """
    options, load = gather(settings, (BenchmarkOptions, options), (LoadOptions, load))
    with job_outputs(json_path, markdown_path, plot_path) as outputs:
        if plot_path is not None:
            from tfcompress import plots

            plots.require_matplotlib()
        named_models = [(str(path), read_tflite(path)) for path in models]
        if not named_models:
            raise ModelLoadError("benchmark needs at least one .tflite model.")
        first = inspect_tflite(named_models[0][1], named_models[0][0])
        tasks = resolve_tasks(load.asked_tasks(first.output_keys), first)
        evaluation = input_data(eval_data, first.model_inputs(), load.preprocessing, reshape=load.reshape_data)
        eval_x = evaluation.x if evaluation is not None else None
        labels = evaluation.y if evaluation is not None else None
        inputs = comparison_inputs(named_models[0][1], eval_x)
        reference_info, reference_outputs = _reference(reference, inputs, labels, load, tasks)
        results = benchmark_models(
            named_models,
            options,
            inputs=inputs,
            labels=labels,
            reference_outputs=reference_outputs,
            eval_x=eval_x,
            tasks=tasks,
        )
        report = BenchmarkReport(
            results,
            reference_info,
            evaluation.source if evaluation else None,
            dataclasses.asdict(options),
            machine_info(options.threads),
            _warnings(reference_outputs, named_models),
            evaluation.preprocessing if evaluation else None,
        )
        outputs.report(json_path, report)
        outputs.bytes(markdown_path, markdown_benchmark(report).encode())
        outputs.file(plot_path, lambda path: plots.plot_benchmark(report, path))
    return report


def _warnings(reference_outputs, named_models) -> tuple:
    constant = () if reference_outputs is None else per_output(reference_outputs)
    messages = tuple(filter(None, (metrics.constant_output(outputs) for outputs in constant)))
    for message in messages:
        logging.warning(message)
    delegate = {name: xnnpack_warning(data) for name, data in named_models}
    return messages + tuple(f"{name}: {message}" for name, message in delegate.items() if message)


def _reference(reference, inputs, labels, load: LoadOptions, tasks: tuple):
    """(Reference, its outputs on `inputs`), or (None, None) without a reference."""
    if reference is None:
        return None, None
    path = Path(reference)
    if path.suffix == ".tflite":
        outputs = predict(read_tflite(path), inputs)
    else:
        from tfcompress.jobs._common import load_model
        from tfcompress.jobs._loaded import keras_predict

        model, _ = load_model(path, load)
        outputs = keras_predict(model, inputs, batch_size=250)
    accuracy = metrics.task_accuracy(outputs, labels, tasks[0]) if len(tasks) == 1 else None
    return Reference(str(path), path_size(path), accuracy), outputs
