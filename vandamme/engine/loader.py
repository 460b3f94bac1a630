"""Load a spec folder: every ``*.yaml``/``*.yml`` file, sorted by name, deep-merged, overlaid, validated.

Positions are kept (ruamel.yaml round-trip loader) so that every value of the merged spec knows
where it came from (:class:`vandamme.engine.sources.SourceMap`) and every error points at ``file:line:col``.

Merge rule: mappings merge recursively, the later file wins; lists and scalars are replaced whole
by the later file (and the replaced subtree's sources are forgotten).

Limits, so that a hostile or broken folder fails fast with a spec error instead of stalling or
crashing the process (round-trip parsing costs about 10 s per MiB): a file may hold at most
``MAX_FILE_BYTES``, the folder's spec files together ``MAX_FOLDER_BYTES``, nesting is at most
``MAX_DEPTH`` levels, and YAML aliases may add at most ``MAX_ALIAS_VALUES`` values (an alias names
one shared object; converting it to plain data copies it once per reference, which is exponential
for nested aliases: the "billion laughs").
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
from ruamel.yaml.composer import MaxDepthExceededError
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, SequenceNode

from vandamme.sources import Path, Source, SourceMap, SpecError, SpecErrors

__all__ = ["LoadedSpec", "load_spec", "load_files", "display_path", "deep_merge"]

PASSTHRU = "!PASSTHRU"
MAX_FILE_BYTES = 1 << 20
MAX_FOLDER_BYTES = 4 << 20
MAX_DEPTH = 64
MAX_ALIAS_VALUES = 100_000


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
    y.max_depth = MAX_DEPTH  # the composer recurses per level: stop before Python's recursion limit
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
    if isinstance(exc, MaxDepthExceededError):
        return SpecError(f"nested deeper than {MAX_DEPTH} levels", _mark_source(fname, exc.problem_mark))
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


class _LimitExceeded(Exception):
    """A limit hit while converting; carries the spec error (conversion stops there)."""

    def __init__(self, error: SpecError):
        super().__init__(error.message)
        self.error = error


class _Plain:
    """Converts one file's round-trip tree to plain Python types and records positions.

    An alias is the anchored object itself, met again: every value below a mapping or list met a
    second time counts against ``MAX_ALIAS_VALUES``, and the nesting depth (which aliases can
    grow past the composer's limit, or make endless) against ``MAX_DEPTH``."""

    def __init__(self, fname: str, sources: SourceMap, errors: list[SpecError]):
        self.fname = fname
        self.sources = sources
        self.errors = errors
        self.seen: set[int] = set()
        self.aliased = 0

    def convert(self, node: Any, path: Path, here: Source, alias_at: tuple | None = None) -> Any:
        """``alias_at`` is (source, path) of the alias this value is reached through, if any."""
        if isinstance(node, (CommentedMap, CommentedSeq, list)):
            if len(path) > MAX_DEPTH:
                src, at = alias_at or (here, path)
                raise _LimitExceeded(SpecError(f"nested deeper than {MAX_DEPTH} levels (through "
                                               f"YAML aliases)", src, at))
            if id(node) in self.seen:
                alias_at = alias_at or (here, path)
            else:
                self.seen.add(id(node))
        if alias_at is not None:
            self.aliased += 1
            if self.aliased > MAX_ALIAS_VALUES:
                raise _LimitExceeded(SpecError(
                    f"YAML aliases expand to more than {MAX_ALIAS_VALUES} values", *alias_at))
        if isinstance(node, CommentedMap):
            tag = _tag(node)
            if tag and not tag.startswith("tag:yaml.org"):
                self.errors.append(SpecError(f"unsupported YAML tag {tag!r}", here, path))
            out: dict = {}
            for k in node:
                line, col = _pos(node, k, False)
                key = k if isinstance(k, str) else _scalar(k)
                if not isinstance(key, str):
                    key = str(key)
                src = Source(file=self.fname, line=line, col=col) if line else here
                sub = path + (key,)
                self.sources[sub] = src
                out[key] = self.convert(node[k], sub, src, alias_at)
            return out
        if isinstance(node, (CommentedSeq, list)):
            items = []
            for i, v in enumerate(node):
                line, col = _pos(node, i, True)
                src = Source(file=self.fname, line=line, col=col) if line else here
                sub = path + (i,)
                self.sources[sub] = src
                items.append(self.convert(v, sub, src, alias_at))
            return items
        if isinstance(node, TaggedScalar):
            tag = _tag(node)
            if tag == PASSTHRU and not node.value:
                return PASSTHRU
            self.errors.append(SpecError(
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
def _subtree(value: Any, path: Path):
    """``path``, and the path of every value below it in ``value``."""
    yield path
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _subtree(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _subtree(v, path + (i,))


def deep_merge(base: dict, base_sources: SourceMap, new: dict, new_sources: SourceMap,
               path: Path = ()) -> None:
    """Merge ``new`` into ``base`` in place: mappings recursively, anything else replaced whole.
    Sources move with their values (linear in the size of what is merged)."""
    for key, value in new.items():
        sub = path + (key,)
        if key in base and isinstance(base[key], dict) and isinstance(value, dict):
            if sub in new_sources:
                base_sources[sub] = new_sources[sub]
            deep_merge(base[key], base_sources, value, new_sources, sub)
        else:
            if key in base:
                for p in _subtree(base[key], sub):
                    base_sources.pop(p, None)
            base[key] = value
            for p in _subtree(value, sub):
                src = new_sources.get(p)
                if src is not None:
                    base_sources[p] = src


# --------------------------------------------------------------------------- loading
def _spec_files(directory: _FsPath) -> list[_FsPath]:
    return sorted(
        (p for p in directory.iterdir() if p.is_file() and p.suffix in (".yaml", ".yml")),
        key=lambda p: p.name,
    )


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB" if n % (1 << 20) else f"{n >> 20} MiB"


def _check_sizes(paths: list[_FsPath], shown: str) -> None:
    """Refuse files over ``MAX_FILE_BYTES`` and folders over ``MAX_FOLDER_BYTES`` before parsing."""
    errors, total = [], 0
    for p in paths:
        try:
            size = p.stat().st_size
        except OSError:
            continue  # reported when it is read
        total += size
        if size > MAX_FILE_BYTES:
            errors.append(SpecError(f"file is {_mib(size)}; a spec file may be at most "
                                    f"{_mib(MAX_FILE_BYTES)}", Source(file=display_path(p))))
    if not errors and total > MAX_FOLDER_BYTES:
        errors.append(SpecError(f"spec files total {_mib(total)}; a spec folder may hold at most "
                                f"{_mib(MAX_FOLDER_BYTES)}", Source(file=shown)))
    if errors:
        raise SpecErrors(errors)


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
    _check_sizes(paths, shown)

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
        try:
            plain = _Plain(fname, file_sources, file_errors).convert(doc, (), Source(file=fname, line=1, col=1))
        except _LimitExceeded as exc:
            errors.append(exc.error)
            continue
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

    Raises :class:`vandamme.engine.errors.SpecErrors` with every error found by the phase that failed
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
