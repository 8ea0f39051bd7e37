"""Many models through one recipe: sharded, in parallel, cached, resumable, summarised.

Each model runs as `tfcompress run` on a long-lived worker process (pipeline/worker.py:
TensorFlow is imported once per worker; a crash or a bad model costs that model only,
and a crashed worker is replaced; the output goes to `logs/NAME.log`) in a work folder that is
renamed to `NAME/` when it finishes. A model whose `NAME/run.json` already holds
the same key is not run again, so a killed batch resumes where it stopped. With a
cache folder, finished outputs are stored by key: a hash of the model's bytes, the
recipe, the data's bytes, the loading options and the library versions (and
tfcompress's own source), so a hit is exactly what a run would make, served
without importing TensorFlow.
"""

import concurrent.futures
import dataclasses
import glob
import hashlib
import json
import shutil
import threading
import time
from pathlib import Path
from typing import Callable, Optional

from tfcompress._io.cache import file_digest, source_digest
from tfcompress._io.files import place_folder, remove_stale, temporary_name, write_atomic
from tfcompress.errors import DataError, OptionError, OutputError, TfcompressError
from tfcompress.pipeline import recipe as recipes
from tfcompress.pipeline.cache import FolderCache
from tfcompress.pipeline.object_cache import ObjectStoreCache, is_store_url
from tfcompress.pipeline.shards import ONE_MACHINE, Shard
from tfcompress.pipeline.worker import WorkerPool
from tfcompress.report import package_versions, step_warnings

__all__ = [
    "BatchOptions",
    "BatchResult",
    "find_models",
    "output_names",
    "run_batch",
    "write_summaries",
    "markdown_summary",
    "PASSED",
    "FAILED",
    "ERROR",
]

PASSED, FAILED, ERROR = "passed", "failed", "error"
_MODEL_SUFFIXES = (".h5", ".keras")
_VERSIONED = (
    "tensorflow",
    "tf-keras",
    "keras",
    "tensorflow-model-optimization",
    "ai-edge-litert",
    "tflite-micro",
    "numpy",
)
_RUN_RECORD = "run.json"


@dataclasses.dataclass(frozen=True)
class BatchOptions:
    recipe: str  # a built-in name or a YAML path
    output_dir: Path
    cache_dir: Optional[str] = None  # a folder, or an object-store URL (s3://bucket/prefix, gs://, file://)
    jobs: int = 1
    data: dict = dataclasses.field(default_factory=dict)  # role → spec, over the recipe's and the folder's
    run_flags: tuple = ()  # passed through to `tfcompress run` (--trust_model_code, --input_scale ...)

    def __post_init__(self):
        if self.jobs < 1:
            raise OptionError(f"jobs must be at least 1. Received: jobs={self.jobs}")


@dataclasses.dataclass(frozen=True)
class BatchResult:
    rows: tuple  # a dict per model, in input order
    seconds: float

    @property
    def exit_code(self) -> int:
        """0 every model passed, 1 a budget failed, 2 a model could not be processed."""
        statuses = {row["status"] for row in self.rows}
        return 2 if ERROR in statuses else 1 if FAILED in statuses else 0

    def to_dict(self) -> dict:
        counts = {status: sum(row["status"] == status for row in self.rows) for status in (PASSED, FAILED, ERROR)}
        return {
            "exit_code": self.exit_code,
            "seconds": round(self.seconds, 3),
            "counts": counts,
            "models": list(self.rows),
        }


def find_models(input_dir=None, pattern=None) -> list:
    """Model files (.h5, .keras) and SavedModel folders in `input_dir`, or matching the glob `pattern`; sorted."""
    if (input_dir is None) == (pattern is None):
        raise OptionError("Give exactly one of input_dir and inputs (a glob pattern).")
    if input_dir is not None:
        folder = Path(input_dir)
        if not folder.is_dir():
            raise DataError(f"--input_dir {folder} is not a folder.")
        candidates = folder.iterdir()
    else:
        candidates = (Path(p) for p in glob.glob(pattern, recursive=True))
    models = sorted(
        p
        for p in candidates
        if p.suffix in _MODEL_SUFFIXES and p.is_file() or p.is_dir() and (p / "saved_model.pb").is_file()
    )
    if not models:
        raise DataError(f"No models (.h5, .keras, SavedModel folders) in {input_dir or pattern}.")
    return models


def output_names(models: list) -> dict:
    """model → output folder name: the file stem, with the suffix added where two stems collide."""
    stems = [model.stem for model in models]
    return {
        model: model.stem if stems.count(model.stem) == 1 else f"{model.stem}-{model.suffix.lstrip('.')}"
        for model in models
    }


def run_batch(
    models: list, options: BatchOptions, progress: Callable[[str], None] = print, shard: Shard = ONE_MACHINE
) -> BatchResult:
    """Runs the recipe on this shard's models; writes NAME/, logs/, summary.json and summary.md into the
    output folder. `models` is the whole batch: names come from it, so every shard names a model alike,
    and the summary lists it, so `merge_outputs` can tell a missing model."""
    started = time.perf_counter()
    recipe = recipes.load_recipe(options.recipe)
    output_dir = Path(options.output_dir)
    try:
        for folder in (output_dir / ".work", output_dir / "logs"):
            folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(
            f"Cannot create {output_dir}: {error.strerror or error}. Give a writable --output_dir."
        ) from None
    remove_stale(output_dir / ".work")
    cache = open_cache(options.cache_dir) if options.cache_dir else None
    keys = _Keys(recipe, options)
    names = output_names(models)
    batch_names = [names[model] for model in models]
    models = shard.pick(models)
    done = []
    lock = threading.Lock()
    workers = WorkerPool()

    def one(model):
        try:
            row = _process(model, names[model], keys.key(model), options, cache, workers)
        except (OSError, ValueError, TfcompressError) as error:  # this model's problem; the others go on
            row = {**_row(model, names[model], {}, "off", 0.0), "error": f"{type(error).__name__}: {error}"}
        with lock:
            done.append(row)
            progress(_progress_line(row, len(done), len(models)))
        return row

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=options.jobs)
    try:
        rows = tuple(pool.map(one, models))
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)  # the running ones got the signal too
        raise
    finally:
        workers.close()
    pool.shutdown()
    result = BatchResult(rows, time.perf_counter() - started)
    write_summaries(output_dir, recipe.name, result, shard, batch_names)
    return result


def write_summaries(output_dir: Path, recipe_name: str, result: BatchResult, shard: Shard, batch_names: list) -> None:
    """summary.json (with the shard and the whole batch's names, which `merge_outputs` checks) and summary.md."""
    summary = {"recipe": recipe_name, "shard": shard.to_dict(), "batch": batch_names, **result.to_dict()}
    write_atomic(output_dir / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    write_atomic(output_dir / "summary.md", markdown_summary(recipe_name, result, shard).encode())


def open_cache(location):
    """The cache a --cache_dir names: a local folder (flock, rename), or an object store (manifests)."""
    return ObjectStoreCache(location) if is_store_url(location) else FolderCache(location)


def _process(model: Path, name: str, key: str, options: BatchOptions, cache, workers: WorkerPool) -> dict:
    output_dir = Path(options.output_dir)
    final = output_dir / name
    started = time.perf_counter()
    record = _read_record(final)
    if record.get("key") == key:
        return _row(model, name, record, "resumed", time.perf_counter() - started)
    work = temporary_name(output_dir / ".work" / name)
    shutil.rmtree(work, ignore_errors=True)
    log = output_dir / "logs" / f"{name}.log"
    if cache is None:
        return _compute(model, name, key, options, work, final, log, None, started, workers)
    with cache.lock(key):
        if cache.fetch(key, work):
            place_folder(work, final)
            log.write_text(f"served from the cache (entry {key}); the log of the run that made it: {name}/run.log\n")
            return _row(model, name, _read_record(final), "hit", time.perf_counter() - started)
        return _compute(model, name, key, options, work, final, log, cache, started, workers)


def _compute(model, name, key, options, work, final, log, cache, started, workers: WorkerPool) -> dict:
    argv = [
        "run",
        options.recipe,
        "--model",
        str(model),
        "-o",
        str(work),
        *(f"--{role}={spec}" for role, spec in sorted(options.data.items())),
        *options.run_flags,
    ]
    log.write_text("tfcompress " + " ".join(argv) + "\n")
    returncode = workers.run(argv, log)
    report = _read_json(work / "report.json") if returncode in (0, 1) else {}
    if "passed" not in report:  # exit 2, a crash, or a signal: nothing to keep
        shutil.rmtree(work, ignore_errors=True)
        return {
            **_row(model, name, {}, "miss" if cache else "off", time.perf_counter() - started),
            "error": _last_error(log, returncode),
        }
    shutil.copyfile(log, work / "run.log")
    record = {"key": key, "status": PASSED if report["passed"] else FAILED, **_result_columns(report)}
    write_atomic(work / _RUN_RECORD, (json.dumps(record, indent=1) + "\n").encode())
    if cache is not None:
        cache.store(key, work)
    place_folder(work, final)
    return _row(model, name, record, "miss" if cache else "off", time.perf_counter() - started)


def _result_columns(report: dict) -> dict:
    latency = report.get("latency_us") or {}
    return {
        "size_bytes": report.get("size_bytes"),
        "accuracy": report.get("accuracy"),
        "accuracy_drop": report.get("accuracy_drop"),
        "arena_bytes": report.get("arena_bytes"),
        "latency_us": latency.get("p50"),
        "broken_budgets": [b["name"] for b in report.get("budgets", []) if not b["passed"]],
        "warnings": step_warnings(report.get("steps", [])),
    }


def _row(model, name, record, cache, seconds) -> dict:
    return {
        "model": str(model),
        "name": name,
        "status": record.get("status", ERROR),
        "cache": cache,
        "seconds": round(seconds, 2),
        "size_bytes": record.get("size_bytes"),
        "accuracy": record.get("accuracy"),
        "accuracy_drop": record.get("accuracy_drop"),
        "arena_bytes": record.get("arena_bytes"),
        "latency_us": record.get("latency_us"),
        "broken_budgets": record.get("broken_budgets", []),
        "warnings": record.get("warnings", []),
        "error": None,
    }


def _read_record(folder: Path) -> dict:
    return _read_json(folder / _RUN_RECORD)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _last_error(log: Path, returncode: int) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]
    found = errors[-1] if errors else (lines[-1] if lines else "")
    return f"exit {returncode}: {found}"[:500]


class _Keys:
    """Cache keys: everything that decides a model's outputs, hashed. Files count by their bytes, not
    their paths, so machines that keep the models and data in different folders share entries."""

    def __init__(self, recipe, options: BatchOptions):
        self.recipe = recipe.to_dict()
        self.run_flags = list(options.run_flags)
        self.data = options.data
        self.versions = _versions()
        self.digests = {}

    def key(self, model: Path) -> str:
        data = {**recipes.folder_data(model), **self.recipe["data"], **self.data}
        steps = [{**step, "data": self._by_content(step["data"])} for step in self.recipe["steps"]]
        content = {
            "recipe": {**self.recipe, "steps": steps, "data": {}},
            "run_flags": [
                flag.partition("=")[0] + "=" + self._content(flag.partition("=")[2]) for flag in self.run_flags
            ],
            "versions": self.versions,
            "model": {"name": model.name, "digest": file_digest(model)},
            "data": self._by_content(data),
        }
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()

    def _by_content(self, data: dict) -> dict:
        return {role: self._content(spec) for role, spec in data.items()}

    def _content(self, spec: str) -> str:
        """`PATH@split` → `sha256:DIGEST@split` when PATH exists; other specs ('random') as they are."""
        if spec not in self.digests:
            path, at, split = spec.partition("@")
            self.digests[spec] = f"sha256:{file_digest(path)}{at}{split}" if path and Path(path).exists() else spec
        return self.digests[spec]


def _versions() -> dict:
    return {
        **package_versions({package: package for package in _VERSIONED}),
        "tfcompress": source_digest(),
    }


def _progress_line(row: dict, done: int, total: int) -> str:
    detail = row["error"] or ", ".join(
        part
        for part in (_size_text(row["size_bytes"]), _drop_text(row["accuracy_drop"]), _warnings_text(row["warnings"]))
        if part
    )
    return (
        f"[{done}/{total}] {row['name']}: {row['status']} in {row['seconds']:.1f} s "
        f"(cache {row['cache']}){': ' + detail if detail else ''}"
    )


def _size_text(size) -> str:
    return f"{size:,} B" if size is not None else ""


def _drop_text(drop) -> str:
    return f"drop {drop:+.2f} pt" if drop is not None else ""


def _warnings_text(warnings) -> str:
    return f"{len(warnings)} warning{'s' if len(warnings) > 1 else ''} (summary.md)" if warnings else ""


def _latency_text(latency) -> str:
    return f"{latency:.0f} µs" if latency is not None else "–"


def markdown_summary(recipe_name: str, result: BatchResult, shard: Shard = ONE_MACHINE) -> str:
    """The batch as a Markdown table, for a CI job's summary page."""
    counts = result.to_dict()["counts"]
    lines = [
        f"## tfcompress: recipe `{recipe_name}`{f', shard {shard.index} of {shard.count}' if shard.count > 1 else ''}",
        "",
        f"{counts[PASSED]} passed, {counts[FAILED]} failed a budget, {counts[ERROR]} errors "
        f"in {result.seconds:.1f} s (exit {result.exit_code})",
        "",
        "| model | status | size | accuracy drop | arena | latency p50 | cache | seconds |",
        "|---|---|---:|---:|---:|---:|---|---:|",
    ]
    for row in result.rows:
        status = {PASSED: "✅ passed", FAILED: "❌ failed: " + ", ".join(row["broken_budgets"]), ERROR: "💥 error"}[
            row["status"]
        ]
        lines.append(
            f"| `{row['name']}` | {status} | {_size_text(row['size_bytes']) or '–'} | "
            f"{_drop_text(row['accuracy_drop']).removeprefix('drop ') or '–'} | "
            f"{_size_text(row['arena_bytes']) or '–'} | "
            f"{_latency_text(row['latency_us'])} | {row['cache']} | "
            f"{row['seconds']:.1f} |"
        )
    errors = [row for row in result.rows if row["error"]]
    if errors:
        lines += ["", "Errors (see logs/NAME.log):", ""] + [f"- `{row['name']}`: {row['error']}" for row in errors]
    warned = [row for row in result.rows if row.get("warnings")]  # a shard merged from an older version has none
    if warned:
        lines += ["", "Warnings (see NAME/report.md):", ""]
        lines += [f"- `{row['name']}`: {warning}" for row in warned for warning in row["warnings"]]
    return "\n".join(lines) + "\n"
