"""Every script in benchmarks/ imports: a stale one is found here, not on the day someone reruns it.

Three had gone stale unnoticed: compress.py and distill.py imported a helper the training code no
longer has, and tool_speed.py imported pipeline.py, which defines the same `--parts` flag."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Each script imported afresh: the benchmark modules it brought in, and their absl flags, are removed
# after it, so two scripts that each define --data_dir do not collide here as they never do when run.
_IMPORT_EACH = """
import importlib, sys, traceback
from pathlib import Path
from absl import flags

folder = Path("benchmarks").resolve()
sys.path.insert(0, str(folder))
for script in sorted(folder.glob("*.py")):
    before = set(sys.modules)
    try:
        importlib.import_module(script.stem)
    except Exception:
        print(f"{script.name}: {traceback.format_exc().strip().splitlines()[-1]}")
    for name in set(sys.modules) - before:
        if Path(getattr(sys.modules[name], "__file__", None) or "").parent == folder:
            for flag in flags.FLAGS.get_flags_for_module(name):
                delattr(flags.FLAGS, flag.name)
            del sys.modules[name]
"""


def test_every_benchmark_script_imports():
    done = subprocess.run([sys.executable, "-c", _IMPORT_EACH], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == "", done.stdout
