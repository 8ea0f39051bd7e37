"""Magnitude pruning with tfmot: a sparsity schedule while fine-tuning, then stripped.

tfmot leaves the schedule's end step, the choice of layers and the check of what was
reached to the user; here the end step defaults to the end of training, layers are
chosen by regex (or all but the first/last), per-layer targets override the global
one, and `layer_sparsity` reads back what the stripped weights really hold.
"""

import dataclasses
import re
from typing import Optional

import numpy as np

from tfcompress import _keras
from tfcompress.errors import OptionError
from tfcompress.options import option
from tfcompress.transforms.graph import check_layer_pattern, copy_model

__all__ = [
    "PruneOptions",
    "prunable_layer_names",
    "apply_pruning",
    "strip_pruning",
    "layer_sparsity",
    "pruning_callbacks",
]

SCHEDULES = ("polynomial", "constant")


@dataclasses.dataclass(frozen=True)
class PruneOptions:
    """How to prune: the same object for an API call, CLI flags and a recipe step.

    `end_step` None means the last training step; `structured` "2:4" keeps at most 2 of
    every 4 consecutive weights (then the sparsity targets do not apply);
    `layer_sparsity` maps layer names to their own target.
    """

    target_sparsity: float = option(0.8, "Fraction of weights set to zero.")
    initial_sparsity: float = option(0.0, "Where the polynomial schedule starts.")
    schedule: str = option("polynomial", "Sparsity schedule.", choices=SCHEDULES)
    begin_step: int = option(0, "First pruning step.")
    end_step: Optional[int] = option(None, "Last pruning step (default: end of training).")
    frequency: int = option(100, "Steps between pruning updates.")
    structured: Optional[str] = option(None, "N:M structured sparsity, e.g. 2:4.")
    layers: Optional[str] = option(None, "Prune only layers whose name matches this regex.")
    skip_first: bool = option(False, "Leave the first prunable layer dense.")
    skip_last: bool = option(False, "Leave the last prunable layer dense.")
    layer_sparsity: dict[str, float] = option({}, "Per-layer targets, over --target_sparsity.")

    def __post_init__(self):
        for name, value in {
            "target_sparsity": self.target_sparsity,
            "initial_sparsity": self.initial_sparsity,
            **{f"layer_sparsity[{k}]": v for k, v in self.layer_sparsity.items()},
        }.items():
            if not 0.0 <= value < 1.0:
                raise OptionError(f"{name} must be in [0, 1). Received: {name}={value}")
        if self.schedule not in SCHEDULES:
            raise OptionError(f"schedule must be one of {', '.join(SCHEDULES)}. Received: schedule={self.schedule!r}")
        if self.frequency < 1 or self.begin_step < 0:
            raise OptionError(
                f"frequency must be ≥ 1 and begin_step ≥ 0. Received: frequency={self.frequency}, "
                f"begin_step={self.begin_step}"
            )
        if self.end_step is not None and self.end_step <= self.begin_step:
            raise OptionError(
                f"end_step must be after begin_step. Received: begin_step={self.begin_step}, end_step={self.end_step}"
            )
        if self.structured is not None and (
            not re.fullmatch(r"[1-9]\d*:[1-9]\d*", self.structured)
            or int(self.structured.split(":")[0]) >= int(self.structured.split(":")[1])
        ):
            raise OptionError(
                "structured must look like 2:4 (N of every M kept, N smaller than M). "
                f"Received: structured={self.structured!r}"
            )
        check_layer_pattern(self.layers)

    def target_for(self, layer_name: str) -> float:
        return self.layer_sparsity.get(layer_name, self.target_sparsity)


def prunable_layer_names(model, options: PruneOptions) -> list:
    """Names of the layers that will be pruned: prunable weights, picked by the options."""
    registry = _registry()
    candidates = [
        layer.name
        for layer in model.layers
        if registry.supports(layer) and any(len(w.shape) >= 2 for w in layer.weights)
    ]
    if options.skip_first:
        candidates = candidates[1:]
    if options.skip_last:
        candidates = candidates[:-1]
    if options.layers is not None:
        candidates = [name for name in candidates if re.search(options.layers, name)]
    unknown = sorted(set(options.layer_sparsity) - {layer.name for layer in model.layers})
    if unknown:
        raise OptionError(
            f"layer_sparsity names layers the model does not have: {', '.join(unknown)}. "
            f"Layers: {', '.join(layer.name for layer in model.layers)}"
        )
    if not candidates:
        raise OptionError(
            f"Model '{model.name}' has no layer to prune with these options (prunable: Dense, "
            "Conv, DepthwiseConv, ... with weights); check --layers, --skip_first, --skip_last."
        )
    return candidates


def apply_pruning(model, options: PruneOptions, *, total_steps: int):
    """A copy of the model with the chosen layers wrapped for pruning; `total_steps` ends the default schedule.

    The copy matters: tfmot wraps the very layer objects it is given, so pruning the model itself
    would prune and train the caller's model too.
    """
    model = copy_model(model)
    tfmot = _keras.tfmot()
    sparsity = tfmot.sparsity.keras
    chosen = set(prunable_layer_names(model, options))
    end_step = options.end_step if options.end_step is not None else max(total_steps, options.begin_step + 1)
    frequency = min(options.frequency, max(1, (end_step - options.begin_step) // 10))

    def schedule(target):
        if options.schedule == "constant":
            return sparsity.ConstantSparsity(target, options.begin_step, end_step, frequency)
        return sparsity.PolynomialDecay(
            min(options.initial_sparsity, target), target, options.begin_step, end_step, frequency=frequency
        )

    m_by_n = tuple(int(part) for part in options.structured.split(":")) if options.structured else None

    def wrap(layer):
        if layer.name not in chosen:
            return layer
        return sparsity.prune_low_magnitude(
            layer, pruning_schedule=schedule(options.target_for(layer.name)), sparsity_m_by_n=m_by_n
        )

    return _keras.tf_keras().models.clone_model(model, clone_function=wrap)


def pruning_callbacks(logdir: Optional[str] = None) -> list:
    """UpdatePruningStep (required by tfmot), and PruningSummaries to TensorBoard with `logdir`."""
    sparsity = _keras.tfmot().sparsity.keras
    return [sparsity.UpdatePruningStep()] + ([sparsity.PruningSummaries(log_dir=str(logdir))] if logdir else [])


def strip_pruning(model):
    """The model without pruning wrappers: plain layers whose kernels hold the zeros."""
    return _keras.tfmot().sparsity.keras.strip_pruning(model)


def layer_sparsity(model) -> dict:
    """Layer name → fraction of exact zeros in its kernel (after stripping; a QAT wrapper by the layer it wraps)."""
    result = {}
    for layer in model.layers:
        kernels = [w for w in layer.weights if len(w.shape) >= 2]
        if kernels:
            values = np.concatenate([np.ravel(w.numpy()) for w in kernels])
            quantized = type(layer).__name__.startswith("QuantizeWrapper")
            result[layer.layer.name if quantized else layer.name] = float(np.mean(values == 0.0))
    return result


def _registry():
    _keras.tfmot()
    from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry

    return prune_registry.PruneRegistry
