"""Which builtin ops the installed TFLite Micro interpreter can resolve.

Asked of the interpreter itself, not read from a hand-kept table: for every builtin
op code, a one-operator flatbuffer goes to tflite-micro's Python interpreter (which
registers every kernel it was built with), and "Didn't find op for builtin opcode"
means the op is missing. Each probe runs in a forked child: an operator without
tensors may crash the kernel's Prepare, which proves the op was found too.
"""

import functools
import re

from tfcompress.runtime.isolated import run_isolated

__all__ = ["micro_op_names", "builtin_op_names"]

_MISSING_OP = re.compile(r"Didn't find op for builtin opcode")
_PROBE_ARENA_BYTES = 1 << 16


@functools.lru_cache(maxsize=1)
def micro_op_names() -> frozenset:
    """Names of the builtin ops (CONV_2D, ...) TFLite Micro has a kernel for."""
    return frozenset(name for code, name in builtin_op_names().items() if _micro_resolves(code))


def builtin_op_names() -> dict:
    """Builtin op code → name, from the schema module ai-edge-litert ships."""
    from ai_edge_litert import schema_py_generated as schema

    return {
        code: name
        for name, code in vars(schema.BuiltinOperator).items()
        if not name.startswith("_") and name not in ("CUSTOM", "DELEGATE")
    }


def _micro_resolves(code: int) -> bool:
    from tflite_micro import runtime

    child = run_isolated(
        lambda: runtime.Interpreter.from_bytes(_one_operator_model(code), arena_size=_PROBE_ARENA_BYTES)
    )
    return not _MISSING_OP.search(child.printed)


def _one_operator_model(code: int) -> bytes:
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    opcode = schema.OperatorCodeT()
    opcode.builtinCode, opcode.deprecatedBuiltinCode, opcode.version = code, min(code, 127), 1
    operator = schema.OperatorT()
    operator.opcodeIndex, operator.inputs, operator.outputs = 0, [], []
    subgraph = schema.SubGraphT()
    subgraph.tensors, subgraph.inputs, subgraph.outputs, subgraph.operators = [], [], [], [operator]
    model = schema.ModelT()
    model.version, model.operatorCodes = 3, [opcode]
    model.subgraphs, model.buffers = [subgraph], [schema.BufferT()]
    builder = flatbuffers.Builder(256)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
