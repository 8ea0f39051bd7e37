"""A command's warnings said once. The jobs log each warning as they find it (a Python caller or a
`tools/` script sees it there) and also put it in their report, which the CLI prints with its
`WARNING:` lines; a CLI command would otherwise show it twice, and `auto`, which converts a model
a dozen ways, a dozen times. So while a command runs, tfcompress's own warnings are held,
each once; after its report is printed, only those the report does not carry go to stderr, and
when the command fails, all of them go there before the error: they may be why it failed. A
`tools/` script prints its report itself, so there what reached stdout is what counts as said.
"""

import contextlib
import logging
import sys
from pathlib import Path

from absl import logging as absl_logging

__all__ = ["HeldWarnings", "holding", "recording_stdout"]

_PACKAGE = str(Path(__file__).resolve().parent)


class HeldWarnings(logging.Filter):
    """Keeps tfcompress's warning records off the log, in the order first seen; lets others through."""

    def __init__(self):
        super().__init__()
        self.messages = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING or not str(Path(record.pathname).resolve()).startswith(_PACKAGE):
            return True
        message = record.getMessage()
        if message not in self.messages:
            self.messages.append(message)
        return False

    def unsaid(self, printed: str = "") -> list:
        """The held warnings that `printed` (the report as shown) does not contain."""
        return [message for message in self.messages if message not in printed]


@contextlib.contextmanager
def holding(held: HeldWarnings):
    """Holds tfcompress's warnings in `held` for the duration of the block."""
    logger = absl_logging.get_absl_logger()
    logger.addFilter(held)
    try:
        yield held
    finally:
        logger.removeFilter(held)


class _RecordedStream:
    """A stream that remembers what was written through it; everything else is the stream's."""

    def __init__(self, stream):
        self._stream = stream
        self._written = []

    def write(self, text: str) -> int:
        self._written.append(text)
        return self._stream.write(text)

    def text(self) -> str:
        return "".join(self._written)

    def __getattr__(self, name):
        return getattr(self._stream, name)


@contextlib.contextmanager
def recording_stdout():
    """sys.stdout, recorded for the duration of the block (yields the recorder: `.text()`)."""
    recorded = _RecordedStream(sys.stdout)
    with contextlib.redirect_stdout(recorded):
        yield recorded
