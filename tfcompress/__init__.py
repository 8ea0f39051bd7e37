"""tfcompress: Keras models in, small verified TensorFlow Lite models out.

The public API. Modules that import TensorFlow load on first use, so
`import tfcompress` stays cheap and the TFLite-only paths never import it.
"""

import importlib

__version__ = "0.1.0"

_API = {
    "convert": "tfcompress.jobs.convert",
    "benchmark": "tfcompress.jobs.benchmark",
    "to_micro": "tfcompress.jobs.micro",
    "check": "tfcompress.jobs.check",
    "quantize_aware": "tfcompress.jobs.qat",
    "prune": "tfcompress.jobs.prune",
    "cluster": "tfcompress.jobs.cluster",
    "distill": "tfcompress.jobs.distill",
    "lowrank": "tfcompress.jobs.lowrank",
    "run_recipe": "tfcompress.pipeline.run",
    "analyze": "tfcompress.jobs.analyze",
    "auto": "tfcompress.jobs.auto",
    "load_recipe": "tfcompress.pipeline.recipe",
    "LoadOptions": "tfcompress.options",
    "TrainOptions": "tfcompress.options",
    "GuardOptions": "tfcompress.options",
    "MicroOptions": "tfcompress.options",
    "CheckOptions": "tfcompress.options",
    "AnalyzeOptions": "tfcompress.options",
    "AutoOptions": "tfcompress.options",
    "BenchmarkOptions": "tfcompress.runtime.benchmark",
    "QatOptions": "tfcompress.transforms.qat",
    "PruneOptions": "tfcompress.transforms.prune",
    "ClusterOptions": "tfcompress.transforms.cluster",
    "DistillOptions": "tfcompress.transforms.distill",
    "LowRankOptions": "tfcompress.transforms.lowrank",
    "load_model": "tfcompress.keras_io",
    "load_custom_objects": "tfcompress.keras_io",
    "load_data": "tfcompress.data",
    "Dataset": "tfcompress.data",
    "Preprocessing": "tfcompress.data",
    "ConvertOptions": "tfcompress.export.tflite",
    "to_tflite": "tfcompress.export.tflite",
    "inspect_tflite": "tfcompress.runtime.inspect",
    "code_weights": "tfcompress.runtime.weight_coding",
    "predict": "tfcompress.runtime.interpreter",
    "measure_latency": "tfcompress.runtime.latency",
    "ConversionReport": "tfcompress.report",
    "print_report": "tfcompress.report",
}

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name):
    if name not in _API:
        raise AttributeError(f"module 'tfcompress' has no attribute {name!r}")
    return getattr(importlib.import_module(_API[name]), name)
