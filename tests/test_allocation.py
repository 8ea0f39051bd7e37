"""The allocation chain: from nothing to every layer at its hull's end, bytes falling step by step."""

import math

from tfcompress.transforms.allocation import allocation_chain, lut_bytes
from tfcompress.transforms.layer_scan import LayerScan

SPARSITIES = (0.5, 0.9, 0.99)
CLUSTERS = (16, 4)


def _scan(name, weights, prune_drops, cluster_drops):
    """A scan whose kernel stores where its zeros are (their entropy) and log2(values) bits per kept weight."""
    stored = {
        (sparsity, clusters): weights * (_entropy(sparsity) + (1 - sparsity) * math.log2(clusters or 256)) / 8
        for sparsity in (0.0, *SPARSITIES)
        for clusters in (None, *CLUSTERS)
    }
    return LayerScan(name, weights, dict(zip(SPARSITIES, prune_drops)), dict(zip(CLUSTERS, cluster_drops)), stored)


def _entropy(p):
    return 0.0 if p == 0.0 else -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def test_chain_goes_from_nothing_to_the_smallest_with_bytes_falling():
    scans = [
        _scan("big", 100_000, (0.0, 0.4, 8.0), (0.0, 1.0)),
        _scan("small", 2_000, (0.2, 3.0, 30.0), (0.5, 6.0)),
    ]
    chain = allocation_chain(scans)
    assert chain[0].sparsity == {"big": 0.0, "small": 0.0} and chain[0].clusters == {"big": None, "small": None}
    assert chain[-1].sparsity == {"big": 0.99, "small": 0.99} and chain[-1].clusters == {"big": 4, "small": 4}
    sizes = [allocation.estimated_bytes for allocation in chain]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes)
    # Free savings come first: the big layer loses nothing at 50% zeros or 16 clusters.
    assert chain[1].sparsity["small"] == 0.0 and chain[1].clusters["small"] is None
    # The sensitive small layer is touched only after the big one has given what it gives cheaply.
    first_small = next(i for i, a in enumerate(chain) if a.sparsity["small"] or a.clusters["small"])
    assert chain[first_small].sparsity["big"] >= 0.9


def test_a_layer_that_falls_apart_stays_light_until_the_end():
    scans = [
        _scan("robust", 50_000, (0.0, 0.1, 0.5), (0.0, 0.2)),
        _scan("fragile", 50_000, (5.0, 40.0, 80.0), (10.0, 60.0)),
    ]
    chain = allocation_chain(scans)
    first_fragile = next(i for i, a in enumerate(chain) if a.sparsity["fragile"] or a.clusters["fragile"])
    assert chain[first_fragile].sparsity["robust"] == 0.99  # it cost 0.5 pt there; the fragile one 10 at once
    # Negative one-shot drops (noise) count as none, never as a gain.
    assert allocation_chain([_scan("x", 5_000, (-0.3, 0.0, 1.0), (-0.1, 0.0))])[1].scan_drop == 0.0


def test_for_lut_flash_the_chain_clusters_and_stops_before_pruning_would_add_a_value():
    layer = _scan("layer", 8000, (0.0, 0.0, 0.0), (0.0, 0.0))
    assert lut_bytes(layer, 0.0, None) == 8000 and lut_bytes(layer, 0.0, 4) == 2000
    assert lut_bytes(layer, 0.9, 4) == 3000  # the zero is a fifth value: 3 index bits
    scans = [_scan("big", 100_000, (0.0, 0.0, 0.0), (0.0, 0.1)), _scan("small", 2_000, (0.0, 0.0, 0.0), (0.0, 0.0))]
    chain = allocation_chain(scans, lut_bytes)
    assert all(s == 0.0 for a in chain for s in a.sparsity.values())
    assert chain[-1].clusters == {"big": 4, "small": 4}


def test_relieved_allocations_take_back_the_least_saving_moves_and_stay_between_the_two_steps():
    from tfcompress.transforms.allocation import relieved_allocations

    scans = [
        _scan("big", 100_000, (0.0, 0.4, 8.0), (0.0, 1.0)),
        _scan("head", 800, (0.5, 3.0, 30.0), (0.0, 0.0)),  # "free" to cluster, by the scan
    ]
    chain = allocation_chain(scans)
    step = next(i for i, a in enumerate(chain) if a.sparsity["big"] == 0.99)  # the big layer's costly last notch
    relieved = relieved_allocations(chain, step)
    assert relieved, [a.describe() for a in chain]
    sizes = [a.estimated_bytes for a in relieved]
    assert (
        chain[step].estimated_bytes < sizes[0]
        and sizes == sorted(sizes)
        and sizes[-1] < chain[step - 1].estimated_bytes
    )
    assert all(a.sparsity["big"] == 0.99 and a.clusters["big"] == chain[step].clusters["big"] for a in relieved)
    # The head's cluster moves saved least: taken back first, its last one first.
    assert relieved[0].clusters["head"] == 16 and chain[step].clusters["head"] == 4


def test_the_uniform_front_is_one_setting_for_every_layer_or_all_but_the_ends_none_beaten_on_both_counts():
    from tfcompress.transforms.allocation import uniform_front

    scans = [
        _scan("first", 800, (0.5, 3.0, 30.0), (0.2, 6.0)),
        _scan("a", 50_000, (0.0, 0.4, 8.0), (0.0, 1.0)),
        _scan("b", 50_000, (0.1, 0.5, 9.0), (0.1, 1.5)),
        _scan("last", 900, (2.0, 20.0, 60.0), (0.0, 0.5)),
    ]
    front = uniform_front(scans)
    for label, allocation in front:
        touched = {name for name in allocation.sparsity if allocation.sparsity[name] or allocation.clusters[name]}
        assert touched in ({"first", "a", "b", "last"}, {"a", "b"}), label
        assert len({(allocation.sparsity[name], allocation.clusters[name]) for name in touched}) == 1, label
        assert label.endswith(", first and last kept") == (touched == {"a", "b"})
    sizes = [allocation.estimated_bytes for _, allocation in front]
    drops = [allocation.scan_drop for _, allocation in front]
    assert sizes == sorted(sizes, reverse=True) and drops == sorted(drops) and len(set(drops)) == len(drops)
    labels = [label for label, _ in front]
    # The ends cost 23 pt of scan drop at 90% for 1,700 weights' worth of bytes: only the middle goes there.
    assert "uniform 90%/16, first and last kept" in labels and "uniform 90%/16" not in labels
    assert "uniform 50%/16" not in labels  # bigger than the middle at 90%/16, and riskier by the scan
    assert not any(label.endswith("kept") for label, _ in uniform_front(scans[:2]))  # no middle to keep apart
