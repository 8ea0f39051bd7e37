"""Per-layer sparsity and clusters from a sensitivity scan, ordered from the lightest touch to the heaviest.

Each layer starts unpruned and unclustered. A move takes one layer one notch along one of
its ladders (the next sparsity, or the next smaller cluster count); its price is the
one-shot accuracy drop it adds (the scan's), its worth the bytes it saves: the scan's
deflated int8 kernels for `size` (kernel_bytes.py), LUT index bits for `flash`. The chain
takes, step by step, the move saving the most bytes per point of drop (free moves first,
biggest first), so step i is one global aggressiveness, which `auto` bisects against the
budget with every probe fine-tuned and measured. Drops add across layers, which is the
scan's approximation; the fine-tuned measurement is what decides.

Moves the scan calls free are not always free once fine-tuned (lenet5's output layer at 4
clusters rather than 16: −0.2 pt one-shot, +0.17 pt fine-tuned), and the chain takes them early. So
when the bisection ends at a step over the budget, `relieved_allocations` offers that step
with its least-saving earlier moves taken back, one more at a time: sizes between the two
steps, for `auto` to bisect as well.

The chain's per-layer drops are one-shot and do not add once fine-tuned, so it can miss a plain
setting a person would try first: one sparsity and one cluster count for every layer, or for every
layer but the first and last (Deep Compression's habit). `uniform_front` lists those settings that
no other of them beats on both the estimate and the scan's drop, for `auto` to bisect too.
"""

import dataclasses
import math
from typing import Optional

__all__ = ["Allocation", "allocation_chain", "relieved_allocations", "uniform_front", "stored_bytes", "lut_bytes"]

_FREE = 0.01  # points: a smaller added drop is the scan's noise, the move is free


@dataclasses.dataclass(frozen=True)
class Allocation:
    """Per-layer settings: a sparsity (0: not pruned) and a cluster count (None: not clustered)."""

    sparsity: dict  # layer → fraction of zeros
    clusters: dict  # layer → shared values, or None
    estimated_bytes: float  # the scanned kernels as the objective stores them (stored_bytes, lut_bytes)
    scan_drop: float  # the layers' one-shot drops added: a ranking, not a forecast

    def describe(self) -> str:
        return ", ".join(f"{name} {self.sparsity[name]:.0%}/{self.clusters[name] or 'int8'}" for name in self.sparsity)


def stored_bytes(scan, sparsity: float, clusters: Optional[int]) -> float:
    """What the layer's int8 kernel takes after gzip at these notches, as the scan measured it."""
    return float(scan.stored_bytes[sparsity, clusters])


def lut_bytes(scan, sparsity: float, clusters: Optional[int]) -> float:
    """What TFLite Micro's LUT compression stores: a whole number of index bits per weight, for the
    clusters plus the zero pruning keeps (so pruning a clustered layer saves nothing here, or costs a bit)."""
    if clusters is None:
        return float(scan.weights)
    values = clusters + (sparsity > 0)
    return scan.weights * max(1, math.ceil(math.log2(values))) / 8


def allocation_chain(scans, cost=stored_bytes) -> list:
    """Allocations from none (step 0), one notch per step, to the smallest `cost(scan, sparsity,
    clusters)` estimate (later moves would only add drop)."""
    ladders = {scan.name: _ladders(scan) for scan in scans}
    layers = {scan.name: scan for scan in scans}
    position = {scan.name: (0, 0) for scan in scans}  # (sparsity notch, cluster notch)
    chain = [_allocation(scans, ladders, position, cost)]
    while True:
        moves = [
            (name, notches)
            for name, (sparsity, clusters) in position.items()
            for notches in ((sparsity + 1, clusters), (sparsity, clusters + 1))
            if notches[0] < len(ladders[name][0]) and notches[1] < len(ladders[name][1])
        ]
        if not moves:
            smallest = min(range(len(chain)), key=lambda step: chain[step].estimated_bytes)
            return chain[: smallest + 1]
        name, notches = max(moves, key=lambda move: _worth(ladders, layers, position, cost, *move))
        position = {**position, name: notches}
        chain.append(_allocation(scans, ladders, position, cost))


def relieved_allocations(chain: list, step: int) -> list:
    """`chain[step]` with its 1, 2, ... least-saving earlier moves taken back (each layer's from its
    last, the layer that `step` moves kept as it is), while what is taken back saves less than
    `step`'s own move: each is smaller than `chain[step - 1]` and, by the scan, safer than `chain[step]`."""
    moved = [_move(chain[number - 1], chain[number]) for number in range(1, step + 1)]
    kept_layer, own_saving = moved[-1][0], moved[-1][1]
    stacks = {}
    for name, saved, drop, before in moved[:-1]:
        if name != kept_layer:
            stacks.setdefault(name, []).append((saved, drop, before))
    relieved, current, given_back = [], chain[step], 0.0
    while stacks:
        name = min(stacks, key=lambda layer: stacks[layer][-1][0])
        saved, drop, before = stacks[name].pop()
        if not stacks[name]:
            del stacks[name]
        given_back += saved
        if given_back >= own_saving:
            break
        current = Allocation(
            sparsity={**current.sparsity, name: before[0]},
            clusters={**current.clusters, name: before[1]},
            estimated_bytes=current.estimated_bytes + saved,
            scan_drop=current.scan_drop - drop,
        )
        relieved.append(current)
    return relieved


def uniform_front(scans, cost=stored_bytes) -> list:
    """(label, Allocation) for each uniform setting, over every layer or every layer but the first and
    last, that no other uniform setting beats on both `cost` and the scan's drop, least aggressive first."""
    ladders = {scan.name: _ladders(scan) for scan in scans}
    names = [scan.name for scan in scans]
    scopes = {"": set(names), ", first and last kept": set(names[1:-1]) if len(names) > 2 else set()}
    sparsities, clusters = ladders[names[0]] if names else ([], [])
    settings = [
        (
            f"uniform {sparsities[s][0]:.0%}/{clusters[k][0] or 'int8'}{suffix}",
            _allocation(scans, ladders, {name: (s, k) if name in touched else (0, 0) for name in names}, cost),
        )
        for suffix, touched in scopes.items()
        if touched
        for s in range(len(sparsities))
        for k in range(len(clusters))
        if (s, k) != (0, 0)
    ]
    front, safest = [], math.inf
    for label, allocation in sorted(settings, key=lambda item: (item[1].estimated_bytes, item[1].scan_drop)):
        if allocation.scan_drop < safest:
            front.append((label, allocation))
            safest = allocation.scan_drop
    return front[::-1]


def _move(before: Allocation, after: Allocation) -> tuple:
    """(the layer a chain step changes, the bytes it saves, the drop it adds, that layer's settings before)."""
    (name,) = [
        name
        for name in after.sparsity
        if (after.sparsity[name], after.clusters[name]) != (before.sparsity[name], before.clusters[name])
    ]
    return (
        name,
        before.estimated_bytes - after.estimated_bytes,
        after.scan_drop - before.scan_drop,
        (before.sparsity[name], before.clusters[name]),
    )


def _ladders(scan) -> tuple:
    """([(sparsity, drop)] from 0, [(clusters, drop)] from none); negative drops (noise) count as none."""
    sparsities = [(0.0, 0.0)] + sorted((s, max(d, 0.0)) for s, d in scan.prune_drop.items())
    clusters = [(None, 0.0)] + sorted(((k, max(d, 0.0)) for k, d in scan.cluster_drop.items()), reverse=True)
    return sparsities, clusters


def _worth(ladders, layers, position, cost, name, notches) -> tuple:
    """(bytes saved per point of drop added, bytes saved): a move that adds no drop beats every other."""
    before, after = (_point(ladders[name], layers[name], where, cost) for where in (position[name], notches))
    saved, added = before[1] - after[1], after[0] - before[0]
    return (saved / max(added, _FREE), saved)


def _point(ladders, scan, notches, cost) -> tuple:
    (sparsity, sparsity_drop), (clusters, cluster_drop) = ladders[0][notches[0]], ladders[1][notches[1]]
    return sparsity_drop + cluster_drop, cost(scan, sparsity, clusters)


def _allocation(scans, ladders, position, cost) -> Allocation:
    points = {scan.name: _point(ladders[scan.name], scan, position[scan.name], cost) for scan in scans}
    return Allocation(
        sparsity={name: ladders[name][0][position[name][0]][0] for name in position},
        clusters={name: ladders[name][1][position[name][1]][0] for name in position},
        estimated_bytes=sum(size for _, size in points.values()),
        scan_drop=sum(drop for drop, _ in points.values()),
    )
