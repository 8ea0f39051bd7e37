"""Every option a user sets, declared once, and what is generated from that declaration.

A field's name, type and default come from its frozen dataclass; `option()` adds its help
(and choices or a lower bound). From that one declaration come the CLI flags
(`define_flags`, `from_flags`), the recipe schema (`recipe_schema`) and the API's keyword
convenience (`gather`). The options of one stage live beside it (`ConvertOptions` in
export/tflite.py, `PruneOptions` in transforms/prune.py, ...); the ones no stage owns live here.
"""

import dataclasses
import typing
import warnings
from typing import Optional

from tfcompress.errors import OptionError
from tfcompress.runtime.task import AUTO, TASKS

__all__ = [
    "option",
    "settable_fields",
    "define_flags",
    "from_flags",
    "recipe_schema",
    "gather",
    "parse_name_values",
    "LoadOptions",
    "TrainOptions",
    "GuardOptions",
    "MicroOptions",
    "MICRO_CONVERSION_OPTIONS",
    "WEIGHT_BITS",
    "CheckOptions",
    "AnalyzeOptions",
    "AutoOptions",
    "ShrinkOptions",
    "CHECK_TARGETS",
    "OBJECTIVES",
]


def option(default, help, *, choices=None, lower_bound=None, was=None, was_inverse=None):
    """A dataclass field a user may set: on the command line, in a recipe and in the API.

    `was` names an older name of the same option, `was_inverse` an older boolean that meant its
    opposite; both are still accepted, with a warning, until the next release.
    """
    renamed = (was, False) if was else (was_inverse, True) if was_inverse else None
    metadata = {
        "help": help,
        "choices": tuple(choices) if choices else None,
        "lower_bound": lower_bound,
        "was": renamed,
    }
    if isinstance(default, dict):
        return dataclasses.field(default_factory=dict, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def settable_fields(cls, only=None) -> list:
    """(field, kind, item type) of the fields declared with `option()`, in declaration order.

    kind is "scalar", "list" (a tuple: comma-separated on the command line) or "mapping" (NAME=VALUE pairs).
    """
    hints = typing.get_type_hints(cls)
    chosen = []
    for field in dataclasses.fields(cls):
        if "help" not in field.metadata or (only is not None and field.name not in only):
            continue
        chosen.append((field, *_kind(hints[field.name])))
    return chosen


def _kind(annotation) -> tuple:
    if typing.get_origin(annotation) is typing.Union:  # Optional[X]
        (annotation,) = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is tuple:
        return "list", args[0]
    if origin is dict:
        return "mapping", args[1]
    return "scalar", annotation


def define_flags(flag_values, cls, *, defaults=None, only=None, module_name=None) -> dict:
    """absl flags for `cls`'s options (defaults from `defaults`, an instance, when a command has its own);
    `module_name` is the heading `--help` lists them under."""
    from absl import flags

    holders = {}
    for field, kind, item in settable_fields(cls, only):
        default = getattr(defaults, field.name) if defaults is not None else _default(field)
        help_text, choices = field.metadata["help"], field.metadata["choices"]
        common = {"flag_values": flag_values, "module_name": module_name}
        if kind == "list":
            holders[field.name] = flags.DEFINE_list(
                field.name, list(map(str, default)) if default is not None else None, help_text, **common
            )
        elif kind == "mapping":
            holders[field.name] = flags.DEFINE_string(
                field.name, _name_values_text(default), help_text + " (NAME=VALUE,NAME=VALUE)", **common
            )
        elif choices:
            holders[field.name] = flags.DEFINE_enum(field.name, default, choices, help_text, **common)
        elif item is bool:
            holders[field.name] = flags.DEFINE_boolean(field.name, default, help_text, **common)
        else:
            bound = {} if field.metadata["lower_bound"] is None else {"lower_bound": field.metadata["lower_bound"]}
            holders[field.name] = _definer(item)(field.name, default, help_text, **bound, **common)
        if field.metadata["was"]:
            old, inverse = field.metadata["was"]
            holders[old] = _definer(item)(
                old, None, f"Deprecated: use --{'no' if inverse else ''}{field.name}.", **common
            )
    return holders


def _definer(item):
    from absl import flags

    return {bool: flags.DEFINE_boolean, int: flags.DEFINE_integer, float: flags.DEFINE_float, str: flags.DEFINE_string}[
        item
    ]


def from_flags(cls, values: dict, *, only=None):
    """The options object the parsed flag values describe."""
    from absl import flags

    settings = {}
    for field, kind, item in settable_fields(cls, only):
        value = values[field.name]
        try:
            if kind == "list" and value is not None:
                value = tuple(item(text) for text in value)
            elif kind == "mapping":
                value = parse_name_values(value or "", field.name, item)
        except ValueError as error:
            raise flags.Error(f"--{field.name}: {error}") from None
        settings[field.name] = value
        if field.metadata["was"] and values.get(field.metadata["was"][0]) is not None:
            settings[field.name] = _renamed(field, values[field.metadata["was"][0]], flag=True)
    return cls(**settings)


def recipe_schema(*classes, only=None) -> dict:
    """option name → what a recipe may write there: a type, a tuple of choices, [item type] or {str: item type}."""
    schema = {}
    for cls in classes:
        for field, kind, item in settable_fields(cls, only):
            if kind == "list":
                schema[field.name] = [field.metadata["choices"] or item]
            elif kind == "mapping":
                schema[field.name] = {str: field.metadata["choices"] or item}  # names to values of that kind
            else:
                schema[field.name] = field.metadata["choices"] or item
            if field.metadata["was"]:
                schema[field.metadata["was"][0]] = schema[field.name]
    return schema


def gather(settings: dict, *given) -> list:
    """The options objects of an API call: each (class, instance or None) in `given`, updated with the
    keyword arguments that name its fields. A keyword no class declares is an error."""
    remaining = dict(settings)
    result = []
    for cls, instance in given:
        for field, _, _ in settable_fields(cls):
            if field.metadata["was"] and field.metadata["was"][0] in remaining:
                remaining[field.name] = _renamed(field, remaining.pop(field.metadata["was"][0]), flag=False)
        names = {field.name for field in dataclasses.fields(cls)}
        mine = {name: _as_declared(cls, name, remaining.pop(name)) for name in list(remaining) if name in names}
        if instance is None:
            result.append(cls(**mine))
        else:
            result.append(dataclasses.replace(instance, **mine) if mine else instance)
    if remaining:
        raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(remaining))}")
    return result


def _renamed(field, value, *, flag: bool):
    """The value an old option name gives the new one, with a warning that the old name goes."""
    old, inverse = field.metadata["was"]
    if flag:
        old, new = f"--{old}", f"--{'no' if inverse else ''}{field.name}"
    else:
        new = f"{field.name}=False" if inverse else field.name
    warnings.warn(f"{old} is deprecated and goes in the next release; use {new}.", FutureWarning, stacklevel=4)
    return (not value) if inverse else value


def _as_declared(cls, name, value):
    """A list given where the option is a tuple becomes the tuple (options are frozen, hashable values)."""
    kind = _kind(typing.get_type_hints(cls)[name])[0]
    return tuple(value) if kind == "list" and value is not None else value


def _default(field):
    return field.default_factory() if field.default is dataclasses.MISSING else field.default


def parse_name_values(text: str, name: str = "option", value_type=float) -> dict:
    """`dense=0.96,dense_1=0.9` → {"dense": 0.96, "dense_1": 0.9} (values read as `value_type`)."""
    result = {}
    for item in filter(None, text.split(",")):
        key, equals, value = item.partition("=")
        try:
            result[key.strip()] = value_type(value.strip())
        except ValueError:
            equals = ""
        if not equals or not key.strip():
            raise ValueError(f"{name} wants NAME=VALUE pairs separated by commas; received {item!r}")
    return result


def _name_values_text(mapping) -> Optional[str]:
    return ",".join(f"{key}={value}" for key, value in mapping.items()) or None


@dataclasses.dataclass(frozen=True)
class LoadOptions:
    """How a model and its data are read: the same for every command that reads them."""

    trust_model_code: bool = option(False, "Allow Lambda layers, whose stored code runs when loading.")
    custom_objects: Optional[str] = option(
        None,
        "Python file defining the model's custom layers (from Python: also a dict name → class). "
        "It is imported, so its code runs: needs --trust_model_code.",
    )
    input_scale: Optional[float] = option(None, "Multiply stored data by this (default 1/255 for uint8, else 1).")
    input_offset: float = option(0.0, "Then add this.")
    reshape_data: bool = option(False, "Reshape samples to the model input when only the layout differs.")
    task: str = option(
        AUTO,
        "What the model outputs, which decides how fidelity and accuracy are measured: auto (read from "
        "its last op), softmax, logits, sigmoid, regression or reconstruction.",
        choices=(AUTO,) + TASKS,
    )
    output_task: dict[str, str] = option(
        {},
        "The task of named outputs, over --task: for a model whose outputs read differently, e.g. "
        "image=reconstruction,label=softmax.",
        choices=(AUTO,) + TASKS,
    )

    def __post_init__(self):
        for name, task in {"task": self.task, **{f"output_task[{k}]": v for k, v in self.output_task.items()}}.items():
            if task not in (AUTO,) + TASKS:
                raise OptionError(f"{name} must be one of {', '.join((AUTO,) + TASKS)}. Received: {name}={task!r}")
        if isinstance(self.custom_objects, str) and not self.trust_model_code:
            raise OptionError(
                f"--custom_objects imports and runs {self.custom_objects}; pass "
                "--trust_model_code as well if you trust that code."
            )

    def asked_tasks(self, output_names) -> tuple:
        """What --task and --output_task ask of each output, by name ("auto" where neither says): the
        `requested` that runtime.task.resolve_tasks and training.output_tasks take."""
        names = tuple(output_names or (None,))  # None: a subclassed model's one output, unnamed before a call
        unknown = sorted(set(self.output_task) - set(names))
        if unknown:
            raise OptionError(
                f"--output_task names {', '.join(map(repr, unknown))}, but the model's outputs are "
                f"{', '.join(repr(name) for name in names if name is not None) or 'unnamed'}; use those names."
            )
        return tuple(self.output_task.get(name, self.task) for name in names)

    @property
    def tells_task(self) -> bool:
        """Whether --task or --output_task says how an output reads (else each is read from the graph)."""
        return self.task != AUTO or bool(self.output_task)

    @property
    def preprocessing(self):
        from tfcompress.data import Preprocessing

        return Preprocessing(self.input_scale, self.input_offset)


LEARNING_RATE_SCHEDULES = ("constant", "cosine")
STRATEGIES = ("default", "mirrored", "multi_worker")


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """How the training-time steps fine-tune (each step has its own defaults, see jobs/)."""

    epochs: int = option(1, "Fine-tuning epochs.", lower_bound=1)
    batch_size: int = option(32, "Batch size.", lower_bound=1)
    learning_rate: float = option(1e-4, "Adam learning rate.")
    learning_rate_schedule: str = option(
        "constant", "constant, or cosine: decayed to 0 over the training steps.", choices=LEARNING_RATE_SCHEDULES
    )
    seed: int = option(0, "Seed for the initial weights (a new student) and the shuffling.")
    strategy: str = option(
        "default",
        "Where to train: this process (default), every local device (mirrored), or the machines TF_CONFIG "
        "lists (multi_worker: run the same command on each; only the chief writes).",
        choices=STRATEGIES,
    )
    warn_accuracy_drop: float = option(
        3.0,
        "Warn when top-1 accuracy falls by more points than this (on --val, else on training images); without "
        "labels, when a softmax output can be expected to have lost that much, its probabilities standing in for them.",
    )
    warn_relative_error: float = option(
        0.1,
        "Data without labels: warn when an output that is not a softmax moves by more than this fraction (RMS "
        "change over RMS) from the model's before the step.",
    )

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise OptionError(f"strategy must be one of {', '.join(STRATEGIES)}. Received: strategy={self.strategy!r}")
        if self.epochs < 1:
            raise OptionError(f"epochs must be at least 1. Received: epochs={self.epochs}")
        if self.batch_size < 1:
            raise OptionError(f"batch_size must be at least 1. Received: batch_size={self.batch_size}")
        if not self.learning_rate > 0:
            raise OptionError(f"learning_rate must be positive. Received: learning_rate={self.learning_rate}")


@dataclasses.dataclass(frozen=True)
class GuardOptions:
    """What the pre-flight check (`tfcompress check`) may let through before the slow work."""

    skip_check: bool = option(False, "Skip the pre-flight check (tfcompress check) that runs first.")
    allow_float_ops: bool = option(False, "Accept ops the converter leaves in float in an int8 or int16x8 model.")


CHECK_TARGETS = ("mobile", "micro", "mobile-fp16")


@dataclasses.dataclass(frozen=True)
class CheckOptions:
    target: str = option(
        "mobile", "Where the model will run: LiteRT int8, TFLite Micro int8, LiteRT float16.", choices=CHECK_TARGETS
    )

    def __post_init__(self):
        if self.target not in CHECK_TARGETS:
            raise OptionError(f"target must be one of {', '.join(CHECK_TARGETS)}. Received: target={self.target!r}")


@dataclasses.dataclass(frozen=True)
class MicroOptions:
    """The TFLite Micro package: names, arena, Dense quantization, NPU and weight compression."""

    name: str = option("model", "C identifier for the array and functions.")
    arena_margin: float = option(1.1, "Declared arena = measured x margin.", lower_bound=1.0)
    npu: Optional[str] = option(
        None, "Also compile for an Arm Ethos-U NPU, e.g. ethos-u55-128 (needs tfcompress[ethos-u]).", was="target"
    )
    compress: Optional[str] = option(
        None,
        "lut: store clustered weights as bit-packed indices into value tables (TFLite Micro DECODE); "
        "smaller flash, the largest expanded tensor in RAM.",
        choices=("lut",),
    )
    accept_micro_difference: bool = option(
        False,
        "Package even when TFLite Micro's outputs are further from the Keras model's than LiteRT's "
        "(recorded in the report).",
    )

    def __post_init__(self):
        if self.compress not in (None, "lut"):
            raise OptionError(f"compress must be 'lut' or None. Received: compress={self.compress!r}")


# Weight widths both runtimes run: int8, and int4 packed two per byte (qat, convert, micro, analyze).
WEIGHT_BITS = (8, 4)

# The ConvertOptions micro takes (CLI flags, recipe options); the rest is fixed by TFLite Micro.
MICRO_CONVERSION_OPTIONS = ("per_tensor_dense", "weight_bits", "calibration_method", "percentile")


@dataclasses.dataclass(frozen=True)
class AnalyzeOptions:
    samples: int = option(100, "Calibration inputs the errors are averaged over.", lower_bound=1)
    try_float: int = option(3, "With --eval: layers to try in float, most sensitive first.", lower_bound=0)
    weight_bits: int = option(
        8,
        "4: also rank the Conv2D, DepthwiseConv2D and Dense layers by what their kernel alone costs at 4 bits, "
        "and suggest which to keep at 8 (qat --weight_bits 4 --layer_bits NAME=8).",
    )

    def __post_init__(self):
        if self.weight_bits not in WEIGHT_BITS:
            raise OptionError(f"weight_bits must be 8 or 4. Received: weight_bits={self.weight_bits}")


OBJECTIVES = ("size", "flash", "latency", "arena")
AUTO_TARGETS = ("mobile", "micro")


@dataclasses.dataclass(frozen=True)
class AutoOptions:
    max_accuracy_drop: float = option(1.0, "Budget: points below the float model.")
    max_relative_error: Optional[float] = option(
        None,
        "Budget instead of accuracy, for a model whose output is a quantity (regression, reconstruction): "
        "RMS error against the Keras outputs over their RMS, on the --eval inputs (0.02: 2%); needs no labels.",
    )
    objective: str = option(
        "size",
        "What to minimise within the budget: size (gzip bytes), flash (TFLite Micro with LUT-compressed "
        "weights; needs --target micro), latency, or arena (TFLite Micro).",
        choices=OBJECTIVES,
    )
    target: str = option(
        "mobile",
        "Where the model runs: mobile (LiteRT: every candidate) or micro (TFLite Micro: full-integer int8 "
        "with int8 I/O only, its arena measured, and a micro step in the recipe).",
        choices=AUTO_TARGETS,
    )

    def __post_init__(self):
        if self.target not in AUTO_TARGETS:
            raise OptionError(f"target must be one of {', '.join(AUTO_TARGETS)}. Received: target={self.target!r}")
        if self.objective not in OBJECTIVES:
            raise OptionError(
                f"objective must be one of {', '.join(OBJECTIVES)}. Received: objective={self.objective!r}"
            )
        if self.max_relative_error is not None and not self.max_relative_error > 0:
            raise OptionError(
                "max_relative_error must be a positive fraction. "
                f"Received: max_relative_error={self.max_relative_error}"
            )
        if self.objective == "flash" and self.target != "micro":
            raise OptionError(
                "objective flash is TFLite Micro's flash with LUT-compressed weights: add --target micro "
                "(or use --objective size for a download's size)."
            )


@dataclasses.dataclass(frozen=True)
class ShrinkOptions:
    """How `auto --train` fine-tunes each pruned and clustered probe, and how long its search may run.

    The defaults are the schedule that took LeNet-300-100 to 60x within 0.2 pt on the 60,000
    Fashion-MNIST images (benchmarks/compress.py): a short schedule loses more than a worse allocation.
    """

    prune_epochs: int = option(
        30, "Epochs of each probe's pruning (the sparsity is reached at two thirds).", lower_bound=1
    )
    cluster_epochs: int = option(6, "Epochs of each probe's clustering, zeros kept.", lower_bound=1)
    batch_size: int = option(128, "Batch size of the probes' fine-tuning.", lower_bound=1)
    learning_rate: float = option(1e-3, "Adam learning rate while pruning; clustering uses a tenth of it.")
    time_budget: Optional[float] = option(
        None, "Minutes auto may run in all: no probe starts that, by the longest one so far, would end later."
    )

    def __post_init__(self):
        if min(self.prune_epochs, self.cluster_epochs, self.batch_size) < 1:
            raise OptionError(
                "prune_epochs, cluster_epochs and batch_size must be at least 1. Received: "
                f"{self.prune_epochs}, {self.cluster_epochs}, {self.batch_size}"
            )
        if not self.learning_rate > 0:
            raise OptionError(f"learning_rate must be positive. Received: learning_rate={self.learning_rate}")
        if self.time_budget is not None and not self.time_budget > 0:
            raise OptionError(f"time_budget must be positive minutes. Received: time_budget={self.time_budget}")
