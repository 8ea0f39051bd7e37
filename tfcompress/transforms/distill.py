"""Knowledge distillation (Hinton et al. 2015): a student trained on the teacher's softened outputs.

Loss per sample: alpha · T² · KL(softmax(t/T) ‖ softmax(s/T)) + (1 − alpha) · CE(y, s),
with t and s the teacher's and student's pre-softmax logits and y the label as a distribution
(all zeros for an unlabelled sample, which the teacher alone supervises). Without augmentation
the teacher's logits are computed once and packed beside the label as the target, so `fit`
trains the student with its usual progress bar and no teacher forward pass per step. With
augmentation (function matching) the teacher runs on each augmented batch, which costs one
teacher forward pass per step. A yes/no output (one sigmoid unit, or one logit z) is distilled as
the two classes it tells apart, with logits [0, z]: their softmax is [1 − sigmoid(z), sigmoid(z)].
"""

import contextlib
import dataclasses
from typing import Optional

import numpy as np

from tfcompress import _keras
from tfcompress.data import per_input
from tfcompress.errors import ModelMismatchError, OptionError
from tfcompress.options import option
from tfcompress.transforms import augment as augmentations
from tfcompress.transforms.graph import channel_reshapes, final_layer, fixed_width_layers, held_config
from tfcompress.transforms.training import optimizer

__all__ = [
    "DistillOptions",
    "exposed_logits",
    "label_distributions",
    "packed_targets",
    "distillation_loss",
    "labelled_accuracy",
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
    augment: tuple[str, ...] = option(
        (),
        f"Function matching: augment each batch ({', '.join(augmentations.AUGMENTATIONS)}; flip only where "
        "mirrored inputs keep their class) and run the teacher on it. Costs a teacher forward pass per step.",
        choices=augmentations.AUGMENTATIONS,
    )

    def __post_init__(self):
        if not self.temperature > 0:
            raise OptionError(f"temperature must be positive. Received: temperature={self.temperature}")
        if not 0.0 <= self.alpha <= 1.0:
            raise OptionError(f"alpha must be in [0, 1]. Received: alpha={self.alpha}")
        augmentations.check_names(self.augment)


@contextlib.contextmanager
def exposed_logits(model, yes_no: bool = False):
    """Yields a model (sharing `model`'s weights) that outputs the logits before its softmax or sigmoid;
    with `yes_no` (one unit), as the two classes it tells apart: [0, z].

    A final Softmax (or Activation('softmax' or 'sigmoid')) layer is cut off; a final layer with a
    softmax or sigmoid activation has it switched to linear while inside, and back on exit.
    """
    keras = _keras.tf_keras()
    last = final_layer(model)
    squash = getattr(last, "activation", None)
    if squash not in (keras.activations.softmax, keras.activations.sigmoid):
        squash = None
    if isinstance(last, keras.layers.Softmax) or (isinstance(last, keras.layers.Activation) and squash):
        logits = keras.Model(model.inputs, last.input)
        yield _two_classes(logits) if yes_no else logits
    elif squash:
        last.activation = keras.activations.linear
        _forget_traced_functions(model)
        try:
            yield _two_classes(model) if yes_no else model
        finally:
            last.activation = squash
            _forget_traced_functions(model)
    else:
        yield _two_classes(model) if yes_no else model


def _two_classes(logit_model):
    """`logit_model`, whose one logit z says yes, as the logits [0, z] of no and yes."""
    keras = _keras.tf_keras()
    tf = _keras.tensorflow()

    class NoAndYes(keras.layers.Layer):
        def call(self, z):
            return tf.concat([tf.zeros_like(z), z], axis=-1)

    return keras.Model(logit_model.inputs, NoAndYes()(logit_model(logit_model.inputs)))


def _forget_traced_functions(model) -> None:
    """Keras caches traced predict/train functions; they would keep the old activation."""
    model.predict_function = model.train_function = model.test_function = None


def label_distributions(labels: np.ndarray, classes: int, unlabelled: int = 0) -> np.ndarray:
    """One-hot rows for the labels, then `unlabelled` rows of zeros: the hard-label term's targets."""
    rows = np.zeros((len(labels) + unlabelled, classes), np.float32)
    rows[np.arange(len(labels)), labels] = 1.0
    return rows


def packed_targets(label_rows, teacher_logits):
    """N × 2·classes: the label distribution, then the teacher's logits (numpy or tensors)."""
    if isinstance(label_rows, np.ndarray):
        return np.concatenate([label_rows, teacher_logits.astype(np.float32)], axis=1)
    return _keras.tensorflow().concat([label_rows, teacher_logits], axis=1)


def distillation_loss(options: DistillOptions):
    tf = _keras.tensorflow()
    temperature, alpha = options.temperature, options.alpha

    def loss(targets, student_logits):
        classes = student_logits.shape[-1]
        label_rows, teacher_logits = targets[:, :classes], targets[:, classes:]
        teacher_log_probs = tf.nn.log_softmax(teacher_logits / temperature)
        student_log_probs = tf.nn.log_softmax(student_logits / temperature)
        soft = tf.reduce_sum(tf.exp(teacher_log_probs) * (teacher_log_probs - student_log_probs), axis=-1)
        hard = -tf.reduce_sum(label_rows * tf.nn.log_softmax(student_logits), axis=-1)
        return alpha * temperature**2 * soft + (1.0 - alpha) * hard

    return loss


def labelled_accuracy():
    """Top-1 accuracy against the labels in the targets, over labelled samples only."""
    keras = _keras.tf_keras()
    tf = _keras.tensorflow()

    class LabelledAccuracy(keras.metrics.Metric):
        def __init__(self):
            super().__init__(name="accuracy")
            self.correct = self.add_weight(name="correct", initializer="zeros")
            self.labelled = self.add_weight(name="labelled", initializer="zeros")

        def update_state(self, targets, student_logits, sample_weight=None):
            label_rows = targets[:, : student_logits.shape[-1]]
            labelled = tf.cast(tf.reduce_sum(label_rows, axis=-1) > 0.5, tf.float32)
            agree = tf.cast(tf.equal(tf.argmax(label_rows, -1), tf.argmax(student_logits, -1)), tf.float32)
            self.correct.assign_add(tf.reduce_sum(agree * labelled))
            self.labelled.assign_add(tf.reduce_sum(labelled))

        def result(self):
            return tf.math.divide_no_nan(self.correct, self.labelled)

    return LabelledAccuracy()


def scale_width(model, width_multiplier: float, seed: int = 0):
    """A freshly initialised copy of `model`'s architecture with `width_multiplier` × its units/filters.

    Dense, Conv, SeparableConv and recurrent layers have their `units`/`filters` scaled (at least
    1) and a DepthwiseConv2D its `depth_multiplier`, inside wrappers (TimeDistributed,
    Bidirectional) too; the layers that produce the outputs keep their size, so student and teacher
    predict the same classes, and so do those a residual merge meets with the input (`fixed_width_layers`).
    A Reshape that keeps its input's channels follows the layer that sets them (`channel_reshapes`).
    """
    if not 0.0 < width_multiplier <= 1.0:
        raise OptionError(f"width_multiplier must be in (0, 1]. Received: width_multiplier={width_multiplier}")
    keras = _keras.tf_keras()
    config = model.get_config()
    kept = fixed_width_layers(model)
    settings_of = {layer_config["config"].get("name"): layer_config["config"] for layer_config in config["layers"]}
    for name, settings in settings_of.items():
        if name not in kept:
            _scale_layer(settings, width_multiplier)
    for reshape, source in channel_reshapes(model).items():
        target = settings_of[reshape]["target_shape"]
        settings_of[reshape]["target_shape"] = (*target[:-1], _width(settings_of[source]))
    keras.utils.set_random_seed(seed)
    try:
        return type(model).from_config(config)
    except (ValueError, TypeError) as error:
        raise ModelMismatchError(
            f"Cannot derive a student at width {width_multiplier} from {model.name}: "
            f"{error}. Pass a student model with --student instead."
        ) from None


def _scale_layer(settings: dict, width_multiplier: float) -> None:
    """One layer's config scaled in place, with the layers a wrapper holds (a TimeDistributed's, or a
    Bidirectional's two)."""
    for key in ("units", "filters", "depth_multiplier"):
        if isinstance(settings.get(key), int):
            settings[key] = max(1, round(settings[key] * width_multiplier))
    for wrapped in ("layer", "backward_layer"):
        if isinstance(settings.get(wrapped), dict) and isinstance(settings[wrapped].get("config"), dict):
            _scale_layer(settings[wrapped]["config"], width_multiplier)


def _width(settings: dict) -> int:
    """The units or filters a layer's config sets (a wrapper's: the layer it holds)."""
    held = held_config(settings)
    return held["units"] if "units" in held else held["filters"]


def train_student(
    student_logits,
    x: np.ndarray,
    targets: np.ndarray,
    options: DistillOptions,
    training,
    *,
    teacher_logits=None,
    val=None,
    callbacks=(),
    verbose="auto",
) -> dict:
    """Fits the logits-exposed student; returns the last epoch's metrics.

    Without `options.augment`, `targets` are packed (`packed_targets`). With it, `targets` are the
    label distributions and `teacher_logits` (the logits-exposed teacher) runs on every augmented
    batch. `val`: (x, packed targets) or None. `training` is a `TrainOptions` (epochs, batch
    size, learning rate, seed). Accuracy is shown where the training data has labels to measure it by.
    """
    keras = _keras.tf_keras()
    keras.utils.set_random_seed(training.seed)
    model = student_logits
    if options.augment:
        model = _function_matching(
            student_logits, teacher_logits, augmentations.BatchAugmenter(options.augment, training.seed)
        )
    model.compile(
        optimizer=optimizer(training, len(per_input(x)[0])),
        loss=distillation_loss(options),
        metrics=[labelled_accuracy()] if np.any(targets[:, : student_logits.outputs[0].shape[-1]]) else [],
    )
    history = model.fit(
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


def _function_matching(student_logits, teacher_logits, augment):
    """A model that trains `student_logits` on augmented batches labelled by `teacher_logits`.

    Validation and prediction are the student's own. The teacher is held in a closure, not an
    attribute, so Keras neither tracks its weights nor adds its regularization losses.
    """
    keras = _keras.tf_keras()
    tf = _keras.tensorflow()

    def run_teacher(x):
        return teacher_logits(x, training=False)

    class FunctionMatching(keras.Model):
        def __init__(self):
            super().__init__(name=f"{student_logits.name}_function_matching")
            self.student = student_logits

        def call(self, x, training=False):
            return self.student(x, training=training)

        def train_step(self, data):
            x, label_rows = data
            x, label_rows = augment(x, label_rows)
            targets = packed_targets(label_rows, tf.stop_gradient(run_teacher(x)))
            with tf.GradientTape() as tape:
                logits = self.student(x, training=True)
                loss = self.compiled_loss(targets, logits, regularization_losses=self.student.losses)
            self.optimizer.minimize(loss, self.student.trainable_variables, tape=tape)
            self.compiled_metrics.update_state(targets, logits)
            return {metric.name: metric.result() for metric in self.metrics}

    return FunctionMatching()
