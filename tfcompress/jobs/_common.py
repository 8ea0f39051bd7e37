"""What every job does around its own work, written once.

    with job_outputs(output, report_path, inputs=(model, data)) as outputs:
        model, model_path = load_model(model, load)
        ...                                  # the slow work; nothing written yet
        outputs.keras(result_model, output)  # or .bytes(path, data), .file(path, write)
        outputs.report(report_path, result)  # the JSON report, last

The outputs are checked before the work starts (writable, not an input); each is written
atomically once the work is done; and if the job fails after some of them were written, the
ones that did not exist before are removed again, so a failed job leaves nothing behind.
"""

import contextlib
import dataclasses
from pathlib import Path
from typing import ClassVar, Optional

import numpy as np

from tfcompress import keras_io, progress
from tfcompress._io.files import check_writable, json_bytes, write_atomic
from tfcompress.errors import ModelLoadError
from tfcompress.keras_io.signature import is_signature_model
from tfcompress.options import LoadOptions, TrainOptions

__all__ = ["job_outputs", "load_model", "predicted", "Outputs", "TrainingRun", "training_run", "TrainingResult"]


class Outputs:
    """The files a running job writes; see the module docstring."""

    def __init__(self):
        self.created = []

    def bytes(self, path, data: bytes) -> None:
        if path is not None:
            write_atomic(self._note(path), data)

    def keras(self, model, path, *, input_was_keras3: bool = False) -> Optional[str]:
        """Saves a Keras model (see keras_io.save_model); returns the format written, None without a path."""
        if path is None:
            return None
        return keras_io.save_model(model, self._note(path), input_was_keras3=input_was_keras3)

    def file(self, path, write) -> None:
        """A file another module writes atomically: `write(path)` (a plot, a Markdown table)."""
        if path is not None:
            write(self._note(path))

    def report(self, path, result) -> None:
        if path is not None:
            write_atomic(self._note(path), json_bytes(result.to_dict()))

    def _note(self, path) -> Path:
        """Where `path` is written: itself (noted when new, so a failed job removes it)."""
        if not Path(path).exists():
            self.created.append(Path(path))
        return Path(path)


class _WorkerOutputs(Outputs):
    """A multi-worker job's outputs on a worker that is not the chief: saved as the chief saves them
    (saving may take part in the workers' collectives), into a temporary folder that is then removed."""

    def __init__(self, folder: Path):
        super().__init__()
        self.folder = folder

    def _note(self, path) -> Path:
        return self.folder / Path(path).name


@contextlib.contextmanager
def job_outputs(*paths, inputs=()):
    """Checks `paths` (None: not asked for) before the work; yields the `Outputs` the job writes with."""
    for path in paths:
        check_writable(path, inputs=inputs)
    outputs = Outputs()
    try:
        yield outputs
    except BaseException:
        for path in outputs.created:
            with contextlib.suppress(OSError):
                path.unlink()
        raise


def load_model(model, load: LoadOptions, *, needs_layers: bool = False, one_output: bool = False) -> tuple:
    """(tf_keras model, its file or None): a job takes a model or a model file. A job that trains or
    analyzes layers (`needs_layers`) refuses a SavedModel that is only a serving signature, and one that
    measures one output (`one_output`: analyze, auto) a model with several."""
    progress.stage("loading the model")
    custom_objects = load.custom_objects  # a file to import, or the dict given from Python
    if isinstance(custom_objects, str):
        custom_objects = keras_io.load_custom_objects(custom_objects)
    loaded, path = keras_io.model_and_path(model, trust_model_code=load.trust_model_code, custom_objects=custom_objects)
    if needs_layers and is_signature_model(loaded):
        raise ModelLoadError(
            f"{path} is a SavedModel without Keras metadata: it has a serving signature to convert (convert, "
            "micro, check), but no layers to train or analyze. Save the Keras model itself as .keras or .h5."
        )
    if one_output:
        keras_io.require_one_output(loaded, path)
    return loaded, path


@dataclasses.dataclass(frozen=True)
class TrainingRun:
    """What a training-time job starts from: the loaded model and its data, fitted and checked."""

    model: object
    model_path: Optional[Path]
    input_was_keras3: bool
    train: object  # Dataset (labelled, or fine-tuned towards the model's outputs), or None: no training
    held_out: object  # Dataset or None: the validation data
    outputs: Outputs
    training: TrainOptions
    strategy: object  # a tf.distribute.Strategy, or None
    callbacks: tuple  # the user's Keras callbacks
    verbose: object
    tasks: tuple = ()  # how each output reads (transforms.training.output_tasks): what fine-tuning and the check use
    task_told: bool = False  # whether --task or --output_task said how an output reads
    checks: list = dataclasses.field(default_factory=list)  # AccuracyCheck of each fit, in order

    def fit(self, build, *, callbacks=(), sparsity=None) -> tuple:
        """`build()` the model to train under the strategy and fine-tune it there: (it, the last epoch's metrics).
        `callbacks` are the step's own, run before the user's. Accuracy is measured before and after, or on
        data without labels how far the outputs moved (transforms.guardrail); `sparsity` (prune's) helps
        name the cause of a drop."""
        from tfcompress.runtime.metrics import task_accuracy
        from tfcompress.transforms import guardrail
        from tfcompress.transforms.training import fine_tune, fit_targets, strategy_scope

        data, described = guardrail.guard_data(self.held_out, self.train)
        before = predicted(self.model, data)
        targets = fit_targets(self.model, self.train, self.held_out, self.tasks)
        if targets.described != "labels":
            progress.stage(f"fine-tuning towards {targets.described}")
        with strategy_scope(self.strategy):
            trained = build()
            if len(trained.outputs or ()) > 1:  # tfmot's wrappers rename the output layers the losses are named by
                trained.output_names = list(self.model.output_names)
            metrics = fine_tune(
                trained,
                self.train,
                targets,
                self.training,
                val=self.held_out,
                callbacks=[*callbacks, *self.callbacks],
                verbose=self.verbose,
            )
        causes = guardrail.visible_causes(self.training, len(self.train), sparsity)
        after = predicted(trained, data)
        if data.y is None:
            names = tuple(getattr(self.model, "output_names", None) or ())
            check = guardrail.output_check(
                described, before, after, self.training, causes, names, self.tasks, self.task_told
            )
            self.checks.append(check)
        else:
            accuracy = (task_accuracy(outputs, data.y, self.tasks[0]) for outputs in (before, after))
            self.checks.append(guardrail.accuracy_check(described, *accuracy, self.training, causes))
        return trained, metrics

    def result_fields(self, output, metrics, options, output_format, keras_model) -> dict:
        """The `TrainingResult` fields of this run's result."""
        from tfcompress.transforms.guardrail import AccuracyCheck

        last_check = self.checks[-1] if self.checks else None
        labelled = isinstance(last_check, AccuracyCheck)
        return {
            "model": str(self.model_path or self.model.name),
            "output": None if output is None else str(output),
            "metrics": metrics,
            "options": options_dict(options, self.training),
            "output_format": output_format,
            "keras_model": keras_model,
            "accuracy_check": last_check.to_dict() if labelled else None,
            "output_check": last_check.to_dict() if last_check and not labelled else None,
        }


def predicted(model, data) -> np.ndarray:
    """`model`'s outputs on a `Dataset`, as the training checks measure them."""
    return model.predict(data.x, batch_size=256, verbose=0)


def options_dict(*options) -> dict:
    """The options a training report records: every field of each options object, in order."""
    return {key: value for each in options for key, value in dataclasses.asdict(each).items()}


@contextlib.contextmanager
def training_run(
    model,
    train,
    held_out,
    *,
    output,
    report_path,
    load: LoadOptions,
    training: TrainOptions,
    strategy=None,
    callbacks=(),
    verbose="auto",
    quantize_aware: bool = False,
):
    """The prelude every training job shares: outputs checked, model loaded (nested models flattened,
    except for QAT, which plans them itself), the output format proven able to hold the result, the
    data fitted to the model's input with its labels checked."""
    from tfcompress.transforms.distribute import strategy_named
    from tfcompress.transforms.graph import flatten_nested
    from tfcompress.transforms.training import output_tasks

    if isinstance(strategy, str):  # `strategy="multi_worker"` from Python or a recipe step: reported as chosen
        training, strategy = dataclasses.replace(training, strategy=strategy), None
    strategy = strategy or strategy_named(training.strategy)  # built before any TensorFlow op
    with (
        job_outputs(output, report_path, inputs=(model, train, held_out)) as outputs,
        _outputs_of(strategy, outputs) as outputs,
    ):
        loaded, model_path = load_model(model, load, needs_layers=True)
        loaded = loaded if quantize_aware else flatten_nested(loaded)
        input_was_keras3 = not quantize_aware and keras_io.saved_by_keras3(model_path)
        keras_io.check_output_format(loaded, output, input_was_keras3=input_was_keras3, quantize_aware=quantize_aware)
        data = _fitted_data(loaded, load, {"training": train, "validation": held_out})
        asked = load.asked_tasks(loaded.output_names)
        tasks = output_tasks(loaded, asked, labelled=any(dataset.y is not None for dataset in data.values()))
        yield TrainingRun(
            model=loaded,
            model_path=model_path,
            input_was_keras3=input_was_keras3,
            train=data.get("training"),
            held_out=data.get("validation"),
            outputs=outputs,
            training=training,
            strategy=strategy,
            callbacks=tuple(callbacks),
            verbose=verbose,
            tasks=tasks,
            task_told=load.tells_task,
        )


def _fitted_data(model, load: LoadOptions, given: dict) -> dict:
    """Role → `Dataset` fitted to the model input (roles given None left out), labels checked where
    present, against the output read as `--task` says. With labelled training data every role needs labels."""
    from tfcompress.transforms.training import check_labels, fitted_data

    asked = load.asked_tasks(model.output_names)
    data = {
        role: fitted_data(value, model, load.preprocessing, load.reshape_data, role, asked)
        for role, value in given.items()
        if value is not None
    }
    if "training" in data and data["training"].y is not None:
        for role, dataset in data.items():
            check_labels(model, dataset, role, asked)
    return data


@contextlib.contextmanager
def _outputs_of(strategy, outputs: Outputs):
    """The chief's outputs are the job's; another worker's go to a temporary folder (see _WorkerOutputs)."""
    from tfcompress.transforms.distribute import worker_folder, worker_name

    with worker_folder(strategy) as folder:
        if folder is None:
            yield outputs
        else:
            progress.stage(f"{worker_name(strategy)} trains with the others; the chief writes the outputs")
            yield _WorkerOutputs(folder)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainingResult:
    """What every training job reports; each job's result adds its own fields, reported after these."""

    STEP: ClassVar[str] = ""
    model: str
    output: Optional[str]
    metrics: dict  # the last epoch's loss/accuracy (and val_ ones); {} when nothing trained
    options: dict
    output_format: Optional[str] = None  # which Keras wrote the output, and why (see keras_io.save_model)
    keras_model: object = dataclasses.field(default=None, repr=False, compare=False)
    accuracy_check: Optional[dict] = None  # accuracy before and after, and a warning on a large drop
    output_check: Optional[dict] = None  # data without labels: how far the outputs moved, and a warning
    warnings: tuple = ()  # what else the step did that the user did not ask (zeros grown back)

    def to_dict(self) -> dict:
        from tfcompress.report import library_versions

        return {
            "model": self.model,
            "output": self.output,
            "step": self.STEP,
            **self.own_dict(),
            "metrics": self.metrics,
            "accuracy_check": self.accuracy_check,
            "output_check": self.output_check,
            "warnings": list(self.warnings),
            "options": self.options,
            "output_format": self.output_format,
            "versions": library_versions(),
        }

    def own_dict(self) -> dict:
        """The job's own fields, as JSON values."""
        common = {field.name for field in dataclasses.fields(TrainingResult)}
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self) if field.name not in common}
