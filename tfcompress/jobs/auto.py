"""`tfcompress auto`: the smallest (or fastest) model within an accuracy budget, measured, not guessed.

Candidates in order of cost: int8; int8 with percentile-clipped ranges; int8 with
int4 weights; int8 with the 1, 2, 4 most sensitive layers (tfcompress analyze) kept
float; int16x8; float16; dynamic; and, when training data is given, QAT int8 and pruned
and clustered models whose per-layer settings a sensitivity scan and a bisection find
(jobs/auto_train.py). For `target="micro"` only what TFLite Micro runs is tried
(full-integer int8 with int8 I/O at batch 1, per-tensor Dense, no float layers), and each
candidate's arena is measured in TFLite Micro. Each is converted and measured on the eval
data (accuracy, size, latency on this machine, the TFLite Micro arena when that is the
objective or the target). The choice is the best objective among those within the budget
(size: gzip bytes, what a download ships); for latency, never one slower than float32.
"""

import dataclasses
import math
import time
from pathlib import Path
from typing import Optional

import yaml

from tfcompress import progress
from tfcompress.data import input_data, keras_inputs, per_input
from tfcompress.errors import ConversionError, DataError, OptionError, TfcompressError, one_line
from tfcompress.export.tflite import ConvertOptions, layer_kinds
from tfcompress.jobs._common import job_outputs, load_model
from tfcompress.jobs._loaded import LoadedModel
from tfcompress.jobs.analyze import analyze
from tfcompress.jobs.convert import convert_loaded
from tfcompress.jobs.micro_lut import lut_compress_verified
from tfcompress.options import AutoOptions, GuardOptions, LoadOptions, ShrinkOptions, gather
from tfcompress.plots import INSTALL_HINT
from tfcompress.report import library_versions, table
from tfcompress.runtime import metrics
from tfcompress.runtime.inspect import gzip_size, inspect_tflite
from tfcompress.runtime.interpreter import predict, quantize_inputs
from tfcompress.runtime.task import AUTO as AUTO_TASK
from tfcompress.transforms.cluster import clustered_dense_layers
from tfcompress.transforms.qat import is_quantize_aware
from tfcompress.transforms.training import fitted_data, label_task, labelled_data

__all__ = ["Budget", "Candidate", "AutoReport", "auto", "format_auto_report"]
_PERCENTILES = (99.99, 99.9)
_FLOAT_LAYER_COUNTS = (1, 2, 4)
_SAME = 1e-9  # a drop of exactly the budget (10 of 2,000 images for 0.5 pt) is within it
_MICRO_CONVERSION = {"io_type": "int8", "batch_size": 1}  # what `micro` converts with, besides the options
_LUT_CHECK_SAMPLES = 500  # as `micro --compress lut`: its outputs must equal the uncompressed model's
# A trained candidate's fall in accuracy (or its error) is measured on --eval and judged against the budget, and
# the search means some to fail: the training steps' own checks (guardrail.py) would warn of models the user
# never gets.
JUDGED_BY_THE_BUDGET = {"warn_accuracy_drop": math.inf, "warn_relative_error": math.inf}


@dataclasses.dataclass(frozen=True)
class Budget:
    """What every candidate is held to: a classifier's top-1 accuracy drop in points on labelled eval
    data, or, given `max_relative_error`, the RMS error of its outputs against the Keras model's over
    their RMS on the eval inputs: a regression or an autoencoder has no classes to count."""

    measure: str  # "accuracy_drop" or "relative_error", a Candidate field
    limit: float

    @classmethod
    def of(cls, options: AutoOptions) -> "Budget":
        if options.max_relative_error is not None:
            return cls("relative_error", options.max_relative_error)
        return cls("accuracy_drop", options.max_accuracy_drop)

    def value(self, candidate) -> Optional[float]:
        return getattr(candidate, self.measure)

    def as_recipe_budget(self) -> dict:
        """The recipe's budget that `run` judges the same way: max_accuracy_drop or max_relative_error."""
        return {f"max_{self.measure}": self.limit}

    def describe(self, value: Optional[float] = None) -> str:
        """The limit, or a value, in the measure's words: "+1.00 pt", "2.00% relative error"."""
        shown = self.limit if value is None else value
        return f"{shown:+.2f} pt" if self.measure == "accuracy_drop" else f"{shown:.2%} relative error"


@dataclasses.dataclass(frozen=True)
class Candidate:
    name: str
    precision: str
    options: dict  # the convert options that make it (a recipe's convert step)
    training: tuple = ()  # the recipe steps before the conversion ({"prune": {...}}, ...)
    size_bytes: Optional[int] = None
    gzip_bytes: Optional[int] = None  # what a download or an update ships: the `size` objective
    flash_bytes: Optional[int] = None  # objective flash: the .tflite with LUT-compressed weights (then `tflite`)
    accuracy: Optional[float] = None
    accuracy_drop: Optional[float] = None
    relative_error: Optional[float] = None  # RMS error against the Keras outputs over their RMS, on the eval inputs
    latency_us: Optional[float] = None  # p50, LiteRT on this machine
    arena_bytes: Optional[int] = None  # measured in TFLite Micro: target micro, or objective arena
    error: Optional[str] = None
    warnings: tuple = ()  # the conversion's (convert's report): the chosen one's are the user's
    within_budget: bool = False
    pareto: bool = False
    tflite: bytes = dataclasses.field(default=b"", repr=False, compare=False)

    def to_dict(self) -> dict:
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self) if field.name != "tflite"}

    def judged(self, budget: Budget) -> "Candidate":
        """The candidate with `within_budget` set for this budget (a kept probe may meet a new one)."""
        value = budget.value(self)
        return dataclasses.replace(self, within_budget=value is not None and value <= budget.limit + _SAME)


@dataclasses.dataclass(frozen=True)
class AutoReport:
    model: str
    budget: Budget
    objective: str
    target: str
    float32: Candidate
    candidates: tuple
    chosen: Optional[Candidate]
    output: Optional[str]
    recipe: Optional[str]
    plot: Optional[str]
    search: Optional[object] = None  # auto_train.TrainingSearch, with --train
    scan_plot: Optional[str] = None

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "max_accuracy_drop": self.budget.limit if self.budget.measure == "accuracy_drop" else None,
            "max_relative_error": self.budget.limit if self.budget.measure == "relative_error" else None,
            "objective": self.objective,
            "target": self.target,
            "float32": self.float32.to_dict(),
            "candidates": [c.to_dict() for c in self.candidates],
            "chosen": self.chosen.name if self.chosen else None,
            "output": self.output,
            "recipe": self.recipe,
            "plot": self.plot,
            "search": self.search.to_dict() if self.search else None,
            "scan_plot": self.scan_plot,
            "versions": library_versions(),
        }


def auto(
    model,
    *,
    calibration,
    eval_data,
    options: Optional[AutoOptions] = None,
    shrink: Optional[ShrinkOptions] = None,
    load: Optional[LoadOptions] = None,
    train=None,
    output=None,
    report_path=None,
    plot_path=None,
    scan_plot_path=None,
    recipe_path=None,
    state_dir=None,
    qat_epochs: int = 1,
    **settings,
) -> AutoReport:
    """Measures every candidate and writes the best one within `max_accuracy_drop` (points) to `output`.

    `options`, `shrink` and `load` may also be given field by field as keywords
    (`max_accuracy_drop=0.5`). With `train`, QAT and pruned + clustered candidates are searched
    too (jobs/auto_train.py). Next to `output` (unless given elsewhere): `NAME.recipe.yaml` (a
    recipe that makes the chosen model again), `NAME.auto/` (what a search with `train` measured,
    so a killed one resumes) and, where matplotlib is installed, `NAME.png` (accuracy drop vs
    size) and with `train` `NAME.layers.png` (the per-layer sensitivity scan).
    """
    options, shrink, load = gather(settings, (AutoOptions, options), (ShrinkOptions, shrink), (LoadOptions, load))
    from tfcompress import plots

    started = time.monotonic()
    if output is not None:
        output = Path(output)
        if plot_path is None and plots.matplotlib_installed():  # asked for explicitly, it is required
            plot_path = output.with_suffix(".png")
            if train is not None and scan_plot_path is None:
                scan_plot_path = output.with_suffix(".layers.png")
        recipe_path = recipe_path or output.with_name(output.stem + ".recipe.yaml")
        if train is not None and state_dir is None:
            state_dir = output.with_suffix(".auto")
    with job_outputs(
        output, report_path, plot_path, scan_plot_path, recipe_path, inputs=(model, calibration, eval_data, train)
    ) as outputs:
        if plot_path is not None or scan_plot_path is not None:
            plots.require_matplotlib()
        model, model_path = load_model(model, load, one_output=True)  # it ranks by one output's accuracy or error
        deadline = None if shrink.time_budget is None else started + shrink.time_budget * 60
        with LoadedModel(model, model_path) as loaded:
            float32, measured, chosen, search = _search(
                loaded, calibration, eval_data, train, (options, shrink, load), qat_epochs, state_dir, deadline
            )
        written = output is not None and chosen is not None
        report = AutoReport(
            str(model_path or model.name),
            Budget.of(options),
            options.objective,
            options.target,
            float32,
            tuple(measured),
            chosen,
            str(output) if written else None,
            str(recipe_path) if written else None,
            str(plot_path) if plot_path is not None else None,
            search,
            str(scan_plot_path) if scan_plot_path is not None and search and search.scans else None,
        )
        if written:
            outputs.bytes(output, chosen.tflite)
            outputs.bytes(recipe_path, _recipe_yaml(chosen, options, report.budget, load).encode())
        outputs.file(
            plot_path,
            lambda path: plots.plot_candidates(
                [float32, *measured],
                chosen,
                path,
                f"{Path(report.model).name}: candidates, budget {report.budget.describe()}",
                report.budget.measure,
            ),
        )
        if report.scan_plot:
            outputs.file(
                scan_plot_path,
                lambda path: plots.plot_layer_scan(search.scans, path, Path(report.model).name, report.budget.measure),
            )
        outputs.report(report_path, report)
    return report


def _search(loaded: LoadedModel, calibration, eval_data, train, settings, qat_epochs, state_dir, deadline) -> tuple:
    """(float32, every other candidate measured, the chosen one or None, the training search or None);
    the candidates of one Keras model share its export and its outputs on the eval data."""
    options, shrink, load = settings
    model = loaded.model
    budget = Budget.of(options)
    calibration = input_data(calibration, keras_inputs(model), load.preprocessing, reshape=load.reshape_data)
    if budget.measure == "relative_error":
        evaluation = input_data(eval_data, keras_inputs(model), load.preprocessing, reshape=load.reshape_data)
        original = _Original(None, loaded.keras_outputs(evaluation.x), _reading(load))
    else:
        evaluation = _labelled_eval(eval_data, model, load)
        accuracy = metrics.task_accuracy(
            loaded.keras_outputs(evaluation.x), evaluation.y, label_task(model, load.asked_tasks(model.output_names))
        )
        original = _Original(accuracy, None, _reading(load))

    def measure(candidate: Candidate, source: LoadedModel = loaded) -> Candidate:
        progress.stage(f"measuring the candidate {candidate.name}")
        return _measured(candidate, source, calibration, evaluation, options, budget, original)

    float32 = measure(Candidate("float32", "float32", {}))
    if budget.measure == "relative_error" and float32.error is None and float32.relative_error is None:
        raise OptionError(
            f"--max_relative_error judges a model whose output is a quantity; {loaded.name}'s output reads as "
            "class scores (a softmax or sigmoid makes it): use --max_accuracy_drop with labelled eval data, or, "
            "if it is a quantity (an autoencoder ending in a sigmoid), say so with --task reconstruction."
        )
    if budget.measure == "accuracy_drop" and float32.error is None and float32.accuracy is None:
        raise OptionError(
            f"auto holds a classifier to its top-1 accuracy, but {loaded.name}'s output reads as a quantity (no "
            "softmax or sigmoid makes it): if it outputs class logits, say so with --task logits; if it is a "
            "quantity, pass --max_relative_error."
        )
    measured = [measure(candidate) for candidate in _candidates(model, calibration, options.target)]
    search = None
    if train is not None:
        measured.append(_qat_candidate(model, train, qat_epochs, load, measure))
        search = _training_search(model, train, (calibration, evaluation), settings, measure, state_dir, deadline)
        measured += search.probes
    measured = _mark_pareto(measured, options.objective, budget)
    return float32, measured, _choose(measured, options.objective, float32, budget), search


def _labelled_eval(eval_data, model, load: LoadOptions):
    """The eval data with class labels, or an error that names the budget for a model without classes."""
    try:
        return labelled_data(
            eval_data, model, load.preprocessing, load.reshape_data, "eval", load.asked_tasks(model.output_names)
        )
    except DataError as error:
        raise DataError(
            f"{one_line(error).rstrip('.')}. auto holds a classifier to its top-1 accuracy; for a model whose "
            "output is a quantity (regression, reconstruction), pass --max_relative_error (0.02 allows 2% error "
            "against the Keras outputs; no labels needed)."
        ) from error


def _training_search(model, train, data, settings, measure, state_dir, deadline):
    """The pruned and clustered candidates, resumed from `state_dir` when it holds this search's probes."""
    from tfcompress.jobs._search_state import SearchState, search_key
    from tfcompress.jobs.auto_train import training_search

    (calibration, evaluation), (options, shrink, load) = data, settings
    # labels optional
    training = fitted_data(
        train, model, load.preprocessing, load.reshape_data, "training", load.asked_tasks(model.output_names)
    )
    state = None
    if state_dir is not None:
        key = search_key(
            *model.get_weights(),
            model.to_json(),
            *per_input(training.x),
            training.y,
            *per_input(calibration.x),
            *per_input(evaluation.x),
            evaluation.y,
            {**dataclasses.asdict(options), "max_accuracy_drop": None, "max_relative_error": None},  # judged when used
            dataclasses.asdict(shrink),
            dataclasses.asdict(load),
        )
        state = SearchState(state_dir, key)
    return training_search(
        model, training, evaluation, (options, shrink, load), measure, state=state, deadline=deadline
    )


def _candidates(model, calibration, target: str) -> list:
    """The conversions to try, cheapest first; for mobile, the sensitive layers come from a quick analyze.
    Dense layers get one scale per tensor for micro, and in a clustered model, whose shared values per
    channel scales would spread (a LeNet-300-100 clustered to 16: 15% larger after gzip)."""
    per_tensor = {"per_tensor_dense": True} if target == "micro" or clustered_dense_layers(model) else {}
    candidates = [Candidate("int8", "int8", dict(per_tensor))]
    candidates += [
        Candidate(
            f"int8, ranges at percentile {p}",
            "int8",
            {**per_tensor, "calibration_method": "percentile", "percentile": p},
        )
        for p in _PERCENTILES
    ]
    candidates.append(Candidate("int8, int4 weights", "int8", {**per_tensor, "weight_bits": 4}))
    if target == "micro":
        return candidates
    kinds = layer_kinds(model)
    try:
        ranked = analyze(model, calibration, samples=50).ranked()
    except ConversionError:  # no int8 model to rank layers in: the int8 candidates fail with the reason
        ranked = ()
    sensitive = [name for name in dict.fromkeys(layer.layer for layer in ranked) if name in kinds]
    candidates += [
        Candidate(f"int8, float: {', '.join(kept)}", "int8", {**per_tensor, "keep_float": kept})
        for kept in (sensitive[:count] for count in _FLOAT_LAYER_COUNTS if count < len(sensitive))
    ]
    candidates.append(Candidate("int16x8", "int16x8", dict(per_tensor)))
    candidates += [Candidate(precision, precision, {}) for precision in ("float16", "dynamic")]
    return candidates


@dataclasses.dataclass(frozen=True)
class _Original:
    """The user's model on the eval data: every candidate is held against it, not against the Keras model
    it was converted from (a QAT, pruned or clustered one)."""

    accuracy: Optional[float]  # top-1, for the accuracy budget
    outputs: object  # for the relative-error budget, else None
    reading: LoadOptions  # how the outputs read: --task and --output_task, as the user gave them


def _reading(load: LoadOptions) -> LoadOptions:
    """Of `load`, what says how the outputs read, for the candidates' conversions."""
    return LoadOptions(task=load.task, output_task=load.output_task)


def _measured(candidate, source: LoadedModel, calibration, evaluation, options: AutoOptions, budget: Budget, original):
    """The candidate converted and measured against the `_Original`. For micro, an int8 candidate
    converts as `tfcompress micro` does and must run in TFLite Micro."""
    micro = options.target == "micro" and candidate.precision == "int8"
    try:
        (conversion,) = gather(
            dict(
                candidate.options,
                precision=candidate.precision,
                quantize_aware=is_quantize_aware(source.model),
                **(_MICRO_CONVERSION if micro else {}),
            ),
            (ConvertOptions, None),
        )
        report = convert_loaded(
            source, conversion, original.reading, GuardOptions(skip_check=True), calibration, evaluation
        )
        arena = None
        if micro or (options.objective == "arena" and candidate.precision == "int8" and not report.float_ops):
            from tfcompress.runtime.tflm import measure_arena

            arena = measure_arena(report.tflite)[0]
        tflite, flash = report.tflite, None
        if micro and options.objective == "flash":
            lut = lut_compress_verified(
                tflite,
                quantize_inputs(evaluation.take(_LUT_CHECK_SAMPLES).x, inspect_tflite(tflite).input_details()),
                arena,
            )
            tflite, flash, arena = lut.model, len(lut.model), lut.arena_bytes
    except TfcompressError as error:
        return dataclasses.replace(candidate, error=str(error))
    drop = metrics.accuracy_drop(original.accuracy, report.accuracy)
    relative_error = None
    if original.outputs is not None and report.fidelity is not None and report.fidelity.relative_error is not None:
        outputs = predict(report.tflite, evaluation.x)  # against the original, not the model converted
        relative_error = metrics.fidelity(outputs, original.outputs, task="regression").relative_error
    measured = dataclasses.replace(
        candidate,
        size_bytes=report.size_bytes,
        gzip_bytes=gzip_size(report.tflite),
        accuracy=report.accuracy,
        accuracy_drop=drop,
        relative_error=relative_error,
        latency_us=report.latency.p50,
        arena_bytes=arena,
        flash_bytes=flash,
        warnings=tuple(report.warnings),
        tflite=tflite,
    )
    return measured.judged(budget)


def _qat_candidate(model, train, epochs, load: LoadOptions, measure) -> Candidate:
    from tfcompress.jobs.qat import quantize_aware

    candidate = Candidate(
        f"QAT int8 ({epochs} epoch{'s' if epochs > 1 else ''})", "int8", {}, training=({"qat": {"epochs": epochs}},)
    )
    try:
        trained = quantize_aware(
            model, train, epochs=epochs, load=load, skip_check=True, verbose=2, **JUDGED_BY_THE_BUDGET
        )
    except TfcompressError as error:
        return dataclasses.replace(candidate, error=str(error))
    with LoadedModel(trained.keras_model) as source:
        measured = measure(candidate, source)
    return dataclasses.replace(measured, warnings=(*(f"qat: {w}" for w in trained.warnings), *measured.warnings))


def _objective(candidate: Candidate, objective: str) -> Optional[float]:
    return {
        "size": candidate.gzip_bytes,
        "flash": candidate.flash_bytes,
        "latency": candidate.latency_us,
        "arena": candidate.arena_bytes,
    }[objective]


def _mark_pareto(candidates: list, objective: str, budget: Budget) -> list:
    """On the front: no other candidate is as good in both the budget's measure and objective, and better in one."""
    points = {
        id(c): (budget.value(c), _objective(c, objective))
        for c in candidates
        if budget.value(c) is not None and _objective(c, objective) is not None
    }

    def on_front(candidate) -> bool:
        mine = points.get(id(candidate))
        return mine is not None and not any(
            other[0] <= mine[0] and other[1] <= mine[1] and other != mine for other in points.values()
        )

    return [dataclasses.replace(c, pareto=on_front(c)) for c in candidates]


def _choose(candidates: list, objective: str, float32: Candidate, budget: Budget) -> Optional[Candidate]:
    eligible = [c for c in candidates if c.within_budget and _objective(c, objective) is not None]
    if objective == "latency":
        eligible = [c for c in eligible if c.latency_us <= float32.latency_us]
    # Pruning and clustering leave the arena as it was: among equal arenas, the smaller download wins.
    return min(eligible, key=lambda c: (_objective(c, objective), c.gzip_bytes, budget.value(c)), default=None)


def _recipe_yaml(chosen: Candidate, options: AutoOptions, budget: Budget, load: LoadOptions) -> str:
    """The recipe that makes `chosen` again and judges it by the same budget (and the `--task` and
    `--output_task` given, which decide how the export measures the outputs)."""
    steps = [*chosen.training]
    told = {} if load.task == AUTO_TASK else {"task": load.task}
    told.update({"output_task": dict(load.output_task)} if load.output_task else {})
    if options.target == "micro":
        lut = {"compress": "lut"} if options.objective == "flash" else {}
        steps.append({"micro": {**chosen.options, **lut, **told}})
    else:
        steps.append({"convert": {"precision": chosen.precision, **chosen.options, **told}})
    recipe = {
        "name": "auto",
        "description": f"chosen by tfcompress auto: {chosen.name}",
        "steps": steps,
        "budgets": budget.as_recipe_budget(),
    }
    return yaml.safe_dump(recipe, sort_keys=False)


def format_auto_report(report: AutoReport) -> str:
    rows, failed = [], []
    for candidate in (report.float32, *report.candidates):
        if candidate.error:
            failed.append(f"{candidate.name}: failed: {candidate.error}")
            continue
        mark = "← chosen" if candidate is report.chosen else ("pareto" if candidate.pareto else "")
        over = "" if candidate.within_budget or candidate.name == "float32" else " over budget"
        rows.append(
            (
                candidate.name,
                f"{candidate.size_bytes:,}",
                f"{candidate.gzip_bytes:,}",
                f"{report.float32.size_bytes / candidate.gzip_bytes:.1f}x",
                *_judged_columns(candidate, report.budget),
                f"{candidate.latency_us:.1f}",
                f"{candidate.arena_bytes:,}" if candidate.arena_bytes else "–",
                f"{candidate.flash_bytes:,}" if candidate.flash_bytes else "–",
                mark + over,
            )
        )
    lines = [
        f"auto: {report.model}, budget {report.budget.describe()}, objective {report.objective}, "
        f"target {report.target}",
        table(
            ("candidate", "size (B)", "gzip (B)", "float32/gzip")
            + (("accuracy", "drop") if report.budget.measure == "accuracy_drop" else ("relative error",))
            + ("p50 (us)", "arena", "flash", ""),
            rows,
        ),
        *failed,
    ]
    if report.search is not None:
        lines.append(_search_line(report.search, report.scan_plot))
    if report.chosen is None:
        budget = report.budget
        closest = sorted((c for c in report.candidates if budget.value(c) is not None), key=budget.value)
        lines.append(
            "no candidate within the budget; closest: "
            + ", ".join(f"{c.name} ({budget.describe(budget.value(c))})" for c in closest[:3])
            if closest
            else "no candidate converted (each one's reason is above)"
        )
    else:
        plot = report.plot or "not drawn" + (f" (no matplotlib: {INSTALL_HINT})" if report.output else "")
        lines.append(f"chosen: {report.chosen.name} → {report.output}; recipe {report.recipe}; plot {plot}")
    lines += [f"WARNING: {warning}" for warning in _warnings_to_show(report)]
    return "\n".join(lines)


def _judged_columns(candidate: Candidate, budget: Budget) -> tuple:
    if budget.measure == "relative_error":
        return (f"{candidate.relative_error:.2%}",)
    return f"{candidate.accuracy * 100:.2f}%", f"{candidate.accuracy_drop:+.2f}"


def _warnings_to_show(report: AutoReport) -> list:
    """The chosen model's conversion warnings; with none chosen, every candidate's, each once."""
    shown = (report.chosen,) if report.chosen is not None else (report.float32, *report.candidates)
    return list(dict.fromkeys(warning for candidate in shown for warning in candidate.warnings))


def _search_line(search, scan_plot) -> str:
    if not search.scans:
        return f"training search: {search.stopped}"
    uniform = sum(probe.name.startswith("pruned+clustered uniform") for probe in search.probes)
    line = (
        f"training search: {len(search.scans)} layers scanned ({scan_plot or 'plot not drawn'}), "
        f"{len(search.probes) - uniform} allocations of a {search.chain_length - 1}-step chain fine-tuned by "
        f"bisection, then {uniform} uniform setting(s)"
    )
    return line + (f"; {search.stopped}" if search.stopped else "")
