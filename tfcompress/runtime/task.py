"""What a model's output means, read from the converted model, so fidelity is measured the way that fits.

A softmax output is a class distribution (top-1 agreement), a sigmoid output is one or more yes/no
scores (agreement at 0.5), and anything else is a quantity: a regression, or, when the output has the
input's shape, a reconstruction whose per-sample error is the score (anomaly detection). Class logits
look like a regression from the graph alone, so `--task logits` says so (`--output_task NAME=logits`
for one output of several).
"""

import numpy as np

__all__ = [
    "TASKS",
    "CLASSIFIERS",
    "QUANTITIES",
    "YES_AT",
    "class_probabilities",
    "detect_task",
    "resolve_task",
    "resolve_tasks",
    "yes_no",
    "yes_probability",
]

TASKS = ("softmax", "logits", "sigmoid", "regression", "reconstruction")
CLASSIFIERS = ("softmax", "logits")
QUANTITIES = ("regression", "reconstruction")
AUTO = "auto"
YES_AT = {"sigmoid": 0.5, "logits": 0.0}  # where a yes/no score says yes: a probability, or one logit

# Ops that carry a value to the output without changing what it means.
_PASS_THROUGH = {"QUANTIZE", "DEQUANTIZE", "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "CAST"}
_ACTIVATION_TASKS = {"SOFTMAX": "softmax", "LOG_SOFTMAX": "softmax", "LOGISTIC": "sigmoid"}


def detect_task(summary, output_index: int = 0) -> str:
    """The task of one output of a converted model (a `TfliteSummary`), from the op that makes it."""
    producers = {name: operator for operator in summary.operators for name in operator.output_names}
    operator = producers.get(summary.outputs[output_index].name)
    while operator is not None and operator.name in _PASS_THROUGH and operator.input_names:
        operator = producers.get(operator.input_names[0])
    if operator is not None and operator.name in _ACTIVATION_TASKS:
        return _ACTIVATION_TASKS[operator.name]
    if len(summary.inputs) == 1 and _elements(summary.outputs[output_index]) == _elements(summary.inputs[0]):
        return "reconstruction"
    return "regression"


def resolve_task(requested: str, summary, output_index: int = 0) -> str:
    """`requested` (a `--task`), or the detected task when it is "auto"."""
    return detect_task(summary, output_index) if requested == AUTO else requested


def resolve_tasks(requested: tuple, summary) -> tuple:
    """The task of each output: `requested` holds one per output (`LoadOptions.asked_tasks`), each
    detected where it is "auto"."""
    return tuple(resolve_task(asked, summary, index) for index, asked in enumerate(requested))


def yes_no(task: str, last_axis: int) -> bool:
    """Whether outputs of `task` with `last_axis` values per position are yes/no scores: a sigmoid's,
    or one logit (of yes against no, a binary classifier trained with cross-entropy from logits)."""
    return task == "sigmoid" or (task == "logits" and last_axis == 1)


def yes_probability(logits) -> np.ndarray:
    """The probability of yes that one logit says (its sigmoid)."""
    return 0.5 * (1 + np.tanh(np.asarray(logits, np.float64) / 2))


def class_probabilities(outputs, task: str) -> np.ndarray:
    """Class scores as probabilities over the last axis: a softmax's as they are, logits through a
    softmax, and each sigmoid unit (or one logit) as its two classes, no and yes."""
    outputs = np.asarray(outputs, np.float64)
    if task == "logits" and outputs.shape[-1] == 1:
        outputs, task = yes_probability(outputs), "sigmoid"
    if task == "sigmoid":
        return np.stack([1 - outputs, outputs], axis=-1)
    if task == "logits":
        exponentials = np.exp(outputs - np.max(outputs, axis=-1, keepdims=True))
        return exponentials / np.sum(exponentials, axis=-1, keepdims=True)
    return outputs


def _elements(tensor) -> int:
    return int(np.prod(tensor.shape[1:])) if len(tensor.shape) > 1 else 1
