"""The layers import one way: the kernel imports nothing of the application; transforms (the
stages) import the kernel and each other, never the engine (compiler, server, CLI)."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "vandamme"


def layer_of(module: str) -> str | None:
    """The layer a dotted module name belongs to: "engine", "transforms", "core" (the modules
    directly in the vandamme package: kernel, sources, secrets...) or None (not ours)."""
    parts = module.split(".")
    if parts[0] != "vandamme":
        return None
    if len(parts) > 1 and parts[1] in ("engine", "transforms"):
        return parts[1]
    return "core"


def imported(path: Path) -> set[str]:
    """The layers a module imports (absolute or relative imports)."""
    here = path.relative_to(PACKAGE.parent).with_suffix("").parts  # ("vandamme", "engine", "server")
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - node.level]
                names = [".".join([*base, node.module] if node.module else base)]
            else:
                names = [node.module or ""]
        else:
            continue
        out |= {layer for layer in map(layer_of, names) if layer}
    return out


def test_kernel_imports_nothing_of_the_application():
    assert imported(PACKAGE / "kernel.py") <= {"core"}


def test_transforms_never_import_the_engine():
    offenders = {p.name: imported(p) for p in (PACKAGE / "transforms").glob("*.py") if "engine" in imported(p)}
    assert offenders == {}


def test_core_modules_import_no_engine_or_transforms():
    for p in PACKAGE.glob("*.py"):
        assert imported(p) <= {"core"}, p.name


def test_the_layers_are_seen():
    """The check above sees imports at all (a broken ``imported`` would pass everything)."""
    assert imported(PACKAGE / "engine" / "server.py") >= {"core", "transforms"}
    assert "core" in imported(PACKAGE / "transforms" / "registry.py")
