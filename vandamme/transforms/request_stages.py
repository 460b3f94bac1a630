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
from collections import OrderedDict
from typing import Any

import msgspec
import orjson
from msgspec import UNSET, UnsetType

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


# What decoding a client's body can raise, besides a clean JSON error: bytes that are not UTF-8,
# nesting deeper than the decoder's recursion allows.
DECODE_ERRORS = (msgspec.DecodeError, orjson.JSONDecodeError, UnicodeDecodeError, RecursionError, ValueError)


def undecodable(exc: BaseException):
    """The client error for a body that failed to decode (a 400 saying what is wrong)."""
    if isinstance(exc, UnicodeDecodeError):
        return invalid_request(f"request body is not valid UTF-8 (byte {exc.start})")
    if isinstance(exc, RecursionError):
        return invalid_request("request body nests too deeply")
    if isinstance(exc, msgspec.DecodeError):
        return invalid_request(_head_error(exc))
    return invalid_request(f"request body is not valid JSON: {exc}")


class Parse:
    name = "parse"
    __slots__ = ()

    async def run(self, ctx) -> None:
        if not ctx.raw_body:
            raise invalid_request("request body is empty: expected a JSON object")
        try:
            head = _decode_head(ctx.raw_body)
        except DECODE_ERRORS as exc:
            raise undecodable(exc) from None
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
    """The client's whole request as Python objects, every field kept, decoded once per request
    (``ctx.client_body``). Shared by every attempt: read it, never change it."""
    body = ctx.client_body
    if body is None:
        try:
            body = ctx.client_body = orjson.loads(ctx.raw_body)
        except DECODE_ERRORS as exc:
            raise undecodable(exc) from None
    return body


class AnthropicFields(msgspec.Struct):
    """The request fields conversion reads. ``system`` and ``tools`` stay raw bytes: a client
    such as Claude Code sends the same ones on every turn, so they are decoded once and reused."""

    model: Any = UNSET
    messages: Any = UNSET
    max_tokens: Any = UNSET
    metadata: Any = UNSET
    stop_sequences: Any = UNSET
    stream: Any = UNSET
    temperature: Any = UNSET
    top_p: Any = UNSET
    top_k: Any = UNSET
    thinking: Any = UNSET
    tool_choice: Any = UNSET
    system: msgspec.Raw | UnsetType = UNSET
    tools: msgspec.Raw | UnsetType = UNSET


_FIELDS = AnthropicFields.__struct_fields__
_decode_fields = msgspec.json.Decoder(AnthropicFields).decode


class RepeatedParts:
    """A small LRU of decoded ``system``/``tools`` values keyed by their exact bytes. The decoded
    objects are shared between requests: stages read them and never change them."""

    __slots__ = ("size", "_items")

    def __init__(self, size: int = 64):
        self.size = size
        self._items: OrderedDict[bytes, Any] = OrderedDict()

    def decode(self, raw: msgspec.Raw) -> Any:
        key = bytes(raw)
        items = self._items
        value = items.get(key)
        if value is None:
            value = orjson.loads(key)
            items[key] = value
            if len(items) > self.size:
                items.popitem(last=False)
        else:
            items.move_to_end(key)
        return value


class DecodeBody:
    """Decodes this attempt's request into ``ctx.body`` for the stages that read or change it; the
    compiler places it before the first of them, so a request is decoded at most once per attempt.

    ``conversion`` mode (OpenAI-format providers) decodes only the fields conversion reads and
    validates them field by field; fields no OpenAI-format upstream can take are not decoded at all.
    ``full`` mode (Anthropic-format providers, whose body is otherwise forwarded as bytes) decodes
    every field, fresh for each attempt, so that a fallback starts from the client's request.
    """

    name = "decode_body"
    __slots__ = ("mode", "parts")

    def __init__(self, mode: str = "conversion", parts: RepeatedParts | None = None):
        if mode not in ("conversion", "full"):
            raise ValueError(f"decode mode {mode!r}")
        self.mode = mode
        self.parts = parts if parts is not None else RepeatedParts()

    @property
    def detail(self) -> str:
        return self.mode

    async def run(self, ctx) -> None:
        try:
            body = self._decode(ctx)
        except DECODE_ERRORS as exc:
            raise undecodable(exc) from None
        if self.mode == "conversion":
            validate_request(body)
        ctx.body = body

    def _decode(self, ctx) -> dict:
        if self.mode == "full":
            return orjson.loads(ctx.raw_body)
        shared = ctx.client_body
        if shared is not None:  # already decoded for routing: copy its top level
            return {name: shared[name] for name in _FIELDS if name in shared}
        fields = _decode_fields(ctx.raw_body)  # the front already proved it is a JSON object
        body = {}
        for name in _FIELDS:
            value = getattr(fields, name)
            if value is not UNSET:
                body[name] = value
        for name in ("system", "tools"):
            raw = body.get(name)
            if raw is not None:
                body[name] = self.parts.decode(raw)
        return body
