"""What a kernel costs in the exported file after gzip, at each sparsity and cluster count: measured, not estimated.

An entropy formula (where the zeros are, plus log2(clusters) bits per kept weight) priced
DS-CNN's kernels up to 1.6x off, and in both directions. int8 gives a Conv kernel one scale
per output channel, so 16 shared float values become up to 70 distinct bytes; gzip codes
bytes, at least one bit each, zeros too; and an unclustered int8 kernel, bell-shaped, codes
below 8 bits. The allocation chain ranks moves by the bytes they save, so each notch is priced
by making it: magnitude-pruned, clustered (1-D k-means, zeros kept), quantized and laid out as
the converter stores it, and deflated on its own. Fine-tuning moves the values, not the
counts, which is what the bytes follow.
"""

import zlib

import numpy as np

__all__ = ["kernel_bytes", "magnitude_pruned", "int8_kernel"]

_LLOYD_ROUNDS = 30  # 1-D k-means settles in a few; the cap bounds the work
_FIT_VALUES = 1 << 18  # centroids are fitted on at most this many values, evenly strided, then all assigned
_DEFLATED_BYTES = 1 << 20  # a bigger kernel is deflated in evenly spaced chunks of this much in all (gzip -9
_CHUNK = 1 << 16  # took 14 s on a 4096x4096 Dense at 90% zeros), each twice deflate's 32 KB window


def kernel_bytes(layer, sparsities, clusters) -> dict:
    """{(sparsity, clusters or None): deflated bytes} of the layer's kernel for 0 and each of `sparsities`,
    with no clustering and each of `clusters`; one int8 scale per output channel, but one for a Dense
    kernel, as `auto` exports it (`per_tensor_dense`)."""
    kernel = layer.kernel.numpy()
    per_channel = type(layer).__name__ != "Dense"
    sizes = {}
    for sparsity in (0.0, *sparsities):
        pruned = magnitude_pruned(kernel, sparsity)
        for count in (None, *clusters):
            shaped = pruned if count is None else _clustered(pruned, count)
            sizes[sparsity, count] = _deflated(int8_kernel(shaped, per_channel).tobytes())
    return sizes


def magnitude_pruned(kernel: np.ndarray, sparsity: float) -> np.ndarray:
    """The kernel with its `sparsity` fraction of smallest magnitudes set to zero."""
    magnitudes = np.abs(kernel).ravel()
    zeros = int(round(sparsity * magnitudes.size))
    if zeros == 0:
        return kernel
    threshold = np.partition(magnitudes, zeros - 1)[zeros - 1]
    return np.where(np.abs(kernel) <= threshold, 0.0, kernel).astype(kernel.dtype)


def int8_kernel(kernel: np.ndarray, per_channel: bool) -> np.ndarray:
    """Symmetric int8 as TFLite stores weights: output channels first (Keras keeps them last), one scale
    each or one for the tensor, zero kept at zero."""
    channels_first = np.moveaxis(kernel, -1, 0).reshape(kernel.shape[-1], -1)
    peak = np.abs(channels_first).max(axis=1, keepdims=True) if per_channel else np.abs(channels_first).max()
    scale = np.where(peak > 0, peak / 127.0, 1.0)
    return np.clip(np.round(channels_first / scale), -127, 127).astype(np.int8)


def _clustered(kernel: np.ndarray, count: int) -> np.ndarray:
    """The nonzero values replaced by the nearest of `count` centroids, from evenly spaced quantiles."""
    values = kernel[kernel != 0].astype(np.float64)
    if values.size <= count:
        return kernel
    sample = values[:: -(-values.size // _FIT_VALUES)]
    centroids = np.quantile(sample, (np.arange(count) + 0.5) / count)
    for _ in range(_LLOYD_ROUNDS):
        nearest = _nearest(sample, centroids)
        sums = np.bincount(nearest, weights=sample, minlength=count)
        members = np.bincount(nearest, minlength=count)
        moved = np.where(members > 0, sums / np.maximum(members, 1), centroids)
        if np.allclose(moved, centroids):
            break
        centroids = np.sort(moved)
    clustered = kernel.astype(np.float64)
    clustered[kernel != 0] = centroids[_nearest(values, centroids)]
    return clustered.astype(kernel.dtype)


def _nearest(values: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of each value's nearest centroid (sorted centroids: the midpoints split them)."""
    return np.searchsorted((centroids[1:] + centroids[:-1]) / 2, values)


def _deflated(data: bytes) -> int:
    """Raw deflate at gzip -9, without gzip's header: the kernel's share of a gzipped file (of a big
    kernel, evenly spaced chunks' share scaled to the whole)."""
    chunks = -(-len(data) // _CHUNK)
    kept = min(chunks, _DEFLATED_BYTES // _CHUNK)
    starts = [number * chunks // kept * _CHUNK for number in range(kept)]
    sample = b"".join(data[start : start + _CHUNK] for start in starts)
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    return round(len(packer.compress(sample) + packer.flush()) * len(data) / len(sample))
