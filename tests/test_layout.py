"""The package's shape, read from the source: every module imports, `runtime/` reaches no TensorFlow
by any import (lazy ones too), the top level stays small, and module-level imports have no cycle."""

import ast
import importlib
import pkgutil
from pathlib import Path

import tfcompress

PACKAGE = Path(tfcompress.__file__).parent
# _keras is the one door to TensorFlow (it imports it with importlib, which no import statement shows)
HEAVY = ("tensorflow", "tf_keras", "keras", "tensorflow_model_optimization", "h5py", "tfcompress._keras")


def _modules() -> dict:
    """Module name → its parsed source."""
    return {_name(path): ast.parse(path.read_text(), str(path)) for path in PACKAGE.rglob("*.py")}


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(module: str, tree, known, module_level_only: bool) -> set:
    """The modules `module` imports: tfcompress ones by name, others by their top-level package."""
    nodes = tree.body if module_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(module.split(".")[: -node.level] + ([base] if base else []))
            found |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names}
    return {name if name in known or name.startswith("tfcompress") else name.split(".")[0] for name in found}


def test_every_module_imports():
    for info in pkgutil.walk_packages(tfcompress.__path__, "tfcompress."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)


def test_runtime_reaches_no_tensorflow_by_any_import():
    modules = _modules()
    graph = {name: _imports(name, tree, modules, module_level_only=False) for name, tree in modules.items()}
    for start in (name for name in modules if name.startswith("tfcompress.runtime")):
        seen, todo = set(), [start]
        while todo:
            current = todo.pop()
            for imported in graph.get(current, ()):
                assert imported not in HEAVY, f"{start} reaches {imported} through {current}"
                if imported in modules and imported not in seen:
                    seen.add(imported)
                    todo.append(imported)


def test_the_top_level_is_small_and_has_no_job_suffix():
    top = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert len(top) <= 12, top
    assert not [path for path in PACKAGE.rglob("*_job.py")]


def test_module_level_imports_have_no_cycle():
    modules = _modules()
    graph = {
        name: {
            imported
            for imported in _imports(name, tree, modules, module_level_only=True)
            if imported in modules and imported != name
        }
        for name, tree in modules.items()
    }
    visiting, done = set(), set()

    def visit(name, path):
        assert name not in visiting, "import cycle: " + " → ".join(path + [name])
        if name in done:
            return
        visiting.add(name)
        for imported in graph[name]:
            visit(imported, path + [name])
        visiting.discard(name)
        done.add(name)

    for name in graph:
        visit(name, [])
