"""The package's imports go one way: down the stack below, never up, and never in a cycle.

    errors, version, faults  ->  io, device, formats  ->  models  ->  data  ->  run  ->  evaluation
      ->  training  ->  inference  ->  export  ->  predict, bench  ->  features  ->  serve  ->  cli

Every import statement counts, including the ones inside functions (a lazy import is still a
dependency). The scan reads the source with ``ast``; it imports nothing.
"""

from __future__ import annotations

import ast
from pathlib import Path

import vggnet

PACKAGE = Path(vggnet.__file__).parent

# rank of each top-level module or sub-package: a module may import ranks <= its own
LAYERS = [("errors", "version", "faults"), ("io", "device", "formats"), ("models",), ("data",), ("run",),
          ("evaluation",), ("training",), ("inference",), ("export",), ("predict", "bench"), ("features",), ("serve",), ("cli",),
          ("__init__", "__main__")]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("vggnet",) + path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts).removesuffix(".__init__")
        out[name] = path
    return out


def _imports(name: str, path: Path, modules: dict) -> set[str]:
    """The package's modules that ``name`` imports (resolved to the longest known module)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for t in targets:
            while t and t not in modules:
                t = t.rsplit(".", 1)[0] if "." in t else ""
            if t and t != name and t != "vggnet":
                found.add(t)
    return found


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_module_has_a_layer():
    unknown = sorted({_layer(m) for m in _modules()} - set(RANK))
    assert not unknown, f"add these to LAYERS in {__file__}: {unknown}"


def test_no_upward_imports():
    modules = _modules()
    upward = []
    for name, path in modules.items():
        for target in _imports(name, path, modules):
            if RANK[_layer(target)] > RANK[_layer(name)]:
                upward.append(f"{name} imports {target}")
    assert not upward, "imports must go down the stack:\n" + "\n".join(sorted(upward))


def test_no_import_cycles():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    # a package's __init__ re-exports its modules: an edge from a module to its own package's
    # __init__ is the usual `from . import x`, not a cycle we care about
    for name in graph:
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_scan_sees_a_lazy_upward_import(tmp_path):
    """The scan itself: an import inside a function is found and resolved."""
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from ..training import loop\n")
    modules = {"vggnet.models.m": src, "vggnet.training.loop": src, "vggnet.models": src}
    assert _imports("vggnet.models.m", src, modules) == {"vggnet.training.loop"}
