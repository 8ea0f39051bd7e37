"""Latency of a `.tflite` model in LiteRT, timed invoke by invoke with perf_counter_ns."""

import dataclasses
import time

import numpy as np

from tfcompress.data import per_input
from tfcompress.errors import OptionError
from tfcompress.runtime.interpreter import make_interpreter, quantize

__all__ = ["Latency", "measure_latency", "time_invokes", "random_inputs", "latency_inputs"]


@dataclasses.dataclass(frozen=True)
class Latency:
    """Invoke times in microseconds."""

    p50: float
    p90: float
    p99: float
    mean: float
    min: float
    std: float
    runs: int

    @classmethod
    def from_samples(cls, samples_us: np.ndarray) -> "Latency":
        p50, p90, p99 = np.percentile(samples_us, [50, 90, 99])
        return cls(
            float(p50),
            float(p90),
            float(p99),
            float(samples_us.mean()),
            float(samples_us.min()),
            float(samples_us.std()),
            len(samples_us),
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def random_inputs(detail: dict, seed: int = 0) -> np.ndarray:
    """Deterministic inputs of an input tensor's dtype and shape. A wider integer than 8 bits is a
    token id or an index (an Embedding's, a GATHER's), for which a random one is out of range: 0 is
    the one every such model accepts."""
    rng = np.random.default_rng(seed)
    shape, dtype = tuple(detail["shape"]), detail["dtype"]
    if np.issubdtype(dtype, np.integer) and np.dtype(dtype).itemsize > 1:
        return np.zeros(shape, dtype)
    if np.issubdtype(dtype, np.integer):
        limits = np.iinfo(dtype)
        return rng.integers(limits.min, limits.max, size=shape, endpoint=True).astype(dtype)
    return rng.uniform(0.0, 1.0, size=shape).astype(dtype)


def latency_inputs(interpreter, eval_x=None, count: int = 16) -> list:
    """Inputs for the timed invokes, each a tuple with one array per model input: eval samples in
    the inputs' dtypes, or random data."""
    details = interpreter.get_input_details()
    if eval_x is None:
        return [tuple(random_inputs(detail, seed) for detail in details) for seed in range(count)]
    arrays = per_input(eval_x)
    return [
        tuple(quantize(array[i : i + 1], detail) for array, detail in zip(arrays, details))
        for i in range(min(count, len(arrays[0])))
    ]


def time_invokes(interpreter, inputs: list, *, runs: int, warmup: int) -> np.ndarray:
    """Microseconds of each of `runs` invokes after `warmup` untimed ones, cycling `inputs`."""
    if runs < 1:
        raise OptionError(f"runs must be at least 1. Received: runs={runs}")
    if warmup < 0:
        raise OptionError(f"warmup must be 0 or more. Received: warmup={warmup}")
    indices = [detail["index"] for detail in interpreter.get_input_details()]
    for index in range(warmup):
        _set_inputs(interpreter, indices, inputs[index % len(inputs)])
        interpreter.invoke()
    samples = np.empty(runs)
    for index in range(runs):
        _set_inputs(interpreter, indices, inputs[index % len(inputs)])
        start = time.perf_counter_ns()
        interpreter.invoke()
        samples[index] = (time.perf_counter_ns() - start) / 1000.0
    return samples


def _set_inputs(interpreter, indices, arrays: tuple) -> None:
    for tensor_index, array in zip(indices, arrays):
        interpreter.set_tensor(tensor_index, array)


def measure_latency(
    model_bytes: bytes, *, runs: int = 200, warmup: int = 20, threads: int = 1, xnnpack: bool = True
) -> Latency:
    """Times `runs` single-sample invokes of random inputs after `warmup` untimed ones."""
    interpreter = make_interpreter(model_bytes, threads=threads, xnnpack=xnnpack)
    interpreter.allocate_tensors()
    samples = time_invokes(interpreter, latency_inputs(interpreter), runs=runs, warmup=warmup)
    return Latency.from_samples(samples)
