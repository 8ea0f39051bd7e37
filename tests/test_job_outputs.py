"""The job skeleton: outputs checked before the work, and a failed job leaves no new file behind."""

import pytest

from tfcompress.errors import OutputError
from tfcompress.jobs._common import job_outputs


def test_outputs_written_before_a_failure_are_removed_again(tmp_path):
    model, report, old = tmp_path / "m.tflite", tmp_path / "m.json", tmp_path / "old.txt"
    old.write_text("kept")
    with pytest.raises(RuntimeError):
        with job_outputs(model, report, old) as outputs:
            outputs.bytes(model, b"flatbuffer")
            outputs.file(old, lambda path: path.write_text("replaced"))
            raise RuntimeError("the report could not be built")
    assert not model.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["old.txt"]


def test_an_output_that_is_an_input_is_refused_before_the_work(tmp_path):
    data = tmp_path / "data.npz"
    data.write_bytes(b"x")
    ran = []
    with pytest.raises(OutputError):
        with job_outputs(data, inputs=(data,)):
            ran.append(True)
    assert not ran and data.read_bytes() == b"x"
