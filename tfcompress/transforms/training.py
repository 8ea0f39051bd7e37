"""Fine-tuning shared by the training-time steps (QAT, pruning, clustering).

Labels are checked against the model's output before the first step, so a mismatch
is a one-line error instead of a shape error deep inside `fit`.
"""

import contextlib
import math
from typing import Optional

import numpy as np

from tfcompress import _keras
from tfcompress.data import Dataset, as_dataset, fit_to_input
from tfcompress.errors import DataError
from tfcompress.options import TrainOptions
from tfcompress.runtime.metrics import accuracy

__all__ = [
    "check_labels",
    "fine_tune",
    "optimizer",
    "outputs_probabilities",
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
    classes = int(model.outputs[0].shape[-1])
    if data.y.min() < 0 or data.y.max() >= classes:
        raise DataError(
            f"The {role} labels in {data.source} range over {int(data.y.min())}..{int(data.y.max())}, "
            f"but the model outputs {classes} classes. Pass labels 0..{classes - 1}."
        )


def outputs_probabilities(model) -> bool:
    """Whether the (float) model ends in a softmax, so its loss takes probabilities, not logits."""
    keras = _keras.tf_keras()
    last = model.layers[-1]
    return isinstance(last, keras.layers.Softmax) or getattr(last, "activation", None) is keras.activations.softmax


def fine_tune(
    model,
    train: Dataset,
    options: TrainOptions,
    *,
    from_logits: bool,
    val: Optional[Dataset] = None,
    callbacks=(),
    verbose="auto",
) -> dict:
    """Compiles and fits `model` in place; returns the last epoch's metrics.

    `from_logits` comes from the float model (`outputs_probabilities`): once wrapped for
    QAT, its last layer no longer shows its activation.
    """
    keras = _keras.tf_keras()
    keras.utils.set_random_seed(options.seed)
    model.compile(
        optimizer=optimizer(options, len(train)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
        metrics=["accuracy"],
    )
    history = model.fit(
        train.x,
        train.y.astype(np.int64),
        epochs=options.epochs,
        batch_size=options.batch_size,
        shuffle=True,
        callbacks=list(callbacks),
        validation_data=(val.x, val.y.astype(np.int64)) if val is not None else None,
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
    dataset = as_dataset(data, preprocessing)
    if model.inputs is not None:
        dataset = fit_to_input(dataset, tuple(model.inputs[0].shape), reshape=reshape_data)
    check_labels(model, dataset, role)
    return dataset


def keras_accuracy(model, data: Dataset) -> float:
    """Top-1 accuracy of a Keras model on labelled data, as a fraction."""
    return accuracy(model.predict(data.x, batch_size=256, verbose=0), data.y)


def strategy_scope(strategy):
    """Build and train the wrapped model under a `tf.distribute.Strategy`, or as usual."""
    return strategy.scope() if strategy is not None else contextlib.nullcontext()
