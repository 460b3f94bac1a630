"""A fake Anthropic Messages API on 127.0.0.1 speaking the exact wire format.

Records every request (path, headers, raw body) so tests can check what the gateway sent, and
answers from a queue of scripted replies (a default text answer when the queue is empty).
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class AnthropicReply:
    text: str = "Hello from the fake Anthropic upstream."
    status: int = 200
    error_body: dict | None = None
    headers: dict = field(default_factory=dict)
    chunk_delay: float = 0.0
    drop_after_events: int | None = None  # close the connection after N SSE events


def message_json(model: str, text: str) -> dict:
    return {
        "id": "msg_fake0001",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 7},
    }


def sse_events(model: str, text: str) -> list[bytes]:
    def ev(name, data):
        return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()

    words = text.split(" ")
    out = [ev("message_start", {"type": "message_start", "message": {**message_json(model, ""), "content": [],
                                                                     "stop_reason": None,
                                                                     "usage": {"input_tokens": 12, "output_tokens": 1}}}),
           ev("content_block_start", {"type": "content_block_start", "index": 0,
                                      "content_block": {"type": "text", "text": ""}}),
           ev("ping", {"type": "ping"})]
    for i, w in enumerate(words):
        piece = w if i == 0 else " " + w
        out.append(ev("content_block_delta", {"type": "content_block_delta", "index": 0,
                                              "delta": {"type": "text_delta", "text": piece}}))
    out += [ev("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ev("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                 "usage": {"output_tokens": 7}}),
            ev("message_stop", {"type": "message_stop"})]
    return out


class FakeAnthropic:
    def __init__(self):
        self.requests: list[dict] = []
        self.replies: list[AnthropicReply] = []
        self.base_url = ""
        self.cancelled = asyncio.Event()
        self._runner: web.AppRunner | None = None

    def enqueue(self, *replies: AnthropicReply) -> None:
        self.replies.extend(replies)

    async def __aenter__(self):
        app = web.Application()
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/v1/messages/count_tokens", self._count)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc):
        await self._runner.cleanup()

    async def _record(self, request: web.Request) -> bytes:
        raw = await request.read()
        self.requests.append({"path": request.path, "headers": dict(request.headers), "body": raw,
                              "json": json.loads(raw)})
        return raw

    async def _count(self, request: web.Request):
        await self._record(request)
        return web.json_response({"input_tokens": 42})

    async def _messages(self, request: web.Request):
        await self._record(request)
        body = self.requests[-1]["json"]
        reply = self.replies.pop(0) if self.replies else AnthropicReply()
        if reply.status != 200:
            return web.json_response(reply.error_body or {"type": "error", "error": {
                "type": "api_error", "message": "upstream failed"}}, status=reply.status, headers=reply.headers)
        if not body.get("stream"):
            return web.json_response(message_json(body["model"], reply.text), headers=reply.headers)
        resp = web.StreamResponse(status=200, headers={"content-type": "text/event-stream",
                                                       "cache-control": "no-cache", **reply.headers})
        await resp.prepare(request)
        try:
            for i, event in enumerate(sse_events(body["model"], reply.text)):
                if reply.drop_after_events is not None and i >= reply.drop_after_events:
                    request.transport.close()
                    return resp
                await resp.write(event)
                if reply.chunk_delay:
                    await asyncio.sleep(reply.chunk_delay)
        except (asyncio.CancelledError, ConnectionResetError):
            self.cancelled.set()
            raise
        await resp.write_eof()
        return resp
