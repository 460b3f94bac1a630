"""Load a spec folder: every ``*.yaml``/``*.yml`` file, sorted by name, deep-merged, overlaid, validated.

Positions are kept (ruamel.yaml round-trip loader) so that every value of the merged spec knows
where it came from (:class:`engine.sources.SourceMap`) and every error points at ``file:line:col``.

Merge rule: mappings merge recursively, the later file wins; lists and scalars are replaced whole
by the later file (and the replaced subtree's sources are forgotten).
"""
from __future__ import annotations

import datetime as _dt
import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path as _FsPath
from typing import Any, Mapping

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, SequenceNode

from vandamme.sources import Path, Source, SourceMap, SpecError, SpecErrors

__all__ = ["LoadedSpec", "load_spec", "load_files", "display_path", "deep_merge"]

PASSTHRU = "!PASSTHRU"


@dataclass(frozen=True)
class LoadedSpec:
    """The effective spec: plain data, where each value came from, and the files read."""

    data: dict
    sources: SourceMap = field(default_factory=SourceMap)
    files: tuple[str, ...] = ()


def display_path(path: str | os.PathLike) -> str:
    """``path`` relative to the current directory when it lies below it, else absolute."""
    p = _FsPath(path)
    try:
        absolute = p.resolve()
        rel = absolute.relative_to(_FsPath.cwd().resolve())
        return rel.as_posix()
    except (ValueError, OSError):
        return os.path.normpath(str(p))


def _yaml() -> YAML:
    y = YAML(typ="rt")
    y.allow_duplicate_keys = False
    return y


# --------------------------------------------------------------------------- errors from ruamel
def _mark_source(fname: str, mark: Any) -> Source:
    if mark is None:
        return Source(file=fname)
    return Source(file=fname, line=getattr(mark, "line", 0) + 1, col=getattr(mark, "column", 0) + 1)


def _find_mapping(node: Any, line: int, col: int) -> tuple[MappingNode | None, Path]:
    """The mapping node starting at (line, col) (0-based) in a composed tree, and its path."""
    stack: list = [(node, ())]
    while stack:
        n, path = stack.pop()
        if isinstance(n, MappingNode):
            if n.start_mark.line == line and n.start_mark.column == col:
                return n, path
            for k, v in n.value:
                stack.append((v, path + (str(getattr(k, "value", k)),)))
        elif isinstance(n, SequenceNode):
            stack.extend((v, path + (i,)) for i, v in enumerate(n.value))
    return None, ()


def _duplicate_error(fname: str, text: str, exc: DuplicateKeyError) -> SpecError:
    pm, cm = exc.problem_mark, exc.context_mark
    m = re.search(r'found duplicate key "(.*?)" with value', str(exc.problem or ""))
    key = m.group(1) if m else None
    first_line = None
    path: Path = ()
    try:
        root = _yaml().compose(io.StringIO(text))
        mapping, path = _find_mapping(root, cm.line, cm.column) if root is not None and cm else (None, ())
        if mapping is not None and key is not None:
            for knode, _ in mapping.value:
                if getattr(knode, "value", None) == key:
                    first_line = knode.start_mark.line + 1
                    break
    except YAMLError:  # pragma: no cover - the text composed once already
        pass
    where = f" (first defined at line {first_line})" if first_line else ""
    label = f"'{key}'" if key is not None else "key"
    return SpecError(f"duplicate key {label}{where}", _mark_source(fname, pm),
                     path + (key,) if key is not None else path)


def _yaml_error(fname: str, exc: YAMLError) -> SpecError:
    if isinstance(exc, MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        parts = [p for p in (exc.context, exc.problem) if p]
        msg = "YAML syntax error: " + ("; ".join(parts) if parts else str(exc).splitlines()[0])
        return SpecError(msg, _mark_source(fname, mark))
    return SpecError(f"YAML error: {exc}", Source(file=fname))


# --------------------------------------------------------------------------- conversion
def _pos(container: Any, key_or_index: Any, is_item: bool) -> tuple[int, int]:
    try:
        lc = container.lc
        line, col = lc.item(key_or_index) if is_item else lc.key(key_or_index)
        return line + 1, col + 1
    except Exception:  # noqa: BLE001 - a position is best effort (e.g. merged anchors)
        return 0, 0


def _tag(node: Any) -> str | None:
    tag = getattr(node, "tag", None)
    value = getattr(tag, "value", tag) if tag is not None else None
    return value if isinstance(value, str) else None


def _to_plain(node: Any, fname: str, path: Path, here: Source, sources: SourceMap,
              errors: list[SpecError]) -> Any:
    """Convert a ruamel round-trip node to plain Python types and record positions."""
    if isinstance(node, CommentedMap):
        tag = _tag(node)
        if tag and not tag.startswith("tag:yaml.org"):
            errors.append(SpecError(f"unsupported YAML tag {tag!r}", here, path))
        out: dict = {}
        for k in node:
            line, col = _pos(node, k, False)
            key = k if isinstance(k, str) else _scalar(k)
            if not isinstance(key, str):
                key = str(key)
            src = Source(file=fname, line=line, col=col) if line else here
            sub = path + (key,)
            sources[sub] = src
            out[key] = _to_plain(node[k], fname, sub, src, sources, errors)
        return out
    if isinstance(node, (CommentedSeq, list)):
        items = []
        for i, v in enumerate(node):
            line, col = _pos(node, i, True)
            src = Source(file=fname, line=line, col=col) if line else here
            sub = path + (i,)
            sources[sub] = src
            items.append(_to_plain(v, fname, sub, src, sources, errors))
        return items
    if isinstance(node, TaggedScalar):
        tag = _tag(node)
        if tag == PASSTHRU and not node.value:
            return PASSTHRU
        errors.append(SpecError(
            f"unsupported YAML tag {tag!r}; quote the value (e.g. \"{PASSTHRU}\") if it is a string",
            here, path))
        return str(node.value)
    return _scalar(node)


def _scalar(value: Any) -> Any:
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, bool):
        return bool(value)
    # ruamel's ScalarBoolean subclasses int; it keeps bools that carry anchors.
    if type(value).__name__ == "ScalarBoolean":
        return bool(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, (_dt.date, _dt.datetime)):
        # An unquoted 2024-10-21 is a YAML timestamp; the spec only ever wants the text.
        return value.isoformat()
    return str(value)


# --------------------------------------------------------------------------- merge
def deep_merge(base: dict, base_sources: SourceMap, new: dict, new_sources: SourceMap,
               path: Path = ()) -> None:
    """Merge ``new`` into ``base`` in place: mappings recursively, anything else replaced whole."""
    for key, value in new.items():
        sub = path + (key,)
        if key in base and isinstance(base[key], dict) and isinstance(value, dict):
            if sub in new_sources:
                base_sources[sub] = new_sources[sub]
            deep_merge(base[key], base_sources, value, new_sources, sub)
        else:
            base_sources.drop_subtree(sub)
            base[key] = value
            n = len(sub)
            for k, src in new_sources.items():
                if k[:n] == sub:
                    base_sources[k] = src


# --------------------------------------------------------------------------- loading
def _spec_files(directory: _FsPath) -> list[_FsPath]:
    return sorted(
        (p for p in directory.iterdir() if p.is_file() and p.suffix in (".yaml", ".yml")),
        key=lambda p: p.name,
    )


def load_files(directory: str | os.PathLike) -> tuple[dict, SourceMap, tuple[str, ...]]:
    """Read and deep-merge the folder's spec files (no overlays, no validation)."""
    folder = _FsPath(directory)
    shown = display_path(folder)
    if not folder.exists():
        raise SpecErrors([SpecError(f"spec folder '{shown}' does not exist", Source(file=shown))])
    if not folder.is_dir():
        raise SpecErrors([SpecError(f"'{shown}' is not a folder of spec files", Source(file=shown))])
    paths = _spec_files(folder)
    if not paths:
        raise SpecErrors([SpecError(
            f"spec folder '{shown}' has no *.yaml or *.yml files", Source(file=shown))])

    errors: list[SpecError] = []
    data: dict = {}
    sources = SourceMap()
    files: list[str] = []
    for p in paths:
        fname = display_path(p)
        files.append(fname)
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(SpecError(f"cannot read file: {exc}", Source(file=fname)))
            continue
        try:
            doc = _yaml().load(io.StringIO(text))
        except DuplicateKeyError as exc:
            errors.append(_duplicate_error(fname, text, exc))
            continue
        except YAMLError as exc:
            errors.append(_yaml_error(fname, exc))
            continue
        if doc is None:  # empty file or only comments
            continue
        if not isinstance(doc, dict):
            kind = "a list" if isinstance(doc, list) else f"a {type(_scalar(doc)).__name__} value"
            errors.append(SpecError(
                f"a spec file must be a mapping of keys at the top, got {kind}",
                Source(file=fname, line=1, col=1)))
            continue
        file_sources = SourceMap()
        file_errors: list[SpecError] = []
        plain = _to_plain(doc, fname, (), Source(file=fname, line=1, col=1), file_sources, file_errors)
        errors.extend(file_errors)
        if () not in sources:
            sources[()] = Source(file=fname, line=1, col=1)
        deep_merge(data, sources, plain, file_sources)
    if errors:
        raise SpecErrors(errors)
    if not data:
        shown_files = ", ".join(files)
        raise SpecErrors([SpecError(f"spec folder '{shown}' is empty (only empty files: {shown_files})",
                                    Source(file=shown))])
    return data, sources, tuple(files)


def load_spec(directory: str | os.PathLike, environ: Mapping[str, str] | None = None) -> LoadedSpec:
    """Load, merge, overlay (``environ``; ``None`` means ``os.environ``) and validate a spec folder.

    Raises :class:`engine.errors.SpecErrors` with every error found by the phase that failed
    (YAML problems stop before overlays and validation).
    """
    from .overlays import apply_env
    from .validation import validate

    data, sources, files = load_files(directory)
    env = os.environ if environ is None else environ
    errors = list(apply_env(data, sources, env))
    errors.extend(validate(data, sources))
    if errors:
        raise SpecErrors(errors)
    return LoadedSpec(data=data, sources=sources, files=files)
