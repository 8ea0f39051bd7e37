"""Fine-tuning shared by the training-time steps (QAT, pruning, clustering, low-rank).

Labels are checked against the model's output before the first step, so a mismatch
is a one-line error instead of a shape error deep inside `fit`. Data without labels (a
regressor's or an autoencoder's, or any model's unlabelled inputs) fine-tunes towards the
outputs of the model the step started from: compression should keep the function, and those
outputs are what convert's fidelity and `auto --max_relative_error` measure against.
"""

import contextlib
import dataclasses
import math
from typing import Optional

import numpy as np

from tfcompress import _keras
from tfcompress.data import Dataset, as_dataset, fit_to_inputs, keras_inputs
from tfcompress.errors import DataError
from tfcompress.options import TrainOptions
from tfcompress.runtime.metrics import accuracy

__all__ = [
    "check_labels",
    "FitTargets",
    "fine_tune",
    "fit_targets",
    "fitted_data",
    "optimizer",
    "softmax_outputs",
    "training_data",
    "labelled_data",
    "keras_accuracy",
    "strategy_scope",
]


def check_labels(model, data: Dataset, role: str = "training") -> None:
    """Class labels that fit the model's output: present, and below its number of classes."""
    if data.y is None:
        raise DataError(f"The {role} data {data.source} has no labels (y); pass labelled data (an .npz with x and y).")
    if model.outputs is None:  # a subclassed model: its output size is unknown before a call
        return
    if len(model.outputs) > 1:
        raise DataError(
            f"The {role} data {data.source} has labels (y), but the model has {len(model.outputs)} outputs and "
            "labels fit one. Leave y out: the training steps then fine-tune every output towards the model's own."
        )
    classes = int(model.outputs[0].shape[-1])
    if data.y.min() < 0 or data.y.max() >= classes:
        raise DataError(
            f"The {role} labels in {data.source} range over {int(data.y.min())}..{int(data.y.max())}, "
            f"but the model outputs {classes} classes. Pass labels 0..{classes - 1}."
        )


def softmax_outputs(model) -> tuple:
    """For each output of the (float) model, whether it comes from a softmax, so its loss takes
    probabilities, not logits."""
    keras = _keras.tf_keras()
    layers = [tensor._keras_history.layer for tensor in model.outputs] if model.outputs else [model.layers[-1]]
    return tuple(
        isinstance(layer, keras.layers.Softmax) or getattr(layer, "activation", None) is keras.activations.softmax
        for layer in layers
    )


@dataclasses.dataclass(frozen=True)
class FitTargets:
    """What fine-tuning fits the model to, on the training and the held-out data, and with which loss."""

    train: object  # labels, the outputs, or a list of outputs for a model with several
    val: object
    loss: object  # a Keras loss, or one per output
    metrics: tuple
    described: str  # for the report: "labels", or what the outputs are kept close to


def fit_targets(model, train: Dataset, val: Optional[Dataset]) -> FitTargets:
    """Class labels when `train` has them; else `model`'s own outputs (the float model, before the step
    wraps it), each output with its loss: cross-entropy to its probabilities for a softmax output, mean
    squared error otherwise."""
    keras = _keras.tf_keras()
    softmax = softmax_outputs(model)
    if train.y is not None:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=not softmax[0])
        val_labels = val.y.astype(np.int64) if val is not None else None
        return FitTargets(train.y.astype(np.int64), val_labels, loss, ("accuracy",), "labels")

    def outputs(data):
        predicted = model.predict(data.x, batch_size=256, verbose=0)
        return (
            [np.asarray(each, np.float32) for each in predicted]
            if len(softmax) > 1
            else np.asarray(predicted, np.float32)
        )

    losses = [keras.losses.CategoricalCrossentropy() if each else keras.losses.MeanSquaredError() for each in softmax]
    measures = sorted({"cross-entropy" if each else "mean squared error" for each in softmax})
    described = f"the model's own outputs ({' and '.join(measures)}): no labels"
    loss = losses if len(losses) > 1 else losses[0]
    return FitTargets(outputs(train), outputs(val) if val is not None else None, loss, (), described)


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
    model.compile(optimizer=optimizer(options, len(train)), loss=targets.loss, metrics=list(targets.metrics))
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


def training_data(train, val, model, preprocessing, reshape_data) -> tuple:
    """(train, val or None) as labelled `Dataset`s fitted to the model input, labels checked."""
    return (
        labelled_data(train, model, preprocessing, reshape_data, "training"),
        labelled_data(val, model, preprocessing, reshape_data, "validation") if val is not None else None,
    )


def labelled_data(data, model, preprocessing, reshape_data, role: str) -> Dataset:
    """One labelled `Dataset` fitted to the model input, its labels checked against the output."""
    dataset = fitted_data(data, model, preprocessing, reshape_data, role)
    check_labels(model, dataset, role)  # present, too
    return dataset


def fitted_data(data, model, preprocessing, reshape_data, role: str) -> Dataset:
    """One `Dataset` fitted to the model input; its labels, where it has any, checked against the output."""
    dataset = as_dataset(data, preprocessing)
    if model.inputs is not None:
        dataset = fit_to_inputs(dataset, keras_inputs(model), reshape=reshape_data)
    if dataset.y is not None:
        check_labels(model, dataset, role)
    return dataset


def keras_accuracy(model, data: Dataset) -> float:
    """Top-1 accuracy of a Keras model on labelled data, as a fraction."""
    return accuracy(model.predict(data.x, batch_size=256, verbose=0), data.y)


def strategy_scope(strategy):
    """Build and train the wrapped model under a `tf.distribute.Strategy`, or as usual."""
    return strategy.scope() if strategy is not None else contextlib.nullcontext()
