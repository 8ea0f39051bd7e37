"""Runs native code that may crash in a forked child, and brings back what it printed.

TFLite Micro kernels can segfault instead of returning an error (too small an arena,
an operator without tensors); in a child, a crash is an answer, not the end of the
user's process. Needs os.fork (Linux, macOS).
"""

import dataclasses
import faulthandler
import os
import signal
from typing import Callable, Optional

__all__ = ["ChildResult", "run_isolated"]


@dataclasses.dataclass(frozen=True)
class ChildResult:
    succeeded: bool  # `action` returned without raising
    printed: str  # what the child wrote to stdout and stderr (native code included)
    signal: Optional[int]  # the signal that killed it, if it crashed


def run_isolated(action: Callable[[], object], *, time_limit: Optional[int] = None) -> ChildResult:
    """Calls `action()` in a forked child. Import what it needs first, in the parent,
    so each child does not pay for the import again. A child still running after
    `time_limit` seconds is stopped by SIGALRM (a lock some other thread held at the fork)."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(reader)
        faulthandler.disable()  # a crash is reported by the exit status, not a traceback dump
        signal.alarm(time_limit or 0)
        os.dup2(writer, 1)
        os.dup2(writer, 2)
        code = 1
        try:
            action()
            code = 0
        except BaseException:  # noqa: BLE001 - the child reports only through its output and status
            pass
        finally:
            os._exit(code)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        printed = pipe.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    return ChildResult(
        os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0,
        printed,
        os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
    )
