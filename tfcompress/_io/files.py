"""Writing outputs so that a crash never leaves a half-written file or folder, nor hits an input.

Every output is written under a temporary sibling name, `.NAME.tmp-PID`, and renamed
into place; a later run removes such leftovers of processes that are gone. Output
paths are checked before the slow work: never an input, never a device or FIFO.
"""

import contextlib
import glob
import json
import math
import os
import shutil
import stat
from pathlib import Path
from typing import Optional

from tfcompress.errors import OutputError

__all__ = [
    "write_atomic",
    "write_json_atomic",
    "save_atomic",
    "atomic_folder",
    "check_writable",
    "check_not_inputs",
    "json_bytes",
    "path_size",
    "place_folder",
    "remove_stale",
    "temporary_name",
    "strict_json",
]

_TMP_MARK = ".tmp-"
_DEFAULT_MESSAGE = "Choose an output path in a folder that exists and is writable."


def write_atomic(path, data: bytes) -> Path:
    """Writes `data` to `path` through a temporary file in the same folder.

    Readers see the old file or the new one, never a partial one; on failure the
    temporary file is removed and an `OutputError` says which path was unwritable.
    """
    path = Path(path)

    def write(tmp):
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())

    return save_atomic(path, write)


def write_json_atomic(path, value) -> Path:
    return write_atomic(path, json_bytes(value))


def json_bytes(value) -> bytes:
    """A JSON report, strict: NaN and infinities are written as null, never as invalid JSON."""
    return (json.dumps(strict_json(value), indent=2, allow_nan=False) + "\n").encode()


def strict_json(value):
    """`value` with every non-finite float replaced by None (JSON has no NaN or Infinity), and
    floats rounded to 12 significant digits (0.1, not 0.10000000000000009)."""
    if isinstance(value, float):
        return float(f"{value:.12g}") if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(item) for item in value]
    return value


def save_atomic(path, save) -> Path:
    """Calls `save(tmp_path)` and renames the result to `path`.

    For writers that take a path rather than bytes (Keras `model.save`); the
    temporary name keeps the suffix, since Keras picks the format from it.
    """
    path = Path(path)
    check_writable(path)
    remove_stale(path.parent, path.name)
    tmp = temporary_name(path)
    try:
        save(str(tmp))
        os.replace(tmp, path)
    except OSError as error:
        raise OutputError(f"Cannot write {path}: {error.strerror or error}. {_DEFAULT_MESSAGE}") from None
    finally:
        _remove(tmp)
    return path


@contextlib.contextmanager
def atomic_folder(final):
    """`with atomic_folder(DIR) as staging:` write into `staging`; DIR is replaced whole at the end.

    A kill or a full disk leaves the old folder (or none) plus at most a temporary
    sibling, which the next run removes. An existing DIR is replaced only if it holds
    nothing but a previous tfcompress output (its report.json lists every file).
    """
    final = Path(final)
    _check_replaceable_folder(final)
    remove_stale(final.parent, final.name)
    staging = temporary_name(final)
    try:
        staging.mkdir()
        yield staging
        place_folder(staging, final)
    except OSError as error:
        raise OutputError(f"Cannot write {final}: {error.strerror or error}. {_DEFAULT_MESSAGE}") from None
    finally:
        _remove(staging)


def place_folder(finished: Path, final: Path) -> None:
    """Moves a finished folder to `final`, replacing an older one; never leaves a mix of the two."""
    old = temporary_name(final.with_name(f"{final.name}.old"))
    if final.exists():
        os.replace(final, old)
    os.replace(finished, final)
    _remove(old)


def remove_stale(folder: Path, name: str = "") -> None:
    """Deletes temporary files and folders (`.NAME*.tmp-PID*`) of processes that are gone."""
    if not Path(folder).is_dir():
        return
    for path in Path(folder).glob(f".{glob.escape(name)}*{_TMP_MARK}*"):  # a name may hold [ or *
        pid = path.name.rsplit(_TMP_MARK, 1)[-1].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            _remove(path)


def check_writable(path, *, inputs=()) -> None:
    """Fails before the slow work when an output cannot be written or would replace an input."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"Output path {path} is a folder; give a file name.")
    _check_regular_or_new(path)
    check_not_inputs(path, inputs)
    if not path.parent.is_dir() or not os.access(path.parent, os.W_OK):
        raise OutputError(f"Cannot write {path}: the folder {path.parent} does not exist or is not writable.")


def check_not_inputs(output, inputs, *, folder: bool = False) -> None:
    """Refuses an output that is (or, for a folder, contains) one of the input files."""
    output = Path(output)
    target = Path(os.path.realpath(output))
    for spec in inputs:
        if spec is None or not isinstance(spec, (str, os.PathLike)):
            continue
        source = Path(os.path.realpath(str(spec).partition("@")[0]))
        if source == target or (folder and target in source.parents) or _same_file(source, output):
            raise OutputError(f"Output {output} would overwrite the input {spec}; choose another output path.")


def _check_regular_or_new(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return
    except OSError as error:
        raise OutputError(f"Cannot write {path}: {error.strerror or error}. {_DEFAULT_MESSAGE}") from None
    if not stat.S_ISREG(mode):
        raise OutputError(f"Output {path} is not a regular file (a device, FIFO or socket); give a file path to write.")


def _check_replaceable_folder(final: Path) -> None:
    if final.exists() and not final.is_dir():
        raise OutputError(f"Output {final} is a file; give a folder path.")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"Cannot create the folder {final.parent}: {error.strerror or error}.") from None
    if not final.parent.is_dir() or not os.access(final.parent, os.W_OK):
        raise OutputError(f"Cannot write {final}: the folder {final.parent} does not exist or is not writable.")
    if not final.is_dir():
        return
    entries = {entry.name for entry in final.iterdir()}
    if not entries:
        return
    try:
        written = set(json.loads((final / "report.json").read_text())["files"]) | {"report.json"}
    except (OSError, ValueError, KeyError, TypeError):
        written = set()
    if not entries <= written:
        raise OutputError(
            f"Output folder {final} holds files tfcompress did not write ({', '.join(sorted(entries - written)[:3])}"
            "); give a new or empty folder, so that nothing of yours is replaced."
        )


def path_size(path) -> Optional[int]:
    """Bytes of a file, or of every file in a folder (a SavedModel); None without a path."""
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())
    return path.stat().st_size


def temporary_name(path: Path) -> Path:
    """`.NAME.tmp-PID.SUFFIX` beside `path`: hidden, owned by this process, the suffix kept for Keras."""
    return path.with_name(f".{path.name}{_TMP_MARK}{os.getpid()}{path.suffix}")


def _same_file(first: Path, second: Path) -> bool:
    try:
        return os.path.samefile(first, second)
    except OSError:
        return False


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
