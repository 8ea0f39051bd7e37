"""JSON Schemas of the reports: what users' CI may rely on, shipped with the package.

Each report carries `schema_version` ("convert/1", "micro/1", ...), naming the schema here it
validates against. `python -m tfcompress.report_schema DIR` writes them as files
(docs/schemas/ holds that output). The schemas list the contract keys of DESIGN.md with
their types; reports may hold more keys than a schema names.
"""

import json
import sys
from pathlib import Path

from tfcompress.runtime.task import TASKS

__all__ = ["KINDS", "SCHEMA_VERSION", "schema", "schema_version", "write_schemas"]

SCHEMA_VERSION = 1
KINDS = ("convert", "micro", "benchmark", "run", "check")

_NUMBER_OR_NULL = {"type": ["number", "null"]}
_COUNT = {"type": "integer", "minimum": 0}
_STRINGS = {"type": "array", "items": {"type": "string"}}
_DEFS = {
    "fraction": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
    "reference": {
        "type": ["object", "null"],
        "required": ["path", "size_bytes", "accuracy"],
        "properties": {
            "path": {"type": "string"},
            "size_bytes": {"type": ["integer", "null"]},
            "accuracy": {"$ref": "#/$defs/fraction"},
        },
    },
    "fidelity": {
        "type": ["object", "null"],
        "required": ["task", "top1_agreement", "max_abs_error", "mean_abs_error"],
        "properties": {
            "task": {"enum": list(TASKS)},
            "top1_agreement": {"$ref": "#/$defs/fraction"},  # classifiers only, like each measure below
            "top1_ties": {"type": ["integer", "null"], "minimum": 0},
            "threshold_agreement": {"$ref": "#/$defs/fraction"},
            "relative_error": _NUMBER_OR_NULL,
            "snr_db": _NUMBER_OR_NULL,  # null also when the error is zero (infinite SNR)
            "score_correlation": _NUMBER_OR_NULL,
            "output": {"type": ["string", "null"]},  # named when the model has several outputs
            "max_abs_error": _NUMBER_OR_NULL,
            "mean_abs_error": _NUMBER_OR_NULL,
            "samples": _COUNT,
        },
    },
    "latency": {
        "type": ["object", "null"],
        "required": ["p50", "p90", "p99", "mean"],
        "properties": {key: {"type": "number", "minimum": 0} for key in ("p50", "p90", "p99", "mean")},
    },
    "versions": {"type": "object", "required": ["tfcompress"], "additionalProperties": {"type": ["string", "null"]}},
    "ops": {"type": "object", "additionalProperties": _COUNT},
    "tensor": {
        "type": "object",
        "required": ["name", "dtype", "shape", "size_bytes"],
        "properties": {
            "name": {"type": "string"},
            "dtype": {"type": "string"},
            "shape": {"type": "array", "items": _COUNT},
            "size_bytes": _COUNT,
        },
    },
    "io": {
        "type": ["object", "null"],
        "required": ["inputs", "outputs"],
        "properties": {
            "inputs": {"type": "array", "items": {"$ref": "#/$defs/tensor"}},
            "outputs": {"type": "array", "items": {"$ref": "#/$defs/tensor"}},
        },
    },
    "calibration": {
        "type": ["object", "null"],
        "required": ["source", "samples", "random"],
        "properties": {"source": {"type": ["string", "null"]}, "samples": _COUNT, "random": {"type": "boolean"}},
    },
}
# The report contract of DESIGN.md: every exported model's report has these keys.
_CONTRACT = {
    "model": {"type": "string"},
    "output": {"type": ["string", "null"]},
    "precision": {"enum": ["float32", "float16", "dynamic", "int8", "int16x8", None]},
    "size_bytes": {"type": ["integer", "null"], "minimum": 0},
    "gzip_bytes": {"type": ["integer", "null"], "minimum": 0},
    "reference": {"$ref": "#/$defs/reference"},
    "accuracy": {"$ref": "#/$defs/fraction"},
    "accuracy_drop": _NUMBER_OR_NULL,
    "fidelity": {"$ref": "#/$defs/fidelity"},
    "latency_us": {"$ref": "#/$defs/latency"},
    "ops": {"$ref": "#/$defs/ops"},
    "float_ops": _STRINGS,
    "arena_bytes": {"type": ["integer", "null"], "minimum": 0},
    "warnings": _STRINGS,
    "versions": {"$ref": "#/$defs/versions"},
}
# Every stored weight tensor and its width (runtime.inspect.weight_tensors).
_WEIGHTS = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["tensor", "dtype", "bits", "bytes"],
        "properties": {
            "tensor": {"type": "string"},
            "dtype": {"type": "string"},
            "bits": {"type": "integer", "minimum": 1},
            "bytes": _COUNT,
        },
    },
}
# Where the file's bytes go (runtime.inspect.file_parts).
_FILE_BYTES = {
    "type": ["object", "null"],
    "required": ["kernels", "other_constants", "quantization_parameters", "tensor_names", "graph_and_metadata"],
    "additionalProperties": _COUNT,
}
_EXTRA = {
    "convert": {
        "fidelity_by_output": {"type": "array", "items": {"$ref": "#/$defs/fidelity"}},
        "weights": _WEIGHTS,
        "file_bytes": _FILE_BYTES,
        "io": {"$ref": "#/$defs/io"},
        "calibration": {"$ref": "#/$defs/calibration"},
        "options": {"type": "object"},
    },
    "micro": {
        "fidelity_by_output": {"type": "array", "items": {"$ref": "#/$defs/fidelity"}},
        "weights": _WEIGHTS,
        "file_bytes": _FILE_BYTES,
        "io": {"$ref": "#/$defs/io"},
        "calibration": {"$ref": "#/$defs/calibration"},
        "arena_with_margin_bytes": _COUNT,
        "recorded_arena_bytes": _COUNT,
        "micro": {"type": "object"},
        "files": _STRINGS,
    },
    "run": {
        "passed": {"type": "boolean"},
        "budgets": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "limit", "value", "passed"],
                "properties": {
                    "name": {"type": "string"},
                    "limit": {"type": "number"},
                    "value": _NUMBER_OR_NULL,
                    "passed": {"type": "boolean"},
                },
            },
        },
        "recipe": {"type": "object"},
        "steps": {"type": "array"},
        "files": _STRINGS,
    },
}


def schema_version(kind: str) -> str:
    """The value of a report's `schema_version` key, e.g. "convert/1"."""
    return f"{kind}/{SCHEMA_VERSION}"


def schema(kind: str) -> dict:
    """The JSON Schema (draft 2020-12) a report of `kind` validates against."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}. Received: kind={kind!r}")
    header = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"tfcompress/{schema_version(kind)}",
        "title": f"tfcompress {kind} report",
        "type": "object",
        "$defs": _DEFS,
    }
    version = {"schema_version": {"const": schema_version(kind)}}
    if kind == "benchmark":
        model = {"type": "object", "required": sorted(_CONTRACT), "properties": _CONTRACT}
        return {
            **header,
            "required": ["schema_version", "models", "versions"],
            "properties": {
                **version,
                "models": {"type": "array", "minItems": 1, "items": model},
                "versions": {"$ref": "#/$defs/versions"},
            },
        }
    if kind == "check":
        return {
            **header,
            "required": ["schema_version", "model", "target", "verdict", "problems", "layers", "versions"],
            "properties": {
                **version,
                "model": {"type": "string"},
                "target": {"enum": ["mobile", "micro", "mobile-fp16"]},
                "verdict": {"type": "string"},
                "problems": {"type": "array"},
                "layers": {"type": "array"},
                "ops": {"$ref": "#/$defs/ops"},
                "micro_verification": {"type": ["object", "null"]},
                "versions": {"$ref": "#/$defs/versions"},
            },
        }
    properties = {**version, **_CONTRACT, **_EXTRA.get(kind, {})}
    return {**header, "required": sorted(properties), "properties": properties}


def write_schemas(folder) -> list:
    """Writes KIND.schema.json for every kind into `folder`; returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind in KINDS:
        path = folder / f"{kind}.schema.json"
        path.write_text(json.dumps(schema(kind), indent=1, sort_keys=True) + "\n")
        paths.append(path)
    return paths


if __name__ == "__main__":
    print("\n".join(str(path) for path in write_schemas(sys.argv[1] if len(sys.argv) > 1 else "docs/schemas")))
