"""auto's search records: another search's records are never reused, damaged ones are measured again."""

import pytest

from tfcompress.errors import TfcompressError
from tfcompress.jobs._search_state import SearchState


def test_records_are_kept_for_the_same_key_only(tmp_path):
    state = SearchState(tmp_path / "s", "key-a")
    state.save("probe-3", {"gzip_bytes": 17000}, b"tflite bytes")
    state.save("scan", [{"name": "dense"}])
    assert SearchState(tmp_path / "s", "key-a").load("probe-3") == ({"gzip_bytes": 17000}, b"tflite bytes")
    assert SearchState(tmp_path / "s", "key-a").load("scan") == ([{"name": "dense"}], b"")
    other = SearchState(tmp_path / "s", "key-b")  # another model, data or options
    assert other.load("probe-3") is None and other.load("scan") is None


def test_damaged_or_missing_bytes_are_measured_again(tmp_path):
    state = SearchState(tmp_path / "s", "k")
    state.save("probe-1", {"n": 1}, b"abc")
    (tmp_path / "s/probe-1.bin").write_bytes(b"abd")
    assert state.load("probe-1") is None
    state.save("probe-2", {"n": 2}, b"xyz")
    (tmp_path / "s/probe-2.bin").unlink()  # removed by hand: the record alone is not a result
    assert state.load("probe-2") is None


def test_a_file_where_the_folder_goes_is_refused(tmp_path):
    (tmp_path / "best.auto").write_text("not a folder")
    with pytest.raises(TfcompressError, match="not a folder"):
        SearchState(tmp_path / "best.auto", "k")


def test_a_users_files_in_the_folder_are_never_removed(tmp_path):
    folder = tmp_path / "best.auto"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    SearchState(folder, "a").save("probe-1", {"n": 1}, b"x")
    SearchState(folder, "b")  # another search: its own records go, the user's file stays
    assert sorted(path.name for path in folder.iterdir()) == ["key.txt", "notes.txt"]
