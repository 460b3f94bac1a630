"""Output for the `vandamme` commands: aligned tables on a terminal, JSON for scripts, and a
progress line on stderr for anything that takes more than a second.

Everything printed here is meant for people or scripts on the operator's side; callers scrub
upstream text (vandamme.secrets.scrub) before it gets here, and nothing here ever receives a key.
"""
from __future__ import annotations

import itertools
import os
import sys
import threading
import time
from typing import Any, Iterable, Sequence

import orjson

_RESET = "\x1b[0m"
_COLOURS = {"green": "\x1b[32m", "red": "\x1b[31m", "yellow": "\x1b[33m", "dim": "\x1b[2m", "bold": "\x1b[1m"}


def use_colour(stream=None) -> bool:
    """ANSI colour only on a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    stream = stream or sys.stdout
    return bool(getattr(stream, "isatty", lambda: False)()) and not os.environ.get("NO_COLOR") \
        and os.environ.get("TERM") != "dumb"


def paint(text: str, colour: str | None, enabled: bool) -> str:
    if not enabled or not colour or colour not in _COLOURS:
        return text
    return f"{_COLOURS[colour]}{text}{_RESET}"


def emit_json(obj: Any) -> None:
    """One indented JSON document on stdout."""
    sys.stdout.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode() + "\n")


def table(rows: Iterable[Sequence[Any]], headers: Sequence[str], colours: Iterable[str | None] | None = None,
          colour_column: int | None = None, stream=None) -> None:
    """An aligned plain-text table (two spaces between columns, the last column unpadded).
    ``colours`` gives one colour per row, applied to ``colour_column`` on a terminal."""
    stream = stream or sys.stdout
    rows = [["" if c is None else str(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    colour_on = use_colour(stream)
    colours = list(colours) if colours is not None else [None] * len(rows)

    def line(cells, colour=None):
        out = []
        for i, cell in enumerate(cells):
            padded = cell if i == len(cells) - 1 else cell.ljust(widths[i])
            if colour_column == i:
                padded = paint(padded, colour, colour_on)
            out.append(padded)
        return "  ".join(out).rstrip()

    stream.write(paint(line(list(headers)), "bold", colour_on) + "\n")
    for row, colour in zip(rows, colours):
        stream.write(line(row, colour) + "\n")


class Progress:
    """``with Progress("checking 3 providers") as p: ... p.update("2/3 done")``.

    On a terminal (stderr), a spinner line appears once the work has taken ``delay`` seconds and is
    erased when it ends; elsewhere (a pipe, a file, CI) nothing is written, so scripts read clean
    output. The spinner runs on a daemon thread, so it turns while the caller blocks."""

    FRAMES = "|/-\\"

    def __init__(self, message: str, delay: float = 1.0, stream=None, interval: float = 0.1):
        self.message = message
        self.delay = delay
        self.stream = stream or sys.stderr
        self.interval = interval
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._detail = ""
        self._shown = False
        self._lock = threading.Lock()

    def update(self, detail: str) -> None:
        self._detail = detail

    def _run(self) -> None:
        if self._stop.wait(self.delay):
            return
        started = time.monotonic() - self.delay
        for frame in itertools.cycle(self.FRAMES):
            with self._lock:
                if self._stop.is_set():
                    return
                detail = f" ({self._detail})" if self._detail else ""
                elapsed = time.monotonic() - started
                self.stream.write(f"\r\x1b[2K{frame} {self.message}{detail} {elapsed:.0f}s")
                self.stream.flush()
                self._shown = True
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> Progress:
        if self.enabled:
            self._thread = threading.Thread(target=self._run, name="vandamme-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1)
        with self._lock:
            if self._shown:
                self.stream.write("\r\x1b[2K")
                self.stream.flush()


def error(prog: str, message: str) -> None:
    """``vandamme <command>: message`` on stderr."""
    print(f"{prog}: {message}", file=sys.stderr)
