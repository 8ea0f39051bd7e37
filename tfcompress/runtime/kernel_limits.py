"""Quantization scales LiteRT's int8 kernels cannot take.

Some kernels check, as they prepare an op, that a rescaling multiplier they derive from the scales
is below 1, and abort the process when it is not (tensorflow#60815). LiteRT prints nothing first,
so the op is found here from the model's scales, by the formulas of those kernels. (SUB derives
its multiplier as ADD does but, in the LiteRT this runs with, does not abort: it is not named.)
"""

from tfcompress.runtime.inspect import TfliteSummary

__all__ = ["ops_litert_aborts_on"]

# The int8 kernels' fixed-point headroom: inputs are shifted left by this many bits before rescaling.
_ADD_LEFT_SHIFT = 20
_SQUARED_DIFFERENCE_LEFT_SHIFT = 7


def ops_litert_aborts_on(summary: TfliteSummary) -> tuple:
    """One line for each int8 op whose output scale is below the least its kernel takes."""
    tensors = {tensor.name: tensor for tensor in summary.tensors}
    found = []
    for operator in summary.operators:
        if operator.name not in ("ADD", "SQUARED_DIFFERENCE") or len(operator.input_names) != 2:
            continue
        inputs = [tensors[name] for name in operator.input_names]
        output = tensors[operator.output_names[0]]
        if any(tensor.dtype != "INT8" or len(tensor.scales) != 1 for tensor in (*inputs, output)):
            continue
        input_scale = max(tensor.scales[0] for tensor in inputs)
        least = _least_output_scale(operator.name, input_scale)
        if output.scales[0] <= least:
            found.append(
                f"{operator.name} '{output.name}' has an output scale of {output.scales[0]:.3g}, and its int8 "
                f"kernel needs above {least:.3g} for inputs of scale {input_scale:.3g}"
            )
    return tuple(found)


def _least_output_scale(op: str, input_scale: float) -> float:
    """The output scale at which the kernel's output multiplier reaches 1."""
    twice_input_scale = 2 * input_scale
    if op == "SQUARED_DIFFERENCE":
        return twice_input_scale**2 / (1 << 2 * _SQUARED_DIFFERENCE_LEFT_SHIFT)
    return twice_input_scale / (1 << _ADD_LEFT_SHIFT)
