"""Recipes: the compression chain written down in YAML, validated before anything runs.

A recipe names its steps in order (each a Keras → Keras transform or an export),
their options, the data each uses and the budgets the result must meet. Every
error names the offending key and its line. This module imports no TensorFlow, so
the batch tool can hash a recipe and serve cached results without it.

    name: mcu_int8
    steps:
      - prune: {target_sparsity: 0.5, epochs: 2}
      - micro: {arena_margin: 1.1}
    budgets: {max_accuracy_drop: 1.0, max_arena_bytes: 65536}
    data: {calibration: data/calib.npz}    # paths relative to the recipe file
"""

import dataclasses
from importlib import resources
from pathlib import Path
from typing import Optional

import yaml

from tfcompress._io import limits
from tfcompress.errors import RecipeError
from tfcompress.export.tflite import ConvertOptions
from tfcompress.options import (
    MICRO_CONVERSION_OPTIONS,
    GuardOptions,
    LoadOptions,
    MicroOptions,
    TrainOptions,
    recipe_schema,
)
from tfcompress.runtime.benchmark import BenchmarkOptions
from tfcompress.transforms.cluster import ClusterOptions
from tfcompress.transforms.distill import DistillOptions
from tfcompress.transforms.lowrank import LowRankOptions
from tfcompress.transforms.prune import PruneOptions
from tfcompress.transforms.qat import QatOptions

__all__ = [
    "Recipe",
    "Step",
    "load_recipe",
    "parse_recipe",
    "builtin_recipes",
    "folder_data",
    "STEP_KINDS",
    "BUDGETS",
    "DATA_ROLES",
    "TRANSFORMS",
    "EXPORTS",
    "DATA_DEFAULTS_FILE",
]

DATA_ROLES = ("train", "val", "unlabeled", "calibration", "eval")
_TRAINING_ROLES = ("train", "val")
_GATE = ("skip_check",)
_TASK = recipe_schema(LoadOptions, only=("task", "output_task"))  # how an export reads the outputs
# step → (options and what a recipe may write there, data roles it reads): from the options' declarations
_STEPS = {
    "prune": (recipe_schema(TrainOptions, PruneOptions), _TRAINING_ROLES),
    "cluster": (recipe_schema(TrainOptions, ClusterOptions), _TRAINING_ROLES),
    "qat": ({**recipe_schema(TrainOptions, QatOptions), **recipe_schema(GuardOptions, only=_GATE)}, _TRAINING_ROLES),
    "distill": ({**recipe_schema(TrainOptions, DistillOptions), "student": str}, (*_TRAINING_ROLES, "unlabeled")),
    "lowrank": (recipe_schema(TrainOptions, LowRankOptions), _TRAINING_ROLES),
    "convert": ({**recipe_schema(ConvertOptions, GuardOptions), **_TASK}, ("calibration", "eval")),
    "micro": (
        {
            **recipe_schema(MicroOptions),
            **recipe_schema(ConvertOptions, only=MICRO_CONVERSION_OPTIONS),
            **recipe_schema(GuardOptions, only=_GATE),
            **_TASK,
        },
        ("calibration", "eval"),
    ),
    "benchmark": (recipe_schema(BenchmarkOptions), ("eval",)),
}
STEP_KINDS = tuple(_STEPS)
TRANSFORMS = ("prune", "cluster", "qat", "distill", "lowrank")
EXPORTS = ("convert", "micro")
BUDGETS = {
    "max_accuracy_drop": "percentage points below the original model's accuracy (needs eval data)",
    "max_relative_error": "RMS error of a quantity output (regression, reconstruction) against the original "
    "model's outputs, over their RMS (0.02: 2%; needs eval data)",
    "max_size_bytes": "bytes of the final .tflite",
    "max_arena_bytes": "TFLite Micro arena, measured (needs a micro step or benchmark micro: true)",
    "max_latency_us": "median latency on this machine (needs convert or benchmark)",
}
_TOP_LEVEL = ("name", "description", "steps", "budgets", "data")
DATA_DEFAULTS_FILE = "tfcompress-data.yaml"


@dataclasses.dataclass(frozen=True)
class Step:
    kind: str
    options: dict
    data: dict  # role → data spec, paths already resolved against the recipe's folder
    line: int

    def label(self, index: int) -> str:
        return f"step {index + 1} ({self.kind}, line {self.line})"


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    steps: tuple
    budgets: dict
    data: dict  # role → default data spec
    source: str  # the file, or "built-in"

    def to_dict(self) -> dict:
        """Everything that decides what the recipe produces (the cache key uses it)."""
        return {
            "name": self.name,
            "description": self.description,
            "steps": [{"step": step.kind, "options": step.options, "data": step.data} for step in self.steps],
            "budgets": self.budgets,
            "data": self.data,
        }


def builtin_recipes() -> dict:
    """Name → YAML text of the recipes shipped with tfcompress."""
    folder = resources.files("tfcompress.pipeline") / "recipes"
    return {
        entry.name[: -len(".yaml")]: entry.read_text() for entry in folder.iterdir() if entry.name.endswith(".yaml")
    }


def load_recipe(name_or_path) -> Recipe:
    """A recipe from a YAML file, or a built-in one by name (mobile_int8, mcu_int8, ...)."""
    path = Path(name_or_path)
    if path.exists():
        return parse_recipe(_read_text(path, "recipe"), str(path), base_dir=path.parent)
    builtin = builtin_recipes()
    if str(name_or_path) in builtin:
        return parse_recipe(builtin[str(name_or_path)], "built-in", base_dir=None)
    raise RecipeError(
        f"No recipe file {path} and no built-in recipe of that name; built-in recipes: {', '.join(sorted(builtin))}."
    )


def folder_data(model_path) -> dict:
    """Data defaults kept beside models: `tfcompress-data.yaml` (role: path) in the model's folder."""
    defaults_file = Path(model_path).parent / DATA_DEFAULTS_FILE
    if not defaults_file.exists():
        return {}
    entries, lines = _load_yaml(_read_text(defaults_file, "data defaults file"), str(defaults_file))
    entries = entries or {}
    fail = _Errors(str(defaults_file), lines)
    if not isinstance(entries, dict):
        fail((), f"a mapping of data roles ({', '.join(DATA_ROLES)}) to paths.")
    return _data(entries, DATA_ROLES, (), defaults_file.parent, fail)


def _read_text(path: Path, what: str) -> str:
    limits.check_input_file(path, what.capitalize(), RecipeError)
    limits.TEXT_BYTES.check(path.stat().st_size, path, RecipeError)
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise RecipeError(f"Cannot read the {what} {path}: {error}.") from None


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader without aliases (no "billion laughs" expansion) and with a depth limit."""

    depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None,
                None,
                "recipes do not use YAML aliases (*name); write the values out",
                self.peek_event().start_mark,
            )
        self.depth += 1
        try:
            if self.depth > limits.NESTING_DEPTH.value:
                raise yaml.composer.ComposerError(
                    None, None, f"nested over {limits.NESTING_DEPTH.value} levels deep", self.peek_event().start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _load_yaml(text: str, where: str):
    """(document, key path → line) of one YAML document, or a RecipeError naming the line."""
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        return (loader.construct_document(node) if node is not None else None), _line_numbers(node)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        position = f" line {mark.line + 1}" if mark is not None else ""
        raise RecipeError(f"{where}{position}: not valid YAML ({getattr(error, 'problem', error)}).") from None
    finally:
        loader.dispose()


def parse_recipe(text: str, source: str = "recipe", base_dir: Optional[Path] = None) -> Recipe:
    """Validates a recipe's YAML text; relative data paths are taken from `base_dir`."""
    where = source if source != "built-in" else "built-in recipe"
    document, lines = _load_yaml(text, where)
    fail = _Errors(where, lines)
    if not isinstance(document, dict):
        fail((), "a recipe is a mapping with 'steps' (and optional 'name', 'budgets', 'data').")
    for key in document:
        if key not in _TOP_LEVEL:
            fail((key,), f"unknown key '{key}'; a recipe has {', '.join(_TOP_LEVEL)}.")
    steps = document.get("steps")
    if not isinstance(steps, list) or not steps:
        fail(("steps",), f"'steps' must be a list of steps, each one of: {', '.join(STEP_KINDS)}.")
    parsed_steps = tuple(_step(entry, index, base_dir, fail) for index, entry in enumerate(steps))
    _check_order(parsed_steps, fail)
    budgets = _mapping(document, "budgets", fail)
    for key, value in budgets.items():
        if key not in BUDGETS:
            fail(("budgets", key), f"unknown budget '{key}'; budgets: {', '.join(BUDGETS)}.")
        lowest = -100 if key == "max_accuracy_drop" else 0  # a negative drop asks for a gain over the float model
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lowest <= value < float("inf"):
            fail(("budgets", key), f"budget '{key}' must be a finite number of at least {lowest}; got {value!r}.")
    _check_budgets_measurable(budgets, parsed_steps, fail)
    data = _data(_mapping(document, "data", fail), DATA_ROLES, ("data",), base_dir, fail)
    for key in ("name", "description"):
        if key in document and not isinstance(document[key], str):
            fail((key,), f"'{key}' must be text.")
    name = document.get("name") or (Path(source).stem if source != "built-in" else "recipe")
    return Recipe(name, document.get("description", ""), parsed_steps, dict(budgets), data, source)


def _step(entry, index, base_dir, fail) -> Step:
    path = ("steps", index)
    if isinstance(entry, str):
        entry = {entry: None}
    if not isinstance(entry, dict) or len(entry) != 1:
        fail(path, "each step is one name with its options, e.g. '- convert: {precision: int8}'.")
    ((kind, options),) = entry.items()
    if kind not in _STEPS:
        fail(path, f"unknown step '{kind}'; steps: {', '.join(STEP_KINDS)}.")
    options = {} if options is None else options
    if not isinstance(options, dict):
        fail(path + (kind,), f"the options of '{kind}' must be a mapping (key: value).")
    allowed, roles = _STEPS[kind]
    settings = {}
    for key, value in options.items():
        if key in roles:
            continue
        if key not in allowed:
            fail(
                path + (kind, key),
                f"unknown option '{key}' for step {kind}; options: {', '.join(sorted(set(allowed) | set(roles)))}.",
            )
        settings[key] = _checked_value(value, allowed[key], f"{kind}.{key}", path + (kind, key), fail)
    if "student" in settings:
        settings["student"] = _resolved(settings["student"], base_dir)
    data = _data({role: options[role] for role in roles if role in options}, roles, path + (kind,), base_dir, fail)
    return Step(kind, settings, data, fail.line(path))


def _checked_value(value, wanted, name, path, fail):
    if isinstance(wanted, tuple):
        if value not in wanted:
            fail(path, f"{name} must be one of {', '.join(wanted)}; got {value!r}.")
        return value
    if isinstance(wanted, list):  # [type]: a list of that type
        if not isinstance(value, list):
            fail(path, f"{name} must be a list, e.g. [a, b]; got {value!r}.")
        return [_checked_value(item, wanted[0], name, path, fail) for item in value]
    if wanted is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(wanted, dict):  # {str: value type}: names to values
        (value_type,) = wanted.values()
        if not isinstance(value, dict):
            example = "{dense: 0.9}" if value_type is float else "{image: reconstruction}"
            fail(path, f"{name} must map names to values, e.g. {example}; got {value!r}.")
        return {str(k): _checked_value(v, value_type, name, path, fail) for k, v in value.items()}
    if not isinstance(value, wanted) or (wanted is not bool and isinstance(value, bool)):
        fail(path, f"{name} must be {'a number' if wanted is float else wanted.__name__}; got {value!r}.")
    return value


def _data(entries, roles, path, base_dir, fail) -> dict:
    data = {}
    for role, spec in entries.items():
        if role not in roles:
            fail(path + (role,), f"unknown data role '{role}'; here: {', '.join(roles)}.")
        if not isinstance(spec, str):
            fail(path + (role,), f"{role} must be a data path (file, folder or FOLDER@split); got {spec!r}.")
        data[role] = _resolved(spec, base_dir)
    return data


def _resolved(spec: str, base_dir: Optional[Path]) -> str:
    """A path relative to the recipe's folder, made absolute (a data split and 'random' kept)."""
    path_text, at, split = spec.partition("@")
    if spec == "random" or base_dir is None or Path(path_text).is_absolute():
        return spec
    return str((base_dir / path_text).resolve()) + at + split


def _check_order(steps, fail) -> None:
    seen_exports = []
    for index, step in enumerate(steps):
        if step.kind in TRANSFORMS and seen_exports:
            fail(("steps", index), f"{step.kind} changes the Keras model, so it must come before {seen_exports[0]}.")
        if step.kind in EXPORTS:
            if step.kind in seen_exports:
                fail(("steps", index), f"a recipe has at most one {step.kind} step.")
            seen_exports.append(step.kind)
        if step.kind == "benchmark" and not seen_exports:
            fail(("steps", index), "benchmark measures a .tflite: put a convert or micro step before it.")


def _check_budgets_measurable(budgets, steps, fail) -> None:
    kinds = {step.kind for step in steps}
    micro_benchmark = any(step.kind == "benchmark" and step.options.get("micro") for step in steps)
    needs = {
        "max_size_bytes": ("a convert or micro step", bool(kinds & set(EXPORTS))),
        "max_accuracy_drop": ("a convert or micro step", bool(kinds & set(EXPORTS))),
        "max_relative_error": ("a convert or micro step", bool(kinds & set(EXPORTS))),
        "max_arena_bytes": ("a micro step or benchmark with micro: true", "micro" in kinds or micro_benchmark),
        "max_latency_us": ("a convert or benchmark step", bool(kinds & {"convert", "benchmark"})),
    }
    for budget in budgets:
        what, present = needs[budget]
        if not present:
            fail(("budgets", budget), f"budget '{budget}' needs {what} to measure it.")


def _mapping(document, key, fail) -> dict:
    value = document.get(key) or {}
    if not isinstance(value, dict):
        fail((key,), f"'{key}' must be a mapping (key: value).")
    return value


class _Errors:
    """Raises a `RecipeError` that names the line of the key at fault."""

    def __init__(self, where: str, lines: dict):
        self.where, self.lines = where, lines

    def line(self, path) -> int:
        path = tuple(path)
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path, 1)

    def __call__(self, path, message):
        raise RecipeError(f"{self.where} line {self.line(path)}: {message}")


def _line_numbers(node, path=()) -> dict:
    """(key, index, ...) path → the 1-based line where that key or list item is written."""
    if node is None:
        return {}
    lines = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            lines.update(_line_numbers(value_node, path + (key_node.value,)))
            lines[path + (key_node.value,)] = key_node.start_mark.line + 1  # the key's line, not its value's
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines.update(_line_numbers(item, path + (index,)))
    return lines
