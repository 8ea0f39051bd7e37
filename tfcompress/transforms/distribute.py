"""tf.distribute strategies by name (--strategy), built once per process.

MultiWorkerMirroredStrategy reads its cluster from TF_CONFIG and must exist before
TensorFlow runs its first op, once per process; so it is built once, before the model
is loaded, and kept. Every worker runs the same command; only the chief writes.
"""

import contextlib
import contextvars
import functools
import json
import os
import tempfile
from pathlib import Path

from tfcompress.errors import OptionError

__all__ = ["strategy_named", "is_chief", "worker_name", "worker_folder"]

_IN_WORKER_FOLDER = contextvars.ContextVar("in_worker_folder", default=False)


@functools.cache
def strategy_named(name: str):
    """The strategy for `TrainOptions.strategy`: None for "default"."""
    if name == "default":
        return None
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    _check_tf_config()
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as error:
        raise OptionError(
            f"--strategy multi_worker could not start: {error}. It must be built before any TensorFlow work: "
            "train from the command line or `tfcompress run`, which build it first."
        ) from None


def is_chief(strategy) -> bool:
    """Whether this process writes the outputs: the chief task, or worker 0 of a cluster without one."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "chief" or (not has_chief and resolver.task_type == "worker" and resolver.task_id == 0)


def worker_name(strategy) -> str:
    resolver = strategy.cluster_resolver
    return f"{resolver.task_type} {resolver.task_id}"


@contextlib.contextmanager
def worker_folder(strategy):
    """None on the chief (write where asked); on another worker, a temporary folder to write into
    instead, removed at the end. Within one, the steps of a recipe write where they are asked."""
    if is_chief(strategy) or _IN_WORKER_FOLDER.get():
        yield None
        return
    token = _IN_WORKER_FOLDER.set(True)
    try:
        with tempfile.TemporaryDirectory(prefix="tfcompress-worker-") as folder:
            yield Path(folder)
    finally:
        _IN_WORKER_FOLDER.reset(token)


def _check_tf_config() -> None:
    """A TF_CONFIG that names a cluster with workers and this process's task in it, or a one-line error."""
    try:
        config = json.loads(os.environ.get("TF_CONFIG", ""))
        machines = sum(len(addresses) for addresses in config["cluster"].values())
        well_formed = machines > 0 and isinstance(config["task"]["type"], str) and int(config["task"]["index"]) >= 0
    except (ValueError, KeyError, TypeError, AttributeError):
        well_formed = False
    if not well_formed:
        raise OptionError(
            "--strategy multi_worker needs TF_CONFIG: "
            '{"cluster": {"worker": ["host0:port", "host1:port"]}, "task": {"type": "worker", "index": 0}}, '
            "set on every worker with its own index."
        )
