"""Long-lived batch workers: TensorFlow imported once per worker, not once per model.

A worker is a `python -m tfcompress.pipeline.worker` process that runs `tfcompress`
commands one after another: the batch writes one JSON request per line to its stdin,
`{"argv": [...], "log": PATH}`; the worker runs the command with its file descriptors
1 and 2 (so native TensorFlow output too) appended to the log, starting from a cleared
Keras session so layer names and seeds are those of a fresh process, and answers
`{"exit_code": N}` on its stdout. A worker that dies mid-command (a crash, a kill) is
reported with its signal and replaced; the other workers go on.
"""

import json
import os
import queue
import subprocess
import sys
from pathlib import Path
from typing import Optional

__all__ = ["WorkerPool", "serve"]

PARENT_PID_VARIABLE = "TFCOMPRESS_PARENT_PID"  # workers exit when the batch process is gone, even after kill -9
_PR_SET_PDEATHSIG = 1


class _Worker:
    def __init__(self):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tfcompress.pipeline.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", PARENT_PID_VARIABLE: str(os.getpid())},
        )

    def run(self, argv: list, log: Path) -> Optional[int]:
        """The command's exit code, or None when the worker died running it."""
        try:
            self.process.stdin.write(json.dumps({"argv": argv, "log": str(log)}) + "\n")
            self.process.stdin.flush()
            reply = self.process.stdout.readline()
        except OSError:  # the worker is gone (a broken pipe)
            reply = ""
        return json.loads(reply)["exit_code"] if reply else None

    def stop(self) -> int:
        """Ends the worker (it exits when its stdin closes); its exit code."""
        try:
            self.process.stdin.close()
            return self.process.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            return self.process.wait()


class WorkerPool:
    """Workers started on demand, at most one per concurrent caller; a batch of cache hits starts none."""

    def __init__(self):
        self._idle = queue.SimpleQueue()
        self._all = []

    def run(self, argv: list, log: Path) -> int:
        """Runs `tfcompress ARGV` on an idle worker (a new one if none); a crash gives the worker's exit code."""
        try:
            worker = self._idle.get_nowait()
        except queue.Empty:
            worker = _Worker()
            self._all.append(worker)
        exit_code = worker.run(argv, log)
        if exit_code is None:
            return worker.stop()
        self._idle.put(worker)
        return exit_code

    def close(self) -> None:
        for worker in self._all:
            worker.stop()


def serve() -> None:
    """The worker's loop: one request per stdin line, until stdin closes."""
    _die_with_parent()
    replies = os.fdopen(os.dup(1), "w")
    quiet = os.open(os.devnull, os.O_WRONLY)
    os.dup2(quiet, 1)
    from tfcompress import _keras, cli

    for line in sys.stdin:
        request = json.loads(line)
        _keras.tf_keras().backend.clear_session()
        with open(request["log"], "a") as log:
            _output_to(log.fileno())
            try:
                exit_code = cli.main(["tfcompress", *request["argv"]])
            except SystemExit as exit:
                exit_code = exit.code if isinstance(exit.code, int) else 2
            finally:
                _output_to(quiet)
        replies.write(json.dumps({"exit_code": exit_code}) + "\n")
        replies.flush()


def _die_with_parent() -> None:
    """Arms the Linux parent-death signal: no orphaned worker after kill -9 of the batch."""
    parent = os.environ.pop(PARENT_PID_VARIABLE, None)  # not inherited by what the commands start
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if parent != str(os.getppid()):  # the batch died before the signal was armed
        os._exit(130)


def _output_to(descriptor: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(descriptor, 1)
    os.dup2(descriptor, 2)


if __name__ == "__main__":
    try:
        serve()
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; the batch reports it
        sys.exit(130)
