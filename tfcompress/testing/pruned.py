"""A model pruned by magnitude in one shot, not fine-tuned: what a training step has to improve on."""

from tfcompress import _keras
from tfcompress.transforms.graph import copy_model
from tfcompress.transforms.kernel_bytes import magnitude_pruned

__all__ = ["one_shot_pruned"]


def one_shot_pruned(original, sparsity: float):
    """A copy of `original` with every Dense and Conv2D kernel `sparsity` zeros by magnitude."""
    keras = _keras.tf_keras()
    model = copy_model(original)
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D)):
            layer.kernel.assign(magnitude_pruned(layer.kernel.numpy(), sparsity))
    return model
