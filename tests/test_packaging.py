"""The product as users install it: every module is in the wheel, and the CLI is quiet and quick.

.ci/product goes further: it installs the built wheel and the device install into fresh
venvs and runs every subcommand from another folder.
"""

import subprocess
import sys
import time
import zipfile

import pytest

import tfcompress

from conftest import ROOT, SAMPLE_MODELS


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(folder), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (path,) = folder.glob("tfcompress-*.whl")
    return path


def test_wheel_holds_every_module_and_recipe(wheel):
    source = {
        str(path.relative_to(ROOT))
        for pattern in ("tfcompress/**/*.py", "tfcompress/pipeline/recipes/*.yaml")
        for path in ROOT.glob(pattern)
        if "__pycache__" not in path.parts
    }
    with zipfile.ZipFile(wheel) as archive:
        packaged = {name for name in archive.namelist() if name.startswith("tfcompress/")}
    assert source - packaged == set(), f"left out of the wheel: {sorted(source - packaged)}"
    assert packaged - source == set(), f"in the wheel but not in the source: {sorted(packaged - source)}"


def test_version_and_help_per_command():
    version = subprocess.run([sys.executable, "-m", "tfcompress", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.strip() == f"tfcompress {tfcompress.__version__}"
    helped = subprocess.run([sys.executable, "-m", "tfcompress", "help", "micro"], capture_output=True, text=True)
    assert helped.returncode == 0
    assert helped.stdout.startswith("usage: tfcompress micro MODEL -o DIR") and "example:" in helped.stdout


def test_a_missing_model_fails_in_one_line_before_tensorflow_loads(tmp_path):
    started = time.perf_counter()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tfcompress",
            "convert",
            str(tmp_path / "missing.h5"),
            "-o",
            str(tmp_path / "x.tflite"),
            "--precision",
            "int8",
        ],
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "not found" in result.stderr
    assert seconds < 5, f"{seconds:.1f} s: TensorFlow was imported before the check"  # a bound, not a benchmark
    assert not list(tmp_path.iterdir())


def test_conversion_stderr_holds_no_tensorflow_log_line(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tfcompress",
            "convert",
            str(SAMPLE_MODELS / "lenet5.h5"),
            "--precision",
            "float16",
            "-o",
            str(tmp_path / "m.tflite"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    for noise in ("cuInit", "oneDNN", "cudart", "absl::InitializeLog", "XNNPACK", "WARNING"):
        assert noise not in result.stderr, result.stderr


def test_docs_schemas_are_the_shipped_ones(tmp_path):
    from tfcompress.report_schema import write_schemas

    for written in write_schemas(tmp_path):
        assert (ROOT / "docs" / "schemas" / written.name).read_text() == written.read_text(), (
            f"docs/schemas/{written.name} is stale: python -m tfcompress.report_schema docs/schemas"
        )
