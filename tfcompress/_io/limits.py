"""Bounds on what an input file may make tfcompress open, read or allocate.

Every file is treated as hostile: a size it declares (an archive member, an array
header, a tensor shape, an image's dimensions) is checked here before anything is
allocated, and only regular files are opened, so a FIFO or a device never blocks a
run. Each limit has an environment variable for users whose real inputs are larger.
Imports nothing heavy: the TensorFlow-free runtime uses it too.
"""

import dataclasses
import os
import stat
from pathlib import Path

from tfcompress.errors import TfcompressError

__all__ = [
    "Limit",
    "CONFIG_BYTES",
    "WEIGHT_BYTES",
    "INPUT_ELEMENTS",
    "DATA_BYTES",
    "IMAGE_PIXELS",
    "TEXT_BYTES",
    "COMPRESSION_RATIO",
    "NESTING_DEPTH",
    "check_input_file",
]


@dataclasses.dataclass(frozen=True)
class Limit:
    """One bound, with the environment variable that raises it."""

    variable: str
    default: int
    what: str  # "a model config", in the sentence "... declares {what} of N"

    @property
    def value(self) -> int:
        text = os.environ.get(self.variable)
        if text is None:
            return self.default
        try:
            return int(float(text))
        except ValueError:
            raise TfcompressError(f"{self.variable} must be a number. Received: {self.variable}={text!r}") from None

    def check(self, amount: int, source, error_type=TfcompressError, unit: str = "bytes") -> None:
        """Raises `error_type` with one line naming the file, the amount and the variable."""
        if amount > self.value:
            raise error_type(
                f"{source} declares {self.what} of {amount:,} {unit}, over the limit of {self.value:,}. "
                f"If the file is genuine, raise the limit with {self.variable}={amount}."
            )


CONFIG_BYTES = Limit("TFCOMPRESS_MAX_CONFIG_BYTES", 64 << 20, "a model config")
WEIGHT_BYTES = Limit("TFCOMPRESS_MAX_WEIGHT_BYTES", 2 << 30, "weights")
INPUT_ELEMENTS = Limit("TFCOMPRESS_MAX_INPUT_ELEMENTS", 1 << 26, "a tensor")
DATA_BYTES = Limit("TFCOMPRESS_MAX_DATA_BYTES", 4 << 30, "an array")
IMAGE_PIXELS = Limit("TFCOMPRESS_MAX_IMAGE_PIXELS", 1 << 26, "an image")
TEXT_BYTES = Limit("TFCOMPRESS_MAX_TEXT_BYTES", 1 << 20, "a text file")
# Uncompressed / compressed size of an archive member: past this it is a decompression bomb.
COMPRESSION_RATIO = Limit("TFCOMPRESS_MAX_COMPRESSION_RATIO", 200, "a compression ratio")
NESTING_DEPTH = Limit("TFCOMPRESS_MAX_NESTING_DEPTH", 100, "a nesting depth")


def check_input_file(path, what: str, error_type=TfcompressError, folder_ok: bool = False) -> Path:
    """The path, if it is an existing regular file (or folder, when `folder_ok`).

    FIFOs, sockets and devices are refused before they are opened: reading one
    would block or never end.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise error_type(f"{what} not found: {path}") from None
    except OSError as error:
        raise error_type(f"Cannot read {what} {path}: {error.strerror or error}.") from None
    if stat.S_ISREG(mode) or (folder_ok and stat.S_ISDIR(mode)):
        return path
    kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file (a FIFO, socket or device)"
    raise error_type(f"{what} {path} is {kind}; give a regular file.")
