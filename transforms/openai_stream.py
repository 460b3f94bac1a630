"""OpenAI chat completion stream (SSE) -> Anthropic Messages stream (SSE), incrementally.

``StreamConverter.feed`` takes upstream bytes cut anywhere (inside a line, inside a UTF-8
sequence) and returns the Anthropic SSE bytes that can be sent now; ``finish`` closes whatever
is open. The output always follows Anthropic's grammar::

    message_start (content_block_start content_block_delta* content_block_stop)*
    message_delta message_stop

Blocks never interleave. OpenAI may interleave argument fragments of parallel tool calls; the
fragments of a call whose block is not the open one are buffered and emitted when its block
opens (see docs/conversion.md, "Parallel tool calls").

Hot path notes: one ``orjson.loads`` per upstream event, frames built from pre-encoded byte
prefixes (per block, computed when the block opens) plus ``orjson.dumps`` of the delta string.
"""
from __future__ import annotations

from typing import Any

import orjson
from loguru import logger

from transforms.errors import error_event, error_type_for
from transforms.openai_to_anthropic import (
    message_id as _message_id,
    random_hex,
    stop_reason as _stop_reason,
    usage_fields,
)

log = logger  # loguru, configured by engine.logs

PING = b'event: ping\ndata: {"type": "ping"}\n\n'
MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'

_DONE = b"[DONE]"
_DATA = b"data:"

# block kinds
_TEXT = 1
_THINKING = 2
_TOOL = 3

_JSONDecodeError = orjson.JSONDecodeError
_dumps = orjson.dumps
_loads = orjson.loads


def _frame(event: bytes, payload: dict) -> bytes:
    return b"event: " + event + b"\ndata: " + _dumps(payload) + b"\n\n"


def _block_start(index: int, block: dict) -> bytes:
    return _frame(b"content_block_start",
                  {"type": "content_block_start", "index": index, "content_block": block})


def _block_stop(index: int) -> bytes:
    return (b'event: content_block_stop\ndata: {"type":"content_block_stop","index":'
            + str(index).encode() + b"}\n\n")


def _delta_prefix(index: int, delta_type: bytes, field: bytes) -> bytes:
    # event: content_block_delta / data: {"type":..,"index":N,"delta":{"type":X,"<field>":
    return (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
            + str(index).encode() + b',"delta":{"type":"' + delta_type + b'","' + field
            + b'":')


_DELTA_SUFFIX = b"}}\n\n"


class _ToolCall:
    __slots__ = ("id", "name", "parts", "block", "closed")

    def __init__(self, tid: str | None, name: str | None):
        self.id = tid
        self.name = name
        self.parts: list[str] = []  # argument fragments not yet emitted (or all, if current)
        self.block: int | None = None  # Anthropic index once its block is open
        self.closed = False


class StreamConverter:
    """Incremental OpenAI SSE -> Anthropic SSE converter for one response."""

    __slots__ = (
        "model", "stop_sequences", "message_id", "_buf", "_pending", "_started", "_done",
        "_next_index", "_kind", "_index", "_prefix", "_tools", "_tool_order", "_cur_tool",
        "_finish", "_finish_choice", "_usage", "_start_frame", "_any_tool", "_opened",
    )

    def __init__(self, requested_model: str, stop_sequences: list[str] | None = None,
                 message_id: str | None = None):
        self.model = requested_model
        self.stop_sequences = stop_sequences or None
        self.message_id = message_id  # None: derived from the first upstream chunk's id
        self._buf = bytearray()        # incomplete line
        self._pending: list[bytes] = []  # data lines of an event not yet parsed
        self._started = False
        self._done = False
        self._next_index = 0
        self._kind = 0                 # kind of the open block, 0 = none
        self._index = -1               # index of the open block
        self._prefix = b""             # delta frame prefix of the open block
        self._tools: dict[Any, _ToolCall] = {}  # OpenAI tool index -> call
        self._tool_order: list[_ToolCall] = []
        self._cur_tool: _ToolCall | None = None  # the call whose block is open
        self._any_tool = False
        self._opened = 0  # tool calls in _tool_order whose block has been opened (a prefix)
        self._finish: str | None = None
        self._finish_choice: dict | None = None
        self._usage: dict | None = None
        self._start_frame: bytes | None = None
        if message_id:
            self._build_start(message_id)

    def _build_start(self, message_id: str) -> None:
        self.message_id = message_id
        self._start_frame = _frame(b"message_start", {"type": "message_start", "message": {
            "id": message_id, "type": "message", "role": "assistant",
            "model": self.model, "content": [], "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0}}})

    # ---------------------------------------------------------------- public API

    @property
    def done(self) -> bool:
        return self._done

    def feed(self, data: bytes) -> bytes:
        if self._done or not data:
            return b""
        buf = self._buf
        if b"\n" not in data:
            buf += data
            return b""
        if buf:
            buf += data
            data = bytes(buf)
            buf.clear()
        lines = data.split(b"\n")
        tail = lines.pop()
        if tail:
            buf += tail
        out: list[bytes] = []
        for line in lines:
            if self._done:
                break
            if line[-1:] == b"\r":
                line = line[:-1]
            if not line:
                if self._pending:
                    self._dispatch(b"\n".join(self._pending), out)
                    self._pending.clear()
                continue
            if line[:5] != _DATA:
                continue  # comment, event:, id:, retry:
            payload = line[5:]
            if payload[:1] == b" ":
                payload = payload[1:]
            if self._pending:
                self._pending.append(payload)
                continue
            if payload == _DONE:
                self._close_all(out)
                continue
            try:
                obj = _loads(payload)
            except _JSONDecodeError:
                self._pending.append(payload)  # maybe a multi-line data event
                continue
            self._handle(obj, out)
        return b"".join(out)

    def finish(self) -> bytes:
        """End of the upstream stream: flush and close everything (idempotent)."""
        if self._done:
            return b""
        out: list[bytes] = []
        if self._buf:
            line = bytes(self._buf).rstrip(b"\r")
            self._buf.clear()
            if line[:5] == _DATA:
                payload = line[5:]
                self._pending.append(payload[1:] if payload[:1] == b" " else payload)
        if self._pending and not self._done:
            self._dispatch(b"\n".join(self._pending), out)
            self._pending.clear()
        if not self._done:
            self._close_all(out)
        return b"".join(out)

    def error_frame(self, error_type: str, message: str) -> bytes:
        """An ``event: error`` frame for a failure mid-stream; the stream is over after it."""
        self._done = True
        return error_event(error_type, message)

    def keepalive(self) -> bytes:
        """What to send while the upstream is silent: a ping, preceded by ``message_start`` if
        nothing was sent yet (Anthropic streams always begin with ``message_start``)."""
        if self._started or self._done:
            return b"" if self._done else PING
        self._started = True
        if self._start_frame is None:
            self._build_start(_message_id(None))
        return self._start_frame + PING

    # ---------------------------------------------------------------- parsing

    def _dispatch(self, payload: bytes, out: list[bytes]) -> None:
        payload = payload.strip()
        if payload == _DONE:
            self._close_all(out)
            return
        try:
            obj = _loads(payload)
        except _JSONDecodeError:
            log.warning("stream: skipped an unparsable upstream event ({} bytes)", len(payload))
            return
        self._handle(obj, out)

    def _handle(self, obj: Any, out: list[bytes]) -> None:
        if not isinstance(obj, dict):
            return
        err = obj.get("error")
        if err is not None or obj.get("type") == "error":
            self._upstream_error(err, out)
            return
        if not self._started:
            self._started = True
            if self._start_frame is None:
                self._build_start(_message_id(obj.get("id")))
            out.append(self._start_frame)
        usage = obj.get("usage")
        if usage:
            self._usage = usage
        choices = obj.get("choices")
        if not choices or not isinstance(choices, list):
            return
        choice = choices[0]
        if not isinstance(choice, dict) or choice.get("index", 0) != 0:
            return
        delta = choice.get("delta")
        if delta and isinstance(delta, dict):
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning and isinstance(reasoning, str):
                if self._kind != _THINKING:
                    self._open(_THINKING, out)
                out.append(self._prefix + _dumps(reasoning) + _DELTA_SUFFIX)
            text = delta.get("content")
            if text and isinstance(text, str):
                if self._kind != _TEXT:
                    self._open(_TEXT, out)
                out.append(self._prefix + _dumps(text) + _DELTA_SUFFIX)
            refusal = delta.get("refusal")
            if refusal and isinstance(refusal, str):
                if self._kind != _TEXT:
                    self._open(_TEXT, out)
                out.append(self._prefix + _dumps(refusal) + _DELTA_SUFFIX)
            calls = delta.get("tool_calls")
            if calls:
                for call in calls:
                    if isinstance(call, dict):
                        self._tool_fragment(call, out)
            fc = delta.get("function_call")
            if isinstance(fc, dict):
                self._tool_fragment({"index": "function_call", "function": fc}, out)
        finish = choice.get("finish_reason")
        if finish and isinstance(finish, str):
            self._finish = finish
            self._finish_choice = choice
            self._close_blocks(out)

    def _upstream_error(self, err: Any, out: list[bytes]) -> None:
        message = "upstream error"
        etype = "api_error"
        if isinstance(err, dict):
            if isinstance(err.get("message"), str) and err["message"]:
                message = err["message"]
            code = err.get("code")
            if isinstance(code, str) and code.isdigit():
                code = int(code)
            if isinstance(code, int) and not isinstance(code, bool) and 400 <= code < 600:
                etype = error_type_for(code)
            elif isinstance(err.get("type"), str) and err["type"].endswith("_error") \
                    and err["type"] in _ANTHROPIC_TYPES:
                etype = err["type"]
        elif isinstance(err, str) and err:
            message = err
        out.append(error_event(etype, message))
        self._done = True

    # ---------------------------------------------------------------- blocks

    def _open(self, kind: int, out: list[bytes]) -> None:
        self._close_current(out)
        index = self._next_index
        self._next_index = index + 1
        self._kind = kind
        self._index = index
        if kind == _TEXT:
            out.append(_block_start(index, {"type": "text", "text": ""}))
            self._prefix = _delta_prefix(index, b"text_delta", b"text")
        else:
            out.append(_block_start(index, {"type": "thinking", "thinking": "",
                                            "signature": ""}))
            self._prefix = _delta_prefix(index, b"thinking_delta", b"thinking")

    def _close_current(self, out: list[bytes]) -> None:
        if self._kind:
            out.append(_block_stop(self._index))
            if self._kind == _TOOL and self._cur_tool is not None:
                self._cur_tool.closed = True
                self._cur_tool = None
            self._kind = 0

    def _open_tool(self, call: _ToolCall, out: list[bytes]) -> None:
        self._close_current(out)
        index = self._next_index
        self._next_index = index + 1
        self._kind = _TOOL
        self._index = index
        self._cur_tool = call
        self._opened += 1
        call.block = index
        if not call.id:
            call.id = "toolu_" + random_hex()
        out.append(_block_start(index, {"type": "tool_use", "id": call.id,
                                        "name": call.name or "", "input": {}}))
        self._prefix = _delta_prefix(index, b"input_json_delta", b"partial_json")
        if call.parts:
            joined = "".join(call.parts)
            call.parts = [joined]
            if joined:
                out.append(self._prefix + _dumps(joined) + _DELTA_SUFFIX)

    def _tool_fragment(self, tc: dict, out: list[bytes]) -> None:
        self._any_tool = True
        key = tc.get("index")
        if not isinstance(key, (int, str)):
            key = None
        tid = tc.get("id")
        if not isinstance(tid, str):
            tid = None
        fn = tc.get("function")
        if not isinstance(fn, dict):
            fn = {}
        name = fn.get("name")
        if not isinstance(name, str):
            name = None
        args = fn.get("arguments")
        if key is None:
            # providers that omit the index: a new id starts a call, no id continues the last
            if tid:
                key = ("id", tid)
                call = self._tools.get(key)
            else:
                call = self._tool_order[-1] if self._tool_order else None
                key = ("anon", len(self._tool_order))
        else:
            call = self._tools.get(key)
        if call is None or (tid and call.id and tid != call.id):
            # a new call (also when a known index comes back with a different id)
            call = _ToolCall(tid or None, name or None)
            self._tools[key] = call
            self._tool_order.append(call)
        else:
            if tid and not call.id:
                call.id = tid
            if name and not call.name:
                call.name = name
        if call.closed:
            if args:
                log.warning("stream: dropped an argument fragment for closed tool call {!r}",
                            call.name)
            return
        if call is self._cur_tool:
            if args and isinstance(args, str):
                call.parts.append(args)
                out.append(self._prefix + _dumps(args) + _DELTA_SUFFIX)
                if self._opened < len(self._tool_order):
                    self._advance(out)  # calls are waiting: open the next one when complete
            return
        if args and isinstance(args, str):
            call.parts.append(args)
        self._advance(out)

    def _advance(self, out: list[bytes]) -> None:
        """Open buffered tool calls, in order of appearance, while the open tool call's
        arguments are complete JSON (or no tool block is open)."""
        order = self._tool_order
        while self._opened < len(order):
            cur = self._cur_tool
            if cur is not None and not _complete_json(cur.parts):
                return
            nxt = order[self._opened]
            if nxt.name is None:
                return  # cannot open a tool_use block before its name is known
            self._open_tool(nxt, out)

    def _close_blocks(self, out: list[bytes]) -> None:
        """Close the open block and emit the calls still buffered, in order of appearance."""
        self._close_current(out)
        order = self._tool_order
        while self._opened < len(order):
            self._open_tool(order[self._opened], out)
            self._close_current(out)

    def _close_all(self, out: list[bytes]) -> None:
        if self._done:
            return
        if not self._started:
            self._started = True
            if self._start_frame is None:
                self._build_start(_message_id(None))
            out.append(self._start_frame)
        self._close_blocks(out)
        if self._next_index == 0:
            # an empty answer is one empty text block, as in convert_response
            out.append(_block_start(0, {"type": "text", "text": ""}))
            out.append(_block_stop(0))
            self._next_index = 1
        reason, sequence = _stop_reason(self._finish, self._finish_choice, self.stop_sequences)
        if reason is None:  # upstream ended without a finish_reason
            reason = "tool_use" if self._any_tool else "end_turn"
        elif reason == "end_turn" and self._any_tool:
            reason = "tool_use"
        usage: dict[str, int] = {"output_tokens": 0}
        fields = usage_fields(self._usage)
        if fields is not None:
            usage = {"input_tokens": fields["input_tokens"],
                     "cache_read_input_tokens": fields["cache_read_input_tokens"],
                     "output_tokens": fields["output_tokens"]}
        out.append(_frame(b"message_delta", {
            "type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": sequence},
            "usage": usage}))
        out.append(MESSAGE_STOP)
        self._done = True


_ANTHROPIC_TYPES = frozenset({
    "invalid_request_error", "authentication_error", "billing_error", "permission_error",
    "not_found_error", "request_too_large", "rate_limit_error", "api_error",
    "overloaded_error", "timeout_error",
})


def _complete_json(parts: list[str]) -> bool:
    """True when the fragments received so far form a complete JSON object."""
    if not parts:
        return False
    if len(parts) > 1:
        parts[:] = ["".join(parts)]
    s = parts[0]
    if not s.rstrip().endswith("}"):
        return False
    try:
        _loads(s)
    except _JSONDecodeError:
        return False
    return True


# --------------------------------------------------------------------------------------------
# test helper
# --------------------------------------------------------------------------------------------

def parse_sse(data: bytes) -> list[tuple[str, dict]]:
    """Split Anthropic SSE bytes into (event name, parsed data) pairs."""
    events = []
    for frame in data.replace(b"\r\n", b"\n").split(b"\n\n"):
        if not frame.strip():
            continue
        name = ""
        payload = []
        for line in frame.split(b"\n"):
            if line.startswith(b"event:"):
                name = line[6:].strip().decode()
            elif line.startswith(b"data:"):
                payload.append(line[5:].lstrip(b" "))
        if payload:
            events.append((name, orjson.loads(b"\n".join(payload))))
    return events


def assemble(events_bytes: bytes) -> dict:
    """Rebuild the final Anthropic message from its SSE stream (test helper). An ``error``
    event returns ``{"type": "error", "error": ...}``."""
    message: dict | None = None
    partial: dict[int, list[str]] = {}
    for name, data in parse_sse(events_bytes):
        etype = data.get("type")
        if etype == "error":
            return {"type": "error", "error": data.get("error")}
        if etype == "message_start":
            message = dict(data["message"])
            message["content"] = []
            message["usage"] = dict(message.get("usage") or {})
        elif etype == "content_block_start":
            assert message is not None
            block = dict(data["content_block"])
            message["content"].append(block)
            if block["type"] == "tool_use":
                partial[data["index"]] = []
        elif etype == "content_block_delta":
            assert message is not None
            block = message["content"][data["index"]]
            delta = data["delta"]
            dtype = delta["type"]
            if dtype == "text_delta":
                block["text"] += delta["text"]
            elif dtype == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif dtype == "signature_delta":
                block["signature"] = delta["signature"]
            elif dtype == "input_json_delta":
                partial[data["index"]].append(delta["partial_json"])
        elif etype == "content_block_stop":
            assert message is not None
            idx = data["index"]
            if idx in partial:
                raw = "".join(partial.pop(idx))
                message["content"][idx]["input"] = orjson.loads(raw) if raw else {}
        elif etype == "message_delta":
            assert message is not None
            message["stop_reason"] = data["delta"].get("stop_reason")
            message["stop_sequence"] = data["delta"].get("stop_sequence")
            for k, v in (data.get("usage") or {}).items():
                if v is not None:
                    message["usage"][k] = v
    if message is None:
        raise ValueError("no message_start in stream")
    return message
