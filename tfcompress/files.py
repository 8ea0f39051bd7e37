"""Writing outputs so that a crash never leaves a half-written file."""

import os
from pathlib import Path

from tfcompress.errors import OutputError

__all__ = ["write_atomic", "save_atomic", "check_writable"]


def write_atomic(path, data: bytes) -> Path:
    """Writes `data` to `path` through a temporary file in the same folder.

    Readers see the old file or the new one, never a partial one; on failure the
    temporary file is removed and an `OutputError` says which path was unwritable.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise OutputError(
            f"Cannot write {path}: {error.strerror or error}. "
            "Choose an output path in a folder that exists and is writable.") from None
    return path


def save_atomic(path, save) -> Path:
    """Calls `save(tmp_path)` and renames the result to `path`.

    For writers that take a path rather than bytes (Keras `model.save`); the
    temporary name keeps the suffix, since Keras picks the format from it.
    """
    path = Path(path)
    tmp = path.with_name(f".tmp{os.getpid()}-{path.name}")
    try:
        save(str(tmp))
        os.replace(tmp, path)
    except OSError as error:
        raise OutputError(
            f"Cannot write {path}: {error.strerror or error}. "
            "Choose an output path in a folder that exists and is writable.") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def check_writable(path) -> None:
    """Fails before the slow work when an output cannot be written."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"Output path {path} is a folder; give a file name.")
    if not path.parent.is_dir() or not os.access(path.parent, os.W_OK):
        raise OutputError(
            f"Cannot write {path}: the folder {path.parent} does not exist or is not writable.")
