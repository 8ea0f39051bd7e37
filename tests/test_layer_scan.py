"""The sensitivity scan measures pruned layers with BatchNormalization statistics settled on
training images, as their fine-tuning would leave them, clustered ones as they stand, and leaves
the model as it was."""

import numpy as np

from tfcompress.data import load_data
from tfcompress.transforms.layer_scan import scan_layers
from tfcompress.transforms.norm_statistics import settled_statistics

DATA = "sample_models/data"


def test_settled_statistics_are_the_images_inside_and_the_old_ones_after(tf_keras):
    keras = tf_keras
    keras.utils.set_random_seed(0)
    inner = keras.Sequential([keras.layers.Dense(3), keras.layers.BatchNormalization()])
    inputs = keras.Input((4,))
    features = keras.layers.Dense(5, name="features")(inputs)
    model = keras.Model(inputs, inner(keras.layers.BatchNormalization(name="outer")(features)))
    images = np.random.default_rng(0).normal(5.0, 3.0, (256, 4)).astype(np.float32)  # two whole batches
    before = [w.copy() for w in model.get_weights()]

    with settled_statistics(model, images):
        outer = model.get_layer("outer")
        seen = model.get_layer("features")(images).numpy()
        np.testing.assert_allclose(outer.moving_mean.numpy(), seen.mean(axis=0), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(outer.moving_variance.numpy(), seen.var(axis=0), rtol=0.05)
        assert not np.allclose(inner.layers[1].moving_mean.numpy(), 0.0)  # the nested one settled too

    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert outer.momentum == 0.99 and inner.layers[1].momentum == 0.99


def test_scan_of_a_pruned_conv_before_batch_norm_counts_what_fine_tuning_keeps(tf_keras):
    """The bundled DS-CNN's 1x1 conv pruned to 70%: with its old BatchNormalization statistics it
    loses tens of points, with settled ones a few, close to what the fine-tuned recipe keeps. The
    clustered layer's drop does not depend on the images."""
    model = tf_keras.models.load_model("sample_models/dscnn.h5", compile=False)
    evaluation = load_data(f"{DATA}/fashion_mnist_eval.npz")
    calibration = load_data(f"{DATA}/fashion_mnist_calib.npz").x
    before = [w.copy() for w in model.get_weights()]

    (stale,) = scan_layers(model, evaluation, ["conv2d_3"], sparsities=(0.7,), clusters=(8,))
    (settled,) = scan_layers(model, evaluation, ["conv2d_3"], images=calibration, sparsities=(0.7,), clusters=(8,))

    assert stale.prune_drop[0.7] > 20 and settled.prune_drop[0.7] < 10
    assert settled.cluster_drop == stale.cluster_drop
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
