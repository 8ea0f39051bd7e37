"""A content-addressed cache of output folders, safe against kills and shared between runs.

An entry is a finished folder named by its key. It is assembled under a temporary
name, its manifest (sha256 of every file) written last, and renamed into place, so
a reader sees a whole entry or none; a per-key lock (flock, released by the kernel
when its holder dies) makes a second run wait for the first instead of computing
the same entry twice. Fetching checks the manifest, so a damaged entry is redone.
Imports no TensorFlow: a cache hit costs a copy.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from pathlib import Path

from tfcompress._io.files import remove_stale, temporary_name
from tfcompress.errors import OutputError

__all__ = ["FolderCache", "entry_files", "sha256_of"]

_MANIFEST = ".manifest.json"


class FolderCache:
    def __init__(self, root):
        self.root = Path(root)
        self.entries = self.root / "entries"
        self.locks = self.root / "locks"
        try:
            for folder in (self.entries, self.locks):
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputError(
                f"Cannot use {self.root} as the cache folder: {error.strerror or error}. Give a writable --cache_dir."
            ) from None
        remove_stale(self.entries)

    @contextlib.contextmanager
    def lock(self, key: str):
        """Holds the key's lock; another process asking for the same key waits."""
        with open(self.locks / f"{key}.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def fetch(self, key: str, destination: Path) -> bool:
        """Copies the entry for `key` to `destination` (a new folder); False when there is no sound entry."""
        entry = self.entries / key
        if not entry.is_dir():
            return False
        if not _manifest_holds(entry):
            os.replace(entry, temporary_name(self.entries / f"{key}.damaged"))
            return False
        shutil.copytree(entry, destination, ignore=shutil.ignore_patterns(_MANIFEST))
        return True

    def damaged(self) -> list:
        """Keys of entries whose files no longer match their manifest."""
        return sorted(
            entry.name
            for entry in self.entries.iterdir()
            if not entry.name.startswith(".") and not _manifest_holds(entry)
        )

    def store(self, key: str, source: Path) -> None:
        """Adds a copy of the folder `source` as the entry for `key` (no-op when one exists)."""
        entry = self.entries / key
        if entry.is_dir():
            return
        staging = temporary_name(entry)
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(source, staging)
        _write_manifest(staging)
        try:
            os.rename(staging, entry)
        except OSError:  # another run stored it first
            shutil.rmtree(staging, ignore_errors=True)


def entry_files(folder: Path) -> list:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != _MANIFEST)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_manifest(folder: Path) -> None:
    manifest = {str(p.relative_to(folder)): sha256_of(p) for p in entry_files(folder)}
    with open(folder / _MANIFEST, "w") as handle:
        json.dump(manifest, handle, indent=1, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())


def _manifest_holds(folder: Path) -> bool:
    try:
        manifest = json.loads((folder / _MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    present = {str(p.relative_to(folder)) for p in entry_files(folder)}
    return present == set(manifest) and all(sha256_of(folder / name) == digest for name, digest in manifest.items())
