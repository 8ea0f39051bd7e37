"""Runs an integer `.tflite` in the real TFLite Micro interpreter (tflite-micro's Python build).

The arena size is measured, not estimated: the recording allocator's total is a
first guess (it under-counts allocations made in Prepare, tflite-micro#2738), then
the model is run with ever smaller arenas to find the smallest one that allocates
and invokes, and the reported size is the one that was actually run.
"""

import dataclasses
import re
import time
from typing import Optional

import numpy as np

from tfcompress._io.native import captured_output
from tfcompress.data import one_or_tuple, per_input
from tfcompress.errors import ConversionError, ModelLoadError
from tfcompress.runtime.inspect import inspect_tflite, io_counts
from tfcompress.runtime.interpreter import per_output, raw_outputs
from tfcompress.runtime.isolated import run_isolated
from tfcompress.runtime.latency import Latency

__all__ = [
    "MicroRun",
    "measure_arena",
    "run_micro",
    "beside_litert",
    "micro_outputs",
    "time_micro",
    "micro_run_error",
    "ARENA_ALIGNMENT",
    "aligned",
]

ARENA_ALIGNMENT = 16
_MISSING_OP = re.compile(r"Didn't find op for builtin opcode '([A-Z0-9_]+)'")
_RECORDED_TOTAL = re.compile(r"Arena allocation total (\d+) bytes")
_LARGEST_ARENA_BYTES = 1 << 28


@dataclasses.dataclass(frozen=True)
class MicroRun:
    """What TFLite Micro did with a model."""

    arena_bytes: int  # smallest arena (multiple of 16) the model allocated and ran in
    recorded_arena_bytes: int  # the recording allocator's own total
    diff_steps_by_kernels: dict  # largest output difference from LiteRT, in quantized steps (None: no such kernel)
    latency: Latency
    outputs: object = dataclasses.field(repr=False, compare=False)  # TFLite Micro's raw outputs (a tuple for several)
    litert_outputs: dict = dataclasses.field(repr=False, compare=False)  # kernel set → LiteRT's (None: no such)

    @property
    def max_diff_steps(self) -> int:
        """The difference from the LiteRT kernel set TFLite Micro matches more closely."""
        return min(steps for steps in self.diff_steps_by_kernels.values() if steps is not None)

    def to_dict(self) -> dict:
        return {
            "arena_bytes": self.arena_bytes,
            "recorded_arena_bytes": self.recorded_arena_bytes,
            "max_diff_steps": self.max_diff_steps,
            "diff_steps_by_kernels": self.diff_steps_by_kernels,
            "latency_us": self.latency.to_dict(),
        }


def measure_arena(model_bytes: bytes, alt_decompression_bytes: int = 0) -> tuple:
    """(smallest arena that runs, recorded total), both in bytes.

    `alt_decompression_bytes`: a separate memory DECODE expands compressed tensors into,
    instead of the arena.
    """
    recorded = _recorded_arena(model_bytes, alt_decompression_bytes)
    low, high = 0, aligned(recorded)
    while (error := micro_run_error(model_bytes, high, alt_decompression_bytes)) is not None:
        if high > _LARGEST_ARENA_BYTES:
            raise ConversionError(f"TFLite Micro did not run the model even with a {high:,}-byte arena: {error}")
        low, high = high, high * 2
    while high - low > ARENA_ALIGNMENT:
        middle = aligned((low + high) // 2)
        if middle >= high:
            break
        runs = micro_run_error(model_bytes, middle, alt_decompression_bytes) is None
        low, high = (low, middle) if runs else (middle, high)
    return high, recorded


def run_micro(model_bytes: bytes, inputs, *, runs: int = 20) -> MicroRun:
    """Runs `inputs` (already in the model's input dtype; a tuple of one array per input for several)
    one by one, in an arena of the measured size, and compares the raw outputs with LiteRT's; then times `runs` invokes.

    LiteRT runs both its kernel sets, without XNNPACK (which rounds int8 differently, up to
    11 steps on a LeNet-5 softmax): TFLite Micro matches neither everywhere — its int8
    softmax follows the optimized kernels (the reference one was 4 steps off on LeNet-5),
    its MEAN the reference kernels (the optimized one was 6 steps off on ResNet-8).
    """
    arena, recorded = measure_arena(model_bytes)
    outputs, litert = beside_litert(model_bytes, inputs, arena)
    differences = {kernels: _steps_from(outputs, litert_outputs) for kernels, litert_outputs in litert.items()}
    latency = time_micro(model_bytes, inputs, arena, runs=runs)
    return MicroRun(arena, recorded, differences, latency, outputs, litert)


def beside_litert(model_bytes: bytes, inputs, arena_bytes: int) -> tuple:
    """(TFLite Micro's raw outputs, kernel set → LiteRT's raw outputs or None) on the same inputs."""
    litert = {"optimized": raw_outputs(model_bytes, inputs), "reference": _reference_outputs(model_bytes, inputs)}
    return micro_outputs(model_bytes, inputs, arena_bytes), litert


def _reference_outputs(model_bytes: bytes, inputs):
    """LiteRT's reference kernels' outputs, or None where they lack an op version the model needs
    (ai-edge-litert 2.3 has no int4 DEPTHWISE_CONV_2D among them)."""
    try:
        return raw_outputs(model_bytes, inputs, reference_kernels=True)
    except ModelLoadError:
        return None


def _steps_from(outputs, litert_outputs) -> Optional[int]:
    """The largest difference over every output, in quantized steps."""
    if litert_outputs is None:
        return None
    return max(
        int(np.abs(ours.astype(np.int64) - theirs.astype(np.int64)).max())
        for ours, theirs in zip(per_output(outputs), per_output(litert_outputs))
    )


def micro_outputs(model_bytes: bytes, inputs, arena_bytes: int, alt_decompression_bytes: int = 0):
    """TFLite Micro's raw outputs for `inputs` (in the model's input dtypes), one invoke each: an
    array, or a tuple of one per output."""
    interpreter = _interpreter(model_bytes, arena_bytes, alt_decompression_bytes)
    arrays, (_, output_count) = per_input(inputs), io_counts(model_bytes)
    stateful = bool(inspect_tflite(model_bytes).state_tensors)
    outputs = []
    for index in range(len(arrays[0])):
        if stateful:  # each sample on its own, as LiteRT and Keras run it
            interpreter.reset()
        _set_inputs(interpreter, tuple(array[index : index + 1] for array in arrays))
        interpreter.invoke()
        outputs.append(tuple(np.array(interpreter.get_output(i)) for i in range(output_count)))
    return one_or_tuple(np.concatenate(parts) for parts in zip(*outputs))


def _set_inputs(interpreter, samples: tuple) -> None:
    for position, sample in enumerate(samples):
        interpreter.set_input(sample, position)


def time_micro(model_bytes: bytes, inputs, arena_bytes: int, *, runs: int = 20) -> Latency:
    """Latency of `runs` invokes on the first of `inputs` (a batch of 1) in TFLite Micro."""
    interpreter = _interpreter(model_bytes, arena_bytes)
    first = tuple(array[:1] for array in per_input(inputs))
    samples = np.empty(max(runs, 1))
    for index in range(len(samples)):
        # Set each time: TFLite Micro reuses the input's arena bytes once it is read, and an
        # Embedding's GATHER refuses the leftover values as indices.
        _set_inputs(interpreter, first)
        start = time.perf_counter_ns()
        interpreter.invoke()
        samples[index] = (time.perf_counter_ns() - start) / 1000.0
    return Latency.from_samples(samples)


def _interpreter(model_bytes: bytes, arena_size: int, alt_decompression_bytes: int = 0):
    from tflite_micro import runtime

    with captured_output() as captured:
        try:
            return runtime.Interpreter.from_bytes(
                model_bytes, arena_size=arena_size, alt_decompression_memory_size=alt_decompression_bytes
            )
        except RuntimeError:
            pass
    missing = sorted(set(_MISSING_OP.findall(captured.text)))
    if missing:
        raise ConversionError(
            f"TFLite Micro has no kernel for: {', '.join(missing)} (it stops at the first missing op). "
            "Replace that layer, or deploy with LiteRT instead of TFLite Micro."
        )
    raise ConversionError(f"TFLite Micro cannot run the model: {captured.text.strip().splitlines()[-1:]}")


def _recorded_arena(model_bytes: bytes, alt_decompression_bytes: int = 0) -> int:
    interpreter = _interpreter(model_bytes, max(len(model_bytes) * 10, 1 << 20), alt_decompression_bytes)
    with captured_output() as captured:
        interpreter.print_allocations()
    match = _RECORDED_TOTAL.search(captured.text)
    return int(match.group(1)) if match else len(model_bytes)


def micro_run_error(model_bytes: bytes, arena_size: int, alt_decompression_bytes: int = 0) -> Optional[str]:
    """None when the model allocates and invokes in `arena_size` bytes, else why not.

    Run in a forked child: some kernels crash instead of failing cleanly (REVERSE_V2
    with a 200-byte arena, seen here); a crash is an answer too.
    """
    from tflite_micro import runtime

    input_count, _ = io_counts(model_bytes)

    def allocate_and_invoke():
        interpreter = runtime.Interpreter.from_bytes(
            model_bytes, arena_size=arena_size, alt_decompression_memory_size=alt_decompression_bytes
        )
        details = [interpreter.get_input_details(i) for i in range(input_count)]
        # Zeros, not whatever the arena held: an Embedding's GATHER refuses indices out of its table.
        _set_inputs(interpreter, tuple(np.zeros(detail["shape"], detail["dtype"]) for detail in details))
        interpreter.invoke()

    child = run_isolated(allocate_and_invoke)
    if child.succeeded:
        return None
    if child.signal is not None:
        return f"TFLite Micro crashed (signal {child.signal})"
    lines = [line.strip() for line in child.printed.splitlines() if line.strip()]
    return "; ".join(lines[:2]) or "TFLite Micro could not allocate or invoke the model"


def aligned(size: int) -> int:
    """`size` bytes rounded up to the arena's alignment (at least one step)."""
    return -(-max(int(size), 1) // ARENA_ALIGNMENT) * ARENA_ALIGNMENT
