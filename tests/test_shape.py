"""The package's shape: no import cycle, a short top level, short modules, every error class in errors.py."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "lensllm_hf"
MAX_TOP_LEVEL = 10
MAX_MODULE_LINES = 600


def modules(root: Path) -> dict[str, Path]:
    """Dotted name -> file of every module of the package at ``root`` (a package is its __init__)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def import_graph(root: Path) -> dict[str, set[str]]:
    """Each module -> the package's modules it imports when it is imported (``TYPE_CHECKING`` blocks
    and imports inside functions left out: they run later, or never)."""
    found = modules(root)
    graph: dict[str, set[str]] = {}
    for name, path in found.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in _module_level_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                base = ".".join(base + ([node.module] if node.module else []))
                # "from . import claims" imports the module claims; "from .schema import RunKey" the module schema
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in found else base for alias in node.names]
            for target in targets:
                while target and target not in found:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def _module_level_imports(tree: ast.Module):
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.If, ast.Try)):  # try: import x / except ImportError
            yield from (sub for sub in ast.walk(node) if isinstance(sub, (ast.Import, ast.ImportFrom)))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles: each a path of modules that leads back to its first one."""
    found, done = [], set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            found.append(path[path.index(name):] + [name])
            return
        if name in done:
            return
        for target in sorted(graph[name]):
            visit(target, path + [name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
    return found


def test_the_import_check_finds_a_cycle(tmp_path):
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "sub" / "__init__.py").write_text("from .b import B\n")
    (root / "a.py").write_text("from typing import TYPE_CHECKING\nfrom .sub import b\nif TYPE_CHECKING:\n    from . import c\n")
    (root / "sub" / "b.py").write_text("from ..c import C\nB = 1\n")
    (root / "c.py").write_text("import pkg.a\nC = 1\n\ndef later():\n    from .sub import b\n")
    assert cycles(import_graph(root)) == [["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]]


def test_no_import_cycle_among_the_package_modules():
    graph = import_graph(PACKAGE)
    assert len(graph) > 50 and "lensllm_hf.records.claims" in graph["lensllm_hf.records.store"]
    assert cycles(graph) == []


def test_the_top_level_is_short():
    entries = sorted(p.name for p in PACKAGE.iterdir() if p.name not in ("__init__.py", "py.typed", "__pycache__"))
    assert len(entries) <= MAX_TOP_LEVEL, entries


def test_no_module_is_over_600_lines():
    long = {name: n for name, path in modules(PACKAGE).items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert long == {}


def test_every_exception_and_warning_class_is_in_errors_py():
    kinds = re.compile(r"(Error|Exception|Warning)$")
    elsewhere = []
    for name, path in modules(PACKAGE).items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and name != "lensllm_hf.errors" and (
                    kinds.search(node.name) or any(kinds.search(ast.unparse(base)) for base in node.bases)):
                elsewhere.append(f"{name}.{node.name}")
    assert elsewhere == []
