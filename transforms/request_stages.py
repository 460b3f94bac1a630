"""Front stages every request walks: `parse` (JSON) and `validate` (Anthropic request shape)."""
from __future__ import annotations

import orjson

from .anthropic_to_openai import validate_request
from .errors import invalid_request


class Parse:
    name = "parse"
    __slots__ = ()

    async def run(self, ctx) -> None:
        if not ctx.raw_body:
            raise invalid_request("request body is empty: expected a JSON object")
        try:
            body = orjson.loads(ctx.raw_body)
        except orjson.JSONDecodeError as exc:
            raise invalid_request(f"request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise invalid_request("request body must be a JSON object")
        ctx.body = body
        ctx.requested_model = body.get("model") if isinstance(body.get("model"), str) else ""
        ctx.stream = body.get("stream") is True


class Validate:
    """Checks the fields the gateway relies on; the upstream judges the rest."""

    name = "validate"
    __slots__ = ()

    async def run(self, ctx) -> None:
        body = ctx.body
        if ctx.endpoint == "count_tokens":
            model = body.get("model")
            if not isinstance(model, str) or not model:
                raise invalid_request("model: field required (a non-empty string)")
            messages = body.get("messages")
            if not isinstance(messages, list):
                raise invalid_request("messages: field required (a list of messages)")
            ctx.stream = False
            return
        validate_request(body)
