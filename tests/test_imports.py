"""The project's import graph stays a one-way street.

Every `import` statement of the project's packages is read with `ast`, those inside functions
too (a lazy import is still a dependency), and resolved to the project module it names. Three
rules hold:
- no two modules import each other, directly or through others;
- no two sibling subpackages (tr2m.training and tr2m.evaluation, say) do either;
- each top-level package imports only the layers below it: runtime <- tr2m <- export <- calib,
  and bench above them all.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("runtime", "tr2m", "export", "calib", "bench")
MAY_IMPORT = {  # top-level package -> the other top-level packages it may import
    "runtime": set(),
    "tr2m": {"runtime"},
    "export": {"tr2m", "runtime"},
    "calib": {"export", "tr2m", "runtime"},
    "bench": {"calib", "export", "tr2m", "runtime"},
}

# Upward imports being removed by other work; delete an entry once its import is gone.
PENDING: Dict[tuple, str] = {}


def _modules() -> Dict[str, Path]:
    """Dotted module name -> file, for every module of the project's packages."""
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _project_module(name: str) -> str | None:
    """The project module ``name`` lives in (``a.b.func`` -> ``a.b``), None for outside packages."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _targets(module: str, node: ast.AST) -> List[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    is_package = MODULES[module].name == "__init__.py"
    base = module.split(".") if is_package else module.split(".")[:-1]
    if node.level:
        base = base[:len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module
    # `from pkg import name` imports the submodule pkg.name when there is one, else pkg itself
    return [f"{prefix}.{alias.name}" if f"{prefix}.{alias.name}" in MODULES else prefix for alias in node.names]


def _graph() -> Dict[str, Set[str]]:
    graph = {}
    for module, path in MODULES.items():
        imports = (n for n in ast.walk(ast.parse(path.read_text(), str(path))) if isinstance(n, (ast.Import, ast.ImportFrom)))
        targets = {_project_module(t) for node in imports for t in _targets(module, node)}
        graph[module] = {t for t in targets if t and t != module}
    return graph


GRAPH = _graph()
SETTLED = {module: targets - {t for (m, t) in PENDING if m == module} for module, targets in GRAPH.items()}


def _cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _explain(cycles: List[List[str]], graph: Dict[str, Set[str]]) -> str:
    return "\n".join(f"{a} -> {', '.join(sorted(graph[a] & set(c)))}" for c in cycles for a in c)


def _package(module: str) -> str:
    return module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]


def test_the_walk_sees_the_project():
    assert {"tr2m.training.cli", "export.cli", "calib.hook", "bench.worker", "runtime.engine"} <= set(MODULES)
    assert "tr2m.cli_inputs" in GRAPH["tr2m.evaluation.cli"]  # a top-level import
    assert "tr2m.evaluation.evaluate" in GRAPH["tr2m.evaluation.cli"]  # an import inside a function
    assert "export.trt" in GRAPH["export.cli"]  # a relative import of a subpackage


def test_cycle_finder_finds_a_known_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_import_cycles():
    cycles = _cycles(GRAPH)
    assert not cycles, "modules that import each other:\n" + _explain(cycles, GRAPH)


def test_no_import_cycles_between_sibling_subpackages():
    """A package and its own subpackages may use each other (tr2m.build uses tr2m.encoders, which
    reads tr2m.config); packages side by side may not (tr2m.training vs tr2m.evaluation)."""
    graph: Dict[str, Set[str]] = {}
    for module, targets in SETTLED.items():
        source = _package(module)
        for target in map(_package, targets):
            related = source == target or target.startswith(source + ".") or source.startswith(target + ".")
            if not related:
                graph.setdefault(source, set()).add(target)
            graph.setdefault(target, set())
    cycles = _cycles(graph)
    assert not cycles, "subpackages that import each other:\n" + _explain(cycles, graph)


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_imports_only_the_layers_below(package):
    upward = sorted(f"{module} -> {target}" for module, targets in SETTLED.items() if module.split(".")[0] == package
                    for target in targets if target.split(".")[0] not in MAY_IMPORT[package] | {package})
    assert not upward, f"{package} may import only {sorted(MAY_IMPORT[package])}:\n" + "\n".join(upward)
