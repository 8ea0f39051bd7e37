"""`auto --train`'s pruned and clustered candidates: a per-layer sensitivity scan, a chain of
allocations from it, and a bisection of the chain against the budget; then a second bisection
between its last step within the budget and the first over it, that step with its least-saving
earlier moves taken back (transforms/allocation.py's `relieved_allocations`); last, the uniform
settings (`uniform_front`) the scan estimates smaller than the best allocation within the budget,
from the least aggressive on, since the chain's one-shot prices can pass over a plain setting
that holds up once fine-tuned.

The scan is cheap (no fine-tuning). Each probe of the bisection is the recipe a user would
run, prune then cluster keeping the zeros, fine-tuned for minutes and measured like every
other candidate, so probes are kept as they finish (jobs/_search_state.py): a search killed
at any point resumes with them. `time_budget` ends the search before a probe that, by the
longest one so far, would end after it.
"""

import dataclasses
import math
import re
import time
from typing import Optional

from absl import logging

from tfcompress import progress
from tfcompress.data import Dataset
from tfcompress.errors import TfcompressError
from tfcompress.jobs._loaded import LoadedModel
from tfcompress.jobs._search_state import SearchState
from tfcompress.jobs.auto import JUDGED_BY_THE_BUDGET, Budget, Candidate
from tfcompress.options import ShrinkOptions
from tfcompress.transforms.allocation import (
    Allocation,
    allocation_chain,
    lut_bytes,
    relieved_allocations,
    stored_bytes,
    uniform_front,
)
from tfcompress.transforms.layer_scan import MIN_WEIGHTS, LayerScan, scan_layers, scanned_layer_names
from tfcompress.transforms.training import label_task

__all__ = ["TrainingSearch", "training_search", "training_steps", "SCAN_SAMPLES"]

SCAN_SAMPLES = 2000  # eval images to measure on (0.05 pt ranks layers); as many training images settle BN
PRUNE_END = 2 / 3  # of the pruning epochs; the rest fine-tunes at the final sparsity
CLUSTER_LEARNING_RATE = 0.1  # of the pruning learning rate: the centroids only settle


@dataclasses.dataclass(frozen=True)
class TrainingSearch:
    scans: tuple  # LayerScan per scanned layer
    chain_length: int  # allocations from none (0) to the most aggressive
    probes: tuple  # Candidate per probe, in the order measured
    stopped: Optional[str] = None  # why the bisection ended before it converged

    def to_dict(self) -> dict:
        return {
            "scans": [scan.to_dict() for scan in self.scans],
            "chain_length": self.chain_length,
            "stopped": self.stopped,
        }


def training_search(
    model,
    train: Dataset,
    evaluation: Dataset,
    settings: tuple,
    measure,
    *,
    state: Optional[SearchState] = None,
    deadline: Optional[float] = None,
) -> TrainingSearch:
    """Bisects the allocation chain for its most aggressive step within the budget, then the relief
    between that step and the next, then the uniform settings estimated smaller than what passed;
    `settings` are auto's (AutoOptions, ShrinkOptions, LoadOptions);
    `measure(candidate, source)` converts and measures one fine-tuned model; the chain's estimate is
    the objective's (LUT index bits for flash, the scan's deflated kernels otherwise); `deadline` is a
    `time.monotonic()` value."""
    options, shrink, load = settings
    names = scanned_layer_names(model)
    if not names:
        return TrainingSearch(
            (), 0, (), f"no Dense or Conv layer of {MIN_WEIGHTS} weights or more to prune and cluster"
        )
    task = label_task(model, load.asked_tasks(model.output_names))
    scans = _scan(model, evaluation.take(SCAN_SAMPLES), train.take(SCAN_SAMPLES).x, names, state, task)
    cost = lut_bytes if options.objective == "flash" else stored_bytes
    chain = allocation_chain(scans, cost)
    prober = _Prober(model, train, settings, measure, state, deadline)
    last = len(chain) - 1
    over = prober.bisect(chain, 0, len(chain), lambda step: (f"probe-{step}", f"{step}/{last}"))
    if 1 < over < len(chain) and not prober.stopped:  # step `over` failed, the one before it passed
        relieved = relieved_allocations(chain, over)  # between the two, least aggressive last
        between = [chain[over - 1], *reversed(relieved), chain[over]]
        back = len(between) - 1  # index → moves taken back: len(relieved) at 1, one at the end's neighbour
        prober.bisect(between, 0, back, lambda i: (f"probe-{over}-{back - i}", f"{over}/{last} -{back - i}"))
    front = uniform_front(scans, cost)
    smaller = [index for index, (_, setting) in enumerate(front) if setting.estimated_bytes < prober.smallest_within]
    prober.gallop(
        [front[index][1] for index in smaller],
        lambda i: (f"uniform-{smaller[i]}", front[smaller[i]][0]),
    )
    return TrainingSearch(tuple(scans), len(chain), tuple(prober.probes), prober.stopped)


class _Prober:
    """Fine-tunes and measures allocations, each kept as it finishes, while the deadline allows."""

    def __init__(self, model, train: Dataset, settings: tuple, measure, state: Optional[SearchState], deadline):
        self.model, self.train, self.settings, self.measure = model, train, settings, measure
        self.state, self.deadline = state, deadline
        self.steps_per_epoch = math.ceil(len(train) / settings[1].batch_size)
        self.probes, self.longest, self.stopped = [], 0.0, None
        self.smallest_within = math.inf  # the estimate of the smallest allocation within the budget so far

    def bisect(self, allocations: list, within: int, over: int, names) -> int:
        """The first index over the budget in `allocations` (least aggressive first), between `within`
        (known within the budget) and `over` (known over it, or the end); `names(index)` is a probe's
        (record, label)."""
        while over - within > 1 and self._time_left():
            index = (within + over) // 2
            passed = self._try(allocations[index], *names(index), f"~{math.ceil(math.log2(over - within))} left")
            within, over = (index, over) if passed else (within, index)
        return over

    def gallop(self, allocations: list, names) -> None:
        """`bisect` for a list whose last setting within the budget is likely near its start: indices
        0, 1, 3, 7, ... until one is over, then bisection below it."""
        within, index = -1, 0
        while index < len(allocations) and self._time_left():
            if not self._try(allocations[index], *names(index), "from the least aggressive"):
                break
            within, index = index, 2 * index + 1
        self.bisect(allocations, within, min(index, len(allocations)), names)

    def _time_left(self) -> bool:
        if self.stopped is None and self.deadline is not None and time.monotonic() + self.longest > self.deadline:
            self.stopped = f"--time_budget reached after {len(self.probes)} probe(s); the search had not converged"
            logging.warning("auto: %s", self.stopped)
        return self.stopped is None

    def _try(self, allocation: Allocation, record: str, label: str, where: str) -> bool:
        """Probes one allocation, keeps it, and says whether it is within the budget."""
        started = time.monotonic()
        progress.stage(f"training probe {len(self.probes) + 1} ({label}, {where}): {allocation.describe()}")
        probe = self._probe(record, label, allocation)
        self.longest = max(self.longest, time.monotonic() - started)
        progress.stage(f"training probe {len(self.probes) + 1}: {_outcome(probe, Budget.of(self.settings[0]))}")
        self.probes.append(probe)
        if probe.within_budget:
            self.smallest_within = min(self.smallest_within, allocation.estimated_bytes)
        return probe.within_budget

    def _probe(self, record: str, label: str, allocation: Allocation) -> Candidate:
        """One allocation fine-tuned as its recipe steps say, converted and measured (or the kept record,
        judged against this run's budget)."""
        options, shrink, load = self.settings
        kept = self.state.load(record) if self.state else None
        if kept is not None:
            values, tflite = kept
            kept = Candidate(
                **{**values, "training": tuple(values["training"]), "warnings": tuple(values.get("warnings", ()))},
                tflite=tflite,
            )
            return kept.judged(Budget.of(options))
        from tfcompress.jobs.cluster import cluster
        from tfcompress.jobs.prune import prune

        steps = tuple(training_steps(allocation, shrink, self.steps_per_epoch))
        candidate = Candidate(
            f"pruned+clustered {label}: {allocation.describe()}", "int8", {"per_tensor_dense": True}, training=steps
        )
        current, warnings = self.model, []
        try:
            for each in steps:
                ((kind, step_options),) = each.items()
                job = {"prune": prune, "cluster": cluster}[kind]
                trained = job(current, self.train, load=load, verbose=2, **JUDGED_BY_THE_BUDGET, **step_options)
                current = trained.keras_model
                warnings += [f"{kind}: {warning}" for warning in trained.warnings]
        except TfcompressError as error:
            measured = dataclasses.replace(candidate, error=str(error))
        else:
            with LoadedModel(current) as source:
                measured = self.measure(candidate, source)
            measured = dataclasses.replace(measured, warnings=(*warnings, *measured.warnings))
        if self.state:
            self.state.save(record, measured.to_dict(), measured.tflite)
        return measured


def training_steps(allocation: Allocation, shrink: ShrinkOptions, steps_per_epoch: int) -> list:
    """The recipe steps that make an allocation: prune (if any layer is), then cluster keeping the zeros."""
    pruned = {name: s for name, s in allocation.sparsity.items() if s > 0}
    clustered = {name: k for name, k in allocation.clusters.items() if k is not None}
    steps = []
    if pruned:
        steps.append(
            {
                "prune": {
                    "target_sparsity": max(pruned.values()),
                    "layer_sparsity": pruned,
                    "layers": _only(pruned),
                    "end_step": max(1, round(shrink.prune_epochs * PRUNE_END)) * steps_per_epoch,
                    "epochs": shrink.prune_epochs,
                    "batch_size": shrink.batch_size,
                    "learning_rate": shrink.learning_rate,
                }
            }
        )
    if clustered:
        steps.append(
            {
                "cluster": {
                    "clusters": max(clustered.values()),
                    "layer_clusters": clustered,
                    "layers": _only(clustered),
                    "preserve_sparsity": bool(pruned),
                    "epochs": shrink.cluster_epochs,
                    "batch_size": shrink.batch_size,
                    "learning_rate": shrink.learning_rate * CLUSTER_LEARNING_RATE,
                }
            }
        )
    return steps


def _scan(model, data: Dataset, images, names, state: Optional[SearchState], task: str) -> list:
    kept = state.load("scan") if state else None
    if kept is not None:
        return [LayerScan.from_dict(values) for values in kept[0]]
    scans = scan_layers(model, data, names, images=images, task=task)
    if state:
        state.save("scan", [scan.to_dict() for scan in scans])
    return scans


def _outcome(probe: Candidate, budget: Budget) -> str:
    if probe.error:
        return f"failed: {probe.error}"
    verdict = "within the budget" if probe.within_budget else "over the budget"
    measured = budget.describe(budget.value(probe))
    if budget.measure == "accuracy_drop":
        measured = f"accuracy drop {measured}"
    return f"{probe.gzip_bytes:,} B after gzip, {measured}, {verdict}"


def _only(names) -> str:
    return "^(" + "|".join(re.escape(name) for name in names) + ")$"
