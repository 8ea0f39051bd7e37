"""Collects what native code prints straight to file descriptors 1 and 2.

The TFLite converter and the TFLite Micro interpreter write progress and errors from
C++; tfcompress keeps that off the user's terminal and reads the useful lines itself.
"""

import contextlib
import os
import tempfile
import threading

__all__ = ["captured_output"]


# File descriptors belong to the process: one capture at a time, so two threads never
# restore each other's descriptors (a thread may nest its own captures).
_CAPTURING = threading.RLock()


class CapturedOutput:
    text = ""


@contextlib.contextmanager
def captured_output():
    """`with captured_output() as captured:` ... then `captured.text` holds what was printed."""
    captured = CapturedOutput()
    with _CAPTURING, tempfile.TemporaryFile(mode="w+b") as sink:
        saved = [os.dup(1), os.dup(2)]
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for descriptor in saved:
                os.close(descriptor)
            sink.seek(0)
            captured.text = sink.read().decode(errors="replace")
