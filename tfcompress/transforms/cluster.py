"""Weight clustering with tfmot: k shared values per kernel while fine-tuning, then stripped.

tfmot wraps a whole model or fails on its first unsupported layer, and reports nothing
after stripping. Here layers are chosen by regex with per-layer cluster counts, layers
with too few weights are left alone and listed, and `cluster_counts` reads back how
many distinct values each stripped kernel really holds (per channel when clustered per
channel), which is what entropy coding and TFLite Micro's LUT compression depend on.
"""

import dataclasses
import re
from typing import Optional

import numpy as np

from tfcompress import _keras
from tfcompress.errors import OptionError
from tfcompress.options import option
from tfcompress.transforms.graph import check_layer_pattern

__all__ = [
    "ClusterOptions",
    "clusterable_layer_names",
    "apply_clustering",
    "strip_clustering",
    "zeros_kept",
    "cluster_counts",
    "clusters_per_channel",
    "kernel_of",
    "is_clustered",
    "clustered_dense_layers",
    "INITS",
    "MAX_CLUSTERS",
]

MAX_CLUSTERS = 1024  # tfmot treats a kernel with more distinct values than this as not clustered
INITS = {"kmeans++": "KMEANS_PLUS_PLUS", "linear": "LINEAR", "density": "DENSITY_BASED", "random": "RANDOM"}


@dataclasses.dataclass(frozen=True)
class ClusterOptions:
    """How to cluster: the same object for an API call, CLI flags and a recipe step.

    `per_channel` clusters each output channel of a Conv2D separately (tfmot supports
    it for Conv2D only), which matches int8's per-channel scales; `preserve_sparsity`
    keeps pruned zeros at zero; `layer_clusters` maps layer names to their own count.
    """

    clusters: int = option(16, "Shared values per kernel (per channel with --per_channel).")
    init: str = option("kmeans++", "How the centroids start.", choices=INITS)
    per_channel: bool = option(False, "Cluster each Conv2D output channel separately (matches int8).")
    preserve_sparsity: bool = option(False, "Keep pruned zeros at zero, in every layer (after tfcompress prune).")
    layers: Optional[str] = option(None, "Cluster only layers whose name matches this regex.")
    layer_clusters: dict[str, float] = option({}, "Per-layer counts, over --clusters.")

    def __post_init__(self):
        for name, value in {
            "clusters": self.clusters,
            **{f"layer_clusters[{k}]": v for k, v in self.layer_clusters.items()},
        }.items():
            if value != int(value) or value < 2:
                raise OptionError(
                    f"{name} must be a whole number ≥ 2 (one cluster keeps no information). Received: {name}={value}"
                )
        if self.init not in INITS:
            raise OptionError(f"init must be one of {', '.join(INITS)}. Received: init={self.init!r}")
        check_layer_pattern(self.layers)

    def clusters_for(self, layer_name: str) -> int:
        return int(self.layer_clusters.get(layer_name, self.clusters))


def clusterable_layer_names(model, options: ClusterOptions) -> tuple:
    """(names of the layers to cluster, {name: why a matching layer is left alone})."""
    registry = _registry()
    unknown = sorted(set(options.layer_clusters) - {layer.name for layer in model.layers})
    if unknown:
        raise OptionError(
            f"layer_clusters names layers the model does not have: {', '.join(unknown)}. "
            f"Layers: {', '.join(layer.name for layer in model.layers)}"
        )
    chosen, skipped = [], {}
    for layer in model.layers:
        kernel = kernel_of(layer)
        if kernel is None or not registry.supports(layer):
            continue
        if options.layers is not None and not re.search(options.layers, layer.name):
            continue
        per_kernel = kernel.size // kernel.shape[-1] if clusters_per_channel(layer, options) else kernel.size
        if per_kernel <= options.clusters_for(layer.name):
            skipped[layer.name] = f"{per_kernel} weights, not more than {options.clusters_for(layer.name)} clusters"
            continue
        chosen.append(layer.name)
    if not chosen:
        raise OptionError(
            f"Model '{model.name}' has no layer to cluster with these options (clusterable: Dense, "
            "Conv, SeparableConv pointwise, Embedding, ... with more weights than clusters); "
            "check --layers and --clusters."
        )
    return chosen, skipped


def apply_clustering(model, options: ClusterOptions):
    """The model with the chosen layers wrapped for clustering, centroids initialised.

    tfmot's wrapper replaces the kernel of the layer it wraps with a tensor, which breaks
    that layer for anything after (pruning it fails with "EagerTensor has no attribute
    'assign'"), so a copy of the model is wrapped and the caller's model is left intact.
    """
    clustering = _keras.tfmot().clustering.keras
    chosen, _ = clusterable_layer_names(model, options)
    init = getattr(clustering.CentroidInitialization, INITS[options.init])
    keras = _keras.tf_keras()
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())

    def wrap(layer):
        if layer.name not in chosen:
            return layer
        return clustering.cluster_weights(
            layer,
            number_of_clusters=options.clusters_for(layer.name),
            cluster_centroids_init=init,
            preserve_sparsity=options.preserve_sparsity,
            cluster_per_channel=clusters_per_channel(layer, options),
        )

    return keras.models.clone_model(copy, clone_function=wrap)


def zeros_kept():
    """A Keras callback for `preserve_sparsity`: the layers tfmot does not wrap for clustering keep the
    zeros `prune` gave them. Without it, fine-tuning grows them back: a conv pruned to 90% and left
    unclustered held 11% zeros as int8 after 470 steps at lr 1e-4, and its gzip tripled."""
    keras = _keras.tf_keras()

    class ZerosKept(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            wrapped = {
                id(weight)
                for layer in self.model.submodules
                if type(layer).__name__.startswith("ClusterWeights")
                for weight in layer.weights
            }
            kernels = [w for w in self.model.trainable_weights if id(w) not in wrapped and len(w.shape) >= 2]
            values = [kernel.numpy() for kernel in kernels]
            self.masks = [(k, (v != 0).astype(v.dtype)) for k, v in zip(kernels, values) if not np.all(v)]

        def on_train_batch_end(self, batch, logs=None):
            for weight, kept in self.masks:
                weight.assign(weight * kept)

    return ZerosKept()


def strip_clustering(model):
    """The model without clustering wrappers: plain layers whose kernels hold the centroids."""
    return _keras.tfmot().clustering.keras.strip_clustering(model)


def cluster_counts(model, per_channel_layers=()) -> dict:
    """Layer name → distinct kernel values (the most in any output channel for `per_channel_layers`)."""
    counts = {}
    for layer in model.layers:
        kernel = kernel_of(layer)
        if kernel is None:
            continue
        if layer.name in per_channel_layers:
            channels = kernel.reshape(-1, kernel.shape[-1])
            counts[layer.name] = max(len(np.unique(channels[:, c])) for c in range(channels.shape[1]))
        else:
            counts[layer.name] = len(np.unique(kernel))
    return counts


def is_clustered(kernel: np.ndarray) -> bool:
    """Few shared values among the weights pruning kept: at most tfmot's limit, and at most a quarter
    of them (a kernel pruned to 99.9% holds few values, none shared)."""
    kept = kernel[kernel != 0]
    return kept.size > 0 and len(np.unique(kept)) <= min(MAX_CLUSTERS, kept.size // 4)


def clustered_dense_layers(model) -> list:
    """The names of the clustered Dense layers at any depth, in the model's order: those that int8 with
    a scale per output channel would spread over many values (convert with `per_tensor_dense`)."""
    found = []
    for layer in model.layers:
        if type(layer).__name__ == "Dense" and is_clustered(layer.kernel.numpy()):
            found.append(layer.name)
        elif hasattr(layer, "layers"):
            found += clustered_dense_layers(layer)
    return found


def kernel_of(layer) -> Optional[np.ndarray]:
    """The weight matrix clustering and pruning act on (pointwise for SeparableConv), or None."""
    for attribute in ("pointwise_kernel", "kernel", "embeddings"):
        weight = getattr(layer, attribute, None)
        if weight is not None and hasattr(weight, "numpy"):
            return weight.numpy()
    return None


def clusters_per_channel(layer, options: ClusterOptions) -> bool:
    """tfmot clusters per channel only Conv2D; other layers share one table."""
    return options.per_channel and type(layer).__name__ == "Conv2D"


def _registry():
    _keras.tfmot()
    from tensorflow_model_optimization.python.core.clustering.keras import clustering_registry

    return clustering_registry.ClusteringRegistry
