"""Which shard of a batch this job runs: from the flags, else from the CI engine's environment.

A matrix of CI jobs, a Kubernetes Indexed Job or a SLURM array runs the same command on
every machine; each engine tells a job its place in variables of its own. The flags win;
then TFCOMPRESS_SHARD_INDEX / TFCOMPRESS_NUM_SHARDS (set them from a GitHub Actions
matrix: `${{ strategy.job-index }}`, `${{ strategy.job-total }}`); then the engines below.
"""

import dataclasses
import os
from typing import Mapping, Optional

from tfcompress.errors import OptionError

__all__ = ["Shard", "ONE_MACHINE", "resolve_shard"]


@dataclasses.dataclass(frozen=True)
class Shard:
    index: int  # 0-based
    count: int
    source: str  # where the numbers came from, printed at the start

    def __post_init__(self):
        if self.count < 1 or not 0 <= self.index < self.count:
            raise OptionError(
                f"The shard index must be in 0..num_shards-1. Received: index {self.index}, "
                f"{self.count} shards (from {self.source})."
            )

    def describe(self) -> str:
        return f"shard {self.index} of {self.count}, 0-based, from {self.source}"

    def pick(self, models: list) -> list:
        """Every `count`-th model from `index`: the shards of one list are disjoint and cover it."""
        return models[self.index :: self.count]

    def to_dict(self) -> dict:
        return {"index": self.index, "count": self.count}


ONE_MACHINE = Shard(0, 1, "the defaults")


# (index variable, count variable, index of the first job): each engine's own names.
_ENGINES = (
    ("TFCOMPRESS_SHARD_INDEX", "TFCOMPRESS_NUM_SHARDS", 0),
    ("JOB_COMPLETION_INDEX", None, 0),  # Kubernetes Indexed Job: the count is the Job's `completions`
    ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", 0),  # counted from SLURM_ARRAY_TASK_MIN by _STEP
    ("CI_NODE_INDEX", "CI_NODE_TOTAL", 1),  # GitLab CI `parallel:`
    ("BUILDKITE_PARALLEL_JOB", "BUILDKITE_PARALLEL_JOB_COUNT", 0),
    ("CIRCLE_NODE_INDEX", "CIRCLE_NODE_TOTAL", 0),
)


def resolve_shard(index: Optional[int], count: Optional[int], environ: Mapping = os.environ) -> Shard:
    """The shard from --shard_index/--num_shards where given, else from the first engine whose index is set."""
    if index is not None:
        return Shard(index, 1 if count is None else count, "--shard_index")
    for index_variable, count_variable, first in _ENGINES:
        if environ.get(index_variable, "") == "":
            continue
        position = _integer(environ, index_variable)
        if index_variable == "SLURM_ARRAY_TASK_ID":
            start, step = _integer(environ, "SLURM_ARRAY_TASK_MIN", 0), _integer(environ, "SLURM_ARRAY_TASK_STEP", 1)
            position = (position - start) // max(step, 1)
        total, total_source = _count(environ, count, count_variable, index_variable)
        return Shard(position - first, total, f"{index_variable}={environ[index_variable]}, {total_source}")
    if count not in (None, 1):
        raise OptionError(
            f"--num_shards {count} needs this job's index: pass --shard_index, or run where an engine sets one "
            "(TFCOMPRESS_SHARD_INDEX, JOB_COMPLETION_INDEX, SLURM_ARRAY_TASK_ID, CI_NODE_INDEX)."
        )
    return ONE_MACHINE


def _count(environ: Mapping, flag: Optional[int], variable: Optional[str], index_variable: str) -> tuple:
    if flag is not None:
        return flag, f"--num_shards {flag}"
    for name in (variable, "TFCOMPRESS_NUM_SHARDS"):
        if name and environ.get(name, "") != "":
            return _integer(environ, name), f"{name}={environ[name]}"
    raise OptionError(
        f"{index_variable} is set but the number of shards is not: pass --num_shards "
        "(for a Kubernetes Indexed Job, its `completions`) or set TFCOMPRESS_NUM_SHARDS."
    )


def _integer(environ: Mapping, name: str, default: Optional[int] = None) -> int:
    text = environ.get(name, "")
    if text == "" and default is not None:
        return default
    try:
        return int(text)
    except ValueError:
        raise OptionError(f"{name} must be a whole number. Received: {name}={text!r}") from None
