"""`tfcompress` command line: parse flags, call the public API, print, set the exit code.

Exit codes: 0 done, 1 `check` found the model not deployable, `run` broke a budget or `auto` found
no candidate within it, 2 a problem with the input (one line on stderr; the traceback
only with --verbose). Flags may be spelled --calibration_samples or
--calibration-samples. Nothing heavy is imported before a subcommand needs it.
"""

import dataclasses
import re
import sys
import traceback
import warnings
from typing import Callable, Optional

from absl import flags

from tfcompress.errors import TfcompressError, one_line
from tfcompress.held_warnings import HeldWarnings, holding, recording_stdout
from tfcompress.options import MICRO_CONVERSION_OPTIONS

__all__ = ["main", "run_main", "run_tool"]

_USAGE = """usage: tfcompress COMMAND [flags]

commands:
  convert MODEL -o OUT.tflite   Keras model → TFLite (float32, float16, dynamic, int8, int16x8), verified
  micro MODEL -o DIR            full-integer model for TFLite Micro: C++ sources, measured arena, op resolver
                                (--compress lut: clustered weights as LUT indices, verified bit-identical)
  benchmark MODEL.tflite [...]  latency, size, memory, accuracy and fidelity, side by side (no TensorFlow)
  inspect MODEL                 layers or ops, params, sizes, dtypes and quantization of a model
  check MODEL --target T        pre-flight: per layer, will it quantize-aware train, lower to int8, run on T
  qat MODEL -o OUT.h5 --train D quantization-aware training (tfmot), unsupported layers kept in float
  prune MODEL -o OUT.h5 --train D magnitude pruning on a schedule while fine-tuning, stripped, per-layer sparsity
  cluster MODEL -o OUT.h5 --train D weight clustering (k shared values per kernel), stripped, per-layer counts
  distill --teacher T -o OUT.h5 --train D   knowledge distillation into --student S or --width_multiplier W
                                (--unlabeled U: the teacher labels more data; --augment: function matching)
  lowrank MODEL -o OUT.h5 --energy E        truncated-SVD factorization of Dense/Conv2D, optional fine-tune
  analyze MODEL --calibration D per-layer int8 sensitivity: error per layer, ranked; PNG with --plot
  auto MODEL -o OUT.tflite ...  the smallest/fastest conversion within --max_accuracy_drop, measured
                                (--max_relative_error E: a regressor or autoencoder, against its Keras outputs)
  run RECIPE --model M -o DIR   a recipe (YAML, or built-in: mobile_int8, mobile_float16, mcu_int8,
                                mcu_int4, deep_compression, deep_compression_mcu) step by step, budgets judged

`tfcompress help COMMAND` (or `tfcompress COMMAND --help`) shows its usage, an example and its flags;
`tfcompress --version` prints the version."""


_COMMON_FLAGS = {
    "verbose": (False, "Show tracebacks for errors, and TensorFlow's own log lines."),
    "progress": (None, "A line per stage on stderr (default: when stderr is a terminal)."),
    "quiet": (False, "No stage lines."),
}

# The flags that name files, each declared once: its help, and the API argument it becomes.
_FILE_FLAGS = {
    "model": ("The Keras model file (.h5, .keras, SavedModel folder).", "model"),
    "teacher": ("The trained model to learn from.", "teacher"),
    "student": ("The model to train (its weights are the start).", "student"),
    "reference": ("Model whose outputs give fidelity: .tflite, or .h5/.keras (needs TensorFlow).", "reference"),
    "calibration": (
        "Calibration data: a few hundred real inputs (.npz, .npy, image folder, IDX FOLDER@split; "
        "convert also takes 'random', marked in the report).",
        "calibration",
    ),
    "eval": ("Labelled data for accuracy and fidelity (benchmark: labels optional).", "eval_data"),
    "train": (
        "Training data: with labels (y) it fits them; without, the model's own outputs (distill: the teacher's).",
        "train",
    ),
    "val": ("Validation data (optional; labelled if --train is).", "val"),
    "unlabeled": (
        "Inputs without labels, which the teacher labels (any data format; labels in it are ignored).",
        "unlabeled",
    ),
    "report": ("Write the JSON report here.", "report_path"),
    "json": ("Write the JSON report here.", "json_path"),
    "markdown": ("Write a Markdown table here.", "markdown_path"),
    "plot": ("Write the command's chart as a PNG here.", "plot_path"),
    "logdir": ("Write pruning summaries for TensorBoard here.", "logdir"),
}
_DATA_FLAGS = ("calibration", "eval", "train", "val", "unlabeled")
_OUTPUT_FLAGS = ("output", "report", "json", "markdown", "plot")
_INPUT_FLAGS = (
    "model",
    "calibration",
    "eval",
    "train",
    "val",
    "unlabeled",
    "teacher",
    "student",
    "reference",
    "custom_objects",
)


@dataclasses.dataclass(frozen=True)
class _Command:
    """One subcommand: the job it calls, the flags it takes and how its result is printed."""

    job: str  # "module:function" of the public API
    formatter: str  # "module:function" turning the result into text
    positional: tuple  # (METAVAR, API argument); "MODEL..." takes one or more
    synopsis: str
    example: str
    options: tuple = ()  # (API argument, "module:Class", {"only": ..., "defaults": "module:NAME"})
    files: tuple = ()  # flags from _FILE_FLAGS
    output: Optional[tuple] = None  # (help, API argument) of -o
    required: tuple = ()  # flags that must be given
    failed: Optional[Callable] = None  # result → True when the exit code is 1
    carried: Optional[Callable] = None  # result → warnings its report file holds, said though not printed

    def option_groups(self):
        for argument, where, settings in self.options:
            defaults = settings.get("defaults")
            yield argument, _resolve(where), settings.get("only"), _resolve(defaults) if defaults else None


_LOAD = ("load", "tfcompress.options:LoadOptions", {})
_GATE = ("guard", "tfcompress.options:GuardOptions", {"only": ("skip_check",)})


def _training(command: str, options_class: str) -> dict:
    job = f"tfcompress.jobs.{command}"
    return {
        "options": (
            ("options", options_class, {}),
            ("training", "tfcompress.options:TrainOptions", {"defaults": f"{job}:TRAINING"}),
            _LOAD,
        ),
        "files": ("train", "val", "report"),
        "output": ("Where to write the model (.h5 or .keras).", "output"),
    }


_COMMANDS = {
    "convert": _Command(
        "tfcompress.jobs.convert:convert",
        "tfcompress.report:format_report",
        (("MODEL", "model"),),
        "MODEL -o OUT.tflite [flags]",
        "tfcompress convert model.h5 --precision int8 --calibration calib.npz --eval test.npz -o model.tflite "
        "--report model.json",
        options=(
            ("options", "tfcompress.export.tflite:ConvertOptions", {}),
            ("guard", "tfcompress.options:GuardOptions", {}),
            _LOAD,
        ),
        files=("calibration", "eval", "report"),
        output=("Where to write the .tflite.", "output"),
        required=("output",),
    ),
    "micro": _Command(
        "tfcompress.jobs.micro:to_micro",
        "tfcompress.jobs.micro:format_micro_report",
        (("MODEL", "model"),),
        "MODEL -o DIR [flags]",
        "tfcompress micro model.h5 --calibration calib.npz --eval test.npz -o build/",
        options=(
            ("options", "tfcompress.options:MicroOptions", {}),
            (
                "conversion",
                "tfcompress.export.tflite:ConvertOptions",
                {"only": MICRO_CONVERSION_OPTIONS, "defaults": "tfcompress.jobs.micro:CONVERSION"},
            ),
            _GATE,
            _LOAD,
        ),
        files=("calibration", "eval"),
        output=("Folder for model.tflite, the C++ sources and reports.", "output_dir"),
        required=("output",),
    ),
    "benchmark": _Command(
        "tfcompress.jobs.benchmark:benchmark",
        "tfcompress.report:format_benchmark",
        (("MODEL...", "models"),),
        "MODEL.tflite [MORE.tflite ...] [flags]",
        "tfcompress benchmark float32.tflite int8.tflite --eval test.npz --repeat 3 --json bench.json",
        options=(("options", "tfcompress.runtime.benchmark:BenchmarkOptions", {}), _LOAD),
        files=("eval", "reference", "json", "markdown", "plot"),
    ),
    "inspect": _Command(
        "tfcompress.jobs.inspect:inspect_model",
        "tfcompress.jobs.inspect:format_details",
        (("MODEL", "path"),),
        "MODEL [flags]",
        "tfcompress inspect model.tflite --json details.json",
        options=(("load", "tfcompress.options:LoadOptions", {"only": ("trust_model_code", "custom_objects")}),),
        files=("json",),
    ),
    "check": _Command(
        "tfcompress.jobs.check:check",
        "tfcompress.jobs.check:format_check",
        (("MODEL", "model"),),
        "MODEL [flags]",
        "tfcompress check model.h5 --target micro --calibration calib.npz",
        options=(("options", "tfcompress.options:CheckOptions", {}), _LOAD),
        files=("calibration", "json"),
        failed=lambda report: report.verdict == "not deployable",
    ),
    "qat": _Command(
        "tfcompress.jobs.qat:quantize_aware",
        "tfcompress.jobs.qat:format_qat_report",
        (("MODEL", "model"),),
        "MODEL -o OUT.h5 --train DATA [flags]",
        "tfcompress qat model.h5 --train train.npz -o qat.h5",
        required=("output", "train"),
        **{
            **_training("qat", "tfcompress.transforms.qat:QatOptions"),
            "options": (*_training("qat", "tfcompress.transforms.qat:QatOptions")["options"], _GATE),
        },
    ),
    "prune": _Command(
        "tfcompress.jobs.prune:prune",
        "tfcompress.jobs.prune:format_prune_report",
        (("MODEL", "model"),),
        "MODEL -o OUT.h5 --train DATA [flags]",
        "tfcompress prune model.h5 --train train.npz --target_sparsity 0.8 -o pruned.h5",
        required=("output", "train"),
        **{
            **_training("prune", "tfcompress.transforms.prune:PruneOptions"),
            "files": ("train", "val", "report", "logdir"),
        },
    ),
    "cluster": _Command(
        "tfcompress.jobs.cluster:cluster",
        "tfcompress.jobs.cluster:format_cluster_report",
        (("MODEL", "model"),),
        "MODEL -o OUT.h5 --train DATA [flags]",
        "tfcompress cluster pruned.h5 --train train.npz --clusters 16 --preserve_sparsity -o clustered.h5",
        required=("output", "train"),
        **_training("cluster", "tfcompress.transforms.cluster:ClusterOptions"),
    ),
    "distill": _Command(
        "tfcompress.jobs.distill:distill",
        "tfcompress.jobs.distill:format_distill_report",
        (),
        "--teacher T.h5 -o OUT.h5 --train DATA [flags]",
        "tfcompress distill --teacher model.h5 --width_multiplier 0.5 --train train.npz -o student.h5",
        required=("teacher", "output", "train"),
        **{
            **_training("distill", "tfcompress.transforms.distill:DistillOptions"),
            "files": ("teacher", "student", "train", "val", "unlabeled", "report"),
        },
    ),
    "lowrank": _Command(
        "tfcompress.jobs.lowrank:lowrank",
        "tfcompress.jobs.lowrank:format_lowrank_report",
        (("MODEL", "model"),),
        "MODEL -o OUT.h5 (--energy E | --rank_ratio R) [flags]",
        "tfcompress lowrank model.h5 --energy 0.9 --val test.npz -o lowrank.h5",
        required=("output",),
        **_training("lowrank", "tfcompress.transforms.lowrank:LowRankOptions"),
    ),
    "analyze": _Command(
        "tfcompress.jobs.analyze:analyze",
        "tfcompress.jobs.analyze:format_sensitivity",
        (("MODEL", "model"),),
        "MODEL --calibration DATA [flags]",
        "tfcompress analyze model.h5 --calibration calib.npz --eval test.npz --plot layers.png",
        options=(("options", "tfcompress.options:AnalyzeOptions", {}), _LOAD),
        files=("calibration", "eval", "json", "plot"),
        required=("calibration",),
    ),
    "auto": _Command(
        "tfcompress.jobs.auto:auto",
        "tfcompress.jobs.auto:format_auto_report",
        (("MODEL", "model"),),
        "MODEL -o OUT.tflite --calibration DATA --eval DATA [flags]",
        "tfcompress auto model.h5 --calibration calib.npz --eval test.npz --max_accuracy_drop 0.5 -o best.tflite",
        options=(
            ("options", "tfcompress.options:AutoOptions", {}),
            ("shrink", "tfcompress.options:ShrinkOptions", {}),
            _LOAD,
        ),
        files=("calibration", "eval", "train", "report"),
        output=("Where to write the chosen .tflite (and NAME.png, NAME.recipe.yaml beside it).", "output"),
        required=("output", "calibration", "eval"),
        failed=lambda report: report.chosen is None,
        carried=lambda report: [w for c in (report.float32, *report.candidates) for w in c.warnings],
    ),
    "run": _Command(
        "tfcompress.pipeline.run:run_recipe",
        "tfcompress.pipeline.run:format_run_report",
        (("RECIPE", "recipe"),),
        "RECIPE --model MODEL -o DIR [flags]",
        "tfcompress run mobile_int8 --model model.h5 -o out/",
        options=(_LOAD,),
        files=("model", "train", "val", "unlabeled", "calibration", "eval"),
        output=("Folder for every step's output and report.json.", "output_dir"),
        required=("model", "output"),
        failed=lambda report: not report.passed,
    ),
}
_FOLDER_OUTPUTS = {name for name, command in _COMMANDS.items() if command.output and command.output[1] == "output_dir"}


def _resolve(where: str):
    """`package.module:name` → the object, imported only when a command needs it."""
    import importlib

    module, _, name = where.partition(":")
    return getattr(importlib.import_module(module), name)


def _define_flags(name: str, command: _Command, flag_values) -> dict:
    from tfcompress.options import define_flags

    define = {"flag_values": flag_values, "module_name": f"tfcompress {name}"}
    holders = {
        flag: flags.DEFINE_boolean(flag, default, help_text, **define)
        for flag, (default, help_text) in _COMMON_FLAGS.items()
    }
    if command.output:
        holders["output"] = flags.DEFINE_string("output", None, command.output[0], short_name="o", **define)
    for flag in command.files:
        holders[flag] = flags.DEFINE_string(flag, None, _FILE_FLAGS[flag][0], **define)
    for _, options_class, only, defaults in command.option_groups():
        holders.update(
            define_flags(flag_values, options_class, defaults=defaults, only=only, module_name=define["module_name"])
        )
    return holders


def _run(name: str, command: _Command, positional: list, values: dict, held) -> int:
    """Calls the command's job with the options the flags describe, prints its result and the warnings
    it does not carry (held_warnings.py), returns the exit code."""
    from tfcompress.options import from_flags

    arguments = _positional_arguments(name, command, positional)
    for argument, options_class, only, _ in command.option_groups():
        arguments[argument] = from_flags(options_class, values, only=only)
    if command.output:
        arguments[command.output[1]] = values["output"]
    arguments.update({_FILE_FLAGS[flag][1]: values[flag] for flag in command.files})
    result = _resolve(command.job)(**arguments)
    printed = _resolve(command.formatter)(result)
    print(printed)
    carried = command.carried(result) if command.carried else ()
    _say(f"tfcompress {name}", held.unsaid("\n".join([printed, *carried])))
    return 1 if command.failed and command.failed(result) else 0


def _check_required(name: str, command: _Command, values: dict) -> None:
    """When a required flag is missing, names them all as the synopsis spells them ("auto needs -o
    OUT.tflite, --calibration DATA and --eval DATA")."""
    if any(values.get(flag) is None for flag in command.required):
        spelled = [
            re.search("-o \\S+" if flag == "output" else rf"--{flag} \S+", command.synopsis)
            for flag in command.required
        ]
        raise flags.Error(f"{name} needs " + _and(match.group(0) for match in spelled))


def _positional_arguments(name: str, command: _Command, positional: list) -> dict:
    metavars = [metavar for metavar, _ in command.positional]
    if metavars == ["MODEL..."]:
        if not positional:
            raise flags.Error(f"{name} takes one or more MODEL.tflite files")
        return {command.positional[0][1]: positional}
    if len(positional) != len(metavars):
        raise flags.Error(
            f"{name} takes {' '.join(metavars) or 'no positional arguments'}; received {positional or 'nothing'}"
        )
    return {argument: value for (_, argument), value in zip(command.positional, positional)}


def _and(items) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


_INTERRUPTED = 130
_INPUT_PROBLEMS = (TfcompressError, OSError, MemoryError, RecursionError)  # exit 2 with one line


def main(argv) -> int:
    """Runs one subcommand; returns the exit code (tests call this directly)."""
    for stream in (sys.stdout, sys.stderr):  # file names that are not UTF-8 print, escaped
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    if len(argv) >= 2 and argv[1] == "--version":
        from tfcompress import __version__

        print(f"tfcompress {__version__}")
        return 0
    if len(argv) >= 3 and argv[1] == "help" and argv[2] in _COMMANDS:
        argv = [argv[0], argv[2], "--help"]
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(_USAGE)
        return 0 if len(argv) >= 2 else 2
    name = argv[1]
    if name not in _COMMANDS:
        print(f"tfcompress: unknown command {name!r}.\n{_USAGE}", file=sys.stderr)
        return 2
    command = _COMMANDS[name]
    flag_values = flags.FlagValues()
    holders = _define_flags(name, command, flag_values)
    args = [_underscore_flag_name(arg) for arg in argv[2:]]
    if "--help" in args or "-h" in args:
        print(
            f"usage: tfcompress {name} {command.synopsis}\n\nexample:\n  {command.example}\n\n"
            f"flags:\n{flag_values.get_help()}"
        )
        return 0
    warnings.showwarning = lambda message, *_: _say(f"tfcompress {name}", [message])
    held = HeldWarnings()
    try:
        positional = flag_values([f"tfcompress {name}"] + args)[1:]
        values = {key: holder.value for key, holder in holders.items()}
        from tfcompress import _keras, progress

        _keras.show_native_logs(values["verbose"])
        progress.configure(False if values["quiet"] else values["progress"])
        _check_required(name, command, values)
        _check_outputs(name, positional, values)
        _check_inputs(name, positional, values)
        with progress.command(name), holding(held):
            return _run(name, command, positional, values, held)
    except flags.Error as error:
        print(f"tfcompress {name}: {error}. See `tfcompress {name} --help`.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _say(f"tfcompress {name}", held.unsaid())
        print(f"tfcompress {name}: interrupted; nothing was written.", file=sys.stderr)
        return _INTERRUPTED
    except _INPUT_PROBLEMS as error:
        _say(f"tfcompress {name}", held.unsaid())
        if flag_values.is_parsed() and flag_values["verbose"].value:
            traceback.print_exc()
        print(f"tfcompress {name}: error: {_one_line(error)}", file=sys.stderr)
        return 2


def _say(speaker: str, messages) -> None:
    """Warnings on stderr, each as `SPEAKER: warning: ...` ("tfcompress convert", or a tool's name)."""
    for message in messages:
        print(f"{speaker}: warning: {message}", file=sys.stderr)


def _check_outputs(name, positional, values) -> None:
    """Refuses, before any work, an output path that is an input or not a file tfcompress may replace."""
    from tfcompress._io.files import check_not_inputs, check_writable

    inputs = [*positional, *(values.get(flag) for flag in _INPUT_FLAGS)]
    for flag in _OUTPUT_FLAGS:
        output = values.get(flag)
        if not output:
            continue
        if flag == "output" and name in _FOLDER_OUTPUTS:
            check_not_inputs(output, inputs, folder=True)
        else:
            check_writable(output, inputs=inputs)


def _check_inputs(name, positional, values) -> None:
    """Data files, read in full (numpy only), and their fit to the model's declared input: a bad file
    is refused in about a second, before TensorFlow loads (the jobs check again, on what they load)."""
    from tfcompress import data
    from tfcompress.keras_io import config as model_config

    shapes = {
        flag: data.sample_shape(values[flag]) for flag in _DATA_FLAGS if values.get(flag) and values[flag] != "random"
    }
    model = values.get("model") or values.get("teacher") or (positional[0] if positional else None)
    input_shape = (
        model_config.declared_input_shape(model, trust_model_code=values.get("trust_model_code", False))
        if model and shapes and name != "benchmark"
        else None
    )
    for flag, have in shapes.items():
        if input_shape is not None and have is not None:
            data.check_sample_shape(have, input_shape, values[flag], reshape=values.get("reshape_data", False))


def _one_line(error: BaseException) -> str:
    """The project's messages are one line already; an OS or memory error is made one."""
    if isinstance(error, OSError) and error.filename is not None:
        return f"{error.strerror or error}: {error.filename}"
    if isinstance(error, MemoryError):
        return "ran out of memory reading the inputs; check their sizes (limits: docs/safety.md)."
    if isinstance(error, RecursionError):
        return "an input is nested too deeply to read."
    return one_line(error)


def _underscore_flag_name(arg: str) -> str:
    """--calibration-samples=5 → --calibration_samples=5 (absl names use underscores)."""
    if not arg.startswith("--"):
        return arg
    name, equals, value = arg.partition("=")
    return "--" + name[2:].replace("-", "_") + equals + value


def run_tool(main) -> None:
    """Runs a `tools/` script's absl `main` the way the CLI runs a command: flags may be written
    with - or _; a usage error or a problem with the input exits 2 with one line (exit 1 means a broken
    budget there), after the warnings held so far; a warning the script's output shows is not
    repeated on stderr."""
    from pathlib import Path

    from absl import app

    tool = Path(sys.argv[0]).stem

    def parse(argv):
        try:
            return flags.FLAGS([argv[0]] + [_underscore_flag_name(arg) for arg in argv[1:]])
        except flags.Error as error:
            print(f"{tool}: {error}. See --help.", file=sys.stderr)
            sys.exit(2)

    def main_saying_each_warning_once(argv):
        held = HeldWarnings()
        with holding(held), recording_stdout() as shown:
            try:
                code = main(argv)
            except _INPUT_PROBLEMS as error:
                _say(tool, held.unsaid())
                print(f"{tool}: error: {_one_line(error)}", file=sys.stderr)
                return 2
        _say(tool, held.unsaid(shown.text()))
        return code

    app.run(main_saying_each_warning_once, flags_parser=parse)


def run_main():
    import signal

    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `tfcompress inspect m.tflite | head` ends quietly
    sys.exit(main(sys.argv))
