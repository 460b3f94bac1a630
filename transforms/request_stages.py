"""Front stages every request walks: `parse` (the request head) and `validate`; and
`decode_body`, the full decode that only converting pipelines need.

The front reads only what routing needs — model, max_tokens, stream, thinking, the number of
messages and tools — with msgspec decoding into a small struct that skips everything else (about
ten times cheaper than building the whole body as Python objects for a Claude-Code-sized
request). An Anthropic-format provider then forwards the body bytes without ever decoding them in
full; an OpenAI-format provider decodes and validates the whole body in `decode_body`.
"""
from __future__ import annotations

import re

import msgspec
import orjson

from .anthropic_to_openai import validate_request
from .errors import invalid_request


class Thinking(msgspec.Struct):
    type: str = ""


class RequestHead(msgspec.Struct):
    """The top-level fields the gateway routes on; the rest of the body stays bytes."""

    model: str
    max_tokens: int | None = None
    messages: list[msgspec.Raw] | None = None
    stream: bool | None = None
    tools: list[msgspec.Raw] | None = None
    thinking: Thinking | None = None


_decode_head = msgspec.json.Decoder(RequestHead).decode
_AT = re.compile(r" - at `\$\.?([^`]*)`$")
_MISSING = re.compile(r"^Object missing required field `([^`]+)`")


def _head_error(exc: msgspec.DecodeError) -> str:
    text = str(exc)
    if not isinstance(exc, msgspec.ValidationError):
        return f"request body is not valid JSON: {text}"
    m = _MISSING.match(text)
    if m:
        return f"{m.group(1)}: field required"
    m = _AT.search(text)
    if m:
        what = text[:m.start()].replace(" | null", "")
        return f"{m.group(1) or 'body'}: {what}"
    if text.startswith("Expected `object`"):
        return "request body must be a JSON object"
    return text


class Parse:
    name = "parse"
    __slots__ = ()

    async def run(self, ctx) -> None:
        if not ctx.raw_body:
            raise invalid_request("request body is empty: expected a JSON object")
        try:
            head = _decode_head(ctx.raw_body)
        except msgspec.DecodeError as exc:
            raise invalid_request(_head_error(exc)) from None
        ctx.head = head
        ctx.requested_model = head.model
        ctx.stream = head.stream is True


class Validate:
    """Checks the top-level fields the gateway relies on. Anthropic-format upstreams judge the
    rest themselves; OpenAI-format pipelines validate the whole body in `decode_body`."""

    name = "validate"
    __slots__ = ()

    async def run(self, ctx) -> None:
        head = ctx.head
        if not head.model:
            raise invalid_request("model: must be a non-empty string")
        if head.messages is None:
            raise invalid_request("messages: field required")
        if ctx.endpoint == "count_tokens":
            ctx.stream = False
            return
        if head.max_tokens is None:
            raise invalid_request("max_tokens: field required")
        if head.max_tokens <= 0:
            raise invalid_request("max_tokens: must be a positive integer")
        if not head.messages:
            raise invalid_request("messages: must contain at least one message")


def full_body(ctx) -> dict:
    """The whole request as Python objects, decoded once per request on first need."""
    body = ctx.body
    if body is None:
        body = ctx.body = orjson.loads(ctx.raw_body)
    return body


class DecodeBody:
    """Decodes the whole body (and, for messages, validates it field by field) for the stages
    that convert it."""

    name = "decode_body"
    __slots__ = ("check",)

    def __init__(self, check: bool = True):
        self.check = check

    async def run(self, ctx) -> None:
        body = full_body(ctx)
        if self.check:
            validate_request(body)
