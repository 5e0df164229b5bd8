"""The package's import layering, read from the source with `ast` (nothing is imported).

Rules:
  - A module imports only from its own layer or a lower one (LAYERS below; a name maps to the
    layer of its longest listed prefix, so `trajkit.gui.actions.codec` is in `trajkit.gui`'s layer).
  - No import cycles between modules. Imports inside functions count too: a lazy import hides a
    dependency from import time, not from the design. A package `__init__` importing its own
    submodules is not a cycle.
  - Every module under src/trajkit is in LAYERS; a new top-level module must be added there.
  - No module over MAX_LINES lines unless its docstring has a line starting with "Long because",
    which says why splitting it would make it worse.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "trajkit"
MAX_LINES = 500

# Module name (or package prefix) -> layer; lower layers never import higher ones.
LAYERS: dict[str, int] = {
    "trajkit": 0,  # the package __init__ only; submodules take their own entry
    "trajkit.data": 0,
    "trajkit.gui": 0,
    "trajkit.config": 0,
    "trajkit.render": 1,
    "trajkit.envs": 2,
    "trajkit.policy": 2,
    "trajkit.rollout": 3,
    "trajkit.pairs": 3,
    "trajkit.evaluate": 3,
    "trajkit.train": 4,
    "trajkit.pipeline": 5,
    "trajkit.report": 5,
    "trajkit.cli": 6,
    "trajkit.__main__": 6,
}


@dataclass(frozen=True)
class Import:
    importer: str
    target: str
    path: Path
    line: int

    def where(self) -> str:
        return f"{self.path.relative_to(SRC.parent)}:{self.line}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def find_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


def layer_of(module: str) -> int | None:
    """The layer of the longest LAYERS prefix of `module`; the bare package matches only itself."""
    if module == PACKAGE:
        return LAYERS[PACKAGE]
    parts = module.split(".")
    for n in range(len(parts), 1, -1):
        prefix = ".".join(parts[:n])
        if prefix in LAYERS:
            return LAYERS[prefix]
    return None


def resolve(name: str, modules: dict[str, Path]) -> str:
    """The known module `name` refers to: itself, else its longest known prefix."""
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def collect_imports(module: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """Every import of the package in a module, at any depth (function-local imports included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    out: list[Import] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import sub` imports the submodule when there is one.
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        for name in names:
            if name == PACKAGE or name.startswith(PACKAGE + "."):
                out.append(Import(module, resolve(name, modules), path, node.lineno))
    return sorted(set(out), key=lambda i: (i.line, i.target))


@pytest.fixture(scope="module")
def modules() -> dict[str, Path]:
    return find_modules()


@pytest.fixture(scope="module")
def imports(modules: dict[str, Path]) -> list[Import]:
    return [imp for name, path in modules.items() for imp in collect_imports(name, path, modules)]


def test_every_module_has_a_layer(modules: dict[str, Path]) -> None:
    unknown = [
        f"{path.relative_to(SRC.parent)} ({name})" for name, path in modules.items() if layer_of(name) is None
    ]
    if unknown:
        pytest.fail(
            "modules with no layer; add them (or their package) to LAYERS in tests/test_layers.py:\n  "
            + "\n  ".join(unknown),
            pytrace=False,
        )


def test_no_upward_imports(imports: list[Import]) -> None:
    upward = []
    for imp in imports:
        src_layer, dst_layer = layer_of(imp.importer), layer_of(imp.target)
        if src_layer is not None and dst_layer is not None and dst_layer > src_layer:
            upward.append(f"{imp.where()} -> {imp.target} (layer {src_layer} imports layer {dst_layer})")
    if upward:
        pytest.fail("imports from a higher layer:\n  " + "\n  ".join(upward), pytrace=False)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles(modules: dict[str, Path], imports: list[Import]) -> None:
    graph: dict[str, set[str]] = {name: set() for name in modules}
    edges: dict[tuple[str, str], list[Import]] = {}
    for imp in imports:
        own_submodule = modules[imp.importer].name == "__init__.py" and imp.target.startswith(
            imp.importer + "."
        )
        if own_submodule:
            continue
        graph[imp.importer].add(imp.target)
        edges.setdefault((imp.importer, imp.target), []).append(imp)
    report = []
    for component in _cycles(graph):
        members = set(component)
        lines = [
            f"    {imp.where()} -> {imp.target}"
            for (src, dst), found in sorted(edges.items())
            if src in members and dst in members
            for imp in found
        ]
        report.append(f"cycle among {', '.join(component)}:\n" + "\n".join(lines))
    if report:
        pytest.fail("import cycles:\n  " + "\n  ".join(report), pytrace=False)


def test_modules_stay_small(modules: dict[str, Path]) -> None:
    too_long = []
    for path in modules.values():
        text = path.read_text()
        lines = len(text.splitlines())
        if lines <= MAX_LINES:
            continue
        doc = ast.get_docstring(ast.parse(text)) or ""
        if not any(line.strip().startswith("Long because") for line in doc.splitlines()):
            too_long.append(f"{path.relative_to(SRC.parent)}: {lines} lines")
    if too_long:
        pytest.fail(
            f"modules over {MAX_LINES} lines (split them, or say why not in a docstring line "
            '"Long because ..."):\n  ' + "\n  ".join(too_long),
            pytrace=False,
        )


def test_lazy_and_relative_imports_are_seen(tmp_path: Path) -> None:
    pkg = tmp_path / "trajkit" / "sub"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "b.py").write_text("")
    code = "def f():\n    from trajkit.render import X\n\nfrom . import b\nimport trajkit.cli.app\n"
    known = {"trajkit.render": Path(), "trajkit.sub.b": Path(), "trajkit.cli.app": Path()}
    path = pkg / "a.py"
    path.write_text(code)
    found = {(i.target, i.line) for i in collect_imports("trajkit.sub.a", path, known)}
    assert found == {("trajkit.render", 2), ("trajkit.sub.b", 4), ("trajkit.cli.app", 5)}
