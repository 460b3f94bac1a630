"""Secrets never leave the gateway: every provider key it holds and every key a client sent.

Upstreams echo keys in their error messages ("Incorrect API key provided: sk-..."), and with key
failover every key of a ring would be exposed in turn. :func:`scrub` replaces each known secret in a
text; it is applied where text leaves the gateway: every error body and stream error event
(``vandamme.transforms.errors``), every log line (a loguru patcher, ``vandamme.engine.logs``) and every span event or
status description (``vandamme.engine.telemetry`` turns a failed stage's, attempt's or request's exception
into its scrubbed type and message when the request ends; :func:`record_error` does it for a span
that code opens itself).

Known secrets are the static keys of every compiled spec of this process (:func:`add_keys`, called
by the compiler; a key removed by a reload stays known) and the keys of the request being served
(:func:`bind_request`, a context variable set by the server for the request's task). Strings shorter
than :data:`MIN_SECRET_LENGTH` are not treated as secrets (they would mangle ordinary text).
"""
from __future__ import annotations

import re
from contextvars import ContextVar, Token
from typing import Any, Iterable

MIN_SECRET_LENGTH = 8
REPLACEMENT = "[REDACTED]"

_static: set[str] = set()
_pattern: re.Pattern | None = None
_request_keys: ContextVar[tuple[str, ...]] = ContextVar("vandamme_request_keys", default=())


def add_keys(keys: Iterable[str]) -> None:
    """Known from now on: ``keys`` (a provider's static keys)."""
    global _pattern
    new = {k for k in keys if isinstance(k, str) and len(k) >= MIN_SECRET_LENGTH} - _static
    if not new:
        return
    _static.update(new)
    # longest first, so that a key that contains another is replaced whole
    _pattern = re.compile("|".join(re.escape(k) for k in sorted(_static, key=len, reverse=True)))


def client_keys(headers: Any) -> tuple[str, ...]:
    """The keys a client sent: ``x-api-key`` and the ``Authorization`` credentials."""
    out = []
    key = headers.get("x-api-key")
    if key:
        out.append(key)
    auth = headers.get("authorization")
    if auth:
        _, _, credentials = auth.partition(" ")
        out.append((credentials or auth).strip())
    return tuple(k for k in out if len(k) >= MIN_SECRET_LENGTH)


def bind_request(headers: Any) -> Token | None:
    """Mark the current request's client keys as secrets for its task; None when it sent none."""
    keys = client_keys(headers)
    return _request_keys.set(keys) if keys else None


def unbind_request(token: Token | None) -> None:
    if token is not None:
        _request_keys.reset(token)


def scrub(text: str) -> str:
    """``text`` with every known secret replaced by ``[REDACTED]``."""
    if not text:
        return text
    if _pattern is not None:
        text = _pattern.sub(REPLACEMENT, text)
    for key in _request_keys.get():
        if key in text:
            text = text.replace(key, REPLACEMENT)
    return text


def record_error(span: Any, exc: BaseException) -> None:
    """Put a failure on a span without leaking: the exception's type and scrubbed message as an
    ``exception`` event (no stack trace: its frames may hold values), status ERROR. ``span`` is
    one the gateway's tracer opened (``vandamme.tracing.SpanScope``) or an OpenTelemetry span;
    spans are opened with ``record_exception=False`` so that the exception is not recorded raw."""
    from opentelemetry.trace import Status, StatusCode

    span.add_event("exception", {"exception.type": type(exc).__name__,
                                 "exception.message": scrub(str(exc))})
    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
