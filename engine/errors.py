"""Spec errors: every one carries its origin and the path of the offending key."""
from __future__ import annotations

from dataclasses import dataclass, field

from .sources import DEFAULT, Path, Source, format_path


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
