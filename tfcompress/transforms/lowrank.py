"""Low-rank factorization: a Dense or Conv2D kernel replaced by two thinner layers from its truncated SVD.

W (n_in × n_out) ≈ (U_r √S_r)(√S_r V_rᵀ). The first layer has r units, no bias and no
activation; the second keeps the original name, bias and activation, so everything
after it stays wired as before. A Conv2D kernel is read as a (kh·kw·c_in) × c_out
matrix: the first factor is a kh×kw convolution with r filters, the second a 1×1 one.
A layer is factored only where r·(rows + n_out) < rows·n_out, i.e. where it saves weights,
and the layer producing the output only when `layers` names it.
"""

import dataclasses
import math
import re
from typing import Optional

import numpy as np

from tfcompress import _keras
from tfcompress.errors import OptionError
from tfcompress.options import option
from tfcompress.transforms.graph import check_layer_pattern, copy_model, output_units_layers, rebuild

__all__ = ["LowRankOptions", "Factorization", "factorize"]


@dataclasses.dataclass(frozen=True)
class LowRankOptions:
    """Keep the fewest singular values holding `energy` of the squared sum, or a fixed `rank_ratio`."""

    energy: Optional[float] = option(None, "Keep the fewest singular values holding this fraction of the squared sum.")
    rank_ratio: Optional[float] = option(None, "Or: keep this fraction of each layer's rank.")
    layers: Optional[str] = option(
        None, "Factor only layers whose name matches this regex (default: every Dense and Conv2D)."
    )

    def __post_init__(self):
        if (self.energy is None) == (self.rank_ratio is None):
            raise OptionError(
                "Give exactly one of energy and rank_ratio. "
                f"Received: energy={self.energy}, rank_ratio={self.rank_ratio}"
            )
        for name in ("energy", "rank_ratio"):
            value = getattr(self, name)
            if value is not None and not 0.0 < value <= 1.0:
                raise OptionError(f"{name} must be in (0, 1]. Received: {name}={value}")
        check_layer_pattern(self.layers)

    def rank(self, singular_values: np.ndarray) -> int:
        if self.rank_ratio is not None:
            return max(1, math.ceil(self.rank_ratio * len(singular_values)))
        kept = np.cumsum(singular_values.astype(np.float64) ** 2)
        return int(np.searchsorted(kept, self.energy * kept[-1] * (1 - 1e-9)) + 1)


@dataclasses.dataclass(frozen=True)
class Factorization:
    layer: str
    rank: int
    full_rank: int
    energy: float  # fraction of the squared singular values kept
    params_before: int
    params_after: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def factorize(model, options: LowRankOptions) -> tuple:
    """(factored model, [Factorization], {layer: why left alone}); `model` itself is not changed."""
    keras = _keras.tf_keras()
    factored, skipped, replacements, factor_weights = [], {}, {}, {}
    output_names = {layer.name for layer in output_units_layers(model)}
    for layer in model.layers:
        if type(layer) not in (keras.layers.Dense, keras.layers.Conv2D):
            continue
        if options.layers is not None and not re.search(options.layers, layer.name):
            continue
        if layer.name in output_names and options.layers is None:
            skipped[layer.name] = "the output layer: a low rank there merges classes (name it in layers to factor it)"
            continue
        if getattr(layer, "groups", 1) != 1:
            skipped[layer.name] = "grouped convolution"
            continue
        kernel = layer.kernel.numpy()
        matrix = kernel.reshape(-1, kernel.shape[-1])
        left, singular_values, right = np.linalg.svd(matrix.astype(np.float64), full_matrices=False)
        rank = options.rank(singular_values)
        rows, columns = matrix.shape
        if rank * (rows + columns) >= rows * columns:
            skipped[layer.name] = f"rank {rank} of {len(singular_values)} would not save weights"
            continue
        root = np.sqrt(singular_values[:rank])
        first_kernel = (left[:, :rank] * root).reshape(kernel.shape[:-1] + (rank,))
        second_kernel = (root[:, None] * right[:rank]).reshape((1,) * (kernel.ndim - 2) + (rank, columns))
        first, second = _factor_layers(layer, rank, keras)
        replacements[layer.name] = _chained(first, second)
        factor_weights[layer.name] = (first, second, first_kernel, second_kernel, layer.get_weights()[1:])
        energy = float(np.sum(singular_values[:rank] ** 2) / np.sum(singular_values**2))
        bias_params = int(layer.count_params()) - rows * columns
        factored.append(
            Factorization(
                layer.name,
                rank,
                len(singular_values),
                energy,
                int(layer.count_params()),
                rank * (rows + columns) + bias_params,
            )
        )
    if not factored:
        return model, factored, skipped
    result = rebuild(copy_model(model), replacements)
    for first, second, first_kernel, second_kernel, bias in factor_weights.values():
        first.set_weights([first_kernel.astype(np.float32)])
        second.set_weights([second_kernel.astype(np.float32)] + bias)
    return result, factored, skipped


def _factor_layers(layer, rank: int, keras) -> tuple:
    """(first factor, second factor) for a Dense or Conv2D layer; the second keeps its name."""
    config = layer.get_config()
    if isinstance(layer, keras.layers.Dense):
        first = keras.layers.Dense(rank, use_bias=False, name=f"{layer.name}_lowrank")
        return first, keras.layers.Dense.from_config(config)
    first = keras.layers.Conv2D(
        rank,
        config["kernel_size"],
        strides=config["strides"],
        padding=config["padding"],
        data_format=config["data_format"],
        dilation_rate=config["dilation_rate"],
        use_bias=False,
        name=f"{layer.name}_lowrank",
    )
    pointwise = {**config, "kernel_size": (1, 1), "strides": (1, 1), "padding": "valid", "dilation_rate": (1, 1)}
    return first, keras.layers.Conv2D.from_config(pointwise)


def _chained(first, second):
    def call(inputs, **kwargs):
        return second(first(inputs, **kwargs))

    return call
