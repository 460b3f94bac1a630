"""A scriptable fake OpenAI chat completions server speaking the exact wire format.

    async with FakeOpenAI() as fake:
        fake.enqueue(Reply(text="Hi"))                      # next /v1/chat/completions call
        fake.enqueue(Reply(tool_calls=[ToolCall("get_weather", {"city": "Paris"})]))
        fake.enqueue(Reply(status=429, error_message="slow down",
                           headers={"retry-after": "3"}))
        ... use fake.base_url (http://127.0.0.1:PORT/v1) ...
        fake.requests  # [{"path", "method", "headers", "json"}, ...]

A call with an empty queue gets ``fake.default`` (a plain text answer). Whether the answer
streams follows the request's ``stream`` unless ``Reply.stream`` forces it. Streams are the exact
OpenAI chunk format (``chat.completion.chunk`` objects, a final usage chunk with ``choices: []``
when ``stream_options.include_usage`` is set, then ``data: [DONE]``), optionally written in small
byte slices, with delays, interleaved tool-call fragments, or a dropped connection.
"""
from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

__all__ = ["FakeOpenAI", "Reply", "ToolCall", "split_text", "build_chunks", "build_completion",
           "encode_stream"]


@dataclass
class ToolCall:
    name: str
    arguments: str | dict = "{}"  # a dict is JSON-encoded; a str is sent as is (may be invalid)
    id: str | None = None
    extra_content: dict | None = None  # e.g. Gemini's {"google": {"thought_signature": "..."}}

    @property
    def arguments_text(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return orjson.dumps(self.arguments).decode()


DEFAULT_TEXT = "Hello! How can I help you today?"


@dataclass
class Reply:
    text: Any = ...  # default: DEFAULT_TEXT, or no text when tool_calls are given
    tool_calls: list[ToolCall] = field(default_factory=list)
    reasoning: str | None = None
    reasoning_field: str = "reasoning_content"  # or "reasoning" (OpenRouter / vLLM style)
    finish_reason: str | None = None  # default: "tool_calls" if tool_calls else "stop"
    prompt_tokens: int = 12
    completion_tokens: int = 7
    cached_tokens: int | None = None
    usage: bool = True  # include usage (non-stream) / the usage chunk (stream, if requested)
    choice_extra: dict = field(default_factory=dict)  # e.g. {"stop_reason": "END"} (vLLM)
    id: str | None = None
    model: str | None = None  # default: the requested model
    # errors
    status: int = 200
    error_message: str | None = None  # builds an OpenAI error body
    error_type: str = "invalid_request_error"
    error_code: str | None = None
    body: bytes | dict | str | None = None  # raw body (overrides everything for non-200)
    headers: dict[str, str] = field(default_factory=dict)
    # streaming
    stream: bool | None = None  # None: follow the request
    text_chunks: list[str] | None = None  # default: split_text(text)
    fragment_size: int | None = 3  # tool-call arguments fragment size (None: one fragment)
    fragment_splits: list[list[int]] | None = None  # explicit split points per call
    interleave_tool_calls: bool = False  # round-robin the fragments of parallel calls
    slice_size: int | None = None  # write the byte stream in slices of this size
    random_slices: int | None = None  # seed: write in random slices of 1..16 bytes
    delay: float = 0.0  # seconds between chunks (events, or slices when slicing)
    first_delay: float = 0.0  # seconds before the first byte of the body
    drop_after_events: int | None = None  # drop the connection after this many events
    error_in_stream: dict | None = None  # an {"error": ...} event after the content
    raw_stream: bytes | None = None  # exact bytes to send as the stream body
    include_done: bool = True
    content_type: str | None = None

    def __post_init__(self) -> None:
        if self.text is ...:
            self.text = None if self.tool_calls else DEFAULT_TEXT


def split_text(text: str, size: int = 4) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)] if text else []


def _split(s: str, size: int | None, points: list[int] | None) -> list[str]:
    if points is not None:
        cuts = [0] + sorted(p for p in points if 0 < p < len(s)) + [len(s)]
        return [s[a:b] for a, b in zip(cuts, cuts[1:])]
    if size is None or size <= 0 or not s:
        return [s]
    return [s[i:i + size] for i in range(0, len(s), size)]


def _usage(reply: Reply) -> dict:
    usage: dict[str, Any] = {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
    }
    if reply.cached_tokens is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": reply.cached_tokens, "audio_tokens": 0}
    usage["completion_tokens_details"] = {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0,
                                          "rejected_prediction_tokens": 0}
    return usage


def _finish(reply: Reply) -> str:
    if reply.finish_reason is not None:
        return reply.finish_reason
    return "tool_calls" if reply.tool_calls else "stop"


def _call_id(reply: Reply, i: int, call: ToolCall) -> str:
    return call.id or f"call_{i}_{abs(hash((reply.id, call.name, i))) % 10**12:012d}"


def build_completion(reply: Reply, model: str, cid: str, created: int) -> dict:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text, "refusal": None,
                               "annotations": []}
    if reply.reasoning is not None:
        message[reply.reasoning_field] = reply.reasoning
    if reply.tool_calls:
        message["tool_calls"] = [
            {"id": _call_id(reply, i, c), "type": "function",
             "function": {"name": c.name, "arguments": c.arguments_text},
             **({"extra_content": c.extra_content} if c.extra_content else {})}
            for i, c in enumerate(reply.tool_calls)]
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": _finish(reply)}
    choice.update(reply.choice_extra)
    out = {"id": cid, "object": "chat.completion", "created": created, "model": model,
           "choices": [choice], "system_fingerprint": "fp_fake"}
    if reply.usage:
        out["usage"] = _usage(reply)
    return out


def build_chunks(reply: Reply, model: str, cid: str, created: int,
                 include_usage: bool = True) -> list[dict]:
    """The chunk objects of a streamed answer, in order (without [DONE])."""
    def chunk(delta: dict, finish: str | None = None, extra: dict | None = None) -> dict:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        if extra:
            choice.update(extra)
        return {"id": cid, "object": "chat.completion.chunk", "created": created,
                "model": model, "system_fingerprint": "fp_fake", "choices": [choice]}

    chunks = [chunk({"role": "assistant", "content": "", "refusal": None})]
    if reply.reasoning:
        for piece in split_text(reply.reasoning):
            chunks.append(chunk({reply.reasoning_field: piece}))
    if reply.text:
        pieces = reply.text_chunks if reply.text_chunks is not None else split_text(reply.text)
        for piece in pieces:
            chunks.append(chunk({"content": piece}))
    if reply.tool_calls:
        per_call: list[list[dict]] = []
        for i, call in enumerate(reply.tool_calls):
            points = reply.fragment_splits[i] if reply.fragment_splits else None
            frags = _split(call.arguments_text, reply.fragment_size, points)
            first = {"index": i, "id": _call_id(reply, i, call), "type": "function",
                     "function": {"name": call.name, "arguments": ""}}
            if call.extra_content:
                first["extra_content"] = call.extra_content
            events = [{"tool_calls": [first]}]
            events += [{"tool_calls": [{"index": i, "function": {"arguments": f}}]}
                       for f in frags if f]
            per_call.append(events)
        if reply.interleave_tool_calls:
            k = 0
            while any(per_call):
                lst = per_call[k % len(per_call)]
                if lst:
                    chunks.append(chunk(lst.pop(0)))
                k += 1
        else:
            for events in per_call:
                chunks.extend(chunk(e) for e in events)
    if reply.error_in_stream is not None:
        chunks.append({"error": reply.error_in_stream})
        return chunks
    chunks.append(chunk({}, _finish(reply), reply.choice_extra))
    if include_usage and reply.usage:
        chunks.append({"id": cid, "object": "chat.completion.chunk", "created": created,
                       "model": model, "system_fingerprint": "fp_fake", "choices": [],
                       "usage": _usage(reply)})
    return chunks


def encode_stream(chunks: list[dict], done: bool = True) -> list[bytes]:
    """SSE frames exactly as OpenAI writes them: ``data: <json>\\n\\n`` ... ``data: [DONE]``."""
    frames = [b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks]
    if done:
        frames.append(b"data: [DONE]\n\n")
    return frames


class FakeOpenAI:
    def __init__(self, models: list[str] | None = None, api_key: str | None = None,
                 prefix: str = "/v1"):
        self.models = models or ["gpt-4o", "gpt-4o-mini"]
        self.api_key = api_key
        self.prefix = prefix.rstrip("/")
        self.requests: list[dict] = []
        self.queue: list[Reply] = []
        self.default = Reply()
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    def enqueue(self, *replies: Reply) -> None:
        self.queue.extend(replies)

    async def __aenter__(self) -> FakeOpenAI:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(self.prefix + "/models", self._models)
        app.router.add_post(r"/{path:.*}chat/completions", self._chat)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------------ handlers

    def _record(self, request: web.Request, body: Any) -> None:
        self.requests.append({"path": request.path, "method": request.method, "query": dict(request.query),
                              "headers": dict(request.headers), "json": body})

    def _auth_error(self, request: web.Request) -> web.Response | None:
        if self.api_key is None:
            return None
        if request.headers.get("Authorization") == f"Bearer {self.api_key}":
            return None
        return web.json_response(
            {"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                       "param": None, "code": "invalid_api_key"}}, status=401,
            dumps=lambda o: orjson.dumps(o).decode())

    async def _models(self, request: web.Request) -> web.Response:
        self._record(request, None)
        err = self._auth_error(request)
        if err is not None:
            return err
        data = [{"id": m, "object": "model", "created": 1700000000, "owned_by": "fake"}
                for m in self.models]
        return web.Response(body=orjson.dumps({"object": "list", "data": data}),
                            content_type="application/json")

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        self._record(request, body)
        err = self._auth_error(request)
        if err is not None:
            return err
        reply = self.queue.pop(0) if self.queue else self.default
        if reply.first_delay:
            await asyncio.sleep(reply.first_delay)
        if reply.status != 200:
            return self._error(reply)
        body = body if isinstance(body, dict) else {}
        model = reply.model or body.get("model") or "gpt-4o"
        cid = reply.id or f"chatcmpl-{random.getrandbits(64):016x}"
        created = int(time.time())
        stream = reply.stream if reply.stream is not None else bool(body.get("stream"))
        if not stream:
            return web.Response(body=orjson.dumps(build_completion(reply, model, cid, created)),
                                content_type=reply.content_type or "application/json",
                                headers=reply.headers)
        opts = body.get("stream_options")
        include_usage = isinstance(opts, dict) and bool(opts.get("include_usage"))
        if reply.raw_stream is not None:
            frames = [reply.raw_stream]
        else:
            frames = encode_stream(build_chunks(reply, model, cid, created, include_usage),
                                   reply.include_done)
        return await self._stream(request, reply, frames)

    def _error(self, reply: Reply) -> web.Response:
        if reply.body is not None:
            body = reply.body
            if isinstance(body, dict):
                body = orjson.dumps(body)
            elif isinstance(body, str):
                body = body.encode()
            ctype = reply.content_type or ("application/json" if body[:1] in (b"{", b"[")
                                           else "text/plain")
        else:
            body = orjson.dumps({"error": {
                "message": reply.error_message or "error", "type": reply.error_type,
                "param": None, "code": reply.error_code}})
            ctype = reply.content_type or "application/json"
        return web.Response(status=reply.status, body=body, content_type=ctype,
                            headers=reply.headers)

    async def _stream(self, request: web.Request, reply: Reply,
                      frames: list[bytes]) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers=reply.headers)
        resp.content_type = reply.content_type or "text/event-stream"
        resp.headers["Cache-Control"] = "no-cache"
        await resp.prepare(request)
        if reply.drop_after_events is not None:
            frames = frames[:reply.drop_after_events]
        if reply.slice_size or reply.random_slices is not None:
            data = b"".join(frames)
            pieces = []
            if reply.random_slices is not None:
                rng = random.Random(reply.random_slices)
                i = 0
                while i < len(data):
                    n = rng.randint(1, 16)
                    pieces.append(data[i:i + n])
                    i += n
            else:
                n = reply.slice_size or 1
                pieces = [data[i:i + n] for i in range(0, len(data), n)]
            frames = pieces
        for i, piece in enumerate(frames):
            if i and reply.delay:
                await asyncio.sleep(reply.delay)
            await resp.write(piece)
        if reply.drop_after_events is not None:
            # end without the terminating chunk: the client sees a broken transfer
            if request.transport is not None:
                request.transport.abort() if hasattr(request.transport, "abort") \
                    else request.transport.close()
            return resp
        await resp.write_eof()
        return resp
