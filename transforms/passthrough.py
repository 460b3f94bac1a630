"""Anthropic-format providers: the client's body goes upstream as it came (zero-copy), with only
the model name spliced in when routing changed it."""
from __future__ import annotations

import re

import orjson

_MODEL_KEY = re.compile(rb'"model"\s*:\s*"')


def splice_model(raw: bytes, old: str, new: str) -> bytes | None:
    """Replace the value of the top-level ``"model"`` key in ``raw`` without re-serialising.

    ``"model"`` as a raw token can only be a key (inside JSON strings quotes are escaped), but a
    nested object (a tool input, say) may have one too: splice only when there is exactly one
    ``"model": "<old>"`` in the body, else return None and let the caller re-serialise.
    """
    old_json = orjson.dumps(old)
    hits = [m for m in _MODEL_KEY.finditer(raw) if raw.startswith(old_json[1:], m.end())]
    if len(hits) != 1 or len(_MODEL_KEY.findall(raw)) != 1:
        return None
    start = hits[0].end() - 1
    return raw[:start] + orjson.dumps(new) + raw[start + len(old_json):]


class PassthroughBody:
    """Sets the upstream body and path for an Anthropic-format provider."""

    name = "passthrough_body"
    __slots__ = ()

    async def run(self, ctx) -> None:
        ctx.upstream_path = "/v1/messages/count_tokens" if ctx.endpoint == "count_tokens" else "/v1/messages"
        if ctx.model == ctx.requested_model:
            ctx.upstream_body = ctx.raw_body
            return
        spliced = splice_model(ctx.raw_body, ctx.requested_model, ctx.model)
        if spliced is None:
            body = dict(ctx.body)
            body["model"] = ctx.model
            spliced = orjson.dumps(body)
        ctx.upstream_body = spliced
