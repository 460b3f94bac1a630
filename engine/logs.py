"""Logging through loguru: level from the spec or LOG_LEVEL, optional JSON lines.

``diagnose=False`` keeps variable values (which may hold keys) out of logged tracebacks, and a
patcher scrubs every known secret from every record (vandamme.secrets).
"""
from __future__ import annotations

import sys

from loguru import logger

from vandamme.secrets import scrub


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


def setup_logging(level: str = "INFO", json: bool = False) -> None:
    logger.remove()
    logger.add(sys.stderr, level=level.upper(), serialize=json, backtrace=False, diagnose=False,
               format="{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <7} | {message}")
