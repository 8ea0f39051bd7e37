"""What a long `auto --train` search has measured so far, kept on disk so a killed search resumes.

One folder per search: `key.txt` (a digest of the model, the data, the options and
tfcompress's source: records made for other inputs are never reused), and one JSON record
per finished piece of work, written last and atomically, holding the SHA-256 of any bytes
that go with it. A record without its bytes, or with other bytes, is measured again.
"""

import hashlib
import json
import re
from pathlib import Path
from typing import Optional

from tfcompress._io import limits
from tfcompress._io.cache import source_digest
from tfcompress._io.files import write_atomic, write_json_atomic
from tfcompress.errors import TfcompressError

__all__ = ["SearchState", "search_key"]

_RECORD = re.compile(r"[a-z]+(-\d+){0,2}\.(json|bin)")


def search_key(*parts) -> str:
    """A digest of numpy arrays, bytes and JSON-able values, with tfcompress's own source."""
    digest = hashlib.sha256(source_digest().encode())
    for part in parts:
        if hasattr(part, "tobytes"):
            digest.update(str((part.dtype, part.shape)).encode() + part.tobytes())
        elif isinstance(part, bytes):
            digest.update(part)
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"\0")
    return digest.hexdigest()


class SearchState:
    """Records in `folder` for the search `key`; a folder holding another key's records is emptied first."""

    def __init__(self, folder, key: str):
        self.folder = Path(folder)
        if self.folder.exists() and (self.folder.is_symlink() or not self.folder.is_dir()):
            raise TfcompressError(f"{self.folder} holds auto's search records, but it is not a folder; move it away.")
        self.folder.mkdir(exist_ok=True)
        key_file = self.folder / "key.txt"
        if not key_file.is_file() or key_file.read_text()[:100] != key:
            for stale in self.folder.iterdir():  # only what a search writes: never a user's file
                if _RECORD.fullmatch(stale.name) and stale.is_file() and not stale.is_symlink():
                    stale.unlink()
            write_atomic(key_file, key.encode())

    def load(self, name: str) -> Optional[tuple]:
        """(the record, its bytes or b"") when finished and intact, else None."""
        path = self.folder / f"{name}.json"
        if not path.is_file():
            return None
        limits.check_input_file(path, "Search record")
        limits.TEXT_BYTES.check(path.stat().st_size, path)
        record = json.loads(path.read_text())
        data = b""
        if record.get("sha256"):
            data_path = self.folder / f"{name}.bin"
            if not data_path.is_file() or data_path.stat().st_size > limits.WEIGHT_BYTES.value:
                return None
            data = data_path.read_bytes()
            if hashlib.sha256(data).hexdigest() != record["sha256"]:
                return None
        return record["value"], data

    def save(self, name: str, value, data: bytes = b"") -> None:
        if data:
            write_atomic(self.folder / f"{name}.bin", data)
        write_json_atomic(
            self.folder / f"{name}.json", {"value": value, "sha256": hashlib.sha256(data).hexdigest() if data else None}
        )
