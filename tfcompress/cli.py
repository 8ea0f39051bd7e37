"""`tfcompress` command line: parse flags, call the public API, print, set the exit code.

Exit codes: 0 done, 1 `check` found the model not deployable, `run` broke a budget or `auto` found
no candidate within it, 2 a problem with the input (one line on stderr; the traceback
only with --verbose). Flags may be spelled --calibration_samples or
--calibration-samples. Nothing heavy is imported before a subcommand needs it.
"""

import os
import sys
import traceback

from absl import flags

from tfcompress.errors import OptionError, TfcompressError

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
  lowrank MODEL -o OUT.h5 --energy E        truncated-SVD factorization of Dense/Conv2D, optional fine-tune
  analyze MODEL --calibration D per-layer int8 sensitivity: error per layer, ranked; PNG with --plot
  auto MODEL -o OUT.tflite ...  the smallest/fastest conversion within --max_accuracy_drop, measured
  run RECIPE --model M -o DIR   a recipe (YAML, or built-in: mobile_int8, mobile_float16, mcu_int8,
                                deep_compression, deep_compression_mcu) step by step, budgets judged

`tfcompress help COMMAND` (or `tfcompress COMMAND --help`) shows its usage, an example and its flags;
`tfcompress --version` prints the version."""


def _common_flags(flag_values):
    define = {"flag_values": flag_values}
    return {"verbose": flags.DEFINE_boolean(
                "verbose", False, "Show tracebacks for errors, and TensorFlow's own log lines.", **define),
            "progress": flags.DEFINE_boolean(
                "progress", None, "A line per stage on stderr (default: when stderr is a terminal).", **define),
            "quiet": flags.DEFINE_boolean("quiet", False, "No stage lines.", **define)}


def _convert_flags(flag_values):
    define = {"flag_values": flag_values}
    return {
        "output": flags.DEFINE_string("output", None, "Where to write the .tflite.", short_name="o", **define),
        "precision": flags.DEFINE_enum(
            "precision", "int8", ["float32", "float16", "dynamic", "int8", "int16x8"],
            "Weights/activations precision. int8 and int16x8 need --calibration.", **define),
        "calibration": flags.DEFINE_string(
            "calibration", None, "Calibration data (.npz/.npy/image folder/IDX folder@split), "
            "or 'random' (warns, marked in the report).", **define),
        "calibration_samples": flags.DEFINE_integer(
            "calibration_samples", 500, "Calibration inputs the converter sees.", lower_bound=1, **define),
        "eval": flags.DEFINE_string("eval", None, "Labelled data for accuracy and fidelity.", **define),
        "io_type": flags.DEFINE_enum("io_type", "float32", ["float32", "int8", "uint8"],
                                     "Input/output type (integer I/O needs --precision int8).", **define),
        "per_tensor_dense": flags.DEFINE_boolean(
            "per_tensor_dense", False, "One scale per Dense weight tensor (smaller TFLite Micro arena).",
            **define),
        "report": flags.DEFINE_string("report", None, "Write the JSON report here.", **define),
        "allow_float_ops": flags.DEFINE_boolean(
            "allow_float_ops", False, "Accept ops the converter leaves in float in an int8 model.", **define),
        **_calibration_choice_flags(flag_values),
        **_skip_check_flag(flag_values), **_model_flags(flag_values), **_data_flags(flag_values),
    }


def _calibration_choice_flags(flag_values):
    define = {"flag_values": flag_values}
    return {
        "keep_float": flags.DEFINE_list("keep_float", [], "int8: leave these layers in float (see analyze).",
                                        **define),
        "calibration_method": flags.DEFINE_enum(
            "calibration_method", "minmax", ["minmax", "percentile"],
            "int8 activation ranges: the observed min-max, or clipped to --percentile.", **define),
        "percentile": flags.DEFINE_float("percentile", 99.99, "With --calibration_method percentile.", **define),
        "input_range": flags.DEFINE_list("input_range", None, "int8: MIN,MAX the input is quantized over.",
                                         **define),
    }


def _model_flags(flag_values):
    define = {"flag_values": flag_values}
    return {
        "trust_model_code": flags.DEFINE_boolean(
            "trust_model_code", False, "Allow Lambda layers, whose stored code runs when loading.", **define),
        "custom_objects": flags.DEFINE_string(
            "custom_objects", None, "Python file defining the model's custom layers. It is imported, so its "
            "code runs: needs --trust_model_code.", **define),
    }


def _data_flags(flag_values):
    define = {"flag_values": flag_values}
    return {
        "input_scale": flags.DEFINE_float(
            "input_scale", None, "Multiply stored data by this (default 1/255 for uint8, else 1).", **define),
        "input_offset": flags.DEFINE_float("input_offset", 0.0, "Then add this.", **define),
        "reshape_data": flags.DEFINE_boolean(
            "reshape_data", False, "Reshape samples to the model input when only the layout differs.",
            **define),
    }


def _micro_flags(flag_values):
    define = {"flag_values": flag_values}
    return {
        "output": flags.DEFINE_string("output", None, "Folder for model.tflite, the C++ sources and reports.",
                                      short_name="o", **define),
        "calibration": flags.DEFINE_string("calibration", None, "Calibration data (Keras input only).",
                                           **define),
        "eval": flags.DEFINE_string("eval", None, "Labelled data for accuracy; also the TFLM check inputs.",
                                    **define),
        "name": flags.DEFINE_string("name", "model", "C identifier for the array and functions.", **define),
        "arena_margin": flags.DEFINE_float("arena_margin", 1.1, "Declared arena = measured x margin.",
                                           lower_bound=1.0, **define),
        "per_channel_dense": flags.DEFINE_boolean(
            "per_channel_dense", False, "Per-channel Dense weights (larger arena on TFLite Micro).", **define),
        "target": flags.DEFINE_string(
            "target", None, "Also compile for an Arm Ethos-U NPU, e.g. ethos-u55-128 (needs tfcompress[ethos-u]).",
            **define),
        "compress": flags.DEFINE_enum(
            "compress", None, ["lut"], "lut: store clustered weights as bit-packed indices into value tables "
            "(TFLite Micro DECODE); smaller flash, the largest expanded tensor in RAM.", **define),
        **_skip_check_flag(flag_values), **_model_flags(flag_values), **_data_flags(flag_values),
    }


def _benchmark_flags(flag_values):
    define = {"flag_values": flag_values}
    return {
        "eval": flags.DEFINE_string("eval", None, "Data for accuracy and latency inputs (labels optional).",
                                    **define),
        "reference": flags.DEFINE_string(
            "reference", None, "Model whose outputs give fidelity: .tflite, or .h5/.keras (needs TensorFlow).",
            **define),
        "threads": flags.DEFINE_integer("threads", 1, "Interpreter threads.", lower_bound=1, **define),
        "warmup": flags.DEFINE_integer("warmup", 20, "Untimed invokes first.", lower_bound=0, **define),
        "runs": flags.DEFINE_integer("runs", 200, "Timed invokes.", lower_bound=1, **define),
        "repeat": flags.DEFINE_integer("repeat", 1, "Repeat the whole measurement; report medians.",
                                       lower_bound=1, **define),
        "xnnpack": flags.DEFINE_boolean("xnnpack", True, "Use LiteRT's default XNNPACK delegate.", **define),
        "micro": flags.DEFINE_boolean(
            "micro", False, "Also run integer models in TFLite Micro: arena, agreement, latency.", **define),
        "json": flags.DEFINE_string("json", None, "Write the JSON report here.", **define),
        "markdown": flags.DEFINE_string("markdown", None, "Write a Markdown table here.", **define),
        "plot": flags.DEFINE_string("plot", None, "Write a PNG of latency and accuracy vs size here.", **define),
        **_model_flags(flag_values), **_data_flags(flag_values),
    }


def _skip_check_flag(flag_values):
    return {"skip_check": flags.DEFINE_boolean(
        "skip_check", False, "Skip the pre-flight check (tfcompress check) that runs first.",
        flag_values=flag_values)}


def _check_flags(flag_values):
    define = {"flag_values": flag_values}
    return {
        "target": flags.DEFINE_enum("target", "mobile", ["mobile", "micro", "mobile-fp16"],
                                    "Where the model will run: LiteRT int8, TFLite Micro int8, LiteRT float16.",
                                    **define),
        "calibration": flags.DEFINE_string(
            "calibration", None, "A few real inputs (optional; uniform noise otherwise).", **define),
        "json": flags.DEFINE_string("json", None, "Also write the check as JSON here.", **define),
        **_model_flags(flag_values), **_data_flags(flag_values),
    }


def _training_flags(flag_values, epochs, learning_rate=1e-4, held_out=("val", "Labelled validation data (optional).")):
    define = {"flag_values": flag_values}
    held_out_name, held_out_help = held_out
    return {
        "output": flags.DEFINE_string("output", None, "Where to write the model (.h5).", short_name="o",
                                      **define),
        "train": flags.DEFINE_string("train", None, "Labelled training data.", **define),
        held_out_name: flags.DEFINE_string(held_out_name, None, held_out_help, **define),
        "epochs": flags.DEFINE_integer("epochs", epochs, "Fine-tuning epochs.", lower_bound=1, **define),
        "batch_size": flags.DEFINE_integer("batch_size", 32, "Batch size.", lower_bound=1, **define),
        "learning_rate": flags.DEFINE_float("learning_rate", learning_rate, "Adam learning rate.", **define),
        "report": flags.DEFINE_string("report", None, "Write the JSON report here.", **define),
        **_model_flags(flag_values), **_data_flags(flag_values),
    }


def _qat_flags(flag_values):
    return {**_training_flags(flag_values, epochs=1), **_skip_check_flag(flag_values),
            "preserve": flags.DEFINE_enum(
                "preserve", None, ["sparsity", "clusters", "both"],
                "Keep what prune/cluster made: sparsity (PQAT), clusters (CQAT), both (PCQAT).",
                flag_values=flag_values)}


def _prune_flags(flag_values):
    define = {"flag_values": flag_values}
    return {
        **_training_flags(flag_values, epochs=2),
        "target_sparsity": flags.DEFINE_float("target_sparsity", 0.8, "Fraction of weights set to zero.",
                                              **define),
        "initial_sparsity": flags.DEFINE_float("initial_sparsity", 0.0, "Where the polynomial schedule starts.",
                                               **define),
        "schedule": flags.DEFINE_enum("schedule", "polynomial", ["polynomial", "constant"], "Sparsity schedule.",
                                      **define),
        "begin_step": flags.DEFINE_integer("begin_step", 0, "First pruning step.", **define),
        "end_step": flags.DEFINE_integer("end_step", None, "Last pruning step (default: end of training).",
                                         **define),
        "frequency": flags.DEFINE_integer("frequency", 100, "Steps between pruning updates.", **define),
        "structured": flags.DEFINE_string("structured", None, "N:M structured sparsity, e.g. 2:4.", **define),
        "layers": flags.DEFINE_string("layers", None, "Prune only layers whose name matches this regex.",
                                      **define),
        "skip_first": flags.DEFINE_boolean("skip_first", False, "Leave the first prunable layer dense.",
                                           **define),
        "skip_last": flags.DEFINE_boolean("skip_last", False, "Leave the last prunable layer dense.", **define),
        "layer_sparsity": flags.DEFINE_string("layer_sparsity", None,
                                              "Per-layer targets: NAME=0.96,NAME=0.9 (over --target_sparsity).",
                                              **define),
        "logdir": flags.DEFINE_string("logdir", None, "Write pruning summaries for TensorBoard here.", **define),
    }


def _cluster_flags(flag_values):
    define = {"flag_values": flag_values}
    return {
        **_training_flags(flag_values, epochs=2, learning_rate=1e-5),
        "clusters": flags.DEFINE_integer("clusters", 16, "Shared values per kernel (per channel with --per_channel).",
                                         **define),
        "init": flags.DEFINE_enum("init", "kmeans++", ["kmeans++", "linear", "density", "random"],
                                  "How the centroids start.", **define),
        "per_channel": flags.DEFINE_boolean("per_channel", False,
                                            "Cluster each Conv2D output channel separately (matches int8).",
                                            **define),
        "preserve_sparsity": flags.DEFINE_boolean("preserve_sparsity", False,
                                                  "Keep pruned zeros at zero (after tfcompress prune).", **define),
        "layers": flags.DEFINE_string("layers", None, "Cluster only layers whose name matches this regex.",
                                      **define),
        "layer_clusters": flags.DEFINE_string("layer_clusters", None,
                                              "Per-layer counts: NAME=8,NAME=4 (over --clusters).", **define),
    }


def _distill_flags(flag_values):
    define = {"flag_values": flag_values}
    return {
        **_training_flags(flag_values, epochs=10, learning_rate=1e-3),
        "teacher": flags.DEFINE_string("teacher", None, "The trained model to learn from.", **define),
        "student": flags.DEFINE_string("student", None, "The model to train (its weights are the start).",
                                       **define),
        "width_multiplier": flags.DEFINE_float(
            "width_multiplier", None, "Or: the teacher's architecture with this fraction of its units/filters, "
            "trained from scratch.", **define),
        "temperature": flags.DEFINE_float("temperature", 4.0, "Softens both models' outputs.", **define),
        "alpha": flags.DEFINE_float("alpha", 0.9, "Weight of the teacher term (1 - alpha: the labels).", **define),
        "seed": flags.DEFINE_integer("seed", 0, "Seed for the student's initial weights and the shuffling.",
                                     **define),
    }


def _lowrank_flags(flag_values):
    define = {"flag_values": flag_values}
    return {
        **_training_flags(flag_values, epochs=1, held_out=(
            "eval", "Labelled data: accuracy before, after factoring and after fine-tuning.")),
        "energy": flags.DEFINE_float("energy", None, "Keep the fewest singular values holding this fraction of "
                                     "the squared sum.", **define),
        "rank_ratio": flags.DEFINE_float("rank_ratio", None, "Or: keep this fraction of each layer's rank.",
                                         **define),
        "layers": flags.DEFINE_string("layers", None, "Factor only layers whose name matches this regex.",
                                      **define),
    }


def _run_flags(flag_values):
    define = {"flag_values": flag_values}
    return {
        "model": flags.DEFINE_string("model", None, "The Keras model file (.h5, .keras, SavedModel folder).",
                                     **define),
        "output": flags.DEFINE_string("output", None, "Folder for every step's output and report.json.",
                                      short_name="o", **define),
        **{role: flags.DEFINE_string(role, None, f"{role.capitalize()} data for the steps that read it "
                                     "(over the recipe's data: and tfcompress-data.yaml beside the model).",
                                     **define) for role in ("train", "val", "calibration", "eval")},
        **_model_flags(flag_values), **_data_flags(flag_values),
    }


def _analyze_flags(flag_values):
    define = {"flag_values": flag_values}
    return {
        "calibration": flags.DEFINE_string("calibration", None, "Calibration data (a few hundred real inputs).",
                                           **define),
        "eval": flags.DEFINE_string("eval", None, "Labelled data: float/int8 accuracy, and the int8 accuracy with "
                                    "each of the --try_float most sensitive layers kept float.", **define),
        "samples": flags.DEFINE_integer("samples", 100, "Calibration inputs the errors are averaged over.",
                                        lower_bound=1, **define),
        "try_float": flags.DEFINE_integer("try_float", 3, "With --eval: layers to try in float, most sensitive first.",
                                          lower_bound=0, **define),
        "json": flags.DEFINE_string("json", None, "Write the per-layer JSON here.", **define),
        "plot": flags.DEFINE_string("plot", None, "Write the per-layer PNG here.", **define),
        **_model_flags(flag_values), **_data_flags(flag_values),
    }


def _auto_flags(flag_values):
    define = {"flag_values": flag_values}
    return {
        "output": flags.DEFINE_string("output", None, "Where to write the chosen .tflite (and NAME.png, "
                                      "NAME.recipe.yaml beside it).", short_name="o", **define),
        "calibration": flags.DEFINE_string("calibration", None, "Calibration data.", **define),
        "eval": flags.DEFINE_string("eval", None, "Labelled data every candidate is judged on.", **define),
        "max_accuracy_drop": flags.DEFINE_float("max_accuracy_drop", 1.0, "Budget: points below the float model.",
                                                **define),
        "objective": flags.DEFINE_enum("objective", "size", ["size", "latency", "arena"],
                                       "What to minimise within the budget.", **define),
        "train": flags.DEFINE_string("train", None, "Labelled training data: adds a QAT int8 candidate.", **define),
        "report": flags.DEFINE_string("report", None, "Write the JSON report here.", **define),
        **_model_flags(flag_values), **_data_flags(flag_values),
    }


def _inspect_flags(flag_values):
    return {"json": flags.DEFINE_string("json", None, "Also write the details as JSON here.",
                                        flag_values=flag_values),
            **_model_flags(flag_values)}


def _run_convert(args, values):
    from tfcompress.jobs import convert as convert_job
    from tfcompress.report import print_report

    (model_path,) = _positional(args, "convert", "MODEL")
    if values["output"] is None:
        raise flags.Error("convert needs -o OUT.tflite")
    report = convert_job.convert(
        model_path, precision=values["precision"], calibration=values["calibration"],
        eval_data=values["eval"], output=values["output"], report_path=values["report"],
        io_type=values["io_type"], per_tensor_dense=values["per_tensor_dense"],
        calibration_samples=values["calibration_samples"], allow_float_ops=values["allow_float_ops"],
        skip_check=values["skip_check"], keep_float=values["keep_float"],
        calibration_method=values["calibration_method"], percentile=values["percentile"],
        input_range=_input_range(values["input_range"]), **_data_and_model_options(values))
    print_report(report)
    return 0


def _input_range(items):
    if items is None:
        return None
    try:
        low, high = (float(item) for item in items)
    except ValueError:
        raise flags.Error(f"--input_range wants MIN,MAX (two numbers); received {','.join(items)}") from None
    return low, high


def _run_micro(args, values):
    from tfcompress.jobs import micro as micro_job

    (model_path,) = _positional(args, "micro", "MODEL")
    if values["output"] is None:
        raise flags.Error("micro needs -o DIR")
    report = micro_job.to_micro(
        model_path, values["output"], calibration=values["calibration"], eval_data=values["eval"],
        name=values["name"], arena_margin=values["arena_margin"],
        per_channel_dense=values["per_channel_dense"], target=values["target"], compress=values["compress"],
        skip_check=values["skip_check"], **_data_and_model_options(values))
    print(micro_job.format_micro_report(report))
    return 0


def _run_benchmark(args, values):
    from tfcompress.jobs import benchmark as benchmark_job
    from tfcompress.report import format_benchmark

    if not args:
        raise flags.Error("benchmark takes one or more MODEL.tflite files")
    report = benchmark_job.benchmark(
        args, eval_data=values["eval"], reference=values["reference"], threads=values["threads"],
        warmup=values["warmup"], runs=values["runs"], repeat=values["repeat"], xnnpack=values["xnnpack"],
        micro=values["micro"], json_path=values["json"], markdown_path=values["markdown"],
        plot_path=values["plot"], **_data_and_model_options(values))
    print(format_benchmark(report))
    return 0


def _run_inspect(args, values):
    from tfcompress.jobs import inspect as inspection

    (model_path,) = _positional(args, "inspect", "MODEL")
    details = inspection.inspect_model(model_path, trust_model_code=values["trust_model_code"],
                                       custom_objects=_custom_objects(values))
    print(inspection.format_details(details))
    if values["json"]:
        from tfcompress._io.files import write_json_atomic

        write_json_atomic(values["json"], details)
    return 0


def _run_check(args, values):
    from tfcompress.jobs import check as check_job

    (model_path,) = _positional(args, "check", "MODEL")
    report = check_job.check(model_path, target=values["target"], calibration=values["calibration"],
                             **_data_and_model_options(values))
    print(check_job.format_check(report))
    if values["json"]:
        from tfcompress.report import write_json

        write_json(report, values["json"])
    return 0 if report.verdict != check_job.NOT_DEPLOYABLE else 1


def _run_qat(args, values):
    from tfcompress.jobs import qat as qat_job

    model_path, training = _training_arguments(args, values, "qat")
    report = qat_job.quantize_aware(model_path, preserve=values["preserve"], skip_check=values["skip_check"],
                                    **training)
    print(qat_job.format_qat_report(report))
    return 0


def _run_prune(args, values):
    from tfcompress.jobs import prune as prune_job
    from tfcompress.transforms.prune import PruneOptions

    model_path, training = _training_arguments(args, values, "prune")
    options = PruneOptions(
        target_sparsity=values["target_sparsity"], initial_sparsity=values["initial_sparsity"],
        schedule=values["schedule"], begin_step=values["begin_step"], end_step=values["end_step"],
        frequency=values["frequency"], structured=values["structured"], layers=values["layers"],
        skip_first=values["skip_first"], skip_last=values["skip_last"],
        layer_sparsity=_name_values(values["layer_sparsity"], "layer_sparsity"))
    report = prune_job.prune(model_path, options=options, logdir=values["logdir"], **training)
    print(prune_job.format_prune_report(report))
    return 0


def _run_cluster(args, values):
    from tfcompress.jobs import cluster as cluster_job
    from tfcompress.transforms.cluster import ClusterOptions

    model_path, training = _training_arguments(args, values, "cluster")
    options = ClusterOptions(
        clusters=values["clusters"], init=values["init"], per_channel=values["per_channel"],
        preserve_sparsity=values["preserve_sparsity"], layers=values["layers"],
        layer_clusters=_name_values(values["layer_clusters"], "layer_clusters"))
    report = cluster_job.cluster(model_path, options=options, **training)
    print(cluster_job.format_cluster_report(report))
    return 0


def _run_distill(args, values):
    from tfcompress.jobs import distill as distill_job
    from tfcompress.transforms.distill import DistillOptions

    _positional(args, "distill")
    if values["teacher"] is None or values["output"] is None or values["train"] is None:
        raise flags.Error("distill needs --teacher T.h5, -o OUT.h5 and --train DATA")
    report = distill_job.distill(
        values["teacher"], values["train"], student=values["student"], width_multiplier=values["width_multiplier"],
        output=values["output"], val=values["val"],
        options=DistillOptions(temperature=values["temperature"], alpha=values["alpha"]), epochs=values["epochs"],
        batch_size=values["batch_size"], learning_rate=values["learning_rate"], seed=values["seed"],
        report_path=values["report"], **_data_and_model_options(values))
    print(distill_job.format_distill_report(report))
    return 0


def _run_lowrank(args, values):
    from tfcompress.jobs import lowrank as lowrank_job
    from tfcompress.transforms.lowrank import LowRankOptions

    (model_path,) = _positional(args, "lowrank", "MODEL")
    if values["output"] is None:
        raise flags.Error("lowrank needs -o OUT.h5")
    options = LowRankOptions(energy=values["energy"], rank_ratio=values["rank_ratio"], layers=values["layers"])
    report = lowrank_job.lowrank(
        model_path, options=options, output=values["output"], train=values["train"], eval_data=values["eval"],
        epochs=values["epochs"], batch_size=values["batch_size"], learning_rate=values["learning_rate"],
        report_path=values["report"], **_data_and_model_options(values))
    print(lowrank_job.format_lowrank_report(report))
    return 0


def _run_analyze(args, values):
    from tfcompress.jobs import analyze as analyze_job

    (model_path,) = _positional(args, "analyze", "MODEL")
    if values["calibration"] is None:
        raise flags.Error("analyze needs --calibration DATA")
    report = analyze_job.analyze(model_path, values["calibration"], eval_data=values["eval"], samples=values["samples"],
                             try_float=values["try_float"], json_path=values["json"], plot_path=values["plot"],
                             **_data_and_model_options(values))
    print(analyze_job.format_sensitivity(report))
    return 0


def _run_auto(args, values):
    from tfcompress.jobs import auto as auto_job

    (model_path,) = _positional(args, "auto", "MODEL")
    if values["output"] is None or values["calibration"] is None or values["eval"] is None:
        raise flags.Error("auto needs -o OUT.tflite, --calibration DATA and --eval DATA")
    report = auto_job.auto(model_path, calibration=values["calibration"], eval_data=values["eval"],
                       max_accuracy_drop=values["max_accuracy_drop"], objective=values["objective"],
                       train=values["train"], output=values["output"], report_path=values["report"],
                       **_data_and_model_options(values))
    print(auto_job.format_auto_report(report))
    return 0 if report.chosen is not None else 1


def _run_recipe(args, values):
    from tfcompress.pipeline import run as run_job

    (recipe,) = _positional(args, "run", "RECIPE")
    if values["model"] is None or values["output"] is None:
        raise flags.Error("run needs --model MODEL and -o DIR")
    report = run_job.run_recipe(
        recipe, values["model"], values["output"], train=values["train"], val=values["val"],
        calibration=values["calibration"], eval_data=values["eval"], **_data_and_model_options(values))
    print(run_job.format_run_report(report))
    return 0 if report.passed else 1


def _training_arguments(args, values, command) -> tuple:
    """(model path, the API arguments every training command takes) from `_training_flags`."""
    (model_path,) = _positional(args, command, "MODEL")
    if values["output"] is None or values["train"] is None:
        raise flags.Error(f"{command} needs -o OUT.h5 and --train DATA")
    return model_path, {"train": values["train"], "output": values["output"], "val": values["val"],
                        "epochs": values["epochs"], "batch_size": values["batch_size"],
                        "learning_rate": values["learning_rate"], "report_path": values["report"],
                        **_data_and_model_options(values)}


def _name_values(text, flag) -> dict:
    """"dense=0.96,dense_1=0.9" → {"dense": 0.96, "dense_1": 0.9}."""
    if not text:
        return {}
    result = {}
    for item in text.split(","):
        name, equals, value = item.partition("=")
        try:
            result[name.strip()] = float(value)
        except ValueError:
            raise flags.Error(f"--{flag} wants NAME=VALUE pairs separated by commas; received {item!r}") from None
        if not equals or not name.strip():
            raise flags.Error(f"--{flag} wants NAME=VALUE pairs separated by commas; received {item!r}")
    return result


def _data_and_model_options(values) -> dict:
    """The data and model-loading flags every model-reading command shares, as API arguments."""
    from tfcompress.data import Preprocessing

    return {"preprocessing": Preprocessing(values["input_scale"], values["input_offset"]),
            "reshape_data": values["reshape_data"], "trust_model_code": values["trust_model_code"],
            "custom_objects": _custom_objects(values)}


def _custom_objects(values):
    if not values["custom_objects"]:
        return None
    if not values["trust_model_code"]:
        raise OptionError(f"--custom_objects imports and runs {values['custom_objects']}; pass "
                          "--trust_model_code as well if you trust that code.")
    from tfcompress.keras_io import load_custom_objects

    return load_custom_objects(values["custom_objects"])


def _positional(args, command, *names):
    if len(args) != len(names):
        raise flags.Error(f"{command} takes {' '.join(names)}; received {args or 'nothing'}")
    return args


# Per command: its positional arguments and required flags, and one example.
_SYNOPSES = {
    "convert": ("MODEL -o OUT.tflite [flags]", "tfcompress convert model.h5 --precision int8 "
                "--calibration calib.npz --eval test.npz -o model.tflite --report model.json"),
    "micro": ("MODEL -o DIR [flags]", "tfcompress micro model.h5 --calibration calib.npz --eval test.npz -o build/"),
    "benchmark": ("MODEL.tflite [MORE.tflite ...] [flags]",
                  "tfcompress benchmark float32.tflite int8.tflite --eval test.npz --repeat 3 --json bench.json"),
    "inspect": ("MODEL [flags]", "tfcompress inspect model.tflite --json details.json"),
    "check": ("MODEL [flags]", "tfcompress check model.h5 --target micro --calibration calib.npz"),
    "qat": ("MODEL -o OUT.h5 --train DATA [flags]", "tfcompress qat model.h5 --train train.npz -o qat.h5"),
    "prune": ("MODEL -o OUT.h5 --train DATA [flags]",
              "tfcompress prune model.h5 --train train.npz --target_sparsity 0.8 -o pruned.h5"),
    "cluster": ("MODEL -o OUT.h5 --train DATA [flags]",
                "tfcompress cluster pruned.h5 --train train.npz --clusters 16 --preserve_sparsity -o clustered.h5"),
    "distill": ("--teacher T.h5 -o OUT.h5 --train DATA [flags]",
                "tfcompress distill --teacher model.h5 --width_multiplier 0.5 --train train.npz -o student.h5"),
    "lowrank": ("MODEL -o OUT.h5 (--energy E | --rank_ratio R) [flags]",
                "tfcompress lowrank model.h5 --energy 0.9 --eval test.npz -o lowrank.h5"),
    "run": ("RECIPE --model MODEL -o DIR [flags]", "tfcompress run mobile_int8 --model model.h5 -o out/"),
    "analyze": ("MODEL --calibration DATA [flags]",
                "tfcompress analyze model.h5 --calibration calib.npz --eval test.npz --plot layers.png"),
    "auto": ("MODEL -o OUT.tflite --calibration DATA --eval DATA [flags]",
             "tfcompress auto model.h5 --calibration calib.npz --eval test.npz --max_accuracy_drop 0.5 -o best.tflite"),
}

_COMMANDS = {"convert": (_convert_flags, _run_convert),
             "micro": (_micro_flags, _run_micro),
             "benchmark": (_benchmark_flags, _run_benchmark),
             "inspect": (_inspect_flags, _run_inspect),
             "check": (_check_flags, _run_check),
             "qat": (_qat_flags, _run_qat),
             "prune": (_prune_flags, _run_prune),
             "cluster": (_cluster_flags, _run_cluster),
             "distill": (_distill_flags, _run_distill),
             "lowrank": (_lowrank_flags, _run_lowrank),
             "run": (_run_flags, _run_recipe),
             "analyze": (_analyze_flags, _run_analyze),
             "auto": (_auto_flags, _run_auto)}


# Flags naming files a command writes, and flags naming files it reads: an output may never be an input.
_OUTPUT_FLAGS = ("output", "report", "json", "markdown", "plot")
_INPUT_FLAGS = ("model", "calibration", "eval", "train", "val", "teacher", "student", "reference", "custom_objects")
_FOLDER_OUTPUTS = {"micro", "run"}
_DATA_FLAGS = ("calibration", "eval", "train", "val")
_INTERRUPTED = 130


def main(argv) -> int:
    """Runs one subcommand; returns the exit code (tests call this directly)."""
    for stream in (sys.stdout, sys.stderr):   # file names that are not UTF-8 print, escaped
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
    define_flags, run = _COMMANDS[name]
    flag_values = flags.FlagValues()
    holders = {**define_flags(flag_values), **_common_flags(flag_values)}
    args = [_underscore_flag_name(arg) for arg in argv[2:]]
    if "--help" in args or "-h" in args:
        synopsis, example = _SYNOPSES[name]
        print(f"usage: tfcompress {name} {synopsis}\n\nexample:\n  {example}\n\nflags:\n{flag_values.get_help()}")
        return 0
    try:
        positional = flag_values([f"tfcompress {name}"] + args)[1:]
        values = {key: holder.value for key, holder in holders.items()}
        from tfcompress import _keras, progress

        _keras.show_native_logs(values["verbose"])
        progress.configure(False if values["quiet"] else values["progress"])
        _check_outputs(name, positional, values)
        _check_inputs(name, positional, values)
        with progress.command(name):
            return run(positional, values)
    except flags.Error as error:
        print(f"tfcompress {name}: {error}. See `tfcompress {name} --help`.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tfcompress {name}: interrupted; nothing was written.", file=sys.stderr)
        return _INTERRUPTED
    except (TfcompressError, OSError, MemoryError, RecursionError) as error:
        if flag_values.is_parsed() and flag_values["verbose"].value:
            traceback.print_exc()
        print(f"tfcompress {name}: error: {_one_line(error)}", file=sys.stderr)
        return 2


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

    shapes = {flag: tuple(data.load_data(values[flag]).x.shape[1:]) for flag in _DATA_FLAGS
              if values.get(flag) and values[flag] != "random"}
    model = values.get("model") or values.get("teacher") or (positional[0] if positional else None)
    input_shape = model_config.declared_input_shape(model, trust_model_code=values.get("trust_model_code", False)) \
        if model and shapes and name != "benchmark" else None
    for flag, have in shapes.items():
        if input_shape is not None:
            data.check_sample_shape(have, input_shape, values[flag], reshape=values.get("reshape_data", False))


def _one_line(error: BaseException) -> str:
    """The project's messages are one line already; an OS or memory error is made one."""
    if isinstance(error, OSError) and error.filename is not None:
        return f"{error.strerror or error}: {error.filename}"
    if isinstance(error, MemoryError):
        return "ran out of memory reading the inputs; check their sizes (limits: docs/safety.md)."
    if isinstance(error, RecursionError):
        return "an input is nested too deeply to read."
    text = str(error).strip() or type(error).__name__
    return " ".join(text.split())


def _underscore_flag_name(arg: str) -> str:
    """--calibration-samples=5 → --calibration_samples=5 (absl names use underscores)."""
    if not arg.startswith("--"):
        return arg
    name, equals, value = arg.partition("=")
    return "--" + name[2:].replace("-", "_") + equals + value


def run_tool(main) -> None:
    """Runs a `tools/` script's absl `main` the way the CLI runs a command: flags may be written
    with - or _, and a usage error exits 2 with one line (exit 1 means a broken budget there)."""
    from absl import app

    def parse(argv):
        try:
            return flags.FLAGS([argv[0]] + [_underscore_flag_name(arg) for arg in argv[1:]])
        except flags.Error as error:
            print(f"{os.path.basename(argv[0])}: {error}. See --help.", file=sys.stderr)
            sys.exit(2)

    app.run(main, flags_parser=parse)


def run_main():
    import signal

    signal.signal(signal.SIGPIPE, signal.SIG_DFL)   # `tfcompress inspect m.tflite | head` ends quietly
    if os.environ.get("TFCOMPRESS_PARENT_PID"):   # started by the batch tool: die with it
        from tfcompress.pipeline.batch import die_with_parent

        die_with_parent()
    sys.exit(main(sys.argv))

