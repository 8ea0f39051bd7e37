"""The hostile-input corpus (tests/hostile_cases.py): the fast cases, in-process through the CLI.

Each asserts the exit code, one line on stderr naming the problem, no traceback, no
file written or changed in the case's folder, and no marker from a Lambda's code.
benchmarks/hostile.py runs every case as a real process, with time and peak memory.
"""

import pytest

from tfcompress import cli

import hostile_cases

_FAST = [case for case in hostile_cases.cases() if case.fast]


def test_corpus_is_large_and_named_uniquely():
    names = [case.name for case in hostile_cases.cases()]
    assert len(names) >= 80 and len(set(names)) == len(names)


@pytest.mark.parametrize("case", _FAST, ids=lambda case: case.name)
def test_hostile_input_is_refused_cleanly(case, tmp_path, capsys):
    folder = tmp_path / "case"
    folder.mkdir()
    argv = case.make(folder)
    before = hostile_cases.snapshot(folder)
    capsys.readouterr()
    code = cli.main(["tfcompress", *argv])
    hostile_cases.check_case(case, folder, before, code, capsys.readouterr().err)
