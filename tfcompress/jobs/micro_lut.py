"""`micro --compress lut`: compress the verified int8 model and prove nothing changed.

LiteRT has no DECODE kernel, so the proof is TFLite Micro against itself: the
compressed model's outputs must equal the uncompressed model's bit for bit. The arena
is measured twice — with DECODE expanding into the arena, and with a separate
decompression memory as large as the largest expanded tensor — because the RAM a
compressed model needs is the price of its smaller flash.
"""

import dataclasses

import numpy as np

from tfcompress.errors import ConversionError
from tfcompress.export.lut import compress_lut, plan_lut
from tfcompress.report import markdown_table
from tfcompress.runtime.interpreter import per_output
from tfcompress.runtime.tflm import aligned, measure_arena, micro_outputs, time_micro

__all__ = ["LutResult", "lut_compress_verified", "format_lut_section"]


@dataclasses.dataclass(frozen=True)
class LutResult:
    model: bytes  # the compressed flatbuffer (the original when nothing qualified)
    tensors: tuple  # LutTensor per weight tensor
    bytes_before: int
    bytes_after: int
    identical_samples: int  # inputs whose outputs matched the uncompressed model's exactly
    uncompressed_arena_bytes: int
    arena_bytes: int  # DECODE expanding into the arena
    alt_decompression_bytes: int  # or: a separate memory this large ...
    arena_with_alt_memory_bytes: int  # ... and then an arena this large
    latency: dict  # TFLite Micro on the host: {"uncompressed", "compressed"} → Latency

    @property
    def compressed(self) -> bool:
        return any(tensor.compressed for tensor in self.tensors)

    def to_dict(self) -> dict:
        return {
            "tensors": [tensor.to_dict() for tensor in self.tensors],
            "bytes_before": self.bytes_before,
            "bytes_after": self.bytes_after,
            "identical_samples": self.identical_samples,
            "uncompressed_arena_bytes": self.uncompressed_arena_bytes,
            "arena_bytes": self.arena_bytes,
            "alt_decompression_bytes": self.alt_decompression_bytes,
            "arena_with_alt_memory_bytes": self.arena_with_alt_memory_bytes,
            "latency_us": {name: latency.to_dict() for name, latency in self.latency.items()},
        }


def lut_compress_verified(model_bytes: bytes, inputs: np.ndarray, arena_bytes: int) -> LutResult:
    """LUT-compresses what qualifies and checks the result in TFLite Micro on `inputs`.

    `arena_bytes` is the uncompressed model's measured arena. A model with no
    qualifying tensor comes back unchanged, with the reasons in its tensors.
    """
    plan = plan_lut(model_bytes)
    if not any(tensor.compressed for tensor in plan):
        return LutResult(
            model_bytes, plan, len(model_bytes), len(model_bytes), 0, arena_bytes, arena_bytes, 0, arena_bytes, {}
        )
    compressed = compress_lut(model_bytes, plan)
    arena, _ = measure_arena(compressed)
    expected = micro_outputs(model_bytes, inputs, arena_bytes)
    received = micro_outputs(compressed, inputs, arena)
    pairs = list(zip(per_output(expected), per_output(received)))
    if not all(np.array_equal(ours, theirs) for ours, theirs in pairs):
        samples = len(pairs[0][0])
        differs = [np.any(ours.reshape(samples, -1) != theirs.reshape(samples, -1), axis=1) for ours, theirs in pairs]
        raise ConversionError(
            f"The LUT-compressed model's TFLite Micro outputs differ from the uncompressed "
            f"model's on {int(np.sum(np.any(differs, axis=0)))} of {samples} inputs; it was not written."
        )
    alt_bytes = _largest_decoded_bytes(plan)
    arena_with_alt, _ = measure_arena(compressed, alt_bytes)
    latency = {
        "uncompressed": time_micro(model_bytes, inputs, arena_bytes),
        "compressed": time_micro(compressed, inputs, arena),
    }
    return LutResult(
        compressed,
        plan,
        len(model_bytes),
        len(compressed),
        len(inputs),
        arena_bytes,
        arena,
        alt_bytes,
        arena_with_alt,
        latency,
    )


def _largest_decoded_bytes(plan) -> int:
    """DECODE outputs are planned like activations: the largest one must fit."""
    largest = max(tensor.bytes_before for tensor in plan if tensor.compressed)
    return aligned(largest)


def _lut_table(tensor) -> str:
    return "per tensor" if tensor.per_channel_axis is None else f"per channel (axis {tensor.per_channel_axis})"


def format_lut_section(result: LutResult) -> str:
    """The micro report's LUT section: per tensor what was done, and what it costs in RAM."""
    lines = [
        "## LUT compression",
        "",
        f"Flash {result.bytes_before:,} → {result.bytes_after:,} B. TFLite Micro outputs identical to the "
        f"uncompressed model's on {result.identical_samples} inputs.",
        "",
        markdown_table(
            ("tensor", "distinct values", "table", "index bits", "bytes before", "bytes after"),
            [
                (
                    f"`{tensor.name}`",
                    tensor.unique_values,
                    _lut_table(tensor) if tensor.compressed else "",
                    tensor.bits if tensor.compressed else "kept: " + tensor.reason,
                    f"{tensor.bytes_before:,}",
                    f"{tensor.bytes_after:,}",
                )
                for tensor in result.tensors
            ],
        ),
    ]
    if result.compressed:
        lines += [
            "",
            f"RAM: DECODE expands each compressed tensor before the op that reads it, so the arena "
            f"is {result.arena_bytes:,} B. With a separate decompression memory of "
            f"{result.alt_decompression_bytes:,} B (MicroInterpreter's alternate decompression memory), the "
            f"arena is {result.arena_with_alt_memory_bytes:,} B. TFLite Micro p50 on this host: "
            f"{result.latency['uncompressed'].p50:,.0f} us uncompressed, "
            f"{result.latency['compressed'].p50:,.0f} us compressed.",
            "",
            "Build TFLite Micro with compression support (make ... USE_TFLM_COMPRESSION=yes; bazel "
            "--//:with_compression) so the DECODE kernel exists; the generated header registers it.",
        ]
    return "\n".join(lines) + "\n"
