"""Per-layer sensitivity: each layer pruned alone and clustered alone, accuracy measured without fine-tuning.

Deep Compression chose its per-layer sparsities from such a scan: a layer whose accuracy
falls at 50% zeros needs a light hand, one that holds at 95% can take more. One-shot drops
overstate what fine-tuning leaves, but they rank the layers and the steps of each ladder,
which is all the allocation (transforms/allocation.py) uses them for. Pruning zeroes the
smallest magnitudes, as tfmot's schedule does at its end; clustering is tfmot's, with its
initial centroids, which is where fine-tuning starts. Each pair of notches is also priced in
bytes, the kernel made and deflated (kernel_bytes.py), for the chain's `size` objective.

A pruned layer is measured with BatchNormalization statistics re-estimated on training images
(norm_statistics.py): its long fine-tune, at the full learning rate, re-learns them and more.
With the old ones a DS-CNN 1x1 conv at 70% zeros priced 33 pt (3 pt re-estimated), while the
fine-tuned hand-picked row, every 1x1 conv at 70%, gained 1.8 pt. A clustered layer is measured
as it stands: its fine-tune, a tenth of the rate and fewer epochs, recovers less. Priced with
re-estimated statistics too (at most 0.2 pt down to 16 clusters), the chain clustered every
DS-CNN conv to 8 or 4 before pruning any, and its fine-tuned step 18 lost 1.28 pt at 20,389 B
where this chain's step 27 gains 0.34 pt at 17,529 B (issue #21's notes). Fine-tuning each
notch as the probes do would not mend it alone (benchmarks/scan_prices.py): so priced, no DS-CNN
layer costs more than 1.2 pt at 90% zeros, and the chain on those prices, at the hand-picked row's
estimated size, was 1.1% smaller and 0.42 pt worse than it (forecast -0.03 pt, measured 1.20 pt
below the control): layers fine-tuned together do not add.

A model without classes (eval data without labels, `auto --max_relative_error`) is priced by the
relative RMS error of its outputs against the unchanged model's, in percent: like the accuracy
drops, it only has to rank the layers and their notches.
"""

import dataclasses

import numpy as np

from tfcompress import progress
from tfcompress.data import Dataset
from tfcompress.errors import OptionError
from tfcompress.runtime.metrics import fidelity, task_accuracy
from tfcompress.transforms.cluster import ClusterOptions, apply_clustering, clusterable_layer_names, strip_clustering
from tfcompress.transforms.kernel_bytes import kernel_bytes, magnitude_pruned
from tfcompress.transforms.norm_statistics import settled_statistics
from tfcompress.transforms.prune import PruneOptions, prunable_layer_names

__all__ = ["LayerScan", "scan_layers", "scanned_layer_names", "SPARSITIES", "CLUSTERS", "MIN_WEIGHTS"]

SPARSITIES = (0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99)
CLUSTERS = (32, 16, 8, 4)
MIN_WEIGHTS = 256  # fewer weights than this: a quarter of a KB as int8, not worth a scan


@dataclasses.dataclass(frozen=True)
class LayerScan:
    """One layer's one-shot accuracy drops (points against the unchanged model; on data without
    labels, the relative error of its outputs in percent), and what each combination of its
    notches stores (kernel_bytes.py)."""

    name: str
    weights: int  # elements of its kernel
    prune_drop: dict  # sparsity → drop, the layer pruned alone
    cluster_drop: dict  # clusters → drop, the layer clustered alone
    stored_bytes: dict  # (sparsity, clusters or None) → the int8 kernel's bytes after deflate

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "weights": self.weights,
            "prune_drop": {str(key): value for key, value in self.prune_drop.items()},
            "cluster_drop": {str(key): value for key, value in self.cluster_drop.items()},
            "stored_bytes": {f"{s}/{k or 'int8'}": size for (s, k), size in self.stored_bytes.items()},
        }

    @classmethod
    def from_dict(cls, values: dict) -> "LayerScan":
        return cls(
            values["name"],
            values["weights"],
            {float(key): value for key, value in values["prune_drop"].items()},
            {int(key): value for key, value in values["cluster_drop"].items()},
            {_notches(key): size for key, size in values["stored_bytes"].items()},
        )


def scanned_layer_names(model) -> list:
    """The layers with a `kernel` (Dense, Conv) that both tfmot steps take, of at least `MIN_WEIGHTS` weights."""
    try:
        clusterable, _ = clusterable_layer_names(model, ClusterOptions(clusters=max(CLUSTERS)))
        prunable = prunable_layer_names(model, PruneOptions())
    except OptionError:  # nothing to prune or cluster
        return []
    return [
        name
        for name in prunable
        if name in clusterable
        and getattr(model.get_layer(name), "kernel", None) is not None
        and np.prod(model.get_layer(name).kernel.shape) >= MIN_WEIGHTS
    ]


def scan_layers(
    model, data: Dataset, layers, *, images=None, sparsities=SPARSITIES, clusters=CLUSTERS, task: str = "softmax"
) -> list:
    """A `LayerScan` for each named layer, measured on `data` (labelled: accuracy drops, the output
    read as `task`; else the outputs' relative error), pruned ones with BatchNormalization statistics
    re-estimated on `images` (training inputs, or None: as they are); the model is left as it was."""
    reference = _outputs(model, data)
    with settled_statistics(model, images):
        settled_reference = _outputs(model, data)
    scans = []
    for number, name in enumerate(layers, 1):
        progress.stage(f"sensitivity scan: layer {number} of {len(layers)}, {name}")
        kernel = model.get_layer(name).kernel
        original = kernel.numpy()
        prune_drop = {}
        try:
            for sparsity in sparsities:
                kernel.assign(magnitude_pruned(original, sparsity))
                with settled_statistics(model, images):
                    prune_drop[sparsity] = _drop(settled_reference, _outputs(model, data), data, task)
        finally:
            kernel.assign(original)
        cluster_drop = {
            count: _drop(reference, _outputs(_clustered(model, name, count), data), data, task) for count in clusters
        }
        stored = kernel_bytes(model.get_layer(name), sparsities, clusters)
        scans.append(LayerScan(name, int(original.size), prune_drop, cluster_drop, stored))
    return scans


def _notches(key: str) -> tuple:
    sparsity, clusters = key.split("/")
    return float(sparsity), None if clusters == "int8" else int(clusters)


def _clustered(model, name: str, clusters: int):
    return strip_clustering(apply_clustering(model, ClusterOptions(clusters=clusters, layers=f"^{name}$")))


def _outputs(model, data: Dataset):
    return model.predict(data.x, batch_size=256, verbose=0)


def _drop(reference, outputs, data: Dataset, task: str) -> float:
    """Points of accuracy (as `task` reads the output) lost against the `reference` outputs; without
    labels, their relative error (%)."""
    if data.y is None:
        return round(fidelity(outputs, reference, task="regression").relative_error * 100, 4)
    return round((task_accuracy(reference, data.y, task) - task_accuracy(outputs, data.y, task)) * 100, 4)
