"""Environment overlays: variables that set spec values after the files are merged.

Every overlaid value is recorded with ``Source(env=VAR)``. Strings are coerced to the schema's
types with cerberus; a value that cannot be coerced becomes a :class:`SpecError` sourced from the
variable (``env:PORT: server.port: must be an integer, got 'abc'``). The value of an
``*_API_KEY`` variable never appears in any message. An empty variable counts as unset.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Mapping

from cerberus import Validator

from vandamme.sources import Path, Source, SourceMap, SpecError

__all__ = ["apply_env", "SIMPLE_OVERLAYS", "parse_bool", "split_keys", "header_name"]

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
_PROVIDER_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_EXCLUDED_PREFIXES = ("VDM_", "CUSTOM_HEADER_")


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(value)


def _to_int(value: Any) -> int:
    return int(str(value).strip())


def _to_float(value: Any) -> float:
    return float(str(value).strip())


def _to_upper(value: Any) -> str:
    return str(value).strip().upper()


def _to_str(value: Any) -> str:
    return str(value).strip()


def split_keys(value: str) -> list[str]:
    """``"k1 k2"`` / ``"k1,k2"`` -> ``["k1", "k2"]``."""
    return [k for k in re.split(r"[\s,]+", value.strip()) if k]


def header_name(name: str) -> str:
    """``X_TRACE_ID`` -> ``X-Trace-Id``."""
    return "-".join(part.capitalize() for part in name.split("_") if part)


# variable -> (spec path, cerberus type, coerce function, human type)
_Kind = tuple[str, Callable[[Any], Any], str]
_INT: _Kind = ("integer", _to_int, "an integer")
_FLOAT: _Kind = ("float", _to_float, "a number")
_BOOL: _Kind = ("boolean", parse_bool, "a boolean (true/false/1/0/yes/no/on/off)")
_STR: _Kind = ("string", _to_str, "a string")
_UPPER: _Kind = ("string", _to_upper, "a string")

SIMPLE_OVERLAYS: dict[str, tuple[Path, _Kind]] = {
    "HOST": (("server", "host"), _STR),
    "PORT": (("server", "port"), _INT),
    "LOG_LEVEL": (("logging", "level"), _UPPER),
    "LOG_FORMAT": (("logging", "format"), _STR),
    "REQUEST_TIMEOUT": (("server", "request_timeout"), _FLOAT),
    "CONNECT_TIMEOUT": (("server", "connect_timeout"), _FLOAT),
    "MAX_RETRIES": (("server", "max_retries"), _INT),
    "MAX_TOKENS_LIMIT": (("server", "max_tokens_limit"), _INT),
    "THOUGHT_SIGNATURE_CACHE_TTL": (("thought_signatures", "cache_ttl"), _FLOAT),
    "THOUGHT_SIGNATURE_MAX_CACHE_SIZE": (("thought_signatures", "max_cache_size"), _INT),
    "OTEL_EXPORTER_OTLP_ENDPOINT": (("telemetry", "otlp_endpoint"), _STR),
    "OTEL_SERVICE_NAME": (("telemetry", "service_name"), _STR),
    "VDM_DEFAULT_PROVIDER": (("default_provider",), _STR),
    "VDM_REDIS_URL": (("state", "redis_url"), _STR),  # shared state; its password is masked everywhere
}


def _coerce(var: str, raw: str, kind: _Kind) -> tuple[bool, Any]:
    """Coerce one variable with cerberus; (ok, value)."""
    ctype, func, _human = kind
    v = Validator({var: {"type": ctype, "coerce": func}})
    if v.validate({var: raw}):
        return True, v.document[var]
    return False, None


def _set(data: dict, sources: SourceMap, path: Path, value: Any, var: str) -> None:
    """Set ``path`` to ``value``, creating parent mappings, and record ``env:VAR`` as the source."""
    node = data
    for i, key in enumerate(path[:-1]):
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
            sources.drop_subtree(path[: i + 1])
            sources[path[: i + 1]] = Source(env=var)
        node = child
    node[path[-1]] = value
    sources.drop_subtree(path)
    sources[path] = Source(env=var)
    if isinstance(value, list):
        for i in range(len(value)):
            sources[path + (i,)] = Source(env=var)


def _env(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name)
    if value is None or not str(value).strip():
        return None
    return str(value)


def _provider_prefixes(environ: Mapping[str, str]) -> set[str]:
    prefixes = set()
    for var in environ:
        if var.startswith(_EXCLUDED_PREFIXES):
            continue
        for suffix in ("_API_KEY", "_BASE_URL", "_API_FORMAT", "_API_VERSION"):
            if var.endswith(suffix) and len(var) > len(suffix):
                prefixes.add(var[: -len(suffix)])
        if "_ALIAS_" in var:
            prefixes.add(var.split("_ALIAS_", 1)[0])
    return {p for p in prefixes if p and _PROVIDER_RE.match(p.lower())}


def apply_env(data: dict, sources: SourceMap, environ: Mapping[str, str]) -> list[SpecError]:
    """Apply the environment overlays to ``data``/``sources`` in place; return coercion errors."""
    errors: list[SpecError] = []

    # ---- providers
    providers = data.get("providers")
    for prefix in sorted(_provider_prefixes(environ)):
        name = prefix.lower()
        key_var, url_var = f"{prefix}_API_KEY", f"{prefix}_BASE_URL"
        fmt_var, ver_var = f"{prefix}_API_FORMAT", f"{prefix}_API_VERSION"
        key, url = _env(environ, key_var), _env(environ, url_var)
        fmt, ver = _env(environ, fmt_var), _env(environ, ver_var)
        exists = isinstance(providers, dict) and isinstance(providers.get(name), dict)
        if not exists:
            # Many unrelated *_API_KEY variables exist: create a provider only with a base URL
            # and either a key or an explicit format.
            if not (url and (key or fmt)):
                continue
            if not isinstance(providers, dict):
                _set(data, sources, ("providers",), {}, url_var)
                providers = data["providers"]
            _set(data, sources, ("providers", name), {}, url_var)
            if fmt is None:
                _set(data, sources, ("providers", name, "format"), "openai", url_var)
            if key is None:
                _set(data, sources, ("providers", name, "requires_key"), False, fmt_var)
        base = ("providers", name)
        if key is not None:
            _set(data, sources, base + ("api_keys",), split_keys(key), key_var)
        if url is not None:
            _set(data, sources, base + ("base_url",), url.strip(), url_var)
        if fmt is not None:
            _set(data, sources, base + ("format",), fmt.strip().lower(), fmt_var)
        if ver is not None:
            _set(data, sources, base + ("api_version",), ver.strip(), ver_var)
        alias_prefix = f"{prefix}_ALIAS_"
        for var in sorted(environ):
            if var.startswith(alias_prefix) and len(var) > len(alias_prefix):
                target = _env(environ, var)
                if target is not None:
                    alias = var[len(alias_prefix):].lower()
                    provider = data["providers"][name]
                    if not isinstance(provider.get("aliases"), dict):
                        _set(data, sources, base + ("aliases",), {}, var)
                    _set(data, sources, base + ("aliases", alias), target.strip(), var)

    # ---- global aliases and headers
    for var in sorted(environ):
        value = _env(environ, var)
        if value is None:
            continue
        if var.startswith("VDM_ALIAS_") and len(var) > len("VDM_ALIAS_"):
            if not isinstance(data.get("aliases"), dict):
                _set(data, sources, ("aliases",), {}, var)
            _set(data, sources, ("aliases", var[len("VDM_ALIAS_"):].lower()), value.strip(), var)
        elif var.startswith("CUSTOM_HEADER_") and len(var) > len("CUSTOM_HEADER_"):
            if not isinstance(data.get("headers"), dict):
                _set(data, sources, ("headers",), {}, var)
            _set(data, sources, ("headers", header_name(var[len("CUSTOM_HEADER_"):])), value, var)

    # ---- simple settings
    for var, (path, kind) in SIMPLE_OVERLAYS.items():
        raw = _env(environ, var)
        if raw is None:
            continue
        ok, value = _coerce(var, raw, kind)
        if not ok:
            errors.append(SpecError(f"must be {kind[2]}, got {raw.strip()!r}", Source(env=var), path))
            continue
        _set(data, sources, path, value, var)

    errors.extend(_gemini_thought_signatures(data, sources, environ))
    _gateway_keys(data, sources, environ)
    return errors


def _gateway_keys(data: dict, sources: SourceMap, environ: Mapping[str, str]) -> None:
    """VDM_API_KEYS="name:key name2:key2" (or bare keys, named key1, key2, ...) sets
    server.auth.keys; the schema checks each key, and no message shows its value."""
    var = "VDM_API_KEYS"
    raw = _env(environ, var)
    if raw is None:
        return
    keys = []
    for i, item in enumerate(split_keys(raw), 1):
        name, sep, key = item.partition(":")
        keys.append({"name": name, "key": key} if sep else {"name": f"key{i}", "key": item})
    _set(data, sources, ("server", "auth", "keys"), keys, var)


GEMINI_MIDDLEWARE = "gemini_thought_signatures"
GEMINI_HOST = "generativelanguage.googleapis.com"


def is_gemini(name: str, provider: Any) -> bool:
    """An OpenAI-format provider named gemini* or pointing at Google's Generative Language API."""
    return isinstance(provider, dict) and provider.get("format") == "openai" and (
        name.startswith("gemini") or GEMINI_HOST in str(provider.get("base_url") or ""))


def _gemini_thought_signatures(data: dict, sources: SourceMap, environ: Mapping[str, str]) -> list[SpecError]:
    """GEMINI_THOUGHT_SIGNATURES_ENABLED declares (true) or removes (false) the
    gemini_thought_signatures middleware on every Gemini provider; `config show` shows it."""
    var = "GEMINI_THOUGHT_SIGNATURES_ENABLED"
    raw = _env(environ, var)
    if raw is None:
        return []
    ok, on = _coerce(var, raw, _BOOL)
    if not ok:
        return [SpecError(f"must be {_BOOL[2]}, got {raw.strip()!r}", Source(env=var))]
    for name, provider in (data.get("providers") or {}).items():
        if not is_gemini(name, provider):
            continue
        current = provider.get("middleware")
        items = list(current) if isinstance(current, list) else []
        named = [i for i, item in enumerate(items) if item == GEMINI_MIDDLEWARE or
                 (isinstance(item, dict) and GEMINI_MIDDLEWARE in item)]
        if on and not named:
            path = ("providers", name, "middleware")
            if not isinstance(current, list):
                _set(data, sources, path, [], var)
            provider["middleware"].append(GEMINI_MIDDLEWARE)
            sources[path + (len(provider["middleware"]) - 1,)] = Source(env=var)
        elif not on and named:
            kept = [item for i, item in enumerate(items) if i not in named]
            _set(data, sources, ("providers", name, "middleware"), kept, var)
    return []
