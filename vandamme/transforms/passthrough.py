"""Anthropic-format providers: the client's body goes upstream as it came (zero-copy), with only
the model name spliced in when routing changed it."""
from __future__ import annotations

import re

import orjson

from .request_stages import full_body

_FIRST_KEY_MODEL = re.compile(rb'\s*\{\s*"model"\s*:\s*')
_COLON = re.compile(rb'\s*:\s*')


def splice_model(raw: bytes, old: str, new: str) -> bytes | None:
    """Replace the value of the top-level ``"model"`` key in ``raw`` without re-serialising.

    The top-level key is certain when it is the body's first key (Claude Code and the SDKs put it
    there), or when ``"model"`` occurs once in the body: as a raw token it can only be a key
    (quotes inside JSON strings are escaped), but nested objects (a tool schema, a tool input) may
    have one too. Otherwise return None and let the caller re-serialise.
    """
    old_json = orjson.dumps(old)
    m = _FIRST_KEY_MODEL.match(raw)
    if m is None or not raw.startswith(old_json, m.end()):
        if raw.count(b'"model"') != 1:
            return None
        m = _COLON.match(raw, raw.find(b'"model"') + 7)
        if m is None or not raw.startswith(old_json, m.end()):
            return None
    start = m.end()
    return b"".join((raw[:start], orjson.dumps(new), raw[start + len(old_json):]))


class PassthroughBody:
    """Sets the upstream body and path for an Anthropic-format provider: the client's bytes when no
    stage decoded the request (the model spliced in), else this attempt's changed body."""

    name = "passthrough_body"
    __slots__ = ()

    async def run(self, ctx) -> None:
        ctx.upstream_path = "/v1/messages/count_tokens" if ctx.endpoint == "count_tokens" else "/v1/messages"
        if ctx.body is not None:  # middleware changed the request: send what they made of it
            body = ctx.body
            body["model"] = ctx.model
            ctx.upstream_body = orjson.dumps(body)
            return
        if ctx.model == ctx.requested_model:
            ctx.upstream_body = ctx.raw_body
            return
        spliced = splice_model(ctx.raw_body, ctx.requested_model, ctx.model)
        if spliced is None:
            body = dict(full_body(ctx))
            body["model"] = ctx.model
            spliced = orjson.dumps(body)
        ctx.upstream_body = spliced
