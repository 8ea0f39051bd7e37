"""A line per stage of a long command on stderr ("convert: calibrating and converting (int8)"),
and the total at the end, for a person watching a minute-long conversion.

On when stderr is a terminal; `--progress` turns it on in logs too, `--quiet` off. On a
pipe or in a CI log the default stays off, so an error is the only line on stderr.
"""

import contextlib
import sys
import time
from typing import Optional

__all__ = ["configure", "stage", "command"]

_enabled: Optional[bool] = None  # None: when stderr is a terminal
_command = "tfcompress"
_started = time.perf_counter()


def configure(enabled: Optional[bool]) -> None:
    """True or False forces stage lines on or off; None follows the terminal."""
    global _enabled
    _enabled = enabled


def _on() -> bool:
    return sys.stderr.isatty() if _enabled is None else _enabled


def stage(what: str) -> None:
    """Announces the next stage, with the seconds spent so far."""
    if _on():
        print(f"{_command}: {what} ({time.perf_counter() - _started:.1f} s)", file=sys.stderr, flush=True)


@contextlib.contextmanager
def command(name: str):
    """Frames one command: its stages are prefixed with its name, and the total is printed at the end."""
    global _command, _started
    _command, _started = f"tfcompress {name}", time.perf_counter()
    yield
    stage("done")
