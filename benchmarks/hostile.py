"""Every hostile-input case of tests/hostile_cases.py as a real `tfcompress` process, plus kills and Ctrl-C.

Each case runs as `python -m tfcompress ...` with no standard input; its wall time and
peak memory (the child's own maximum RSS) are measured, and the same checks as the
tests apply: exit code, one line on stderr, no traceback, nothing written, inputs
unchanged, no marker from a Lambda. The signal part kills real runs at random moments.
Run: python benchmarks/hostile.py   (about 15 minutes) → results/hostile.json and its table.
"""

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import hostile_cases  # noqa: E402
import render  # noqa: E402

SAMPLES = ROOT / "sample_models"
CALIBRATION = SAMPLES / "data" / "fashion_mnist_calib.npz"
TIME_LIMIT_S = 60
MEMORY_LIMIT_MB = 1024
KILL_TRIALS = 5


def run_process(argv, *, timeout=TIME_LIMIT_S, env=None, interrupt_after=None):
    """(exit code, stderr, seconds, peak RSS in MB) of one command; killed past `timeout`.

    The peak is the child's VmHWM, polled: getrusage's maxrss would include this process's
    memory, which Linux carries into a child across fork and exec."""
    with tempfile.TemporaryFile() as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
        status, peak_kb = None, 0
        while status is None:
            peak_kb = max(peak_kb, _high_water_kb(process.pid))
            pid, waited, _ = os.wait4(process.pid, os.WNOHANG)
            elapsed = time.perf_counter() - started
            if pid:
                status = waited
            elif interrupt_after is not None and elapsed > interrupt_after:
                process.send_signal(signal.SIGINT)
                interrupt_after = None
            elif elapsed > timeout:
                process.kill()
            else:
                time.sleep(0.02)
        process.returncode = os.waitstatus_to_exitcode(status)
        stderr.seek(0)
        return process.returncode, stderr.read().decode(errors="replace"), time.perf_counter() - started, peak_kb / 1024


def _high_water_kb(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    found = re.search(r"VmHWM:\s+(\d+) kB", status)
    return int(found.group(1)) if found else 0


def corpus_rows(work: Path) -> list:
    rows = []
    for case in hostile_cases.cases():
        folder = work / case.name
        folder.mkdir()
        argv = case.make(folder)
        before = hostile_cases.snapshot(folder)
        code, stderr, seconds, peak_mb = run_process([*hostile_cases.python_command(), *argv])
        failure = ""
        try:
            hostile_cases.check_case(case, folder, before, code, stderr)
            if seconds > TIME_LIMIT_S or peak_mb > MEMORY_LIMIT_MB:
                failure = f"took {seconds:.1f} s / {peak_mb:.0f} MB"
        except AssertionError as error:
            failure = str(error).splitlines()[0]
        rows.append(_row(case.name, case.group, code, stderr, seconds, peak_mb, failure))
        print(
            f"{case.group:8} {case.name:42} exit {code} {seconds:6.1f} s {peak_mb:6.0f} MB "
            f"{'ok' if not failure else 'FAILED: ' + failure}",
            flush=True,
        )
        shutil.rmtree(folder, ignore_errors=True)
    return rows


def _row(name, group, code, stderr, seconds, peak_mb, failure) -> dict:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return {
        "case": name,
        "group": group,
        "exit": code,
        "seconds": round(seconds, 2),
        "peak_mb": None if peak_mb is None else round(peak_mb),
        "passed": not failure,
        "failure": failure,
        "message": re.sub(r"/tmp/\S+/", ".../", lines[-1])[:160] if lines else "",
    }


def _leftovers(folder: Path) -> list:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if ".tmp-" in path.name)


def _int8_conversion(out: Path) -> list:
    """The `tfcompress` arguments of the conversion the signal cases interrupt, writing into `out`."""
    sample = str(SAMPLES / "lenet5.h5")
    return ["convert", sample, "--precision", "int8", "--calibration", str(CALIBRATION), "-o", str(out / "m.tflite")]


def kill_rows(work: Path, rng: random.Random) -> list:
    """kill -9 of convert and micro at random moments, then the same command again."""
    rows = []
    commands = {
        "kill9_convert_then_rerun": _int8_conversion,
        "kill9_micro_then_rerun": lambda out: [
            "micro",
            str(SAMPLES / "lenet5.h5"),
            "--calibration",
            str(CALIBRATION),
            "-o",
            str(out / "mcu"),
        ],
    }
    for name, command in commands.items():
        clean = work / f"{name}-clean"
        clean.mkdir()
        run_process([*hostile_cases.python_command(), *command(clean)], timeout=300)
        failures, total_seconds = [], 0.0
        for trial in range(KILL_TRIALS):
            out = work / f"{name}-{trial}"
            out.mkdir()
            argv = [*hostile_cases.python_command(), *command(out)]
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            time.sleep(rng.uniform(2.0, 12.0))
            process.kill()
            process.wait()
            partial = _partial_outputs(out, clean)
            code, stderr, seconds, _ = run_process(argv, timeout=300)
            total_seconds += seconds
            if partial:
                failures.append(f"trial {trial}: after the kill, partial output {partial}")
            if code != 0 or _leftovers(out) or _partial_outputs(out, clean, final=True):
                failures.append(f"trial {trial}: rerun exit {code}, leftovers {_leftovers(out)}")
        rows.append(_row(name, "signals", 0, "", total_seconds / KILL_TRIALS, None, "; ".join(failures)))
        print(name, "ok" if not failures else failures, flush=True)
    return rows


def _partial_outputs(out: Path, clean: Path, final: bool = False) -> list:
    """Outputs a clean run writes that are here but differ, or missing beside their siblings (or at all,
    when `final`): a half-written file or folder. Reports are left out: they hold timings."""
    wrong = []
    for path in sorted(clean.rglob("*")):
        if not path.is_file() or path.name.startswith("report"):
            continue
        mine = out / path.relative_to(clean)
        must_exist = final or (mine.parent != out and mine.parent.exists())
        if (mine.exists() or must_exist) and (not mine.exists() or mine.read_bytes() != path.read_bytes()):
            wrong.append(str(path.relative_to(clean)))
    return wrong


def interrupt_row(work: Path) -> dict:
    """Ctrl-C during a conversion: exit 130, one line, nothing written."""
    out = work / "sigint"
    out.mkdir()
    argv = [*hostile_cases.python_command(), *_int8_conversion(out)]
    # At 3 s the libraries are loaded and the conversion runs; the whole command takes about 6 s
    # idle, so a later Ctrl-C can land after the output is written (then the run has succeeded).
    code, stderr, seconds, peak_mb = run_process(argv, interrupt_after=3.0)
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    failure = ""
    if code != 130 or len(lines) != 1 or "Traceback" in stderr or list(out.iterdir()):
        failure = f"exit {code}, {len(lines)} lines, files {sorted(p.name for p in out.iterdir())}"
    return _row("ctrl_c_during_convert", "signals", code, stderr, seconds, peak_mb, failure)


def batch_rows(work: Path) -> list:
    """The batch tool: a Lambda model in the folder, and kill -9 of the tool leaving no children."""
    rows = []
    models = work / "batch-models"
    models.mkdir()
    hostile_cases.nested_lambda_model(models, ["td"], "keras2", "evil.h5")
    for name in ("a.h5", "b.h5"):
        hostile_cases.tiny_model(models, name)
    eval_data = hostile_cases.tiny_data(work, "batch-eval.npz")
    tool = [
        sys.executable,
        str(ROOT / "tools" / "compress_models.py"),
        "--input_dir",
        str(models),
        "--recipe",
        "mobile_float16",
        "--eval",
        str(eval_data),
        "--jobs",
        "2",
    ]
    out = work / "batch-out"
    code, stderr, seconds, peak_mb = run_process([*tool, "--output_dir", str(out)], timeout=300)
    failure = (
        ""
        if code == 2 and not (models / hostile_cases.MARKER).exists() and "Lambda" in (out / "summary.md").read_text()
        else f"exit {code}, marker {(models / hostile_cases.MARKER).exists()}"
    )
    rows.append(_row("lambda_through_batch_tool", "trust", code, "", seconds, peak_mb, failure))

    killed_out = work / "batch-killed"
    process = subprocess.Popen(
        [*tool, "--output_dir", str(killed_out)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not _processes_mentioning(killed_out) and time.monotonic() < deadline:
        time.sleep(0.1)
    children = _processes_mentioning(killed_out)
    process.kill()  # the tool alone, as a crashed CI runner would leave it
    process.wait()
    time.sleep(3)
    orphans = _processes_mentioning(killed_out)
    failure = "" if children and not orphans else f"children seen {len(children)}, orphans {orphans}"
    rows.append(_row("kill9_batch_tool_leaves_no_orphans", "signals", -9, "", 3.0, None, failure))
    return rows


def _processes_mentioning(text: Path) -> list:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(text) in command and "tfcompress" in command:
            found.append(int(entry.name))
    return found


def main() -> None:
    rng = random.Random(0)
    with tempfile.TemporaryDirectory(prefix="tfcompress-hostile-") as temporary:
        work = Path(temporary)
        rows = corpus_rows(work)
        rows += batch_rows(work)
        rows.append(interrupt_row(work))
        rows += kill_rows(work, rng)
    render.write_result(
        "hostile",
        {"rows": rows, "time_limit_s": TIME_LIMIT_S, "memory_limit_mb": MEMORY_LIMIT_MB, "kill_trials": KILL_TRIALS},
    )
    render.render_all()
    failed = [row["case"] for row in rows if not row["passed"]]
    print(f"{len(rows) - len(failed)} passed, {len(failed)} failed" + (f": {failed}" if failed else ""))


if __name__ == "__main__":
    main()
