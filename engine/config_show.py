"""``vandamme config show``: the effective spec as YAML, each leaf annotated with its source.

Secrets are masked: every ``api_keys`` item and every header whose name looks secret shows at most
its last 4 characters, and only when the value is at least 12 characters long (``****abcd``);
shorter ones show ``****``. ``!PASSTHRU`` is shown as it is.
"""
from __future__ import annotations

import io
import json
import re
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from .loader import PASSTHRU, LoadedSpec
from .sources import Path, SourceMap
from .validation import is_secret_path

__all__ = ["render_config", "mask_secret"]

_PLAIN_RE = re.compile(r"^[A-Za-z0-9_./@$(][A-Za-z0-9_ ./@:$()+=,-]*$")


def mask_secret(value: Any) -> str:
    text = str(value)
    if text == PASSTHRU:
        return text
    if len(text) >= 12:
        return "****" + text[-4:]
    return "****"


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    if _PLAIN_RE.match(text) and not text.endswith((" ", ":")) and ": " not in text and " #" not in text:
        try:
            loaded = YAML(typ="safe", pure=True).load(io.StringIO(f"k: {text}\n"))
            if isinstance(loaded, dict) and loaded.get("k") == text and type(loaded.get("k")) is str:
                return text
        except YAMLError:
            pass
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a valid double-quoted YAML scalar


class _Writer:
    def __init__(self, sources: SourceMap):
        self.sources = sources
        self.lines: list[str] = []

    def leaf(self, prefix: str, value: Any, path: Path) -> None:
        if isinstance(value, dict):
            text = "{}"
        elif isinstance(value, list):
            text = "[]"
        elif is_secret_path(path) and value is not None:
            text = _scalar(mask_secret(value))
        else:
            text = _scalar(value)
        self.lines.append(f"{prefix}{text}  # {self.sources.nearest(path).short}")

    def mapping(self, data: dict, path: Path, indent: str, first_prefix: str | None = None) -> None:
        for n, (key, value) in enumerate(data.items()):
            prefix = (first_prefix if (n == 0 and first_prefix is not None) else indent)
            sub = path + (key,)
            head = f"{prefix}{_scalar(key)}:"
            if isinstance(value, dict) and value:
                self.lines.append(head)
                self.mapping(value, sub, indent + "  ")
            elif isinstance(value, list) and value:
                self.lines.append(head)
                self.sequence(value, sub, indent + "  ")
            else:
                self.leaf(head + " ", value, sub)

    def sequence(self, items: list, path: Path, indent: str) -> None:
        for i, value in enumerate(items):
            sub = path + (i,)
            if isinstance(value, dict) and value:
                self.mapping(value, sub, indent + "  ", first_prefix=indent + "- ")
            elif isinstance(value, list) and value:
                self.lines.append(f"{indent}-")
                self.sequence(value, sub, indent + "  ")
            else:
                self.leaf(f"{indent}- ", value, sub)


def render_config(loaded: LoadedSpec) -> str:
    """The effective spec as YAML with ``# source`` comments and secrets masked."""
    w = _Writer(loaded.sources)
    files = ", ".join(loaded.files) if loaded.files else "(none)"
    w.lines.append(f"# effective spec from: {files}")
    w.mapping(loaded.data, (), "")
    return "\n".join(w.lines) + "\n"
