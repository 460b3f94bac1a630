"""Logging through loguru: level from the spec or LOG_LEVEL, optional JSON lines.

``diagnose=False`` keeps variable values (which may hold keys) out of logged tracebacks.
"""
from __future__ import annotations

import sys

from loguru import logger


def setup_logging(level: str = "INFO", json: bool = False) -> None:
    logger.remove()
    logger.add(sys.stderr, level=level.upper(), serialize=json, backtrace=False, diagnose=False,
               format="{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <7} | {message}")
