"""The batch cache in an object store (s3://, gs://, file:// on a network mount), shared by machines.

A store has no rename and no lock, so an entry is published by its manifest alone. The
files go first, under a prefix named by the digest of their contents; the manifest (that
prefix, and each file's size and sha256) is written last, in one put. A reader takes an
entry only through a manifest and checks every file against it while downloading, so a
partial or damaged entry is a miss, and the run that computes it again writes it anew.
Two writers of one key upload to their own contents' prefix and the last manifest wins:
either is whole. Credentials come from the store client's own environment (AWS_*,
GOOGLE_APPLICATION_CREDENTIALS, ~/.aws), never from the URL, flags or logs. Imports
no TensorFlow.
"""

import contextlib
import hashlib
import json
import logging
import re
import shutil
import sys
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit

from tfcompress._io.limits import TEXT_BYTES, WEIGHT_BYTES
from tfcompress.errors import OptionError, OutputError
from tfcompress.pipeline.cache import entry_files, sha256_of

__all__ = ["ObjectStoreCache", "is_store_url"]

_MANIFEST = "manifest.json"
_BLOCK = 1 << 20
_KEY = re.compile(r"[0-9a-f]{64}")


def is_store_url(location) -> bool:
    """Whether a --cache_dir names an object store (scheme://...) rather than a local folder."""
    return "://" in str(location)


class ObjectStoreCache:
    """The same four methods as `FolderCache`, on an fsspec file system."""

    def __init__(self, url: str):
        self.url = str(url).rstrip("/")
        if urlsplit(self.url).username or urlsplit(self.url).password:
            raise OptionError(
                "The --cache_dir URL holds credentials; remove them and give them the store's usual way "
                "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, GOOGLE_APPLICATION_CREDENTIALS, ~/.aws)."
            )
        try:
            import fsspec

            for client in ("botocore", "aiobotocore", "s3fs", "gcsfs", "fsspec"):  # no per-request INFO lines
                logging.getLogger(client).setLevel(logging.WARNING)
            self.fs, self.root = fsspec.core.url_to_fs(self.url)
            if getattr(self.fs, "local_file", False):  # a mounted folder: parent folders made as objects are
                self.fs = fsspec.filesystem("file", auto_mkdir=True)
        except ImportError as error:
            raise OptionError(
                f"A --cache_dir of {self.url} needs {error.name or 'fsspec'}: pip install 'tfcompress[remote]' "
                "(fsspec and s3fs; gcsfs for gs://)."
            ) from None
        except ValueError as error:
            raise OptionError(f"--cache_dir {self.url} is not a store fsspec knows: {error}") from None
        self._check_reachable()

    def _check_reachable(self) -> None:
        """Fails at the start, in one line, when the bucket is missing or the credentials are refused."""
        bucket = self.root.split("/", 1)[0]
        try:
            if getattr(self.fs, "local_file", False):
                self.fs.makedirs(self.root, exist_ok=True)
            elif not self.fs.exists(bucket):
                raise FileNotFoundError(f"the bucket {bucket} does not exist")
        except Exception as error:  # noqa: BLE001 - every store client has its own exceptions
            raise OutputError(
                f"Cannot use {self.url} as the cache: {_short(error)}. "
                "Check the bucket and the store's credentials in the environment."
            ) from None

    @contextlib.contextmanager
    def lock(self, key: str):
        """No lock: a store has none, and two writers of one key are harmless (see the module)."""
        yield

    def fetch(self, key: str, destination: Path) -> bool:
        """Downloads the entry for `key` into `destination` (a new folder); False when there is no sound entry."""
        manifest = self._manifest(key)
        if manifest is None or not self._verified(key, manifest, Path(destination)):
            shutil.rmtree(destination, ignore_errors=True)
            return False
        return True

    def damaged(self) -> list:
        """Keys whose manifest names files that are missing or differ (a full download of each entry)."""
        manifests = {key: self._manifest(key) for key in self.entry_keys()}
        return sorted(key for key, manifest in manifests.items() if manifest and not self._verified(key, manifest))

    def entry_keys(self) -> list:
        """Keys with anything stored, whole or not."""
        try:
            listed = self.fs.ls(f"{self.root}/entries", detail=False)
        except FileNotFoundError:
            return []
        return [name for name in (path.rstrip("/").rsplit("/", 1)[-1] for path in listed) if _KEY.fullmatch(name)]

    def store(self, key: str, source: Path) -> None:
        """Uploads the folder `source` as the entry for `key`: the files, then the manifest.
        A failed upload costs the next run a recompute, never this run its result."""
        source = Path(source)
        files = {str(p.relative_to(source)): (p.stat().st_size, sha256_of(p)) for p in entry_files(source)}
        contents = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
        manifest = {"contents": contents, "files": files}
        if self._manifest(key) == manifest:
            return
        try:
            for name in files:
                self.fs.put_file(str(source / name), self._file(key, contents, name))
            self.fs.pipe_file(self._path(key, _MANIFEST), json.dumps(manifest, indent=1, sort_keys=True).encode())
        except Exception as error:  # noqa: BLE001
            print(f"warning: cache entry {key} not stored in {self.url}: {_short(error)}", file=sys.stderr, flush=True)

    def _path(self, key: str, *parts: str) -> str:
        return "/".join((self.root, "entries", key, *parts))

    def _file(self, key: str, contents: str, name: str) -> str:
        return self._path(key, contents, *Path(name).parts)

    def _manifest(self, key: str):
        """The entry's manifest when it is there, whole and well-formed; else None."""
        try:
            with self.fs.open(self._path(key, _MANIFEST), "rb") as handle:
                text = handle.read(TEXT_BYTES.value + 1)
            manifest = json.loads(text) if len(text) <= TEXT_BYTES.value else None
            files = manifest["files"]
            well_formed = _KEY.fullmatch(manifest["contents"]) and all(
                _safe_name(name) and 0 <= size <= WEIGHT_BYTES.value and _KEY.fullmatch(digest)
                for name, (size, digest) in files.items()
            )
        except Exception:  # noqa: BLE001 - absent, unreadable or malformed: no entry
            return None
        return manifest if well_formed else None

    def _verified(self, key: str, manifest: dict, destination: Optional[Path] = None) -> bool:
        """Whether every file the manifest names is there, of its size and digest; copied into
        `destination` on the way unless None. A file missing, short, changed or unreachable: False."""
        try:
            for name, (size, digest) in manifest["files"].items():
                target = None if destination is None else destination / name
                if target is not None:
                    target.parent.mkdir(parents=True, exist_ok=True)
                if self._download(self._file(key, manifest["contents"], name), target, size) != digest:
                    return False
        except Exception:  # noqa: BLE001 - every store client has its own exceptions
            return False
        return True

    def _download(self, remote: str, target, size: int) -> str:
        """sha256 of the object (written to `target` unless None), read no further than `size` bytes."""
        digest = hashlib.sha256()
        read = 0
        with self.fs.open(remote, "rb") as handle, open(target, "wb") if target else contextlib.nullcontext() as out:
            while block := handle.read(min(_BLOCK, size - read + 1)):
                read += len(block)
                if read > size:
                    raise ValueError(f"{remote} is longer than its manifest says")
                digest.update(block)
                if out:
                    out.write(block)
        return digest.hexdigest() if read == size else ""


def _safe_name(name: str) -> bool:
    """A relative path inside the entry: no absolute path, no '..', no empty part."""
    parts = Path(name).parts
    return bool(parts) and not Path(name).is_absolute() and all(part not in ("", ".", "..") for part in parts)


def _short(error: BaseException) -> str:
    return " ".join(str(error).split())[:300]
