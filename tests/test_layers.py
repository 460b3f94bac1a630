"""The layers import one way: the kernel imports nothing of the application; transforms (the
stages) import the kernel and each other, never the engine (compiler, server, CLI)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP = ("engine", "transforms", "vandamme")


def imported(path: Path) -> set[str]:
    """Top-level application packages a module imports (absolute or relative)."""
    out = set()
    package = path.parent.name
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            out.add(package if node.level else (node.module or "").split(".")[0])
    return out & set(APP)


def test_kernel_imports_nothing_of_the_application():
    # only the other modules of its own package (vandamme.tracing), never engine or transforms
    assert imported(ROOT / "vandamme" / "kernel.py") <= {"vandamme"}


def test_transforms_never_import_the_engine():
    offenders = {p.name: imported(p) for p in (ROOT / "transforms").glob("*.py") if "engine" in imported(p)}
    assert offenders == {}


def test_vandamme_package_imports_no_engine_or_transforms():
    for p in (ROOT / "vandamme").glob("*.py"):
        assert imported(p) <= {"vandamme"}, p.name
