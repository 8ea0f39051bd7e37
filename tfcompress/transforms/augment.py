"""Batch augmentations for function matching: random shift, horizontal flip, mixup.

Teacher and student see the same augmented batch (Beyer et al. 2022), so the teacher supplies
targets for inputs no label was ever given for. Each batch is drawn afresh from seeded
generators, so a run repeats exactly.
"""

from tfcompress import _keras
from tfcompress.errors import OptionError

__all__ = ["AUGMENTATIONS", "check_names", "check_fits_inputs", "BatchAugmenter"]

AUGMENTATIONS = ("shift", "flip", "mixup")
_IMAGE_ONLY = ("shift", "flip")
SHIFT_FRACTION = 0.125  # of the height and width, at most: 3 pixels of a 28×28 image


def check_names(names) -> None:
    """Every name one of `AUGMENTATIONS` (a typo would otherwise train without it)."""
    if any(name not in AUGMENTATIONS for name in names):
        raise OptionError(f"augment takes {', '.join(AUGMENTATIONS)}. Received: augment={','.join(names)}")


def check_fits_inputs(names, input_shapes) -> None:
    """Each batch is augmented as one array, so augmenting needs a model with one input; shift and flip
    move pixels, so they need an image input: (height, width[, channels])."""
    if names and len(input_shapes) > 1:
        raise OptionError(
            f"augment={','.join(names)} needs a model with one input, but it takes {len(input_shapes)}. "
            "Leave augment out."
        )
    image_only = [name for name in names if name in _IMAGE_ONLY]
    if image_only and len(input_shapes[0]) not in (2, 3):
        raise OptionError(
            f"augment={','.join(image_only)} needs an image input (height, width[, channels]), but the "
            f"model takes {tuple(input_shapes[0])}. Use augment=mixup, which fits any input."
        )


class BatchAugmenter:
    """(x, label distributions) → the same batch augmented.

    shift: each image moved by up to `SHIFT_FRACTION` of its size, edges repeated.
    flip: half the images mirrored left-right (only where the classes allow it; the user says).
    mixup: each sample blended with another of the batch, its weight uniform in [0, 1]. The label
    distributions are blended the same way where both samples have one; a mix with an unlabelled
    sample has none (all zeros), so only the teacher supervises it.
    """

    def __init__(self, names, seed: int):
        keras = _keras.tf_keras()
        tf = _keras.tensorflow()
        self._image_layers = []
        if "shift" in names:
            self._image_layers.append(
                keras.layers.RandomTranslation(
                    SHIFT_FRACTION, SHIFT_FRACTION, fill_mode="nearest", interpolation="nearest", seed=seed
                )
            )
        if "flip" in names:
            self._image_layers.append(keras.layers.RandomFlip("horizontal", seed=seed + 1))
        self._mixup = "mixup" in names
        self._generator = tf.random.Generator.from_seed(seed + 2)

    def __call__(self, x, label_distributions):
        tf = _keras.tensorflow()
        x, label_distributions = tf.convert_to_tensor(x), tf.convert_to_tensor(label_distributions)
        if self._image_layers:
            without_channels = x.shape.rank == 3
            images = x[..., None] if without_channels else x
            for layer in self._image_layers:
                images = layer(images, training=True)
            x = images[..., 0] if without_channels else images
        if not self._mixup:
            return x, label_distributions
        batch = tf.shape(x)[0]
        partner = tf.argsort(self._generator.uniform([batch]))
        weight = self._generator.uniform([batch])
        x_weight = tf.reshape(weight, [-1] + [1] * (x.shape.rank - 1))
        mixed_x = x_weight * x + (1.0 - x_weight) * tf.gather(x, partner)
        partner_labels = tf.gather(label_distributions, partner)
        both_labelled = tf.logical_and(_labelled(label_distributions), _labelled(partner_labels))
        mixed_labels = weight[:, None] * label_distributions + (1.0 - weight[:, None]) * partner_labels
        return mixed_x, tf.where(both_labelled[:, None], mixed_labels, tf.zeros_like(mixed_labels))


def _labelled(label_distributions):
    tf = _keras.tensorflow()
    return tf.reduce_sum(label_distributions, axis=-1) > 0.5
