"""Server-sent events (SSE): one incremental decoder and the frame encoder.

Decoding, for upstream bodies that arrive cut anywhere (inside a line, inside a UTF-8 sequence)::

    decoder = SSEDecoder()
    for event in decoder.feed(chunk):    # -> list[SSEEvent], the events completed by `chunk`
        event.event                      # str | None: the `event:` field
        event.data                       # bytes: the `data:` lines joined with b"\\n"
    decoder.flush()                      # end of the body: the last event, even unterminated

Rules (the SSE format of the HTML standard, minus what no LLM API uses): lines end with ``\\n``
or ``\\r\\n`` (a lone ``\\r`` is not a line end); one space after ``field:`` is dropped; an event
ends at a blank line and is only reported when it has at least one ``data`` line; comments
(``:...``), ``id:``, ``retry:`` and unknown fields are ignored. Unlike the standard, ``flush``
reports an event the body ended in without its blank line (servers that close early do this).

Encoding: ``encode(event, data)`` gives one frame; ``data`` is bytes or a JSON-serialisable
object (orjson). ``frame_head(event)`` + payload + ``FRAME_END`` is the same frame for a
payload known to be one line, for callers that pre-compute frame prefixes on a hot path.
"""
from __future__ import annotations

from typing import Any

import msgspec
import orjson

FRAME_END = b"\n\n"

_DATA = b"data:"
_EVENT = b"event:"
_LF = 10  # int operands: `in` is then a plain memchr, several times faster than b"\n"
_CR = 13


class SSEEvent(msgspec.Struct, gc=False):
    """One decoded event: ``event`` (the ``event:`` field, or None) and ``data`` (bytes).
    (A msgspec Struct: created several times faster than a Python class, on the hot path.)"""

    event: str | None
    data: bytes


class SSEDecoder:
    """Incremental SSE decoder: ``feed(bytes) -> list[SSEEvent]``, ``flush() -> list[SSEEvent]``."""

    __slots__ = ("_buf", "_data", "_event")

    def __init__(self) -> None:
        self._buf = bytearray()        # the incomplete last line
        self._data: list[bytes] = []   # data lines of the event being read
        self._event: str | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        buf = self._buf
        if _LF not in chunk:  # no line ends: kept (appending keeps long lines linear)
            buf += chunk
            return []
        if buf:
            buf += chunk
            chunk = bytes(buf)
            buf.clear()
        lines = chunk.split(b"\n")
        tail = lines.pop()  # the incomplete last line (b"" when the chunk ends a line)
        if tail:
            buf += tail
        if _CR in chunk:
            lines = [line[:-1] if line[-1:] == b"\r" else line for line in lines]
        events: list[SSEEvent] = []
        data = self._data
        for line in lines:
            if not line:
                if data:
                    events.append(SSEEvent(self._event,
                                           data[0] if len(data) == 1 else b"\n".join(data)))
                    data.clear()
                self._event = None
            elif line[:5] == _DATA:
                data.append(line[6:] if line[5:6] == b" " else line[5:])
            elif line[:6] == _EVENT:
                self._event = (line[7:] if line[6:7] == b" " else line[6:]).decode(
                    "utf-8", "replace")
            elif line == b"data":
                data.append(b"")
        return events

    def flush(self) -> list[SSEEvent]:
        """End of the body: the unterminated last line and event, if any."""
        return self.feed(b"\n\n" if self._buf else b"\n")


def frame_head(event: str | None) -> bytes:
    """The bytes of a frame before its (single-line) data payload."""
    if event is None:
        return b"data: "
    return b"event: " + event.encode() + b"\ndata: "


def encode(event: str | None, data: bytes | Any) -> bytes:
    """One SSE frame; ``data`` is bytes (split into ``data:`` lines at newlines) or an object
    serialised with orjson."""
    if not isinstance(data, (bytes, bytearray)):
        data = orjson.dumps(data)
    elif b"\n" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\ndata: ")
    return frame_head(event) + data + FRAME_END
