"""The run job: a recipe's steps, in order, on one model; then its budgets, judged.

Each step reads the previous step's output (the transforms save `NN-step.h5`; convert
writes `model.tflite`, micro the `micro/` folder, benchmark measures the last
`.tflite`). Data and budgets are checked before the first step trains, so a recipe
that cannot finish fails in seconds. Paths in the report are relative to the output
folder, so the folder can be moved or served from a cache as it is.
"""

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import Optional

from tfcompress import progress
from tfcompress._io.files import atomic_folder, check_not_inputs, path_size, write_atomic, write_json_atomic
from tfcompress.errors import DataError, ModelLoadError, TfcompressError
from tfcompress.options import LoadOptions, gather
from tfcompress.pipeline import recipe as recipes
from tfcompress.report import library_versions, step_warnings
from tfcompress.report_schema import schema_version
from tfcompress.runtime.metrics import accuracy_drop
from tfcompress.runtime.weight_coding import code_weights

__all__ = ["RunReport", "BudgetResult", "run_recipe", "format_run_report"]

_NEEDS_TRAIN = ("prune", "cluster", "qat", "distill")


@dataclasses.dataclass(frozen=True)
class BudgetResult:
    name: str
    limit: float
    value: Optional[float]

    @property
    def passed(self) -> bool:
        return self.value is not None and self.value <= self.limit


@dataclasses.dataclass(frozen=True)
class RunReport:
    recipe: recipes.Recipe
    result: dict  # the report contract's keys for the final model
    steps: tuple  # {"step", "line", "output", "seconds", "report"} per step
    budgets: tuple  # BudgetResult
    files: tuple = ()  # what the output folder holds besides report.json and report.md

    @property
    def passed(self) -> bool:
        return all(budget.passed for budget in self.budgets)

    def to_dict(self) -> dict:
        return {
            "schema_version": schema_version("run"),
            **self.result,
            "passed": self.passed,
            "budgets": [{**dataclasses.asdict(b), "passed": b.passed} for b in self.budgets],
            "recipe": {**self.recipe.to_dict(), "source": self.recipe.source},
            "steps": list(self.steps),
            "files": [*self.files, "report.json", "report.md"],
            "versions": library_versions(),
        }


def run_recipe(
    recipe,
    model,
    output_dir,
    *,
    load: Optional[LoadOptions] = None,
    train=None,
    val=None,
    unlabeled=None,
    calibration=None,
    eval_data=None,
    **settings,
) -> RunReport:
    """Runs `recipe` (a `Recipe`, a YAML path or a built-in name) on the model file `model`.

    `load` may also be given field by field as keywords (`trust_model_code=True`).

    Data for each step: the step's own entry, else the argument here, else the recipe's
    `data:`, else `tfcompress-data.yaml` beside the model. Writes `report.json` and
    `report.md` into `output_dir`; `RunReport.passed` says whether every budget held.
    """
    (load,) = gather(settings, (LoadOptions, load))
    recipe = recipe if isinstance(recipe, recipes.Recipe) else recipes.load_recipe(recipe)
    model = Path(model)
    if not model.exists():
        raise ModelLoadError(f"Model {model} does not exist; give a .h5, .keras or SavedModel path with --model.")
    given = {"train": train, "val": val, "unlabeled": unlabeled, "calibration": calibration, "eval": eval_data}
    defaults = {**recipes.folder_data(model), **recipe.data, **{k: v for k, v in given.items() if v is not None}}
    _check_data(recipe, defaults)
    check_not_inputs(output_dir, (model, *defaults.values()), folder=True)
    with _output_folder(recipe, output_dir) as staging:
        report = _run_steps(recipe, model, staging, defaults, load)
        write_json_atomic(staging / "report.json", report.to_dict())
        write_atomic(staging / "report.md", (format_run_report(report) + "\n").encode())
    return report


@contextlib.contextmanager
def _output_folder(recipe, output_dir):
    """The folder the steps write into, made whole at the end. A step trained on several machines
    (`strategy: multi_worker`) needs its strategy before any TensorFlow op, so it is built first; on a
    worker that is not the chief, the whole run writes into a temporary folder, removed at the end."""
    from tfcompress.transforms.distribute import is_chief, strategy_named, worker_folder

    named = sorted({step.options.get("strategy", "default") for step in recipe.steps} - {"default"})
    strategies = [strategy_named(name) for name in named]
    worker = next((strategy for strategy in strategies if not is_chief(strategy)), None)
    with worker_folder(worker) if worker is not None else atomic_folder(output_dir) as folder:
        yield folder


def _run_steps(recipe, model, output_dir, defaults, load: LoadOptions) -> RunReport:
    """Every step into `output_dir` (the staging folder), then the budgets judged."""
    current, last_tflite, exported, measured, steps = model, None, None, {}, []
    for index, step in enumerate(recipe.steps):
        data = {role: step.data.get(role, defaults.get(role)) for role in recipes.DATA_ROLES}
        progress.stage(step.label(index))
        started = time.perf_counter()
        try:
            output, report = _STEP_RUNNERS[step.kind](step, index, current, last_tflite, output_dir, data, load)
        except TfcompressError as error:
            raise type(error)(f"{step.label(index)}: {error}") from error
        if step.kind in recipes.TRANSFORMS:
            current = output
        elif step.kind in recipes.EXPORTS:
            last_tflite, exported = output if step.kind == "convert" else output / "model.tflite", report
        measured.update(_measurements(step.kind, report))
        steps.append(
            {
                "step": step.kind,
                "line": step.line,
                "output": _relative(output, output_dir),
                "seconds": round(time.perf_counter() - started, 3),
                "report": _relative_paths(report.to_dict(), output_dir),
            }
        )

    original = _against_original(model, current, exported, last_tflite, defaults.get("eval"), load)
    result = _final_result(model, exported, last_tflite, output_dir, original, measured)
    budgets = tuple(
        BudgetResult(name, float(limit), _budget_value(name, result, measured))
        for name, limit in recipe.budgets.items()
    )
    files = tuple(sorted(entry.name for entry in output_dir.iterdir()))
    return RunReport(recipe, result, tuple(steps), budgets, files)


def _check_data(recipe, defaults) -> None:
    """Missing data fails before any step trains."""
    after_qat = False
    for index, step in enumerate(recipe.steps):
        has = {role for role in recipes.DATA_ROLES if step.data.get(role) or defaults.get(role)}
        needs_calibration = step.kind == "micro" or (
            step.kind == "convert" and step.options.get("precision", "int8") in ("int8", "int16x8") and not after_qat
        )
        if step.kind in _NEEDS_TRAIN and "train" not in has:
            raise DataError(
                f"{step.label(index)} trains, so it needs training data: pass --train DATA, "
                "or set train: in the recipe."
            )
        if needs_calibration and "calibration" not in has:
            raise DataError(
                f"{step.label(index)} quantizes to integers, so it needs calibration data: "
                "pass --calibration DATA, or set calibration: in the recipe."
            )
        after_qat = after_qat or step.kind == "qat"
    if "max_accuracy_drop" in recipe.budgets and not defaults.get("eval"):
        raise DataError(
            "the budget max_accuracy_drop needs labelled eval data: pass --eval DATA, or set "
            "eval: in the recipe's data."
        )


def _run_transform(step, index, current, last_tflite, output_dir, data, load):
    from tfcompress.jobs.cluster import cluster
    from tfcompress.jobs.distill import distill
    from tfcompress.jobs.lowrank import lowrank
    from tfcompress.jobs.prune import prune
    from tfcompress.jobs.qat import quantize_aware

    output = output_dir / f"{index + 1:02d}-{step.kind}.h5"
    shared = {"output": output, "load": load, **step.options}
    if step.kind == "lowrank":
        return output, lowrank(current, train=data["train"], val=data["val"], **shared)
    if step.kind == "distill":
        return output, distill(current, data["train"], val=data["val"], unlabeled=data["unlabeled"], **shared)
    train = {"prune": prune, "cluster": cluster, "qat": quantize_aware}[step.kind]
    return output, train(current, data["train"], val=data["val"], **shared)


def _run_convert(step, index, current, last_tflite, output_dir, data, load):
    from tfcompress.jobs.convert import convert

    output = output_dir / "model.tflite"
    return output, convert(
        current, output=output, calibration=data["calibration"], eval_data=data["eval"], load=load, **step.options
    )


def _run_micro(step, index, current, last_tflite, output_dir, data, load):
    from tfcompress.jobs.micro import to_micro

    output = output_dir / "micro"
    return output, to_micro(
        current, output, calibration=data["calibration"], eval_data=data["eval"], load=load, **step.options
    )


def _run_benchmark(step, index, current, last_tflite, output_dir, data, load):
    from tfcompress.jobs.benchmark import benchmark

    output = output_dir / "benchmark.json"
    return output, benchmark([last_tflite], eval_data=data["eval"], json_path=output, load=load, **step.options)


_STEP_RUNNERS = {
    **{kind: _run_transform for kind in recipes.TRANSFORMS},
    "convert": _run_convert,
    "micro": _run_micro,
    "benchmark": _run_benchmark,
}


def _measurements(kind, report) -> dict:
    """What a step measured that budgets may read: latency_us (LiteRT, on this machine), arena_bytes."""
    if kind == "convert" and report.latency is not None:
        return {"latency_us": report.latency.to_dict()}
    if kind == "micro":
        return {"arena_bytes": report.arena_bytes}
    if kind == "benchmark":
        measured = report.models[0]
        found = {"latency_us": measured.latency.to_dict()}
        if measured.arena_bytes is not None:
            found["arena_bytes"] = measured.arena_bytes
        return found
    return {}


def _against_original(model, current, exported, last_tflite, eval_data, load: LoadOptions) -> dict:
    """The input model's accuracy, and the last export's relative error against the input model's outputs:
    for a quantity (None for classes; a model with several outputs: the largest over those that are
    quantities). The export measured both itself when no transform came first."""
    if exported is None or eval_data is None:
        return {"accuracy": None, "relative_error": None}
    contract = exported.to_dict()
    by_output = contract["fidelity_by_output"] or [contract["fidelity"] or {}]
    quantities = [index for index, measured in enumerate(by_output) if measured.get("relative_error") is not None]
    if current == model:
        relative_error = max((by_output[index]["relative_error"] for index in quantities), default=None)
        return {"accuracy": (contract["reference"] or {}).get("accuracy"), "relative_error": relative_error}
    from tfcompress.data import as_dataset, per_input
    from tfcompress.jobs._common import load_model
    from tfcompress.runtime.interpreter import predict
    from tfcompress.runtime.metrics import fidelity, task_accuracy
    from tfcompress.transforms.training import fitted_data, label_task

    original, _ = load_model(model, load)
    data = as_dataset(eval_data, load.preprocessing)
    if len(original.outputs) > 1:  # labels fit one output (convert said so): each is measured against the model's
        data = dataclasses.replace(data, y=None)
    data = fitted_data(
        data, original, load.preprocessing, load.reshape_data, "eval", load.asked_tasks(original.output_names)
    )
    outputs = original.predict(data.x, batch_size=256, verbose=0)
    relative_error = None
    if quantities:
        exported_outputs = per_input(predict(Path(last_tflite).read_bytes(), data.x))
        relative_error = max(
            fidelity(exported_outputs[index], per_input(outputs)[index], task="regression").relative_error
            for index in quantities
        )
    if data.y is None:
        return {"accuracy": None, "relative_error": relative_error}
    accuracy = task_accuracy(outputs, data.y, label_task(original, load.asked_tasks(original.output_names)))
    return {"accuracy": accuracy, "relative_error": relative_error}


def _final_result(model, exported, last_tflite, output_dir, original: dict, measured) -> dict:
    """The report contract's keys, for the last exported model against the input model (`_against_original`)."""
    result = {
        "model": str(model),
        "output": None,
        "precision": None,
        "size_bytes": None,
        "gzip_bytes": None,
        "reference": {"path": str(model), "size_bytes": path_size(model), "accuracy": original["accuracy"]},
        "accuracy": None,
        "accuracy_drop": None,
        "fidelity": None,
        "latency_us": None,
        "ops": {},
        "float_ops": [],
        "arena_bytes": measured.get("arena_bytes"),
        "warnings": [],
    }
    if exported is None:
        return result
    contract = exported.to_dict()
    accuracy = contract["accuracy"]
    result.update(
        {
            "output": _relative(last_tflite, output_dir),
            "precision": contract["precision"],
            "size_bytes": contract["size_bytes"],
            "gzip_bytes": contract["gzip_bytes"],
            "accuracy": accuracy,
            "fidelity": contract["fidelity"],
            "ops": contract["ops"],
            "float_ops": contract["float_ops"],
            "warnings": contract["warnings"],
            "float32_bytes": contract.get("float32_bytes"),
            "huffman_bytes": code_weights(last_tflite.read_bytes()).huffman_bytes,
            "latency_us": measured.get("latency_us"),
        }
    )
    result["accuracy_drop"] = accuracy_drop(original["accuracy"], accuracy)
    result["relative_error"] = original["relative_error"]
    return result


def _budget_value(name, result, measured) -> Optional[float]:
    return {
        "max_accuracy_drop": result["accuracy_drop"],
        "max_relative_error": result.get("relative_error"),
        "max_size_bytes": result["size_bytes"],
        "max_arena_bytes": measured.get("arena_bytes"),
        "max_latency_us": (measured.get("latency_us") or {}).get("p50"),
    }[name]


def _relative(path, root: Path) -> Optional[str]:
    if path is None:
        return None
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def _relative_paths(value, root: Path):
    """Every string naming a path inside `root` made relative to it (a report as JSON data)."""
    prefixes = tuple(f"{folder}/" for folder in {str(root), str(root.resolve())})
    if isinstance(value, dict):
        return {key: _relative_paths(item, root) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_relative_paths(item, root) for item in value]
    if isinstance(value, str):
        for prefix in prefixes:
            if value.startswith(prefix):
                return value[len(prefix) :]
    return value


def format_run_report(report: RunReport) -> str:
    result = report.result
    lines = [f"recipe {report.recipe.name}: {result['model']}"]
    for step in report.steps:
        lines.append(f"  {step['step']:<9} → {step['output']}  ({step['seconds']:.1f} s)")
    if result["size_bytes"] is not None:
        float32 = result.get("float32_bytes")
        versus = (
            f" ({float32 / result['size_bytes']:.1f}x smaller than the float32 .tflite, {float32:,} B)"
            if float32
            else ""
        )
        lines.append(
            f"size: {result['size_bytes']:,} B{versus}, {result['precision']}; "
            f"gzip {result['gzip_bytes']:,} B; Huffman-coded {result['huffman_bytes']:,} B"
        )
    if result["accuracy"] is not None:
        before = result["reference"]["accuracy"]
        lines.append(
            f"accuracy: {before * 100:.2f}% → {result['accuracy'] * 100:.2f}% (drop {result['accuracy_drop']:+.2f} pt)"
            if before is not None
            else f"accuracy: {result['accuracy'] * 100:.2f}%"
        )
    if result["arena_bytes"] is not None:
        lines.append(f"arena: {result['arena_bytes']:,} bytes (TFLite Micro, measured)")
    if result["latency_us"] is not None:
        lines.append(f"latency p50: {result['latency_us']['p50']:.1f} us")
    lines += [f"WARNING: {warning}" for warning in step_warnings(report.steps)]
    for budget in report.budgets:
        shown = _percent if budget.name == "max_relative_error" else _number
        value = "not measured" if budget.value is None else shown(budget.value)
        lines.append(f"budget {budget.name} ≤ {shown(budget.limit)}: {value} → {'ok' if budget.passed else 'FAILED'}")
    lines.append("PASSED" if report.passed else "FAILED: a budget was broken")
    return "\n".join(lines)


def _percent(fraction: float) -> str:
    return f"{fraction:.2%}"


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"
