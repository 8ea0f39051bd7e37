"""Lookup-table (LUT) compression of a full-integer `.tflite` for TFLite Micro.

A weight tensor that holds few distinct values (after clustering) is stored as b-bit
indices into a table of those values, with the smallest b that loses nothing; TFLite
Micro's DECODE operator expands it again just before the op that reads it. Flash
shrinks by about 8/b for those tensors; the expanded tensor lives in RAM while its
op runs (in the tensor arena, or in an alternate decompression memory), so the arena
grows by the largest decoded tensor. The compressor is the one tflite-micro ships.
"""

import dataclasses
import math
from typing import Optional

import numpy as np

from tfcompress.errors import ConversionError
from tfcompress.runtime.inspect import constant_tensors
from tfcompress.runtime.weight_coding import unique_per_channel

__all__ = ["LutTensor", "plan_lut", "compress_lut", "DECODE_OP", "MAX_INDEX_BITS"]

DECODE_OP = "TFLM_DECODE"
MAX_INDEX_BITS = 7  # the DECODE metadata holds 1-7 index bits
_DECODE_HEADER_BYTES = 16  # DECODE Common Metadata before each value table


@dataclasses.dataclass(frozen=True)
class LutTensor:
    """One weight tensor: what it holds and whether (and how) it is compressed."""

    name: str
    index: int
    unique_values: int  # in the table's scope: the whole tensor or its busiest channel
    per_channel_axis: Optional[int]
    bits: Optional[int]  # None: kept as it is
    bytes_before: int
    bytes_after: int  # packed indices + value tables + header (= bytes_before if kept)
    reason: str = ""  # why it was kept, when it was

    @property
    def compressed(self) -> bool:
        return self.bits is not None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def plan_lut(model_bytes: bytes) -> tuple:
    """A `LutTensor` for every weight tensor (constant, rank ≥ 2, integer) of the model.

    A per-tensor quantized tensor gets one table; a per-channel quantized one a table
    per channel along its quantized axis.
    """
    return tuple(
        _plan_tensor(index, info, values)
        for index, info, values in constant_tensors(model_bytes)
        if values.ndim >= 2 and values.dtype.kind in "iu"
    )


def _plan_tensor(index, info, values: np.ndarray) -> LutTensor:
    axis = None
    if len(info.scales) > 1:
        # One table for a per-channel quantized tensor gave wrong outputs in TFLite Micro
        # (lenet5 convs, seen here); one table per channel along the quantized axis is exact.
        axis = info.quantized_dimension
        if axis not in (0, values.ndim - 1):  # the DECODE kernels take these axes
            return _kept(
                index,
                info,
                values,
                len(np.unique(values)),
                f"per-channel tables along axis {axis} are not supported by DECODE",
            )
    unique = unique_per_channel(info, values) if axis is not None else len(np.unique(values))
    bits, size = _lut_size(unique, axis, values)
    if bits > MAX_INDEX_BITS:
        return _kept(
            index,
            info,
            values,
            unique,
            f"{unique} distinct values need {bits} index bits; LUT holds "
            f"at most {2**MAX_INDEX_BITS} (cluster the layer first)",
        )
    if size >= values.nbytes:
        return _kept(index, info, values, unique, f"{bits}-bit indices and tables ({size:,} B) would not be smaller")
    return LutTensor(info.name, index, unique, axis, bits, values.nbytes, size)


def _kept(index, info, values: np.ndarray, unique: int, reason: str) -> LutTensor:
    """A tensor left as it is, and why."""
    return LutTensor(info.name, index, unique, None, None, values.nbytes, values.nbytes, reason)


def _lut_size(unique: int, axis: Optional[int], values: np.ndarray) -> tuple:
    """(index bits, compressed bytes) with one table, or one per channel along `axis`."""
    bits = max(1, math.ceil(math.log2(unique))) if unique > 1 else 1
    tables = 1 if axis is None else values.shape[axis]
    size = math.ceil(values.size * bits / 8) + tables * (2**bits) * values.itemsize + _DECODE_HEADER_BYTES
    return bits, size


def compress_lut(model_bytes: bytes, plan) -> bytes:
    """The model with the planned tensors LUT-compressed and DECODE operators inserted."""
    from tflite_micro.tensorflow.lite.micro.compression import compress, spec, spec_builder
    from tflite_micro.tensorflow.lite.micro.compression.compressor import CompressionError

    builder = spec_builder.SpecBuilder()
    for tensor in plan:
        if tensor.compressed:
            mode = spec.PerTensor() if tensor.per_channel_axis is None else spec.PerChannel(tensor.per_channel_axis)
            builder.add_tensor(0, tensor.index).with_lut(tensor.bits, mode)
    try:
        return bytes(compress(model_bytes, builder.build()))
    except CompressionError as error:
        raise ConversionError(f"TFLite Micro's compressor refused the model: {error}") from None
