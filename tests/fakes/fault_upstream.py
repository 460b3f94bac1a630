"""A misbehaving upstream on 127.0.0.1, and what the gateway promises about each misbehaviour.

``FaultUpstream`` speaks both APIs (``/v1/chat/completions``: OpenAI, ``/v1/messages``:
Anthropic) and answers each request with the fault named by the model the gateway sends upstream
(``oa:reset-mid-body`` reaches it as model ``reset-mid-body``); any other model gets a correct
answer, stream or not as asked, whose text is ``answer_text(prompt, fault)``. ``refused`` is not
served here: it is a provider whose base URL is a closed port.

Faults that aiohttp's response API cannot produce (a reset, a half-written head) write on the
request's transport directly and reset the connection (SO_LINGER 0: an RST, not a FIN). A
stalled or slow answer waits at most ``hold`` seconds and gives up as soon as the gateway has
gone, so no handler outlives its connection.

``FAULTS`` says, per fault, what the client must get without and with ``stream``: an HTTP error
with an Anthropic error body, a 200 stream whose last event is an Anthropic ``error`` event, or the
upstream's answer, whole. ``GAPS`` lists the cases where the gateway does not keep that promise
(yet), with the reason; ``verdict`` judges what a client received. ``providers_yaml`` declares
the gateway's providers in front of it and ``model_for`` names the model that asks for a fault.
Used by tests/test_upstream_faults.py and bench/soak.py.
"""
from __future__ import annotations

import asyncio
import socket
import struct
import time
from dataclasses import dataclass

import orjson
from aiohttp import web

from vandamme.transforms.openai_stream import assemble, parse_sse

from .anthropic_upstream import message_json, sse_events
from .loopback import LoopbackServer
from .openai_upstream import Reply, build_chunks, build_completion, encode_stream, split_text

OVERSIZED_TEXT = 48 * 1024  # characters of the "oversized" answer: above the caps the users set


@dataclass(frozen=True)
class Expect:
    """What a client must receive: ``status`` >= 400 is an error answer of that status and error
    ``type``; 200 with a ``type`` is a stream whose last event is an error of that type; 200
    without one is the upstream's answer, whole."""

    status: int
    type: str | None = None


ANSWER = Expect(200)
BAD_GATEWAY = Expect(502, "api_error")
GATEWAY_TIMEOUT = Expect(504, "timeout_error")
STREAM_ERROR = Expect(200, "api_error")
STREAM_TIMEOUT = Expect(200, "timeout_error")


@dataclass(frozen=True)
class Fault:
    what: str
    plain: Expect | None  # without stream (None: not a fault of that kind of answer)
    stream: Expect | None  # with stream

    def expect(self, stream: bool) -> Expect | None:
        return self.stream if stream else self.plain


FAULTS: dict[str, Fault] = {
    "refused": Fault("connection refused (the provider's port is closed)", BAD_GATEWAY, BAD_GATEWAY),
    "reset-before-head": Fault("the connection is reset before any byte of the answer",
                               BAD_GATEWAY, BAD_GATEWAY),
    "reset-in-head": Fault("half a status line and headers, then a reset", BAD_GATEWAY, BAD_GATEWAY),
    "slow-head": Fault("the head comes after longer than request_timeout", GATEWAY_TIMEOUT, GATEWAY_TIMEOUT),
    "silent-after-head": Fault("the head, then not one byte of the body (never closing)",
                               GATEWAY_TIMEOUT, STREAM_TIMEOUT),
    "reset-mid-body": Fault("a reset inside the body (a Content-Length body; inside an SSE event)",
                            BAD_GATEWAY, STREAM_ERROR),
    "reset-mid-stream": Fault("a reset between chunks (a chunked body; between SSE events)",
                              BAD_GATEWAY, STREAM_ERROR),
    "stall-mid-stream": Fault("part of the body, then silence (never closing)", GATEWAY_TIMEOUT, STREAM_TIMEOUT),
    "complete-but-open": Fault("the whole answer, but the body never ends (a chunked body without "
                               "its last chunk)", GATEWAY_TIMEOUT, ANSWER),
    "ends-early": Fault("the body ends cleanly before the answer does (no finish_reason and "
                        "[DONE]; no message_delta and message_stop)", BAD_GATEWAY, STREAM_ERROR),
    "malformed-json": Fault("JSON that does not parse (the body; one SSE event's data)",
                            BAD_GATEWAY, STREAM_ERROR),
    "bad-shape": Fault("well-formed JSON of the wrong shape (the body; one SSE event)",
                       BAD_GATEWAY, STREAM_ERROR),
    "not-sse": Fault("a text/event-stream of bare JSON lines, no SSE fields", None, STREAM_ERROR),
    "html": Fault("an HTML page with status 200", BAD_GATEWAY, BAD_GATEWAY),
    "oversized": Fault(f"an answer of {OVERSIZED_TEXT // 1024} KiB of text, more than "
                       "server.max_response_bytes (streams are not buffered, so not capped)",
                       BAD_GATEWAY, ANSWER),
}

# Cases where the gateway does not keep the catalogue's promise (yet), with the reason: none now.
GAPS: dict[tuple[str, str, bool], str] = {}

def cases() -> list[tuple[str, str, bool]]:
    """Every (fault, api format, stream) the catalogue has a promise for."""
    return [(name, api, stream) for name, fault in FAULTS.items() for api in ("openai", "anthropic")
            for stream in (False, True) if fault.expect(stream) is not None]


PROVIDERS = {"openai": "oa", "anthropic": "an"}  # api format -> provider name in providers_yaml


def providers_yaml(upstream: str, closed_port: int, extra: str = "") -> str:
    """The ``providers`` of a gateway in front of a FaultUpstream at ``upstream``: ``oa``
    (converted) and ``an`` (passthrough), and the same on a closed port, ``oa_closed`` and
    ``an_closed`` (the "refused" fault); ``extra`` goes into each provider's mapping."""
    closed = f"http://127.0.0.1:{closed_port}"
    extra = f", {extra}" if extra else ""
    return f"""providers:
  oa: {{format: openai, base_url: "{upstream}/v1", api_keys: [sk-oa-0123456789]{extra}}}
  an: {{format: anthropic, base_url: "{upstream}", api_keys: [sk-an-0123456789]{extra}}}
  oa_closed: {{format: openai, base_url: "{closed}/v1", api_keys: [sk-oa-0123456789]{extra}}}
  an_closed: {{format: anthropic, base_url: "{closed}", api_keys: [sk-an-0123456789]{extra}}}
"""


def model_for(fault: str, api: str) -> str:
    """The model a client asks for to get ``fault`` from the provider of format ``api``."""
    provider = PROVIDERS[api]
    return f"{provider}_closed:ok" if fault == "refused" else f"{provider}:{fault}"


def case_name(case: tuple[str, str, bool]) -> str:
    fault, api, stream = case
    return f"{fault}-{api}-{'stream' if stream else 'json'}"


def answer_text(prompt: str, fault: str = "ok") -> str:
    """The text of the answer to a request whose last user message is ``prompt``."""
    text = f"Answer to {prompt}: the quick brown fox jumps over the lazy dog."
    if fault == "oversized":
        text += " lorem ipsum" * (OVERSIZED_TEXT // 12)
    return text


def _prompt(body: dict) -> str:
    content = body["messages"][-1]["content"]
    if isinstance(content, list):  # content parts
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content


class Answer:
    """The correct answer to one request, in the wire format of its API, cut in ``parts``: the
    SSE frames of a stream, or the two halves of a JSON body. The last ``ending`` parts are what
    ends it (OpenAI: finish chunk, usage chunk, [DONE]; Anthropic: content_block_stop,
    message_delta, message_stop; JSON: the second half)."""

    def __init__(self, path: str, body: dict):
        self.openai = path.endswith("/chat/completions")
        self.stream = bool(body.get("stream"))
        model = body["model"]
        text = answer_text(_prompt(body), model)
        if self.openai:
            reply = Reply(text=text, text_chunks=split_text(text, 16))
            created = int(time.time())
            if self.stream:
                opts = body.get("stream_options") or {}
                chunks = build_chunks(reply, model, "chatcmpl-fault", created, bool(opts.get("include_usage")))
                self.parts = encode_stream(chunks)
                self.ending = len(self.parts) - 1 - len(reply.text_chunks)  # after role + text chunks
            else:
                self.json = orjson.dumps(build_completion(reply, model, "chatcmpl-fault", created))
        elif self.stream:
            self.parts = sse_events(model, text)
            self.ending = 3
        else:
            self.json = orjson.dumps(message_json(model, text))
        if not self.stream:
            half = len(self.json) // 2
            self.parts = [self.json[:half], self.json[half:]]
            self.ending = 1
        self.content_type = "text/event-stream" if self.stream else "application/json"

    @property
    def first_text(self) -> int:
        """The index of the first stream part carrying text (after role chunk / message_start,
        content_block_start and ping)."""
        return 1 if self.openai else 3

    def malformed_json(self) -> list[bytes]:
        if not self.stream:
            return [self.json[:len(self.json) // 2] + b"}"]  # cut short, but still '{...}'
        parts = list(self.parts)
        frame = parts[self.first_text]
        parts[self.first_text] = frame[:len(frame) // 2] + b"\n\n"
        return parts

    def bad_shape(self) -> list[bytes]:
        if not self.stream:
            wrong = ({"id": "chatcmpl-fault", "object": "chat.completion", "choices": "oops"} if self.openai
                     else {"id": "msg_fault", "type": "message", "role": "assistant", "content": "oops"})
            return [orjson.dumps(wrong)]
        parts = list(self.parts)
        parts[self.first_text] = (b'data: {"choices": [{"index": 0, "delta": {"content": 5}}]}\n\n' if self.openai
                                  else b'event: content_block_delta\ndata: {"type": "content_block_delta", '
                                       b'"index": 0, "delta": 5}\n\n')
        return parts

    def bare_json_lines(self) -> list[bytes]:
        """The stream's JSON objects one per line, without SSE fields."""
        return [frame.split(b"data: ", 1)[1].rstrip(b"\n") + b"\n" for frame in self.parts]


class FaultUpstream(LoopbackServer):
    """``async with FaultUpstream() as up: up.base_url`` (Anthropic base URL; the OpenAI one is
    ``up.base_url + "/v1"``). ``answered`` counts the requests it has received."""

    def __init__(self, hold: float = 10.0):
        super().__init__()
        self.hold = hold
        self.answered = 0

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._handle)
        app.router.add_post("/v1/messages", self._handle)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        self.answered += 1
        answer = Answer(request.path, body)
        fault = body["model"]
        behaviour = getattr(self, "_" + fault.replace("-", "_"), None) if fault in FAULTS else None
        if behaviour is None:  # not a fault (or "refused", which is a closed port, not served)
            return await self._send(request, answer, answer.parts, end=True)
        return await behaviour(request, answer)

    # ------------------------------------------------------------------ building blocks

    async def _send(self, request, answer: Answer, parts: list[bytes], end: bool,
                    content_type: str | None = None, length: int | None = None) -> web.StreamResponse:
        """A 200 answer of ``parts`` (chunked, unless ``length`` is given), ended or left open."""
        resp = web.StreamResponse(headers={"content-type": content_type or answer.content_type})
        if length is not None:
            resp.content_length = length
        await resp.prepare(request)
        for i in range(0, len(parts), 32):
            await resp.write(b"".join(parts[i:i + 32]))
        if end:
            await resp.write_eof()
        return resp

    async def _wait(self, request, seconds: float) -> bool:
        """Send nothing for up to ``seconds``; False as soon as the gateway has gone."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            transport = request.transport
            if transport is None or transport.is_closing():
                return False
            await asyncio.sleep(0.02)
        return True

    async def _reset(self, request) -> web.Response:
        """Reset the connection (RST) once what was written has reached the gateway. The response
        returned is never sent: aiohttp finds the connection gone and drops it quietly."""
        transport = request.transport
        if transport is not None:
            for _ in range(50):  # at most 0.5 s for the bytes written so far to leave
                if not transport.get_write_buffer_size():
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)  # and for the gateway to read them
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        return web.Response()

    async def _hold_open(self, request, resp: web.StreamResponse) -> web.StreamResponse:
        await self._wait(request, self.hold)
        return resp

    # ------------------------------------------------------------------ the faults

    async def _reset_before_head(self, request, answer):
        return await self._reset(request)

    async def _reset_in_head(self, request, answer):
        request.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: applica")
        return await self._reset(request)

    async def _slow_head(self, request, answer):
        if not await self._wait(request, self.hold):
            return web.Response()
        return await self._send(request, answer, answer.parts, end=True)

    async def _silent_after_head(self, request, answer):
        return await self._hold_open(request, await self._send(request, answer, [], end=False))

    async def _reset_mid_body(self, request, answer):
        cut = answer.parts[-answer.ending]
        parts = answer.parts[:-answer.ending] + [cut[:len(cut) // 2]]
        length = None if answer.stream else len(answer.json)
        await self._send(request, answer, parts, end=False, length=length)
        return await self._reset(request)

    async def _reset_mid_stream(self, request, answer):
        await self._send(request, answer, answer.parts[:-answer.ending], end=False)
        return await self._reset(request)

    async def _stall_mid_stream(self, request, answer):
        return await self._hold_open(request, await self._send(request, answer, answer.parts[:-answer.ending],
                                                                end=False))

    async def _complete_but_open(self, request, answer):
        return await self._hold_open(request, await self._send(request, answer, answer.parts, end=False))

    async def _ends_early(self, request, answer):
        return await self._send(request, answer, answer.parts[:-answer.ending], end=True)

    async def _malformed_json(self, request, answer):
        return await self._send(request, answer, answer.malformed_json(), end=True)

    async def _bad_shape(self, request, answer):
        return await self._send(request, answer, answer.bad_shape(), end=True)

    async def _not_sse(self, request, answer):
        return await self._send(request, answer, answer.bare_json_lines(), end=True)

    async def _html(self, request, answer):
        return web.Response(text="<html><body><h1>502 Bad Gateway</h1></body></html>", content_type="text/html")

    async def _oversized(self, request, answer):
        if answer.stream:
            return await self._send(request, answer, answer.parts, end=True)
        return web.Response(body=answer.json, content_type="application/json")


# ---------------------------------------------------------------------- judging an answer

def verdict(expect: Expect, status: int, body: bytes, stream: bool, text: str) -> str | None:
    """None when a client that received ``status`` and ``body`` got what ``expect`` promises for
    an answer whose text is ``text``; else what was wrong, in a few words."""
    if expect.status != 200:
        if status != expect.status:
            return f"HTTP {status} {body[:120]!r}, expected HTTP {expect.status} {expect.type}"
        return _error_problem(body, expect.type)
    if status != 200:
        return f"HTTP {status} {body[:120]!r}, expected 200"
    if not stream:
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError:
            return f"a 200 body that is not JSON: {body[:80]!r}"
        return _text_problem(message, text)
    try:
        events = parse_sse(body)
    except ValueError:
        return f"a stream event that is not JSON: {body[:120]!r}"
    if not events:
        return "a 200 stream without events"
    names = [name for name, _ in events]
    if expect.type is not None:
        if names[-1] != "error" or names.count("error") != 1:
            return f"the stream does not end with one error event: {names[-4:]}"
        return _error_problem(orjson.dumps(events[-1][1]), expect.type)
    if names[-1] != "message_stop":
        return f"the stream does not end with message_stop: {names[-4:]}"
    try:
        return _text_problem(assemble(body), text)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        return f"the stream's events do not make a message ({type(exc).__name__})"


def _error_problem(body: bytes, error_type: str) -> str | None:
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return f"an error body that is not JSON: {body[:80]!r}"
    error = obj.get("error") if isinstance(obj, dict) else None
    if not isinstance(error, dict) or obj.get("type") != "error" or not isinstance(error.get("message"), str):
        return f"not an Anthropic error: {body[:120]!r}"
    if error.get("type") != error_type:
        return f"error type {error.get('type')} ({error['message']}), expected {error_type}"
    return None


def _text_problem(message, text: str) -> str | None:
    if not isinstance(message, dict) or message.get("type") != "message":
        return f"not a message: {str(message)[:120]}"
    got = "".join(block.get("text", "") for block in message.get("content") or [] if isinstance(block, dict))
    if got != text:
        return f"the answer's text differs: {got[:60]!r}... ({len(got)} characters, expected {len(text)})"
    return None
