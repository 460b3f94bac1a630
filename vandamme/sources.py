"""Where every spec value came from (a file position or an environment variable), and the spec
errors that carry it.

A *path* is a tuple of mapping keys (str) and list indexes (int) from the root of the merged
spec, e.g. ("providers", "openai", "api_keys", 0). The source map records, for each path, the
position of the key (for a mapping entry) or of the item (for a list element) that set it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

Path = tuple  # tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Source:
    """One origin: ``file`` with 1-based ``line``/``col``, or ``env`` (a variable name)."""

    file: str | None = None
    line: int = 0
    col: int = 0
    env: str | None = None

    def __str__(self) -> str:
        if self.env is not None:
            return f"env:{self.env}"
        if self.file is None:
            return "default"
        if not self.line:  # a whole file or folder (e.g. "no spec files in specs/")
            return self.file
        return f"{self.file}:{self.line}:{self.col}"

    @property
    def short(self) -> str:
        """``file:line`` or ``env:VAR``: what `config show` prints beside a value."""
        if self.env is not None:
            return f"env:{self.env}"
        if self.file is None:
            return "default"
        if not self.line:
            return self.file
        return f"{self.file}:{self.line}"


DEFAULT = Source()


def format_path(path: Iterable) -> str:
    """("routes", 0, "to") -> "routes[0].to"; () -> "(root)"."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(root)"


class SourceMap(dict):
    """dict[Path, Source] with a lookup that falls back to the nearest recorded ancestor."""

    def nearest(self, path: Path) -> Source:
        path = tuple(path)
        while True:
            src = self.get(path)
            if src is not None:
                return src
            if not path:
                return DEFAULT
            path = path[:-1]

    def drop_subtree(self, path: Path) -> None:
        """Forget every entry at or below ``path`` (a later file or overlay replaced it)."""
        n = len(path)
        for key in [k for k in self if k[:n] == path]:
            del self[key]

@dataclass(frozen=True, slots=True)
class SpecError:
    message: str
    source: Source = DEFAULT
    path: Path = ()
    related: tuple = field(default=())  # further Sources (e.g. the other end of an alias cycle)

    def __str__(self) -> str:
        """``file:line:col: path.to.key: message`` or ``env:VAR: path: message``."""
        where = str(self.source)
        text = f"{where}: {format_path(self.path)}: {self.message}" if self.path else f"{where}: {self.message}"
        return text

    def as_dict(self) -> dict:
        s = self.source
        return {
            "file": s.file,
            "line": s.line or None,
            "col": s.col or None,
            "env": s.env,
            "path": format_path(self.path) if self.path else None,
            "message": self.message,
            "related": [str(r) for r in self.related],
        }


class SpecErrors(Exception):
    """One or more spec errors; raised by loading, overlaying, validating or compiling."""

    def __init__(self, errors: list[SpecError]):
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))
