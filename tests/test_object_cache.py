"""The batch cache in an object store: against a real S3 server (moto's, see conftest) and file://."""

import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from tfcompress.errors import OptionError, OutputError
from tfcompress.pipeline.object_cache import ObjectStoreCache

_KEYS = [f"{i:064x}" for i in range(1, 40)]


def _entry(folder, seed: int = 0, files: int = 3, size: int = 50_000):
    """A folder like a batch output: a model, a report, a nested file; random bytes, so digests differ."""
    rng = np.random.default_rng(seed)
    (folder / "nested").mkdir(parents=True)
    for index in range(files):
        (folder / ("nested" if index == 0 else "") / f"file{index}.bin").write_bytes(rng.bytes(size))
    (folder / "report.json").write_text('{"passed": true}\n')
    return folder


def _contents(folder) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_entry_round_trips_through_s3(s3, tmp_path):
    cache = ObjectStoreCache("s3://tfcompress-cache/roundtrip")
    source = _entry(tmp_path / "source")
    assert not cache.fetch(_KEYS[0], tmp_path / "absent")
    cache.store(_KEYS[0], source)
    cache.store(_KEYS[0], source)  # a second writer of the same key: harmless
    assert cache.fetch(_KEYS[0], tmp_path / "copy")
    assert _contents(tmp_path / "copy") == _contents(source) and len(_contents(source)) == 4
    assert cache.damaged() == []


def test_partial_and_damaged_entries_are_misses_and_are_rewritten(s3, tmp_path):
    import s3fs

    store = s3fs.S3FileSystem()
    cache = ObjectStoreCache("s3://tfcompress-cache/damage")
    source = _entry(tmp_path / "source", seed=1)
    cache.store(_KEYS[1], source)
    manifest_path = f"tfcompress-cache/damage/entries/{_KEYS[1]}/manifest.json"
    manifest = store.cat(manifest_path)

    store.rm(manifest_path)  # files uploaded, manifest not yet: a writer killed before its last put
    assert not cache.fetch(_KEYS[1], tmp_path / "partial") and not (tmp_path / "partial").exists()

    store.pipe(manifest_path, manifest)
    contents = [p for p in store.find(f"tfcompress-cache/damage/entries/{_KEYS[1]}") if p.endswith("file1.bin")]
    store.pipe(contents[0], b"changed")
    assert cache.damaged() == [_KEYS[1]]
    assert not cache.fetch(_KEYS[1], tmp_path / "damaged") and not (tmp_path / "damaged").exists()

    store.pipe(manifest_path, manifest[: len(manifest) // 2])  # a truncated manifest: no entry
    assert not cache.fetch(_KEYS[1], tmp_path / "truncated")

    cache.store(_KEYS[1], source)  # the run that recomputes it writes it anew
    assert cache.fetch(_KEYS[1], tmp_path / "repaired") and _contents(tmp_path / "repaired") == _contents(source)


def test_a_manifest_cannot_write_outside_the_destination(s3, tmp_path):
    import s3fs

    cache = ObjectStoreCache("s3://tfcompress-cache/hostile")
    hostile = '{"contents": "%s", "files": {"../../escaped": [1, "%s"]}}' % (_KEYS[2], _KEYS[3])
    s3fs.S3FileSystem().pipe(f"tfcompress-cache/hostile/entries/{_KEYS[2]}/manifest.json", hostile.encode())
    assert not cache.fetch(_KEYS[2], tmp_path / "out" / "entry")
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "out").exists()


def test_credentials_in_the_url_and_missing_buckets_are_refused(s3):
    with pytest.raises(OptionError, match="holds credentials"):
        ObjectStoreCache("s3://key:secret@tfcompress-cache/x")
    with pytest.raises(OutputError, match="Cannot use s3://no-such-bucket/x as the cache") as error:
        ObjectStoreCache("s3://no-such-bucket/x")
    assert "\n" not in str(error.value) and "testing" not in str(error.value)


def test_file_urls_work_as_a_store(tmp_path):
    cache = ObjectStoreCache(f"file://{tmp_path / 'mount'}")
    source = _entry(tmp_path / "source", seed=2)
    cache.store(_KEYS[4], source)
    assert (tmp_path / "mount" / "entries" / _KEYS[4] / "manifest.json").is_file()
    assert cache.fetch(_KEYS[4], tmp_path / "copy") and _contents(tmp_path / "copy") == _contents(source)


_UPLOADER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from tfcompress.pipeline.object_cache import ObjectStoreCache

    cache = ObjectStoreCache(sys.argv[1])
    print("uploading", flush=True)
    cache.store(sys.argv[2], Path(sys.argv[3]))
    print("stored", flush=True)
    """
)


def test_kill_during_uploads_never_leaves_an_entry_a_reader_accepts_partly(s3, tmp_path):
    """kill -9 of a writer at random moments of its uploads: every reader either misses or gets the
    whole entry; the same command again completes it with identical bytes."""
    url = "s3://tfcompress-cache/kills"
    source = _entry(tmp_path / "source", seed=3, files=12, size=200_000)
    script = tmp_path / "upload.py"
    script.write_text(_UPLOADER)
    cache = ObjectStoreCache(url)
    started = time.perf_counter()
    cache.store(_KEYS[5], source)
    upload_seconds = time.perf_counter() - started
    rng = np.random.default_rng(0)
    outcomes = []
    for trial in range(10):
        key = _KEYS[10 + trial]
        writer = subprocess.Popen([sys.executable, str(script), url, key, source], stdout=subprocess.PIPE, text=True)
        assert writer.stdout.readline().strip() == "uploading"
        time.sleep(rng.uniform(0, 1.2) * upload_seconds)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        reader = tmp_path / f"read{trial}"
        accepted = cache.fetch(key, reader)
        assert not accepted or _contents(reader) == _contents(source), f"trial {trial}: a partial entry was served"
        outcomes.append(accepted)
        rerun = subprocess.run([sys.executable, str(script), url, key, source], capture_output=True, text=True)
        assert rerun.returncode == 0 and "stored" in rerun.stdout, rerun.stderr
        assert cache.fetch(key, tmp_path / f"after{trial}") and _contents(tmp_path / f"after{trial}") == _contents(
            source
        )
        shutil.rmtree(reader, ignore_errors=True)
    assert not all(outcomes), "no kill landed during the uploads; the test did not test anything"
