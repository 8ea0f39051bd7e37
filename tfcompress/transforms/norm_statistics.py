"""BatchNormalization statistics re-estimated on training images, for a measurement, then put back.

A pruned or clustered kernel shifts what the BatchNormalization after it sees; fine-tuning
re-learns those statistics within a few hundred steps, so an accuracy measured with the old
ones overstates what the change costs. On the bundled DS-CNN a 1×1 conv pruned to 70% loses
33 points with its old statistics and 3 with re-estimated ones (benchmarks/shrink.py's scan).
"""

import contextlib

from tfcompress import _keras
from tfcompress.data import one_or_tuple, per_input

__all__ = ["settled_statistics"]

BATCH = 128  # images per forward pass: bounded memory for any input size


@contextlib.contextmanager
def settled_statistics(model, images):
    """Inside: every BatchNormalization of `model` (nested ones too) holds the mean and variance of
    `images` (an array, or a tuple per input) passed through the model as it is now. On exit the
    statistics are what they were. Without BatchNormalization or images, nothing changes."""
    keras = _keras.tf_keras()
    norms = [layer for layer in model.submodules if isinstance(layer, keras.layers.BatchNormalization)]
    if not norms or images is None:
        yield model
        return
    kept = [(layer.momentum, layer.get_weights()) for layer in norms]
    try:
        arrays = per_input(images)
        for number, start in enumerate(range(0, len(arrays[0]), BATCH)):
            for layer in norms:
                layer.momentum = number / (number + 1)  # a running mean over the batches, the first taken whole
            model(one_or_tuple(tuple(array[start : start + BATCH] for array in arrays)), training=True)
        yield model
    finally:
        for layer, (momentum, weights) in zip(norms, kept):
            layer.momentum = momentum
            layer.set_weights(weights)
