"""A content-addressed cache of expensive bytes (conversions), safe to interrupt.

Entries are named by a hash of everything that decides their content (the model
file's bytes, the options, the library versions), so a stale entry is never
reused; each is written to a temporary name and renamed, so a crash never leaves
a half-written one. `TFCOMPRESS_CACHE_DIR` moves it; `TFCOMPRESS_CACHE_DIR=off`
turns it off.
"""

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Optional

from tfcompress._io.files import write_atomic
from tfcompress.errors import OutputError

__all__ = ["cache_dir", "cached_bytes", "file_digest"]

_VARIABLE = "TFCOMPRESS_CACHE_DIR"


def cache_dir() -> Optional[Path]:
    """Where entries live, or None when caching is off."""
    configured = os.environ.get(_VARIABLE)
    if configured == "off":
        return None
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tfcompress"


def file_digest(path) -> str:
    """sha256 of a file, or of every file under a folder (a SavedModel), by relative path."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def cached_bytes(kind: str, key: dict, compute: Callable[[], bytes]) -> bytes:
    """`compute()`'s result, from the cache when an entry for `key` exists."""
    folder = cache_dir()
    if folder is None:
        return compute()
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    entry = folder / kind / name
    if entry.is_file():
        return entry.read_bytes()
    data = compute()
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(entry, data)
    except (OSError, OutputError):
        pass  # an unwritable cache costs time, never the result
    return data
