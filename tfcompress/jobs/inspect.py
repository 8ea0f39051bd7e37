"""`tfcompress inspect`: what a model file holds, as a dict and as a table.

`.tflite` files are read through the flatbuffer schema only (no TensorFlow), with the
sparsity, distinct values and coded size of each weight tensor (what pruning and
clustering bought); Keras files are loaded with the same safety checks as every other
command.
"""

from pathlib import Path
from typing import Optional

from tfcompress._io.files import json_bytes
from tfcompress.errors import ModelLoadError
from tfcompress.jobs._common import job_outputs, load_model
from tfcompress.options import LoadOptions, gather
from tfcompress.report import table

__all__ = ["inspect_model", "format_details"]


def inspect_model(path, *, load: Optional[LoadOptions] = None, json_path=None, **settings) -> dict:
    """What the model file holds, as the dict `--json` writes."""
    (load,) = gather(settings, (LoadOptions, load))
    path = Path(path)
    with job_outputs(json_path, inputs=(path,)) as outputs:
        if not path.exists():
            raise ModelLoadError(f"Model file not found: {path}")
        details = _tflite_details(path) if path.suffix == ".tflite" else _keras_details(path, load)
        outputs.bytes(json_path, json_bytes(details))
    return details


def _tflite_details(path: Path) -> dict:
    from tfcompress.runtime.inspect import inspect_tflite, read_tflite
    from tfcompress.runtime.weight_coding import code_weights

    data = read_tflite(path)
    summary = inspect_tflite(data, str(path))
    coding = code_weights(data)
    return {
        "model": str(path),
        "format": "tflite",
        "size_bytes": summary.size_bytes,
        "gzip_bytes": coding.gzip_bytes,
        "entropy_bound_bytes": coding.entropy_bound_bytes,
        "huffman_bytes": coding.huffman_bytes,
        "ops": summary.ops,
        "float_ops": list(summary.float_ops),
        "inputs": [t.to_dict() for t in summary.inputs],
        "outputs": [t.to_dict() for t in summary.outputs],
        "tensors": [t.to_dict() for t in summary.tensors],
        "weights": [t.to_dict() for t in coding.tensors],
    }


def _keras_details(path: Path, load: LoadOptions) -> dict:
    model, _ = load_model(path, load)
    layers = [
        {
            "name": layer.name,
            "class": type(layer).__name__,
            "output_shape": _shape_text(layer),
            "params": int(layer.count_params()),
            "dtypes": sorted({w.dtype.name for w in layer.weights}),
            **_kernel_details(layer),
        }
        for layer in model.layers
    ]
    return {
        "model": str(path),
        "format": "keras",
        "size_bytes": path.stat().st_size if path.is_file() else None,
        "params": int(model.count_params()),
        "float32_bytes": int(model.count_params()) * 4,
        "inputs": [list(t.shape) for t in model.inputs],
        "layers": layers,
    }


def _kernel_details(layer) -> dict:
    """Sparsity and distinct values of a layer's kernel (its first weight of two or more axes):
    what prune and cluster leave in a Keras file."""
    import numpy as np

    kernels = [weight for weight in layer.get_weights() if weight.ndim >= 2]
    if not kernels:
        return {"sparsity": None, "distinct_values": None}
    return {"sparsity": float(np.mean(kernels[0] == 0)), "distinct_values": int(np.unique(kernels[0]).size)}


def _shape_text(layer) -> str:
    try:
        return str(tuple(layer.output.shape))
    except AttributeError:
        return "?"


def format_details(details: dict) -> str:
    if details["format"] == "tflite":
        lines = [
            f"{details['model']}: {details['size_bytes']:,} bytes, {details['gzip_bytes']:,} gzipped, "
            f"{details['huffman_bytes']:,} Huffman-coded (entropy bound {details['entropy_bound_bytes']:,})",
            "ops: " + ", ".join(f"{name} x{count}" for name, count in details["ops"].items()),
            "float ops: " + (", ".join(details["float_ops"]) or "none"),
            table(
                ("tensor", "dtype", "shape", "bytes", "quantization"),
                [
                    (
                        tensor["name"][:40],
                        tensor["dtype"],
                        str(tuple(tensor["shape"])),
                        f"{tensor['size_bytes']:,}",
                        _quantization_text(tensor["quantization"]),
                    )
                    for tensor in details["tensors"]
                ],
            ),
            table(
                ("weight tensor", "sparsity", "distinct", "bits/w", "bytes", "Huffman", "coding"),
                [
                    (
                        weight["name"][:40],
                        f"{weight['sparsity']:.3f}",
                        weight["unique_values"],
                        f"{weight['entropy_bits']:.2f}",
                        f"{weight['raw_bytes']:,}",
                        f"{weight['huffman_bytes']:,}",
                        weight["coding"]
                        + (f" ({weight['unique_per_channel']}/ch)" if weight["unique_per_channel"] else ""),
                    )
                    for weight in details["weights"]
                ],
            ),
        ]
        return "\n".join(lines)
    rows = [
        (
            layer["name"][:32],
            layer["class"],
            layer["output_shape"],
            f"{layer['params']:,}",
            "-" if layer["sparsity"] is None else f"{layer['sparsity']:.3f}",
            "-" if layer["distinct_values"] is None else f"{layer['distinct_values']:,}",
        )
        for layer in details["layers"]
    ]
    return "\n".join(
        [
            f"{details['model']}: {details['params']:,} params ({details['float32_bytes']:,} bytes as float32)",
            table(("layer", "class", "output shape", "params", "sparsity", "distinct"), rows),
        ]
    )


def _quantization_text(quantization) -> str:
    if quantization is None:
        return "-"
    if "per_channel" in quantization:
        return f"per-channel ({quantization['per_channel']} scales, axis {quantization['axis']})"
    return f"scale {quantization['scale']:.4g}, zero point {quantization['zero_point']}"
