"""The package shape (docs/architecture.md) as a test: it fails when an import points the wrong way.

    training ──► serving ──► triage, prescription_check
        └──────► evaluation ─┘

- ``triage`` and ``prescription_check`` import nothing else of ours; ``evaluation`` only those two; ``serving``
  only itself and those two; ``training`` may import everything.
- Project modules are imported at module top, never inside a function (a function-level import hides a cycle);
  only optional heavy third-party libraries are imported lazily.
- No import cycle between modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("triage", "prescription_check", "evaluation", "serving", "training")
ALLOWED = {
    "triage": {"triage"},
    "prescription_check": {"prescription_check"},
    "evaluation": {"evaluation", "triage", "prescription_check"},
    "serving": {"serving", "triage", "prescription_check"},
    "training": set(PACKAGES),
}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, path: Path) -> list[tuple[str, int, bool]]:
    """(imported project module, line, at module top?) for every import statement of ours."""
    tree = ast.parse(path.read_text(), str(path))
    top = {id(n) for n in tree.body}
    for node in tree.body:  # imports guarded by `if TYPE_CHECKING:` / try at top level count as top
        if isinstance(node, (ast.If, ast.Try)):
            top |= {id(n) for n in ast.walk(node)}
    out = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(node, module, path.name == "__init__.py")
            names = [target]
            # `from serving import registry` imports the module serving.registry
            names += [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES]
        for name in names:
            if name.split(".")[0] in PACKAGES:
                out.append((name, node.lineno, id(node) in top))
    return out


def test_every_import_points_the_right_way():
    wrong = []
    for module, path in MODULES.items():
        package = module.split(".")[0]
        for name, line, _ in _imports(module, path):
            if name.split(".")[0] not in ALLOWED[package]:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {name} ({package} may import "
                             f"{', '.join(sorted(ALLOWED[package]))})")
    assert not wrong, "\n".join(wrong)


def test_project_modules_are_imported_at_module_top():
    lazy = [f"{path.relative_to(ROOT)}:{line} imports {name} inside a function"
            for module, path in MODULES.items() for name, line, top in _imports(module, path) if not top]
    assert not lazy, "\n".join(lazy)


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for name, _, top in _imports(module, path):
            if not top:
                continue
            while name and name not in MODULES:  # `from a.b import c` where c is a name in a.b
                name = name.rpartition(".")[0]
            if name and name != module and not module.startswith(name + "."):  # a submodule reaching its package
                graph[module].add(name)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize("graph,expected", [
    ({"a": {"b"}, "b": {"a"}, "c": set()}, [["a", "b"]]),
    ({"a": {"b"}, "b": set()}, []),
])
def test_cycle_finder_finds_cycles(graph, expected):
    assert _cycles(graph) == expected


def test_the_contract_sees_a_wrong_import(tmp_path, monkeypatch):
    """The checks read real files: a domain module importing serving is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("from serving.settings import Settings\n\ndef f():\n    from training import registry\n")
    found = _imports("triage.bad", bad)
    assert ("serving.settings", 1, True) in found and ("training", 4, False) in found
