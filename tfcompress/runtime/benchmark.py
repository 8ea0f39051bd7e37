"""Measures `.tflite` models side by side: init time, latency, memory, size, accuracy, fidelity.

Everything here runs on a device with only numpy, absl-py and ai-edge-litert
(tflite-micro for the TFLite Micro run). `repeat` measures everything again and
keeps the median, because small machines are noisy.
"""

import dataclasses
import os
import time
from typing import Optional

import numpy as np

from tfcompress.data import noise, one_or_tuple, per_input
from tfcompress.errors import OptionError, TfcompressError
from tfcompress.options import option
from tfcompress.runtime import metrics
from tfcompress.runtime.inspect import gzip_size, inspect_tflite, is_full_integer, precision_of
from tfcompress.runtime.interpreter import make_interpreter, predict, quantize_inputs
from tfcompress.runtime.latency import Latency, latency_inputs, time_invokes

__all__ = ["BenchmarkOptions", "ModelBenchmark", "benchmark_models", "comparison_inputs"]

_MICRO_SAMPLES = 50


@dataclasses.dataclass(frozen=True)
class BenchmarkOptions:
    """How latency is measured: LiteRT threads, warm-up, timed runs and repeats, TFLite Micro too."""

    threads: int = option(1, "Interpreter threads.", lower_bound=1)
    warmup: int = option(20, "Untimed invokes first.", lower_bound=0)
    runs: int = option(200, "Timed invokes.", lower_bound=1)
    repeat: int = option(1, "Repeat the whole measurement; report medians.", lower_bound=1)
    xnnpack: bool = option(True, "Use LiteRT's default XNNPACK delegate.")
    micro: bool = option(False, "Also run integer models in TFLite Micro: arena, agreement, latency.")

    def __post_init__(self):
        for name, minimum in (("threads", 1), ("warmup", 0), ("runs", 1), ("repeat", 1)):
            value = getattr(self, name)
            if value < minimum:
                raise OptionError(f"{name} must be at least {minimum}. Received: {name}={value}")


@dataclasses.dataclass(frozen=True)
class ModelBenchmark:
    model: str
    precision: str
    size_bytes: int
    gzip_bytes: int
    init_ms: float  # interpreter creation + allocate_tensors, median over repeats
    latency: Latency  # each statistic the median over repeats
    p50_spread_us: tuple  # (min, max) of p50 across repeats
    rss_growth_bytes: int  # resident memory added by the interpreter and its runs
    accuracy: Optional[float]
    fidelity: Optional[metrics.Fidelity]  # of the first output
    ops: dict
    float_ops: tuple
    micro: Optional[dict] = None  # TFLite Micro arena/agreement/latency, or its error
    fidelity_by_output: tuple = ()  # a model with several outputs: each one's Fidelity, in order
    latency_samples_us: np.ndarray = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def arena_bytes(self) -> Optional[int]:
        return self.micro.get("arena_bytes") if self.micro else None


def comparison_inputs(model_bytes: bytes, eval_x, count: int = 100):
    """Float inputs every model and the reference are run on: eval data, or seeded noise in [0, 1)
    (a tuple of one array per input for a model with several)."""
    if eval_x is not None:
        return eval_x
    summary = inspect_tflite(model_bytes)
    return one_or_tuple(noise((count,) + tuple(tensor.shape[1:]), seed) for seed, tensor in enumerate(summary.inputs))


def benchmark_models(
    named_models,
    options: BenchmarkOptions,
    *,
    inputs,
    labels: Optional[np.ndarray] = None,
    reference_outputs=None,
    eval_x=None,
    tasks: tuple = ("softmax",),
) -> tuple:
    """Measures `(name, bytes)` models under the same conditions; `inputs` are float samples
    shared with the reference, and `tasks` (runtime.task, one per output) say how outputs are compared.

    The process pays its one-time costs (libraries, XNNPACK set-up, first page faults) in an
    untimed round over every model first, or the first model measured would carry them; then
    the `repeat` rounds interleave the models (A B, A B, ...), so drift hits all alike.
    """
    summaries = [inspect_tflite(data, name) for name, data in named_models]
    for _, data in named_models:
        _timed_round(data, options, eval_x, runs=1)
    rounds = {name: [] for name, _ in named_models}
    rss_growth = {}
    for _ in range(options.repeat):
        for name, data in named_models:
            rss_before = _resident_bytes()
            rounds[name].append(_timed_round(data, options, eval_x, runs=options.runs))
            rss_growth.setdefault(name, max(_resident_bytes() - rss_before, 0))
    return tuple(
        _model_result(
            name, data, summary, rounds[name], rss_growth[name], options, inputs, labels, reference_outputs, tasks
        )
        for (name, data), summary in zip(named_models, summaries)
    )


def _timed_round(model_bytes: bytes, options: BenchmarkOptions, eval_x, runs: int) -> tuple:
    """(init ms, latency samples in us) of a fresh interpreter."""
    start = time.perf_counter_ns()
    interpreter = make_interpreter(model_bytes, threads=options.threads, xnnpack=options.xnnpack)
    init_ms = (time.perf_counter_ns() - start) / 1e6
    samples = time_invokes(interpreter, latency_inputs(interpreter, eval_x), runs=runs, warmup=options.warmup)
    return init_ms, samples


def _model_result(
    name, model_bytes, summary, rounds, rss_growth, options, inputs, labels, reference_outputs, tasks
) -> ModelBenchmark:
    stats = [Latency.from_samples(samples) for _, samples in rounds]
    outputs = predict(model_bytes, inputs, threads=options.threads)
    by_output = ()
    if reference_outputs is not None:
        by_output = metrics.fidelity_by_output(outputs, reference_outputs, tasks, summary.output_keys, inputs)
    return ModelBenchmark(
        model=name,
        precision=precision_of(summary),
        size_bytes=len(model_bytes),
        gzip_bytes=gzip_size(model_bytes),
        init_ms=float(np.median([init for init, _ in rounds])),
        latency=_median_latency(stats),
        p50_spread_us=(min(s.p50 for s in stats), max(s.p50 for s in stats)),
        rss_growth_bytes=rss_growth,
        accuracy=metrics.task_accuracy(outputs, labels, tasks[0]) if len(tasks) == 1 else None,
        fidelity=by_output[0] if by_output else None,
        ops=summary.ops,
        float_ops=summary.float_ops,
        micro=_micro(model_bytes, inputs, summary) if options.micro else None,
        fidelity_by_output=by_output if len(by_output) > 1 else (),
        latency_samples_us=np.concatenate([samples for _, samples in rounds]),
    )


def _median_latency(stats: list) -> Latency:
    fields = [f.name for f in dataclasses.fields(Latency) if f.name != "runs"]
    medians = {name: float(np.median([getattr(s, name) for s in stats])) for name in fields}
    return Latency(**medians, runs=sum(s.runs for s in stats))


def _micro(model_bytes: bytes, inputs, summary) -> dict:
    """TFLite Micro's view of an integer model; float models are reported as not runnable.

    Without the Keras model, faithfulness is judged against LiteRT (runtime.faithfulness)."""
    from tfcompress.runtime.faithfulness import judge
    from tfcompress.runtime.tflm import run_micro

    if not is_full_integer(summary):
        return {"error": "needs a full-integer model with integer I/O (convert with --precision int8 --io_type int8)"}
    try:
        first = tuple(array[:_MICRO_SAMPLES] for array in per_input(inputs))
        run = run_micro(model_bytes, quantize_inputs(first, summary.input_details()))
    except TfcompressError as error:
        return {"error": str(error)}
    verdict = judge(run.outputs, run.litert_outputs, summary.output_details(), names=summary.output_keys)
    return {**run.to_dict(), "verification": verdict.to_dict()}


def _resident_bytes() -> int:
    """Current resident set size, from /proc (0 where that does not exist)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
