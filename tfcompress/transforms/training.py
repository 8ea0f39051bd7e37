"""Fine-tuning shared by the training-time steps (QAT, pruning, clustering, low-rank).

Labels are checked against the model's output before the first step, so a mismatch
is a one-line error instead of a shape error deep inside `fit`. Data without labels (a
regressor's or an autoencoder's, or any model's unlabelled inputs) fine-tunes towards the
outputs of the model the step started from: compression should keep the function, and those
outputs are what convert's fidelity and `auto --max_relative_error` measure against.
"""

import contextlib
import dataclasses
import functools
import math
from typing import Optional

import numpy as np

from tfcompress import _keras
from tfcompress.data import Dataset, as_dataset, fit_to_inputs, keras_inputs
from tfcompress.errors import DataError
from tfcompress.options import TrainOptions
from tfcompress.runtime.metrics import task_accuracy
from tfcompress.runtime.task import AUTO, CLASSIFIERS, QUANTITIES, YES_AT, class_probabilities, yes_no, yes_probability

__all__ = [
    "check_labels",
    "FitTargets",
    "fine_tune",
    "fit_targets",
    "fitted_data",
    "optimizer",
    "output_tasks",
    "training_data",
    "labelled_data",
    "keras_accuracy",
    "label_task",
    "strategy_scope",
]


def check_labels(model, data: Dataset, role: str = "training", requested: Optional[tuple] = None) -> None:
    """Labels that fit the model's output: present, and a class it has. With `requested` (see
    `output_tasks`) one yes/no unit (a sigmoid's, or one logit) takes 0 and 1; without, class indices."""
    if data.y is None:
        raise DataError(f"The {role} data {data.source} has no labels (y); pass labelled data (an .npz with x and y).")
    if model.outputs is None:  # a subclassed model: its output size is unknown before a call
        return
    if len(model.outputs) > 1:
        raise DataError(
            f"The {role} data {data.source} has labels (y), but the model has {len(model.outputs)} outputs and "
            "labels fit one. Leave y out: the training steps then fine-tune every output towards the model's own."
        )
    task = label_task(model, requested) if requested is not None else None
    units, last_axis = int(np.prod(model.outputs[0].shape[1:])), int(model.outputs[0].shape[-1])
    binary = yes_no(task, last_axis)
    if task in QUANTITIES or (binary and units > 1):
        kind = f"{units} yes/no scores (a {task})" if binary else f"a quantity (--task {task})"
        raise DataError(
            f"The {role} data {data.source} has class labels (y), one per sample, but the model's output reads as "
            f"{kind}. Leave y out: the training steps then fine-tune towards the model's own outputs."
        )
    classes = 2 if binary else last_axis
    if data.y.min() < 0 or data.y.max() >= classes:
        takes = "labels 0 and 1 for its one yes/no score" if binary else f"labels 0..{classes - 1} for its classes"
        raise DataError(
            f"The {role} labels in {data.source} range over {int(data.y.min())}..{int(data.y.max())}, "
            f"but the model takes {takes}."
        )


def output_tasks(model, requested: Optional[tuple] = None, labelled: bool = False) -> tuple:
    """How each output of the (float) model reads, as convert reads the converted one (runtime.task):
    as `requested` says (one per output, `LoadOptions.asked_tasks`; None: all "auto"), else softmax,
    sigmoid or a quantity from the activation that makes it, looking through layers that only
    reshape it. With class labels (`labelled`) what reads as a quantity is class logits."""
    if model.outputs is None:  # a subclassed model: its last layer makes the output
        made_by = [(model.layers[-1], 0)]
    else:
        made_by = [tensor._keras_history[:2] for tensor in model.outputs]
    requested = requested or (AUTO,) * len(made_by)
    return tuple(
        asked if asked != AUTO else _detected_task(*layer, labelled) for asked, layer in zip(requested, made_by)
    )


def label_task(model, requested: Optional[tuple] = None) -> str:
    """How class labels meet the model's (one) output: its task read with labels (`output_tasks`)."""
    return output_tasks(model, requested, labelled=True)[0]


def _detected_task(layer, node_index: int, labelled: bool) -> str:
    task = _activation_task(layer, node_index)
    return "logits" if labelled and task in QUANTITIES else task


def _activation_task(layer, node_index: int = 0) -> str:
    keras = _keras.tf_keras()
    while isinstance(layer, (keras.layers.Reshape, keras.layers.Flatten)):
        layer, node_index = layer.get_input_at(node_index)._keras_history[:2]
    activation = getattr(layer, "activation", None)
    if isinstance(layer, keras.layers.Softmax) or activation is keras.activations.softmax:
        return "softmax"
    return "sigmoid" if activation is keras.activations.sigmoid else "regression"


@dataclasses.dataclass(frozen=True)
class FitTargets:
    """What fine-tuning fits the model to, on the training and the held-out data, and with which loss."""

    train: object  # labels, the outputs, or a list of outputs for a model with several
    val: object
    loss: object  # a Keras loss, or one per output
    metrics: tuple  # Keras metric names, or functions that make one (under the training's strategy scope)
    described: str  # for the report: "labels", or what the outputs are kept close to


def fit_targets(model, train: Dataset, val: Optional[Dataset], tasks: tuple) -> FitTargets:
    """Labels when `train` has them (`tasks`, from `output_tasks`: class indices, or 0 and 1 for one
    sigmoid unit or one logit); else `model`'s own outputs (the float model, before the step wraps
    it), each with its loss: cross-entropy to the probabilities of a softmax, or of logits (mean
    squared error of logits lost 31.7 pt where this lost 8.6: a 10-class CNN pruned to 80% on 5,000
    Fashion-MNIST images, benchmarks/label_free_guard.py), mean squared error otherwise (for a
    sigmoid as good as binary cross-entropy there)."""
    keras = _keras.tf_keras()
    if train.y is not None:
        last_axis = model.outputs[0].shape[-1] if model.outputs is not None else None
        if yes_no(tasks[0], last_axis):
            shape = (-1, *model.outputs[0].shape[1:])
            labels = [None if data is None else data.y.astype(np.float32).reshape(shape) for data in (train, val)]
            loss = keras.losses.BinaryCrossentropy(from_logits=tasks[0] == "logits")
            accuracy = functools.partial(keras.metrics.BinaryAccuracy, "accuracy", threshold=YES_AT[tasks[0]])
            return FitTargets(*labels, loss, (accuracy,), "labels")
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=tasks[0] != "softmax")
        val_labels = val.y.astype(np.int64) if val is not None else None
        return FitTargets(train.y.astype(np.int64), val_labels, loss, ("accuracy",), "labels")

    def outputs(data):
        predicted = model.predict(data.x, batch_size=256, verbose=0)
        fitted = [_own_target(each, task) for each, task in zip(predicted if len(tasks) > 1 else [predicted], tasks)]
        return fitted if len(tasks) > 1 else fitted[0]

    train_targets = outputs(train)
    last_axes = [np.shape(target)[-1] for target in (train_targets if len(tasks) > 1 else [train_targets])]
    losses = [_own_loss(task, last_axis) for task, last_axis in zip(tasks, last_axes)]
    measures = sorted({"cross-entropy" if task in CLASSIFIERS else "mean squared error" for task in tasks})
    described = f"the model's own outputs ({' and '.join(measures)}): no labels"
    loss = losses if len(losses) > 1 else losses[0]
    return FitTargets(train_targets, outputs(val) if val is not None else None, loss, (), described)


def _own_target(outputs, task: str) -> np.ndarray:
    """What fine-tuning without labels fits one output to: its probabilities for logits (for one
    logit, of yes), else the outputs themselves."""
    if task != "logits":
        return np.asarray(outputs, np.float32)
    if np.shape(outputs)[-1] == 1:
        return yes_probability(outputs).astype(np.float32)
    return class_probabilities(outputs, task).astype(np.float32)


def _own_loss(task: str, last_axis: int):
    """The loss to `_own_target`: cross-entropy for class scores (binary for one logit), else mean squared error."""
    keras = _keras.tf_keras()
    if task == "logits" and last_axis == 1:
        return keras.losses.BinaryCrossentropy(from_logits=True)
    if task in CLASSIFIERS:
        return keras.losses.CategoricalCrossentropy(from_logits=task == "logits")
    return keras.losses.MeanSquaredError()


def fine_tune(
    model,
    train: Dataset,
    targets: FitTargets,
    options: TrainOptions,
    *,
    val: Optional[Dataset] = None,
    callbacks=(),
    verbose="auto",
) -> dict:
    """Compiles and fits `model` in place towards `targets` (`fit_targets`); returns the last epoch's metrics."""
    keras = _keras.tf_keras()
    keras.utils.set_random_seed(options.seed)
    metrics = [metric if isinstance(metric, str) else metric() for metric in targets.metrics]
    model.compile(optimizer=optimizer(options, len(train)), loss=targets.loss, metrics=metrics)
    history = model.fit(
        train.x,
        targets.train,
        epochs=options.epochs,
        batch_size=options.batch_size,
        shuffle=True,
        callbacks=list(callbacks),
        validation_data=(val.x, targets.val) if val is not None else None,
        verbose=_keras.training_verbosity(verbose),
    )
    return {name: float(values[-1]) for name, values in history.history.items()}


def optimizer(options: TrainOptions, samples: int):
    """Adam at the options' learning rate, constant or decayed along a cosine to 0 by the last step."""
    keras = _keras.tf_keras()
    if options.learning_rate_schedule == "constant":
        return keras.optimizers.Adam(options.learning_rate)
    steps = options.epochs * math.ceil(samples / options.batch_size)
    return keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(options.learning_rate, steps))


def training_data(train, val, model, preprocessing, reshape_data, requested: Optional[tuple] = None) -> tuple:
    """(train, val or None) as labelled `Dataset`s fitted to the model input, labels checked (against
    the output read as `requested` says, see `check_labels`)."""
    return (
        labelled_data(train, model, preprocessing, reshape_data, "training", requested),
        labelled_data(val, model, preprocessing, reshape_data, "validation", requested) if val is not None else None,
    )


def labelled_data(data, model, preprocessing, reshape_data, role: str, requested: Optional[tuple] = None) -> Dataset:
    """One labelled `Dataset` fitted to the model input, its labels checked against the output (read
    as `requested` says, see `check_labels`)."""
    dataset = fitted_data(data, model, preprocessing, reshape_data, role, requested)
    check_labels(model, dataset, role, requested)  # present, too
    return dataset


def fitted_data(data, model, preprocessing, reshape_data, role: str, requested: Optional[tuple] = None) -> Dataset:
    """One `Dataset` fitted to the model input; its labels, where it has any, checked against the
    output (read as `requested` says, see `check_labels`)."""
    dataset = as_dataset(data, preprocessing)
    if model.inputs is not None:
        dataset = fit_to_inputs(dataset, keras_inputs(model), reshape=reshape_data)
    if dataset.y is not None:
        check_labels(model, dataset, role, requested)
    return dataset


def keras_accuracy(model, data: Dataset, task: str = "softmax") -> float:
    """The accuracy of a Keras model on labelled data, as a fraction: top-1, or one sigmoid unit's at 0.5."""
    return task_accuracy(model.predict(data.x, batch_size=256, verbose=0), data.y, task)


def strategy_scope(strategy):
    """Build and train the wrapped model under a `tf.distribute.Strategy`, or as usual."""
    return strategy.scope() if strategy is not None else contextlib.nullcontext()
