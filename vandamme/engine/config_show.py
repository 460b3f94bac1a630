"""``vandamme config show``: the effective spec as YAML, each leaf annotated with its source.

Secrets are masked: every ``api_keys`` item and every header whose name looks secret shows at most
its last 4 characters, and only when the value is at least 12 characters long (``****abcd``);
shorter ones show ``****``. ``!PASSTHRU`` is shown as it is.
"""
from __future__ import annotations

import io
from typing import Any, Mapping

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.scalarstring import DoubleQuotedScalarString

from .loader import PASSTHRU, LoadedSpec
from vandamme.sources import Path, SourceMap
from .validation import is_secret_path
from vandamme.transforms.shared_state import mask_url

__all__ = ["render_config", "mask_secret"]

def mask_secret(value: Any) -> str:
    text = str(value)
    if text == PASSTHRU:
        return text
    if len(text) >= 12:
        return "****" + text[-4:]
    return "****"


def _annotated(value: Any, path: Path, sources: SourceMap, notes: Mapping[Path, str]) -> Any:
    """Plain data → ruamel.yaml commented nodes: each leaf gets an end-of-line ``# source``."""
    if isinstance(value, dict) and value:
        node = CommentedMap()
        for key, item in value.items():
            sub = path + (key,)
            node[key] = _annotated(item, sub, sources, notes)
            if not _is_branch(item):
                node.yaml_add_eol_comment("# " + _comment(sub, sources, notes), key, column=0)
            elif sub in notes:
                node.yaml_add_eol_comment("# " + notes[sub], key, column=0)
        return node
    if isinstance(value, list) and value:
        seq = CommentedSeq()
        for i, item in enumerate(value):
            sub = path + (i,)
            seq.append(_annotated(item, sub, sources, notes))
            if not _is_branch(item):
                seq.yaml_add_eol_comment("# " + _comment(sub, sources, notes), i, column=0)
        return seq
    if isinstance(value, dict):
        return CommentedMap()
    if isinstance(value, list):
        return CommentedSeq()
    if path == ("state", "redis_url") and isinstance(value, str):  # host shown, password masked
        return DoubleQuotedScalarString(mask_url(value))
    if is_secret_path(path) and value is not None:
        return DoubleQuotedScalarString(mask_secret(value))
    return value


def _is_branch(value: Any) -> bool:
    return isinstance(value, (dict, list)) and bool(value)


def _comment(path: Path, sources: SourceMap, notes: Mapping[Path, str]) -> str:
    text = sources.nearest(path).short
    return f"{text}; {notes[path]}" if path in notes else text


def render_config(loaded: LoadedSpec, provider_status: Mapping[str, str] | None = None) -> str:
    """The effective spec as YAML with ``# source`` comments and secrets masked.
    ``provider_status`` (name → e.g. "inactive: no API key: set GROQ_API_KEY") annotates providers."""
    notes = {("providers", name): text for name, text in (provider_status or {}).items()}
    tree = _annotated(loaded.data, (), loaded.sources, notes)
    yaml = YAML()
    yaml.representer.add_representer(
        type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    out = io.StringIO()
    files = ", ".join(loaded.files) if loaded.files else "(none)"
    out.write(f"# effective spec from: {files}\n")
    yaml.dump(tree, out)
    return out.getvalue()
