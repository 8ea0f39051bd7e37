"""A content-addressed cache of expensive bytes (conversions), safe to interrupt.

Entries are named by a hash of everything that decides their content (the model
file's bytes, the options, the library versions, tfcompress's own source), so a
stale entry is never reused; each is written to a temporary name and renamed, so a crash never leaves
a half-written one. `TFCOMPRESS_CACHE_DIR` moves it; `TFCOMPRESS_CACHE_DIR=off`
turns it off.
"""

import functools
import hashlib
import importlib.metadata
import json
import os
from pathlib import Path
from typing import Callable, Optional

from tfcompress._io.files import write_atomic
from tfcompress.errors import OutputError

__all__ = ["cache_dir", "cached_bytes", "file_digest", "source_digest"]

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


@functools.cache
def source_digest() -> str:
    """tfcompress's version and its source: a changed checkout or build of the same version never
    reuses old entries (a conversion made before an export change would keep its old tensor order)."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256(importlib.metadata.version("tfcompress").encode())
    for path in sorted(p for p in package.rglob("*") if p.suffix in (".py", ".yaml")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
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
