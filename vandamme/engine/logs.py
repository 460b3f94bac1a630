"""Logging through loguru: level from the spec or LOG_LEVEL, text or JSON lines, one schema.

``diagnose=False`` keeps variable values (which may hold keys) out of logged tracebacks, and a
patcher scrubs every known secret from every record (vandamme.secrets).

With ``logging.json: true`` every line on stderr is one JSON object with the same keys::

    {"time": "2026-01-01T12:00:00.123Z", "level": "INFO", "message": "...",
     "request_id": null, "provider": null, "model": null, "status": null, "duration_ms": null,
     "logger": "vandamme.engine.server", "pid": 1234}

plus ``"extra"`` (an object) when the record carries other bound values and ``"exception"`` (the
traceback as text, without variable values) when it carries one. ``time`` is UTC; the request
fields are null when the line is not about a request (code logging about a request binds them:
:func:`for_request`). The standard ``logging`` loggers (Sanic's ``sanic.*``, ``asyncio``, the
root logger, ``warnings``) are routed into loguru (:class:`InterceptHandler`), so Sanic's own lines
take the same format, scrubbing included, in the main process and in every worker process.
"""
from __future__ import annotations

import logging
import re
import sys
import threading
import traceback
from datetime import timezone

import orjson
from loguru import logger

from vandamme.secrets import scrub

REQUEST_FIELDS = ("request_id", "provider", "model", "status", "duration_ms")
STDLIB_LOGGERS = ("sanic.root", "sanic.error", "sanic.access", "sanic.server", "sanic.websockets",
                  "asyncio", "aiohttp.access", "aiohttp.client", "aiohttp.server", "py.warnings")
TEXT_FORMAT = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <7} | {message}"
_RESERVED = frozenset(REQUEST_FIELDS) | {"logger"}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_config: dict | None = None  # what setup_logging was given in this process


class ScrubbedError(Exception):
    """Stands in, in a log record, for an exception whose text held a secret."""


def scrub_record(record) -> None:
    """A loguru patcher: known secrets (vandamme.secrets) never reach a log line, whatever its
    level; an exception whose text holds one is logged as a ScrubbedError with the clean text."""
    record["message"] = scrub(record["message"])
    exc = record["exception"]
    if exc is not None and exc.value is not None:
        text = str(exc.value)
        clean = scrub(text)
        if clean != text:
            value = ScrubbedError(f"{type(exc.value).__name__}: {clean}")
            record["exception"] = exc._replace(type=ScrubbedError, value=value)


def install_secret_scrubbing() -> None:
    """Every record of every sink passes scrub_record (idempotent)."""
    logger.configure(patcher=scrub_record)


def json_line(record) -> str:
    """One record as one JSON object (the schema in the module docstring), without newline."""
    extra = record["extra"]
    out = {
        "time": record["time"].astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "level": record["level"].name,
        "message": record["message"],
        "request_id": extra.get("request_id"),
        "provider": extra.get("provider"),
        "model": extra.get("model"),
        "status": extra.get("status"),
        "duration_ms": extra.get("duration_ms"),
        "logger": extra.get("logger") or record["name"],
        "pid": record["process"].id,
    }
    others = {k: v for k, v in extra.items() if k not in _RESERVED and not k.startswith("_")}
    if others:
        out["extra"] = others
    exc = record["exception"]
    if exc is not None and exc.type is not None:
        # The stdlib's rendering: source lines, no variable values (unlike loguru's diagnose).
        out["exception"] = scrub("".join(traceback.format_exception(exc.type, exc.value, exc.traceback)))
    return orjson.dumps(out, default=str).decode()


def _json_format(record) -> str:
    """loguru format callable: the line is built here and handed back through ``extra`` (loguru
    would read braces in a returned JSON text as fields of its own template)."""
    record["extra"]["_json"] = json_line(record)
    return "{extra[_json]}\n"


def for_request(ctx, status: int | None = None, duration_ms: float | None = None):
    """The logger to log about one request with: its id, provider and model, status and duration
    bound (the JSON schema's request fields)."""
    p = ctx.provider
    return logger.bind(request_id=ctx.request_id, provider=p.name if p is not None else None,
                       model=ctx.model or None, status=status,
                       duration_ms=round(duration_ms, 1) if duration_ms is not None else None)


class InterceptHandler(logging.Handler):
    """Routes a standard ``logging`` record into loguru, keeping its level and logger name."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        try:
            message = _ANSI.sub("", record.getMessage())
        except Exception:  # a broken %-format in someone else's call: keep what there is
            message = str(record.msg)
        logger.opt(exception=record.exc_info or None).bind(logger=record.name).log(level, message)


def route_stdlib() -> None:
    """Point the standard ``logging`` loggers at loguru. A no-op until :func:`setup_logging` ran in
    this process; to call again after anything that reconfigures them (Sanic's constructor
    applies its own logging config to its ``sanic.*`` loggers)."""
    if _config is None:
        return
    handler = InterceptHandler()
    level = logger.level(_config["level"]).no  # TRACE 5, DEBUG 10, INFO 20...: stdlib numbers too
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    for name in STDLIB_LOGGERS:
        lg = logging.getLogger(name)
        lg.handlers = [handler]
        lg.propagate = False
        lg.setLevel(level)
    logging.captureWarnings(True)


def _log_uncaught(exc_type, exc, tb) -> None:
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc, tb)
        return
    logger.opt(exception=(exc_type, exc, tb)).critical("uncaught {}: {}", exc_type.__name__, exc)


def _log_uncaught_thread(args) -> None:
    if args.exc_type is SystemExit:
        return
    logger.opt(exception=(args.exc_type, args.exc_value, args.exc_traceback)).critical(
        "uncaught {} in thread {}", args.exc_type.__name__, getattr(args.thread, "name", "?"))


JOURNAL_SOCKET = "/run/systemd/journal/socket"
# loguru level -> syslog priority (what journalctl -p filters on)
_PRIORITY = {"TRACE": 7, "DEBUG": 7, "INFO": 6, "SUCCESS": 5, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}


def journal_sink(socket_path: str = JOURNAL_SOCKET):
    """A loguru sink writing each record to systemd's journal (native protocol, through the
    ``cysystemd`` package of the ``journal`` extra): MESSAGE, PRIORITY, SYSLOG_IDENTIFIER, and the
    request fields as REQUEST_ID, PROVIDER, MODEL, STATUS, DURATION_MS (``journalctl
    REQUEST_ID=req_...``). None, with the reason, when the journal cannot be written to."""
    try:
        from cysystemd import journal
    except ImportError:
        return None, "the 'journal' extra is not installed (pip install 'vandamme[journal]')"
    import os

    if not os.path.exists(socket_path):
        return None, f"no journal here ({socket_path} does not exist)"

    def sink(message) -> None:
        record = message.record
        extra = record["extra"]
        fields = {"message": record["message"], "priority": _PRIORITY.get(record["level"].name, 6),
                  "syslog_identifier": "vandamme", "logger": extra.get("logger") or record["name"]}
        for name in REQUEST_FIELDS:
            value = extra.get(name)
            if value is not None:
                fields[name] = value
        exc = record["exception"]
        if exc is not None and exc.type is not None:
            fields["exception"] = scrub("".join(traceback.format_exception(exc.type, exc.value, exc.traceback)))
        journal.send(**fields)

    return sink, None


def setup_logging(level: str = "INFO", json: bool = False, fmt: str | None = None) -> None:
    """One sink at ``level``: human-readable text or one JSON object per line on stderr, or
    systemd's journal (``fmt="journal"``; text on stderr with one warning where there is none).
    The standard ``logging`` loggers are routed into it; with JSON, uncaught exceptions too (a
    traceback printed raw would be lines that do not parse)."""
    global _config
    level = level.upper()
    fmt = fmt or ("json" if json else "text")
    json = fmt == "json"
    install_secret_scrubbing()
    logger.remove()
    fallback = None
    if fmt == "journal":
        sink, fallback = journal_sink()
        if sink is not None:
            logger.add(sink, level=level, format="{message}", backtrace=False, diagnose=False)
        else:
            fmt = "text"
    if fmt == "journal":
        pass
    elif json:
        logger.add(sys.stderr, level=level, format=_json_format, backtrace=False, diagnose=False)
        sys.excepthook = _log_uncaught
        threading.excepthook = _log_uncaught_thread
    else:
        logger.add(sys.stderr, level=level, backtrace=False, diagnose=False, format=TEXT_FORMAT)
    _config = {"level": level, "json": json, "format": fmt}
    route_stdlib()
    if fallback:
        logger.warning("log format 'journal' asked for, but {}: logging to the console instead", fallback)


def json_enabled() -> bool:
    return bool(_config and _config["json"])
