"""OpenAI chat completion stream (SSE) -> Anthropic Messages stream (SSE), incrementally.

``StreamConverter.feed`` takes upstream bytes cut anywhere (``vandamme.transforms.sse`` splits them into
events) and returns the Anthropic SSE bytes that can be sent now; ``finish`` closes whatever
is open. The output always follows Anthropic's grammar::

    message_start (content_block_start content_block_delta* content_block_stop)*
    message_delta message_stop

or ends early with one ``event: error`` (an upstream error event, a malformed event). Blocks
never interleave. OpenAI may interleave argument fragments of parallel tool calls; the fragments
of a call whose block is not the open one are buffered and emitted when its block opens (see
docs/conversion.md, "Parallel tool calls"). Field rules are those of
``vandamme.transforms.response_rules``, shared with the non-stream conversion.

Hot path notes: one ``orjson.loads`` per upstream event, frames built from pre-encoded byte
prefixes (per block, computed when the block opens) plus ``orjson.dumps`` of the delta string.
"""
from __future__ import annotations

from typing import Any

import orjson
from loguru import logger

from vandamme.transforms.errors import GatewayError, error_event
from vandamme.transforms.response_rules import (
    answer_error,
    arguments_text,
    call_function,
    empty_answer_block,
    json_type,
    malformed,
    message_id as _message_id,
    message_usage,
    reasoning_text,
    stop_reason,
    text_block,
    text_value,
    thinking_block,
    tool_call_list,
    tool_name,
    tool_use_block,
    tool_use_id,
)
from vandamme.transforms.sse import FRAME_END, SSEDecoder, SSEEvent, encode, frame_head

log = logger  # loguru, configured by vandamme.engine.logs

PING = encode("ping", b'{"type": "ping"}')
MESSAGE_STOP = encode("message_stop", {"type": "message_stop"})

_DONE = b"[DONE]"
_END = SSEEvent(None, _DONE)  # the end of the upstream body counts as `data: [DONE]`

# block kinds
_TEXT = 1
_THINKING = 2
_TOOL = 3
_REFUSAL = 4  # a text block of its own (response_rules: refusal after content, not joined)

_JSONDecodeError = orjson.JSONDecodeError
_dumps = orjson.dumps
_loads = orjson.loads


def _block_start(index: int, block: dict) -> bytes:
    return encode("content_block_start",
                  {"type": "content_block_start", "index": index, "content_block": block})


def _block_stop(index: int) -> bytes:
    return encode("content_block_stop", {"type": "content_block_stop", "index": index})


_DELTA_HEAD = frame_head("content_block_delta")
_DELTA_SUFFIX = b"}}" + FRAME_END


def _delta_prefix(index: int, delta_type: bytes, field: bytes) -> bytes:
    # event: content_block_delta / data: {"type":..,"index":N,"delta":{"type":X,"<field>":
    return (_DELTA_HEAD + b'{"type":"content_block_delta","index":' + str(index).encode()
            + b',"delta":{"type":"' + delta_type + b'","' + field + b'":')


class _ToolCall:
    __slots__ = ("id", "name", "parts", "closed")

    def __init__(self, tid: str | None, name: str | None):
        self.id = tid
        self.name = name
        self.parts: list[str] = []  # argument fragments not yet emitted (or all, if current)
        self.closed = False


class StreamConverter:
    """Incremental OpenAI SSE -> Anthropic SSE converter for one response."""

    __slots__ = (
        "model", "stop_sequences", "message_id", "_sse", "_started", "_done",
        "_next_index", "_kind", "_index", "_prefix", "_tools", "_tool_order", "_cur_tool",
        "_finish", "_finish_choice", "_usage", "_start_frame", "_any_tool", "_opened",
        "upstream_model",
    )

    def __init__(self, requested_model: str, stop_sequences: list[str] | None = None,
                 message_id: str | None = None):
        self.model = requested_model
        self.stop_sequences = stop_sequences or None
        self.message_id = message_id  # None: derived from the first upstream chunk's id
        self._sse = SSEDecoder()
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
        self._usage: Any = None
        self._start_frame: bytes | None = None
        self.upstream_model: str | None = None  # the first chunk's "model" (telemetry)
        if message_id:
            self._build_start(message_id)

    def _build_start(self, message_id: str) -> None:
        self.message_id = message_id
        self._start_frame = encode("message_start", {"type": "message_start", "message": {
            "id": message_id, "type": "message", "role": "assistant",
            "model": self.model, "content": [], "stop_reason": None,
            "stop_sequence": None, "usage": message_usage(None)}})

    # ---------------------------------------------------------------- public API

    @property
    def done(self) -> bool:
        return self._done

    def feed(self, data: bytes) -> bytes:
        if self._done or not data:
            return b""
        events = self._sse.feed(data)
        if not events:
            return b""
        out: list[bytes] = []
        self._events(events, out)
        return b"".join(out)

    def finish(self) -> bytes:
        """End of the upstream stream: flush and close everything (idempotent)."""
        if self._done:
            return b""
        out: list[bytes] = []
        self._events(self._sse.flush(), out)
        if not self._done:
            if self._finish is None:
                # No finish_reason and no [DONE]: the body ended before the answer did (a proxy
                # or server cut it cleanly). Passing that off as end_turn would hand the client
                # a truncated answer as a complete one.
                out.append(self.error_frame("api_error", "upstream stream ended before the answer "
                                            "was complete (no finish_reason and no [DONE])"))
            else:  # finish_reason seen, [DONE] missing: the answer is whole
                self._events([_END], out)
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

    def outcome(self) -> tuple[dict | None, str | None]:
        """(Anthropic usage, stop reason) of the answer as far as it went, for telemetry: usage
        None until the upstream sent it, stop reason None until a finish_reason."""
        reason = None
        if self._finish is not None:
            reason = stop_reason(self._finish, self._finish_choice, self.stop_sequences, self._any_tool)[0]
        return (message_usage(self._usage) if self._usage else None), reason

    # ---------------------------------------------------------------- parsing

    def _events(self, events: list[SSEEvent], out: list[bytes]) -> None:
        """Convert upstream events until the stream is over; a GatewayError (an upstream error
        event, a malformed event) ends it with an ``event: error``. (One loop with the event
        handling inline: this is the per-chunk hot path.)"""
        try:
            for event in events:
                if self._done:
                    return
                payload = event.data
                if payload == _DONE:
                    self._close_all(out)
                    return
                try:
                    obj = _loads(payload)
                except _JSONDecodeError:
                    self._unparsable(payload, out)
                    continue
                if type(obj) is not dict:
                    raise malformed(f"stream event is {json_type(obj)}, not an object")
                error = answer_error(obj)
                if error is not None:
                    raise error
                if not self._started:
                    self._started = True
                    if self._start_frame is None:
                        self._build_start(_message_id(obj.get("id")))
                    out.append(self._start_frame)
                    upstream_model = obj.get("model")
                    if type(upstream_model) is str:
                        self.upstream_model = upstream_model
                usage = obj.get("usage")
                if usage:
                    self._usage = usage
                choices = obj.get("choices")
                if type(choices) is not list:
                    if choices is None:
                        continue
                    raise malformed(f"stream event choices is {json_type(choices)}, not a list")
                if not choices:
                    continue  # e.g. the usage chunk
                choice = choices[0]
                if type(choice) is not dict:
                    raise malformed(f"stream event choices[0] is {json_type(choice)}, "
                                    "not an object")
                if choice.get("index", 0) != 0:
                    continue
                delta = choice.get("delta")
                if type(delta) is not dict:
                    if delta is not None:
                        raise malformed(f"stream event choices[0].delta is {json_type(delta)}, "
                                        "not an object")
                elif delta:
                    reasoning = reasoning_text(delta)
                    if reasoning:
                        if self._kind != _THINKING:
                            self._open(_THINKING, out)
                        out += (self._prefix, _dumps(reasoning), _DELTA_SUFFIX)
                    text = delta.get("content")
                    if text is not None:
                        if type(text) is not str:
                            text = text_value(text, "stream event choices[0].delta.content")
                        if text:
                            if self._kind != _TEXT:
                                self._open(_TEXT, out)
                            out += (self._prefix, _dumps(text), _DELTA_SUFFIX)
                    refusal = delta.get("refusal")
                    if refusal is not None:
                        refusal = text_value(refusal, "stream event choices[0].delta.refusal")
                        if refusal:
                            if self._kind != _REFUSAL:
                                self._open(_REFUSAL, out)
                            out += (self._prefix, _dumps(refusal), _DELTA_SUFFIX)
                    calls = delta.get("tool_calls")
                    if calls is not None:
                        where = "stream event choices[0].delta.tool_calls"
                        for i, call in enumerate(tool_call_list(calls, where)):
                            fn = call.get("function")
                            if type(fn) is not dict:
                                fn = call_function(call, f"{where}[{i}]")
                            self._tool_fragment(call, fn, i, out)
                    fc = delta.get("function_call")
                    if fc is not None:
                        if type(fc) is not dict:
                            raise malformed("stream event choices[0].delta.function_call is "
                                            f"{json_type(fc)}, not an object")
                        self._tool_fragment({"index": "function_call"}, fc, None, out)
                finish = choice.get("finish_reason")
                if finish and isinstance(finish, str):
                    self._finish = finish
                    self._finish_choice = choice
                    self._close_blocks(out)
        except GatewayError as exc:
            out.append(self.error_frame(exc.error_type, exc.message))

    def _unparsable(self, payload: bytes, out: list[bytes]) -> None:
        """Data that is not JSON: data lines of a server that ends events with a single
        newline are read one by one; anything else is skipped."""
        if b"\n" in payload:
            self._events([SSEEvent(None, line) for line in payload.split(b"\n")], out)
        elif payload.strip():
            # Skipping it would silently drop whatever text it carried from a 200 answer.
            raise malformed(f"stream event data is not JSON ({len(payload)} bytes)")

    # ---------------------------------------------------------------- blocks

    def _open(self, kind: int, out: list[bytes]) -> None:
        self._close_current(out)
        index = self._next_index
        self._next_index = index + 1
        self._kind = kind
        self._index = index
        if kind == _THINKING:
            out.append(_block_start(index, thinking_block("")))
            self._prefix = _delta_prefix(index, b"thinking_delta", b"thinking")
        else:  # _TEXT, _REFUSAL
            out.append(_block_start(index, text_block("")))
            self._prefix = _delta_prefix(index, b"text_delta", b"text")

    def _close_current(self, out: list[bytes]) -> None:
        if self._kind:
            out.append(_block_stop(self._index))
            if self._kind == _TOOL and self._cur_tool is not None:
                self._cur_tool.closed = True
                self._cur_tool = None
            self._kind = 0

    def _open_tool(self, call: _ToolCall, out: list[bytes]) -> None:
        name = tool_name(call.name,
                         f"stream event choices[0].delta.tool_calls[{self._opened}].function")
        call.id = tool_use_id(call.id)
        self._close_current(out)
        index = self._next_index
        self._next_index = index + 1
        self._kind = _TOOL
        self._index = index
        self._cur_tool = call
        self._opened += 1
        out.append(_block_start(index, tool_use_block(call.id, name, {})))
        self._prefix = _delta_prefix(index, b"input_json_delta", b"partial_json")
        if call.parts:
            joined = "".join(call.parts)
            call.parts = [joined]
            if joined:
                out += (self._prefix, _dumps(joined), _DELTA_SUFFIX)

    def _tool_fragment(self, tc: dict, fn: dict, pos: int | None, out: list[bytes]) -> None:
        """One tool-call fragment: ``tc`` the call (index, id), ``fn`` its function part,
        ``pos`` its place in ``delta.tool_calls`` (None: the legacy ``delta.function_call``)."""
        self._any_tool = True
        key = tc.get("index")
        if not isinstance(key, (int, str)):
            key = None
        tid = tc.get("id")
        if not isinstance(tid, str):
            tid = None
        name = fn.get("name")
        if name is not None and type(name) is not str:
            tool_name(name, _fragment_where(pos))  # raises: not a string
        args = fn.get("arguments")
        if args is not None and type(args) is not str:
            args = arguments_text(args, _fragment_where(pos))
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
            if args:
                call.parts.append(args)
                out += (self._prefix, _dumps(args), _DELTA_SUFFIX)
                if self._opened < len(self._tool_order):
                    self._advance(out)  # calls are waiting: open the next one when complete
            return
        if args:
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
            out.append(_block_start(0, empty_answer_block()))
            out.append(_block_stop(0))
            self._next_index = 1
        reason, sequence = stop_reason(self._finish, self._finish_choice, self.stop_sequences,
                                       self._any_tool)
        out.append(encode("message_delta", {
            "type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": sequence},
            "usage": message_usage(self._usage)}))
        out.append(MESSAGE_STOP)
        self._done = True


def _fragment_where(pos: int | None) -> str:
    if pos is None:
        return "stream event choices[0].delta.function_call"
    return f"stream event choices[0].delta.tool_calls[{pos}].function"


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
    decoder = SSEDecoder()
    return [(e.event or "", orjson.loads(e.data)) for e in decoder.feed(data) + decoder.flush()]


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
