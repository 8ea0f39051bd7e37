"""Knowledge distillation (Hinton et al. 2015): a student trained on the teacher's softened outputs.

Loss per sample: alpha · T² · KL(softmax(t/T) ‖ softmax(s/T)) + (1 − alpha) · CE(y, s),
with t and s the teacher's and student's pre-softmax logits. The teacher's logits are
computed once and packed beside the label as the target, so `fit` trains the student
with its usual progress bar and no teacher forward pass per step.
"""

import contextlib
import dataclasses
from typing import Optional

import numpy as np

from tfcompress import _keras
from tfcompress.errors import ModelMismatchError, OptionError
from tfcompress.options import option
from tfcompress.transforms.graph import final_layer, output_units_layer

__all__ = [
    "DistillOptions",
    "exposed_logits",
    "packed_targets",
    "distillation_loss",
    "label_accuracy",
    "scale_width",
    "train_student",
]


@dataclasses.dataclass(frozen=True)
class DistillOptions:
    """The student and the loss: the teacher's softened outputs weighted against the labels."""

    temperature: float = option(4.0, "Softens both models' outputs.")
    alpha: float = option(0.9, "Weight of the teacher term (1 - alpha: the labels).")
    width_multiplier: Optional[float] = option(
        None, "Or: the teacher's architecture with this fraction of its units/filters, trained from scratch."
    )

    def __post_init__(self):
        if not self.temperature > 0:
            raise OptionError(f"temperature must be positive. Received: temperature={self.temperature}")
        if not 0.0 <= self.alpha <= 1.0:
            raise OptionError(f"alpha must be in [0, 1]. Received: alpha={self.alpha}")


@contextlib.contextmanager
def exposed_logits(model):
    """Yields a model (sharing `model`'s weights) that outputs the pre-softmax logits.

    A final Softmax (or Activation('softmax')) layer is cut off; a final layer with a
    softmax activation has it switched to linear while inside, and back on exit.
    """
    keras = _keras.tf_keras()
    last = final_layer(model)
    softmax = keras.activations.softmax
    if isinstance(last, keras.layers.Softmax) or (
        isinstance(last, keras.layers.Activation) and last.activation is softmax
    ):
        yield keras.Model(model.inputs, last.input)
    elif getattr(last, "activation", None) is softmax:
        last.activation = keras.activations.linear
        _forget_traced_functions(model)
        try:
            yield model
        finally:
            last.activation = softmax
            _forget_traced_functions(model)
    else:
        yield model


def _forget_traced_functions(model) -> None:
    """Keras caches traced predict/train functions; they would keep the old activation."""
    model.predict_function = model.train_function = model.test_function = None


def packed_targets(labels: np.ndarray, teacher_logits: np.ndarray) -> np.ndarray:
    """N × (1 + classes): the label in column 0, the teacher's logits after it."""
    return np.concatenate([labels.reshape(-1, 1).astype(np.float32), teacher_logits.astype(np.float32)], axis=1)


def distillation_loss(options: DistillOptions):
    tf = _keras.tensorflow()
    temperature, alpha = options.temperature, options.alpha

    def loss(targets, student_logits):
        labels = tf.cast(targets[:, 0], tf.int32)
        teacher_log_probs = tf.nn.log_softmax(targets[:, 1:] / temperature)
        student_log_probs = tf.nn.log_softmax(student_logits / temperature)
        soft = tf.reduce_sum(tf.exp(teacher_log_probs) * (teacher_log_probs - student_log_probs), axis=-1)
        hard = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=student_logits)
        return alpha * temperature**2 * soft + (1.0 - alpha) * hard

    return loss


def label_accuracy(targets, student_logits):
    """Top-1 accuracy against the label packed in column 0 of the targets."""
    tf = _keras.tensorflow()
    predicted = tf.argmax(student_logits, axis=-1, output_type=tf.int32)
    return tf.cast(tf.equal(predicted, tf.cast(targets[:, 0], tf.int32)), tf.float32)


def scale_width(model, width_multiplier: float, seed: int = 0):
    """A freshly initialised copy of `model`'s architecture with `width_multiplier` × its units/filters.

    Dense, Conv and SeparableConv layers have their `units`/`filters` scaled (at least
    1) and a DepthwiseConv2D its `depth_multiplier`; the layer that produces the output
    keeps its size, so student and teacher predict the same classes.
    """
    if not 0.0 < width_multiplier <= 1.0:
        raise OptionError(f"width_multiplier must be in (0, 1]. Received: width_multiplier={width_multiplier}")
    keras = _keras.tf_keras()
    config = model.get_config()
    kept = output_units_layer(model).name
    for layer_config in config["layers"]:
        settings = layer_config["config"]
        if settings.get("name") == kept:
            continue
        for key in ("units", "filters", "depth_multiplier"):
            if isinstance(settings.get(key), int):
                settings[key] = max(1, round(settings[key] * width_multiplier))
    keras.utils.set_random_seed(seed)
    try:
        return type(model).from_config(config)
    except (ValueError, TypeError) as error:
        raise ModelMismatchError(
            f"Cannot derive a student at width {width_multiplier} from {model.name}: "
            f"{error}. Pass a student model with --student instead."
        ) from None


def train_student(
    student_logits,
    x: np.ndarray,
    targets: np.ndarray,
    options: DistillOptions,
    training,
    *,
    val=None,
    callbacks=(),
    verbose="auto",
) -> dict:
    """Fits the logits-exposed student on packed targets; returns the last epoch's metrics.

    `val`: (x, packed targets) or None. `training` is a `TrainOptions` (epochs, batch
    size, learning rate, seed).
    """
    keras = _keras.tf_keras()
    keras.utils.set_random_seed(training.seed)
    student_logits.compile(
        optimizer=keras.optimizers.Adam(training.learning_rate),
        loss=distillation_loss(options),
        metrics=[keras.metrics.MeanMetricWrapper(label_accuracy, name="accuracy")],
    )
    history = student_logits.fit(
        x,
        targets,
        epochs=training.epochs,
        batch_size=training.batch_size,
        shuffle=True,
        validation_data=val,
        callbacks=list(callbacks),
        verbose=_keras.training_verbosity(verbose),
    )
    return {name: float(values[-1]) for name, values in history.history.items()}
