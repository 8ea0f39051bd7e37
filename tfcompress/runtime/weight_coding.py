"""Deep Compression size accounting: what a pruned, clustered `.tflite` costs once coded.

The flatbuffer stores one byte per int8 weight whatever its value, so pruning and
clustering pay off only after compression. gzip is what a download sees; the entropy
bound and a Huffman code of the values plus the sparse relative indices (Han et al.,
"Deep Compression", 2016) are what a coder made for weights reaches. Weight tensors are
the constant tensors of rank ≥ 2 (kernels); the rest of the file is counted as stored.
The entropy bound treats values as independent; sparse coding can go below it when
pruned zeros come in runs. No TensorFlow here.
"""

import dataclasses
import gzip
import heapq
from typing import Optional

import numpy as np

from tfcompress.runtime.inspect import constant_values, gzip_size

__all__ = ["TensorCoding", "WeightCoding", "code_weights", "code_arrays", "huffman_bits", "unique_per_channel"]

# Relative-index widths tried for sparse coding; Deep Compression used 5 bits (fc) and 8 (conv).
INDEX_BITS = range(2, 9)


@dataclasses.dataclass(frozen=True)
class TensorCoding:
    name: str
    shape: tuple
    raw_bytes: int
    sparsity: float  # fraction of exact zeros
    unique_values: int
    unique_per_channel: Optional[int]  # the most in any channel of a per-channel quantized tensor
    entropy_bits: float  # Shannon entropy of the values, bits per weight
    huffman_bytes: int  # the better of dense and sparse Huffman coding, tables included
    coding: str  # "dense" or "sparse, N-bit index"

    @property
    def entropy_bytes(self) -> float:
        return self.entropy_bits * int(np.prod(self.shape)) / 8

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "shape": list(self.shape), "entropy_bytes": round(self.entropy_bytes)}


@dataclasses.dataclass(frozen=True)
class WeightCoding:
    model_bytes: int  # the .tflite as stored
    gzip_bytes: int
    tensors: tuple  # TensorCoding per weight tensor

    @property
    def other_bytes(self) -> int:
        """Everything that is not a weight tensor (graph, biases, scales), counted as stored."""
        return self.model_bytes - sum(t.raw_bytes for t in self.tensors)

    @property
    def entropy_bound_bytes(self) -> int:
        return self.other_bytes + round(sum(t.entropy_bytes for t in self.tensors))

    @property
    def huffman_bytes(self) -> int:
        return self.other_bytes + sum(t.huffman_bytes for t in self.tensors)

    def to_dict(self) -> dict:
        return {
            "model_bytes": self.model_bytes,
            "gzip_bytes": self.gzip_bytes,
            "other_bytes": self.other_bytes,
            "entropy_bound_bytes": self.entropy_bound_bytes,
            "huffman_bytes": self.huffman_bytes,
            "tensors": [t.to_dict() for t in self.tensors],
        }


def code_weights(model_bytes: bytes) -> WeightCoding:
    """Sparsity, distinct values, entropy and Huffman size of every weight tensor of a `.tflite`."""
    tensors = tuple(_code_tensor(info, values) for info, values in constant_values(model_bytes) if values.ndim >= 2)
    return WeightCoding(len(model_bytes), gzip_size(model_bytes), tensors)


def huffman_bits(counts) -> int:
    """Coded length in bits of a stream with these symbol counts under an optimal prefix code.

    Merges equal weights a group at a time: a float kernel's 250,000 distinct values (count 1
    each) take 18 merges instead of 250,000 heap operations. The total is the same for every
    optimal code, so it does not depend on how ties are broken.
    """
    if len(counts) == 1:
        return int(counts[0])  # one symbol still costs a bit per occurrence
    weights, multiplicities = np.unique(np.asarray(counts, dtype=np.int64), return_counts=True)
    groups = dict(zip(weights.tolist(), multiplicities.tolist()))  # weight → how many nodes of it
    heap = list(groups)
    heapq.heapify(heap)
    nodes, bits = len(counts), 0

    def add(weight: int, count: int) -> None:
        if weight not in groups:
            heapq.heappush(heap, weight)
        groups[weight] = groups.get(weight, 0) + count

    def take(weight: int, count: int) -> None:
        groups[weight] -= count
        if not groups[weight]:
            del groups[weight]
            heapq.heappop(heap)  # `weight` is the smallest: the heap's top

    while nodes > 1:
        smallest = heap[0]
        pairs = groups[smallest] // 2
        if pairs:  # the two smallest nodes are both `smallest`: merge them pairwise
            take(smallest, 2 * pairs)
            add(2 * smallest, pairs)
            bits, nodes = bits + 2 * smallest * pairs, nodes - pairs
        else:  # a lone smallest node merges with one of the next smallest
            take(smallest, 1)
            following = heap[0]
            take(following, 1)
            add(smallest + following, 1)
            bits, nodes = bits + smallest + following, nodes - 1
    return bits


def code_arrays(arrays) -> dict:
    """Raw, gzip and Huffman-coded bytes of weight arrays (a Keras model's kernels): where pruning
    and clustering show, since zeros and shared values cost the same raw bytes."""
    arrays = [np.asarray(array) for array in arrays]
    raw = b"".join(array.tobytes() for array in arrays)
    return {
        "raw_bytes": len(raw),
        "gzip_bytes": len(gzip.compress(raw, compresslevel=9, mtime=0)),
        "huffman_bytes": sum(_best_huffman(array.reshape(-1))[0] for array in arrays if array.size),
    }


def _best_huffman(flat: np.ndarray) -> tuple:
    """(bytes, coding) of the better of dense and sparse Huffman coding of these values."""
    _, counts = np.unique(flat, return_counts=True)
    symbol_bytes = flat.dtype.itemsize
    best_bytes, coding = _huffman_bytes(counts, symbol_bytes), "dense"
    for bits in INDEX_BITS if np.any(flat == 0) else ():
        sparse_bytes = _sparse_huffman_bytes(flat, bits, symbol_bytes)
        if sparse_bytes < best_bytes:
            best_bytes, coding = sparse_bytes, f"sparse, {bits}-bit index"
    return best_bytes, coding


def _code_tensor(info, values: np.ndarray) -> TensorCoding:
    flat = values.reshape(-1)
    symbols, counts = np.unique(flat, return_counts=True)
    probabilities = counts / flat.size
    entropy_bits = float(-np.sum(probabilities * np.log2(probabilities)))
    best_bytes, coding = _best_huffman(flat)
    return TensorCoding(
        info.name,
        tuple(values.shape),
        values.nbytes,
        float(np.mean(flat == 0)),
        len(symbols),
        unique_per_channel(info, values),
        entropy_bits,
        best_bytes,
        coding,
    )


def _huffman_bytes(counts, symbol_bytes: int) -> int:
    """Coded bits of the stream plus its table (each symbol and its code length)."""
    return -(-huffman_bits(counts) // 8) + len(counts) * (symbol_bytes + 1)


def _sparse_huffman_bytes(flat: np.ndarray, index_bits: int, symbol_bytes: int) -> int:
    """Non-zero values and the gaps between them, each Huffman-coded (Deep Compression, §3).

    A gap wider than the index can hold is bridged by filler entries: a stored zero
    with the widest gap each.
    """
    positions = np.flatnonzero(flat)
    if positions.size == 0:
        return 1
    widest = 2**index_bits
    steps = np.diff(positions, prepend=-1)  # ≥ 1
    fillers = (steps - 1) // widest
    remaining = steps - fillers * widest  # in 1..widest
    filler_count = int(fillers.sum())
    _, value_counts = np.unique(flat[positions], return_counts=True)
    gap_counts = np.bincount(remaining, minlength=widest + 1)
    gap_counts[widest] += filler_count
    if filler_count:
        value_counts = np.append(value_counts, filler_count)  # the filler's stored zero
    return _huffman_bytes(value_counts, symbol_bytes) + _huffman_bytes(gap_counts[gap_counts > 0], 1)


def unique_per_channel(info, values: np.ndarray) -> Optional[int]:
    """The most distinct values in any channel of a per-channel quantized tensor (None if per tensor)."""
    if len(info.scales) <= 1:
        return None
    channels = np.moveaxis(values, info.quantized_dimension, 0).reshape(values.shape[info.quantized_dimension], -1)
    return max(len(np.unique(channel)) for channel in channels)
