"""Validate a merged spec: JSON Schema first (schemas/vandamme.schema.json), then semantic checks.

Every error carries the exact position of the offending key (from the :class:`SourceMap`) and its
path. Messages are written for humans: unknown keys and bad enum values get a did-you-mean hint.
Values of secrets (``api_keys`` items, secret-looking headers) never appear in a message.
"""
from __future__ import annotations

import difflib
import json
import re
from functools import lru_cache
from pathlib import Path as _FsPath
from typing import Any, Iterable
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from vandamme.transforms.aliases import normalize as normalize_alias  # one rule for alias names

from vandamme.sources import Path, Source, SourceMap, SpecError, format_path

__all__ = ["validate", "load_schema", "SCHEMA_PATH", "is_secret_path", "is_secret_header",
           "split_target", "normalize_alias"]

SCHEMA_PATH = _FsPath(__file__).resolve().parent.parent / "schemas" / "vandamme.schema.json"
URL_HINT = "expected http(s)://host[:port][/path]"
_HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_SECRET_HEADERS = {"authorization", "proxy-authorization", "api-key", "x-api-key", "cookie"}


@lru_cache(maxsize=1)
def load_schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def _validator() -> Draft202012Validator:
    return Draft202012Validator(load_schema())


# --------------------------------------------------------------------------- secrets
def is_secret_header(name: str) -> bool:
    low = str(name).lower()
    return low in _SECRET_HEADERS or any(w in low for w in ("token", "secret", "key", "password"))


def is_secret_path(path: Path) -> bool:
    """True for ``...api_keys[...]``, ``...headers.<secret-looking name>`` and ``state.redis_url``."""
    path = tuple(path)
    if "api_keys" in path:
        return True
    if path[:2] == ("state", "redis_url"):  # may carry a password
        return True
    if path[:3] == ("server", "auth", "keys") and path[-1:] == ("key",) or path == ("server", "auth", "keys"):
        return True
    for i, part in enumerate(path[:-1]):
        if part == "headers" and isinstance(path[i + 1], str) and is_secret_header(path[i + 1]):
            return True
    return False


def _show(value: Any, path: Path) -> str:
    """A value for a message: repr, or a placeholder for secrets and large structures."""
    if is_secret_path(path):
        return "(value hidden)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


_JSON_TYPES = [(bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"),
               (list, "array"), (dict, "object"), (type(None), "null")]


def _json_type(value: Any) -> str:
    for py, name in _JSON_TYPES:
        if isinstance(value, py):
            return name
    return type(value).__name__


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """"; did you mean 'x'?" for the closest of ``choices``, or "" when none is close."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.7)
    return f"; did you mean '{close[0]}'?" if close else ""


# --------------------------------------------------------------------------- schema errors
def schema_errors(error: ValidationError, sources: SourceMap, prefix: Path = ()) -> list[SpecError]:
    """One jsonschema error as SpecErrors; ``prefix`` is the spec path of the validated value
    (a stage's config is validated on its own, against the stage's schema)."""
    path: Path = tuple(prefix) + tuple(error.absolute_path)
    value = error.instance
    schema = error.schema if isinstance(error.schema, dict) else {}
    kind = error.validator
    here = sources.nearest(path)

    if kind == "additionalProperties" and isinstance(value, dict):
        allowed = list(schema.get("properties", {}))
        out = []
        for key in value:
            if key in allowed:
                continue
            sub = path + (key,)
            out.append(SpecError(f"unknown key '{key}'{did_you_mean(key, allowed)}", sources.nearest(sub), sub))
        return out
    if "propertyNames" in error.relative_schema_path and isinstance(value, str):
        sub = path + (value,)
        return [SpecError(f"invalid name '{value}': must be lower case letters, digits and '_', "
                          f"starting with a letter", sources.nearest(sub), sub)]
    if kind == "required":
        missing = [k for k in error.validator_value if isinstance(value, dict) and k not in value]
        return [SpecError(f"missing required key '{k}'", here, path) for k in missing] or [
            SpecError(error.message, here, path)]
    if kind == "type":
        expected = error.validator_value
        exp = " or ".join(expected) if isinstance(expected, list) else str(expected)
        got = _json_type(value)
        shown = "" if isinstance(value, (dict, list)) or value is None else " " + _show(value, path)
        return [SpecError(f"expected {exp}, got {got}{shown}", here, path)]
    if kind == "enum":
        choices = [str(c) for c in error.validator_value]
        return [SpecError(f"{_show(value, path)} is not one of {', '.join(choices)}"
                          f"{did_you_mean(value, choices)}", here, path)]
    if kind == "const":
        return [SpecError(f"must be {error.validator_value!r}, got {_show(value, path)}", here, path)]
    if kind == "pattern":
        if "https?://" in str(error.validator_value):
            return [SpecError(f"invalid URL {_show(value, path)}: {URL_HINT}", here, path)]
        return [SpecError(f"{_show(value, path)} does not match {error.validator_value}", here, path)]
    bounds = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}
    if kind in bounds:
        return [SpecError(f"must be {bounds[kind]} {error.validator_value}, got {_show(value, path)}",
                          here, path)]
    message = error.message
    if is_secret_path(path):
        message = f"invalid value ({kind})"
    return [SpecError(message, here, path)]


# --------------------------------------------------------------------------- semantic checks
def split_target(target: str, providers: Iterable[str] | None = None) -> tuple[str | None, str]:
    """``"openai:gpt-4o"`` -> ("openai", "gpt-4o"); ``"gpt-4o"`` -> (None, "gpt-4o").

    With ``providers`` given, a prefix is only taken as a provider when it names one (so that
    ``llama3:8b`` stays a model name).
    """
    if ":" not in target:
        return None, target
    prefix, rest = target.split(":", 1)
    if providers is not None and prefix not in set(providers):
        return None, target
    return prefix, rest


def _unknown_provider(name: str, providers: list[str], what: str, src: Source, path: Path) -> SpecError:
    known = ", ".join(sorted(providers)) or "(none)"
    return SpecError(f"{what} names unknown provider '{name}'{did_you_mean(name, providers)} "
                     f"(known providers: {known})", src, path)


def _check_url(value: Any, path: Path, sources: SourceMap, errors: list[SpecError]) -> None:
    if not isinstance(value, str):
        return
    try:
        parts = urlsplit(value)
        port_ok = parts.port is None or 1 <= parts.port <= 65535
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and port_ok
    except ValueError:
        ok = False
    if not ok:
        errors.append(SpecError(f"invalid URL {value!r}: {URL_HINT}", sources.nearest(path), path))


def _check_headers(headers: Any, path: Path, sources: SourceMap, errors: list[SpecError]) -> None:
    from vandamme.transforms.headers import check_template  # the rules the compiler applies

    if not isinstance(headers, dict):
        return
    for name, value in headers.items():
        sub = path + (name,)
        src = sources.nearest(sub)
        if not _HEADER_NAME_RE.match(str(name)):
            errors.append(SpecError(f"invalid header name '{name}'", src, sub))
        if isinstance(value, str) and ("\r" in value or "\n" in value):
            errors.append(SpecError("header value contains CR or LF (header injection)", src, sub))
        elif isinstance(value, str):
            problem = check_template(value)
            if problem:
                errors.append(SpecError(problem, src, sub))


def _alias_scopes(data: dict) -> dict[str, dict[str, str]]:
    """scope ('' = global, else provider name) -> {alias: target}."""
    scopes: dict[str, dict[str, str]] = {"": dict(data.get("aliases") or {})}
    for pname, prov in (data.get("providers") or {}).items():
        scopes[pname] = dict(prov.get("aliases") or {})
    return scopes


def _alias_path(scope: str, name: str) -> Path:
    return ("aliases", name) if scope == "" else ("providers", scope, "aliases", name)


def _check_aliases(data: dict, sources: SourceMap, errors: list[SpecError]) -> None:
    providers = list((data.get("providers") or {}).keys())
    scopes = _alias_scopes(data)
    # normalised name -> original name, per scope
    index: dict[str, dict[str, str]] = {}
    for scope, aliases in scopes.items():
        seen: dict[str, str] = {}
        for name in aliases:
            norm = normalize_alias(name)
            if norm in seen:
                path = _alias_path(scope, name)
                first = sources.nearest(_alias_path(scope, seen[norm]))
                errors.append(SpecError(
                    f"alias '{name}' duplicates alias '{seen[norm]}' (defined at {first.short}); "
                    f"alias names ignore case and treat '-' and '_' alike",
                    sources.nearest(path), path, (first,)))
            else:
                seen[norm] = name
        index[scope] = seen

    # targets naming unknown providers; global targets must name a provider with a prefix
    for scope, aliases in scopes.items():
        for name, target in aliases.items():
            path = _alias_path(scope, name)
            if scope == "":
                prefix, _ = split_target(target)
                if prefix is not None and prefix not in providers:
                    errors.append(_unknown_provider(prefix, providers, f"alias target {target!r}",
                                                    sources.nearest(path), path))

    # reference graph: node = (scope, normalised name) -> node
    def resolve(scope: str, target: str) -> tuple[str, str] | None:
        prefix, rest = split_target(target, providers)
        if prefix is not None:
            norm = normalize_alias(rest)
            if norm in index.get(prefix, {}):
                return prefix, norm
            if norm in index[""]:
                return "", norm
            return None
        norm = normalize_alias(target)
        if scope and norm in index.get(scope, {}):
            return scope, norm
        if norm in index[""]:
            return "", norm
        return None

    edges: dict[tuple[str, str], tuple[str, str]] = {}
    originals: dict[tuple[str, str], str] = {}
    for scope, aliases in scopes.items():
        for name, target in aliases.items():
            node = (scope, normalize_alias(name))
            if index[scope].get(node[1]) != name:
                continue  # a duplicate, already reported
            originals[node] = name
            if isinstance(target, str):
                nxt = resolve(scope, target)
                if nxt is not None:
                    edges[node] = nxt

    def label(node: tuple[str, str]) -> str:
        scope, _ = node
        return originals[node] if scope == "" else f"{scope}:{originals[node]}"

    done: set = set()
    for start in edges:
        if start in done:
            continue
        trail: list = []
        pos: dict = {}
        node = start
        while node in edges and node not in done and node not in pos:
            pos[node] = len(trail)
            trail.append(node)
            node = edges[node]
        if node in pos:  # a new cycle
            cycle = trail[pos[node]:]
            names = " -> ".join(label(n) for n in cycle + [cycle[0]])
            srcs = [sources.nearest(_alias_path(n[0], originals[n])) for n in cycle]
            others = ", ".join(f"{label(n)} at {s.short}" for n, s in zip(cycle[1:], srcs[1:]))
            extra = f" ({others})" if others else ""
            first = cycle[0]
            path = _alias_path(first[0], originals[first])
            errors.append(SpecError(f"alias cycle: {names}{extra}", srcs[0], path, tuple(srcs[1:])))
        done.update(trail)


def _check_routes(data: dict, sources: SourceMap, errors: list[SpecError]) -> None:
    providers = list((data.get("providers") or {}).keys())
    for i, route in enumerate(data.get("routes") or []):
        targets = [(("routes", i, "to"), route.get("to"), "route target")]
        targets += [(("routes", i, "fallbacks", j), fb, "fallback")
                    for j, fb in enumerate(route.get("fallbacks") or [])]
        for path, target, what in targets:
            if not isinstance(target, str):
                continue
            prefix, _ = split_target(target)
            if prefix is not None and prefix not in providers:
                errors.append(_unknown_provider(prefix, providers, f"{what} {target!r}",
                                                sources.nearest(path), path))
        match = route.get("match") or {}
        lo, hi = match.get("min_tools"), match.get("max_tools")
        if lo is not None and hi is not None and lo > hi:
            path = ("routes", i, "match", "max_tools")
            errors.append(SpecError(f"max_tools ({hi}) is less than min_tools ({lo})",
                                    sources.nearest(path), path))
        _check_headers_values_only(match.get("headers"), ("routes", i, "match", "headers"), sources, errors)


def _check_headers_values_only(headers: Any, path: Path, sources: SourceMap, errors: list[SpecError]) -> None:
    for name, value in (headers or {}).items():
        if isinstance(value, str) and ("\r" in value or "\n" in value):
            sub = path + (name,)
            errors.append(SpecError("header value contains CR or LF", sources.nearest(sub), sub))


def _semantic(data: dict, sources: SourceMap) -> list[SpecError]:
    from .declarations import declarations  # it imports the stage registry (and user stages)

    errors: list[SpecError] = []
    providers = data.get("providers") or {}
    names = list(providers)
    default = data.get("default_provider")
    if default is not None and default not in providers:
        path = ("default_provider",)
        errors.append(_unknown_provider(default, names, "default_provider", sources.nearest(path), path))
    for pname, prov in providers.items():
        base = ("providers", pname)
        _check_url(prov.get("base_url"), base + ("base_url",), sources, errors)
        _check_headers(prov.get("headers"), base + ("headers",), sources, errors)
        if prov.get("api_style") == "azure" and not prov.get("api_version"):
            errors.append(SpecError("api_style azure needs api_version", sources.nearest(base), base))
    _check_headers(data.get("headers"), ("headers",), sources, errors)
    endpoint = (data.get("telemetry") or {}).get("otlp_endpoint")
    if endpoint is not None:
        _check_url(endpoint, ("telemetry", "otlp_endpoint"), sources, errors)
    _check_aliases(data, sources, errors)
    _check_routes(data, sources, errors)
    errors.extend(declarations(data, sources)[1])
    return errors


def _sort_key(err: SpecError) -> tuple:
    s = err.source
    return (s.env is not None, s.file or "", s.line, s.col, format_path(err.path))


def validate(data: Any, sources: SourceMap) -> list[SpecError]:
    """Schema errors (all of them); when there are none, the semantic checks' errors."""
    errors: list[SpecError] = []
    from .declarations import in_middleware_list

    for error in _validator().iter_errors(data):
        if in_middleware_list(error.absolute_path):
            continue  # middleware items are checked against the stage registry (declarations)
        errors.extend(schema_errors(error, sources))
    if errors:
        return sorted(errors, key=_sort_key)
    return sorted(_semantic(data, sources), key=_sort_key)
