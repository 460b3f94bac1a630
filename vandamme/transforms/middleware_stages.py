"""Pipeline stages that run a :class:`~vandamme.kernel.Middleware`'s hooks.

A middleware declared in a spec becomes up to two stages, both named after it: one on the way in
(``on_request``) and one on the way out (``on_response`` for a buffered answer, ``on_event`` for
each event of a stream). Only the hooks a class overrides get a stage, so an absent hook costs
nothing. Anthropic-side hooks see ``ctx.body`` (decoded once by ``decode_body``); OpenAI-side
hooks see ``ctx.upstream_json`` (the converted request, serialised after the last of them).
"""
from __future__ import annotations

import inspect
from typing import Any, AsyncIterator

import orjson

from vandamme.kernel import ANTHROPIC, BufferedResponse, Context, Middleware, StreamingResponse

from .sse import SSEDecoder, encode



class MiddlewareRequest:
    """``on_request`` of one middleware."""

    __slots__ = ("name", "middleware", "hook", "is_async", "anthropic")

    def __init__(self, middleware: Middleware):
        self.name = middleware.name
        self.middleware = middleware
        self.hook = middleware.on_request
        self.is_async = inspect.iscoroutinefunction(self.hook)
        self.anthropic = middleware.consumes == ANTHROPIC

    async def run(self, ctx: Context) -> None:
        body = ctx.body if self.anthropic else ctx.upstream_json
        if body is None:  # the compiler places a decode before every body-reading stage
            raise RuntimeError(f"{self.name}: no decoded request (the pipeline has no decode before it)")
        if self.is_async:
            await self.hook(ctx, body)
        else:
            self.hook(ctx, body)


class MiddlewareResponse:
    """``on_response`` and ``on_event`` of one middleware, on the way out."""

    __slots__ = ("name", "middleware", "on_response", "on_event")

    def __init__(self, middleware: Middleware, on_response: bool, on_event: bool):
        self.name = middleware.name
        self.middleware = middleware
        self.on_response = middleware.on_response if on_response else None
        self.on_event = middleware.on_event if on_event else None

    async def run(self, ctx: Context) -> None:
        resp = ctx.response
        if resp is None or resp.status != 200:
            return
        if isinstance(resp, BufferedResponse):
            if self.on_response is not None:
                try:
                    data = orjson.loads(resp.body)
                except orjson.JSONDecodeError:
                    return  # not a JSON answer: nothing for this hook
                if isinstance(data, dict):
                    self.on_response(ctx, data)
                    resp.body = orjson.dumps(data)
        elif isinstance(resp, StreamingResponse) and self.on_event is not None:
            resp.chunks = self._events(ctx, resp.chunks)

    async def _events(self, ctx: Context, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        decoder = SSEDecoder()
        hook = self.on_event
        async for chunk in chunks:
            out = [self._event(ctx, hook, ev) for ev in decoder.feed(chunk)]
            data = b"".join(f for f in out if f)
            if data:
                yield data
        tail = b"".join(f for f in (self._event(ctx, hook, ev) for ev in decoder.flush()) if f)
        if tail:
            yield tail

    @staticmethod
    def _event(ctx: Context, hook: Any, ev: Any) -> bytes:
        try:
            data = orjson.loads(ev.data)
        except orjson.JSONDecodeError:
            return encode(ev.event, ev.data)  # e.g. OpenAI's "data: [DONE]": passed on
        if not isinstance(data, dict):
            return encode(ev.event, ev.data)
        if hook(ctx, ev.event or "message", data) is False:
            return b""
        return encode(ev.event, data)


def middleware_stages(middleware: Middleware, env: Any = None) -> tuple[Any, Any]:
    """(request stage or None, response stage or None) for ``middleware``'s overridden hooks."""
    hooks = middleware.hooks()
    request = MiddlewareRequest(middleware) if "on_request" in hooks else None
    response = None
    if "on_response" in hooks or "on_event" in hooks:
        response = MiddlewareResponse(middleware, "on_response" in hooks, "on_event" in hooks)
    return request, response
