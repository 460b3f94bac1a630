"""Upstream failures -> Anthropic-shaped ``GatewayError``s.

Understands OpenAI error bodies (``{"error": {"message", "type", "code"}}``), Anthropic error
bodies (``{"type": "error", "error": {"type", "message"}}``), the usual variants of
OpenAI-compatible servers (``{"detail": ...}``, ``{"message": ...}``, ``{"error": "text"}``) and
non-JSON bodies. The HTTP status is kept; the error type follows ``vandamme.transforms.errors``.
``embedded_error`` maps the same bodies when they arrive with HTTP 200 (a whole answer or one
stream event).
"""
from __future__ import annotations

from typing import Any

import orjson

from vandamme.transforms.errors import ERROR_TYPES, GatewayError, error_type_for

_ANTHROPIC_TYPES = frozenset(ERROR_TYPES.values())
_MAX_MESSAGE = 1000
_MAX_SNIPPET = 200


def _header(headers: Any, name: str) -> str | None:
    if not headers:
        return None
    try:
        value = headers.get(name)
    except AttributeError:
        value = None
    if value is None and isinstance(headers, dict):
        lname = name.lower()
        for k, v in headers.items():
            if isinstance(k, str) and k.lower() == lname:
                return v
    return value


def _message_from(obj: Any) -> tuple[str | None, str | None]:
    """(message, anthropic error type if the body names one)."""
    if not isinstance(obj, dict):
        if isinstance(obj, str) and obj:
            return obj, None
        return None, None
    err = obj.get("error")
    if isinstance(err, dict):
        msg = err.get("message")
        etype = err.get("type")
        anth = etype if obj.get("type") == "error" and etype in _ANTHROPIC_TYPES else None
        if isinstance(msg, str) and msg:
            return msg, anth
        if isinstance(msg, (list, dict)):
            return orjson.dumps(msg).decode(), anth
        return None, anth
    if isinstance(err, str) and err:
        return err, None
    for key in ("message", "detail", "error_message"):
        value = obj.get(key)
        if isinstance(value, str) and value:
            return value, None
        if isinstance(value, (list, dict)) and value:
            return orjson.dumps(value).decode(), None
    return None, None


def upstream_error(status: int, body: bytes, headers: Any) -> GatewayError:
    """Map an upstream error answer to the GatewayError the client receives."""
    if not isinstance(status, int) or not 400 <= status <= 599:
        status = 502
    message: str | None = None
    etype: str | None = None
    text = body or b""
    try:
        obj = orjson.loads(text) if text else None
    except orjson.JSONDecodeError:
        obj = None
        snippet = text[:_MAX_SNIPPET * 4].decode("utf-8", "replace").strip()
        snippet = " ".join(snippet.split())[:_MAX_SNIPPET]
        if snippet:
            message = f"upstream returned HTTP {status}: {snippet}"
    else:
        message, etype = _message_from(obj)
    return _error(status, message or f"upstream returned HTTP {status}", etype, headers)


def embedded_error(obj: dict) -> GatewayError:
    """An error body sent with HTTP 200. Its status is the error's numeric ``code`` when that
    is 400-599 (``"429"`` from a rate limit mid-stream), else 502."""
    err = obj.get("error")
    code = err.get("code") if isinstance(err, dict) else None
    if isinstance(code, str) and code.isdigit():
        code = int(code)
    if not (isinstance(code, int) and not isinstance(code, bool) and 400 <= code <= 599):
        code = 502
    message, etype = _message_from(obj)
    return _error(code, message or "upstream error", etype, None)


def _error(status: int, message: str, etype: str | None, headers: Any) -> GatewayError:
    if len(message) > _MAX_MESSAGE:
        message = message[:_MAX_MESSAGE] + "..."
    keep: dict[str, str] = {}
    retry_after = _header(headers, "retry-after")
    if retry_after:
        keep["retry-after"] = str(retry_after)
    return GatewayError(status, message, etype or error_type_for(status), keep)


def timeout_error(seconds: float | None = None) -> GatewayError:
    if seconds is not None:
        return GatewayError(504, f"upstream did not answer within {seconds:g} s",
                            "timeout_error")
    return GatewayError(504, "upstream request timed out", "timeout_error")


def connection_error(provider_name: str) -> GatewayError:
    """502 for a failed connection. Only the provider's name is shown: never URLs with
    credentials, keys or headers."""
    return GatewayError(502, f"could not connect to provider '{provider_name}'", "api_error")
