"""The import contract between the four packages (see ARCHITECTURE.md), checked on the source.

* ``autoloss_ray`` (the library) never imports ray, searchers, trainables or autoloss_app;
* ``searchers`` imports the library and ray, never trainables or autoloss_app;
* ``trainables`` imports the library and ray, never searchers or autoloss_app;
* ``autoloss_app`` may import everything; nothing else imports it.

Every import statement counts, those inside functions included, and so do the module names of
the lazy ``_EXPORTS`` tables of the packages' ``__init__`` files. Besides, the graph of the
modules' top-level imports has no cycle, and neither has the graph of the packages (all
imports). Pure ``ast``: nothing is imported, so the test is fast and needs no ray.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

from tests import REPO

PACKAGES = ("autoloss_ray", "searchers", "trainables", "autoloss_app")

# package -> top-level names it must never import (in any import statement)
FORBIDDEN: dict[str, frozenset[str]] = {
    "autoloss_ray": frozenset({"ray", "searchers", "trainables", "autoloss_app"}),
    "searchers": frozenset({"trainables", "autoloss_app"}),
    "trainables": frozenset({"searchers", "autoloss_app"}),
    "autoloss_app": frozenset(),
}


# ----------------------------------------------------------------------------- the checker
def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve_relative(module: str, is_package: bool, level: int, target: str | None) -> str:
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def imports(source: str, module: str, *, is_package: bool = False
            ) -> list[tuple[str, int, bool]]:
    """``(imported module name, line, at top level)`` of every import in ``source``.

    ``from a import b`` gives ``a.b`` (the checker later maps it onto ``a`` when ``a.b`` is
    not a module); a string-valued ``_EXPORTS = {...}`` table gives its module names."""
    tree = ast.parse(source)
    toplevel = {id(node) for node in tree.body}
    # top level includes statements in module-level if/try blocks
    for node in tree.body:
        if isinstance(node, (ast.If, ast.Try)):
            toplevel.update(id(n) for n in ast.walk(node))
    out: list[tuple[str, int, bool]] = []
    for node in ast.walk(tree):
        top = id(node) in toplevel
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno, top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = (node.module or "") if not node.level else _resolve_relative(
                module, is_package, node.level, node.module)
            out += [(f"{base}.{alias.name}" if alias.name != "*" else base, node.lineno, top)
                    for alias in node.names]
        elif (isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
              and any(isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in node.targets)):
            out += [(v.value, node.lineno, False) for v in node.value.values
                    if isinstance(v, ast.Constant) and isinstance(v.value, str)]
    return out


def _known(name: str, modules: Iterable[str]) -> str:
    """The longest known module that ``name`` is or lies in (``a.b.func`` -> ``a.b``)."""
    mods = set(modules)
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in mods:
            return ".".join(parts[:n])
    return name


def check_sources(sources: Mapping[str, tuple[str, bool]],
                  forbidden: Mapping[str, frozenset[str]]) -> tuple[list[str], dict]:
    """``sources``: module name -> (source text, is a package ``__init__``).

    Returns the contract violations (one sentence each) and the top-level module graph."""
    errors: list[str] = []
    graph: dict[str, set[str]] = {m: set() for m in sources}
    packages: dict[str, set[str]] = {}
    for module, (source, is_package) in sources.items():
        pkg = module.split(".")[0]
        for name, line, top in imports(source, module, is_package=is_package):
            root = name.split(".")[0]
            if root in forbidden.get(pkg, ()):
                errors.append(f"{module} (line {line}) imports {name}: package {pkg} must "
                              f"not import {root}")
            if root in forbidden and root != pkg:
                packages.setdefault(pkg, set()).add(root)
            target = _known(name, sources)
            if top and target in sources and target != module:
                graph[module].add(target)
    for cycle in (find_cycle(graph), find_cycle(packages)):
        if cycle:
            errors.append("import cycle: " + " -> ".join(cycle))
    return errors, graph


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None when it is acyclic."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def repo_sources(root: Path = REPO) -> dict[str, tuple[str, bool]]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            out[module_name(path, root)] = (path.read_text(encoding="utf-8"),
                                            path.name == "__init__.py")
    return out


# ----------------------------------------------------------------------------- the contract
def test_the_repository_keeps_the_import_contract() -> None:
    sources = repo_sources()
    assert {m.split(".")[0] for m in sources} == set(PACKAGES)
    assert len(sources) > 30  # really read the tree
    errors, graph = check_sources(sources, FORBIDDEN)
    assert not errors, "\n".join(errors)
    # the graph is real (top-level edges found, lazy ones left out)
    assert "autoloss_app.options" in graph["autoloss_app.search_job"]
    assert "autoloss_ray.validation" in graph["autoloss_app.options"]
    assert "autoloss_ray.models" not in graph["autoloss_ray.train"]  # imported in functions


def test_nothing_outside_the_app_imports_it() -> None:
    """Tests, benchmarks and ``search.py`` may use the app; the four packages besides it not."""
    sources = repo_sources()
    users = sorted({m for m, (src, pkg) in sources.items()
                    if not m.startswith("autoloss_app")
                    and any(n.split(".")[0] == "autoloss_app"
                            for n, _, _ in imports(src, m, is_package=pkg))})
    assert users == []


# ----------------------------------------------------------------------------- the checker works
SYNTHETIC_OK = {
    "autoloss_ray": ("_EXPORTS = {'f': 'autoloss_ray.a'}\n", True),
    "autoloss_ray.a": ("import numpy\nfrom autoloss_ray import b\n", False),
    "autoloss_ray.b": ("def f():\n    from autoloss_ray.a import x\n", False),  # lazy: no cycle
    "searchers": ("", True),
    "searchers.s": ("import ray\nfrom autoloss_ray.a import f\n", False),
    "autoloss_app": ("", True),
    "autoloss_app.cli": ("import searchers.s\nimport trainables\nfrom . import job\n", False),
    "autoloss_app.job": ("from .cli import main\n", False),
}


def test_checker_accepts_a_clean_synthetic_tree() -> None:
    sources = {k: v for k, v in SYNTHETIC_OK.items() if k != "autoloss_app.job"}
    errors, graph = check_sources(sources, FORBIDDEN)
    assert errors == []
    assert graph["autoloss_ray.a"] == {"autoloss_ray.b"}
    assert graph["autoloss_ray.b"] == set()  # the import inside a function is not top level
    assert graph["searchers.s"] == {"autoloss_ray.a"}


def test_checker_finds_a_relative_import_cycle() -> None:
    errors, _ = check_sources(SYNTHETIC_OK, FORBIDDEN)
    assert errors == ["import cycle: autoloss_app.cli -> autoloss_app.job -> autoloss_app.cli"]


@pytest.mark.parametrize("module, source, root", [
    ("autoloss_ray.a", "import ray\n", "ray"),
    ("autoloss_ray.a", "def f():\n    from ray import tune\n", "ray"),  # lazy counts
    ("autoloss_ray.a", "try:\n    import trainables.proxy\nexcept ImportError:\n    pass\n",
     "trainables"),
    ("autoloss_ray", "_EXPORTS = {'run': 'autoloss_app.cli'}\n", "autoloss_app"),
    ("searchers.s", "from trainables import proxy_task\n", "trainables"),
    ("searchers.s", "class S:\n    def m(self):\n        import autoloss_app\n", "autoloss_app"),
])
def test_checker_reports_a_forbidden_import(module: str, source: str, root: str) -> None:
    sources = {k: v for k, v in SYNTHETIC_OK.items() if k != "autoloss_app.job"}
    sources[module] = (source, sources.get(module, ("", False))[1])
    errors, _ = check_sources(sources, FORBIDDEN)
    forbidden = [e for e in errors if not e.startswith("import cycle: ")]  # may close a cycle
    assert len(forbidden) == 1 and forbidden[0].startswith(f"{module} (line "), errors
    assert f"must not import {root}" in forbidden[0]


def test_checker_finds_a_package_cycle_through_lazy_imports() -> None:
    forbidden = {"p": frozenset(), "q": frozenset()}
    sources = {"p.a": ("def f():\n    import q.b\n", False),
               "q.b": ("def g():\n    from p.a import f\n", False)}
    errors, graph = check_sources(sources, forbidden)
    assert graph == {"p.a": set(), "q.b": set()}  # no top-level edge
    assert errors == ["import cycle: p -> q -> p"]
