"""The import structure of ``src/llmkd`` (docs: /work/shared/ARCHITECTURE.md, "Rules of the road"),
read from the source with :mod:`ast`, nothing imported:

* the module-level imports among llmkd modules form no cycle;
* teachers/, students/ and tasks/ know no config (the build step, ``llmkd.build``, turns a config
  into them);
* methods depend on protocols only: no module-level import of the zoo, a teacher backend,
  matplotlib or the report writer.

"Module level" means what runs when the module is imported: top-level statements, also inside
``if`` / ``try`` / ``with`` blocks and class bodies, but not function bodies nor
``if TYPE_CHECKING:`` blocks. Importing ``llmkd.a.b`` also runs the package ``llmkd.a`` (unless
the importer is inside it), so that edge is in the graph too.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PKG = SRC / "llmkd"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _module_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The statements that run at import time (see the module docstring)."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        yield node
        if isinstance(node, ast.If):
            test = node.test
            if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
                    isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"):
                yield from _module_level(node.orelse)
                continue
            yield from _module_level(node.body)
            yield from _module_level(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                yield from _module_level(block)
        elif isinstance(node, (ast.With, ast.ClassDef)):
            yield from _module_level(node.body)


def _imported(module: str, node: ast.stmt) -> list[str]:
    """Full names of what an import statement imports (modules, or names for ``from x import n``
    where ``x.n`` is not a module: then ``x``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        package = module if _is_package(module) else module.rpartition(".")[0]
        base = package.split(".")
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    out = [target]
    for alias in node.names:
        if f"{target}.{alias.name}" in MODULES:
            out.append(f"{target}.{alias.name}")
    return out


def _imports(module: str, *, everywhere: bool = False) -> set[str]:
    """Everything ``module`` imports at module level (or anywhere, with ``everywhere``)."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    nodes = ast.walk(tree) if everywhere else _module_level(tree.body)
    return {name for node in nodes for name in _imported(module, node)}  # type: ignore[arg-type]


def _edges(module: str) -> set[str]:
    """The llmkd modules that run when ``module`` is imported, one step away."""
    out = set()
    for name in _imports(module):
        while name and name != "llmkd":
            if name in MODULES and not module.startswith(name + "."):  # a package the importer is in is running
                out.add(name)
            name = name.rpartition(".")[0]
    out.discard(module)
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def test_the_graph_sees_the_imports() -> None:
    """A sanity check of the parser on edges known to exist."""
    graph = {m: _edges(m) for m in MODULES}
    assert "llmkd.config" in graph["llmkd.build"] and "llmkd.methods" in graph["llmkd.build"]
    assert "llmkd.methods.base" in graph["llmkd.methods"]
    assert "llmkd.teachers" in graph["llmkd.labeling"]  # via llmkd.teachers.base: the package runs first
    assert "llmkd.methods" not in graph["llmkd.methods.base"]  # its own package is already running
    assert "llmkd.build" not in graph["llmkd.config"]  # lazy: inside a validator


def test_module_level_imports_have_no_cycle() -> None:
    graph = {m: _edges(m) for m in MODULES}
    cycles = _cycles(graph)
    assert not cycles, "module-level import cycles among llmkd modules: " + "; ".join(
        " <-> ".join(c) for c in cycles)


@pytest.mark.parametrize("folder", ["teachers", "students", "tasks"])
def test_components_know_no_config(folder: str) -> None:
    """Not even lazily: ``llmkd.build`` turns the config sections into these objects."""
    offenders = {m: sorted(n for n in _imports(m, everywhere=True) if n == "llmkd.config")
                 for m in MODULES if m.startswith(f"llmkd.{folder}.") or m == f"llmkd.{folder}"}
    assert not {m: n for m, n in offenders.items() if n}


FORBIDDEN_IN_METHODS = ("llmkd.zoo", "llmkd.report", "llmkd.method_reports", "llmkd.teachers.llamacpp", "llmkd.teachers.hf",
                        "llmkd.teachers.openai", "llmkd.teachers.native", "matplotlib")


def _forbidden(names: set[str]) -> list[str]:
    return sorted(n for n in names if any(n == f or n.startswith(f + ".") for f in FORBIDDEN_IN_METHODS))


def _method_modules() -> list[str]:
    return [m for m in MODULES if m == "llmkd.methods" or m.startswith("llmkd.methods.")]


def test_methods_import_no_backend_zoo_plot_or_report_at_module_level() -> None:
    offenders = {m: _forbidden(_imports(m)) for m in _method_modules()}
    assert not {m: n for m, n in offenders.items() if n}


def test_methods_import_none_of_them_even_lazily() -> None:
    """The build step hands a method objects (the student factory, the embedder) and the report
    renders its records; a method reaches none of these inside a function either."""
    found = {m: _forbidden(_imports(m, everywhere=True)) for m in _method_modules()}
    assert not {m: n for m, n in found.items() if n}


def test_moved_names_stay_importable() -> None:
    """The old homes of what moved to ``llmkd.build``, ``llmkd.data`` and ``llmkd.formats``."""
    import llmkd
    from llmkd import api, build
    from llmkd.data import GoldVault, Splits, check_labels, full_train, make_splits, read_examples  # noqa: F401
    from llmkd.students import make_student_factory
    from llmkd.tasks import build_task
    from llmkd.teachers import build_teacher

    assert build_teacher is build.build_teacher is llmkd.build_teacher
    assert build_task is build.build_task is llmkd.build_task
    assert make_student_factory is build.make_student_factory is llmkd.make_student_factory
    assert api._Session is build.Session
    assert api.choose_shots is build.choose_shots and api.default_cache_path is build.default_cache_path
