"""The stage kernel: what every stage, built-in or user-written, is made of.

It holds the per-request :class:`Context`, the :class:`Stage` protocol and its declared
:class:`StageKind`, the wire formats a stage can consume, the response types, and
:class:`Middleware`, the base class of the stages a spec declares under ``middleware:``.

This module imports nothing of the application: transforms (the stages) depend on it; the compiler,
server and CLI sit on top of both. Plugin authors import from here (``from vandamme.kernel import
Middleware``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, AsyncIterator, Callable, ClassVar, Mapping, Protocol

from loguru import logger
from . import tracing as _tracing

__all__ = [
    "ANTHROPIC", "OPENAI", "WIRE_FORMATS", "BufferedResponse", "Context", "Middleware", "Response",
    "Stage", "StageKind", "StreamingResponse", "recording",
]

# Wire formats a stage consumes. ``anthropic`` is the client's Messages request and answer (for an
# Anthropic-format provider also what goes upstream); ``openai`` is an OpenAI-format provider's
# chat-completions request and answer, on the provider's side of the conversion.
ANTHROPIC = "anthropic"
OPENAI = "openai"
WIRE_FORMATS = (ANTHROPIC, OPENAI)


class StageKind(str, Enum):
    """What a stage does in a pipeline (shown by `vandamme graph`)."""

    REQUEST = "request"    # changes or inspects the request on its way in
    CONTROL = "control"    # decides where the request goes: resolve, dispatch, retry, fallback
    RESPONSE = "response"  # changes the answer on its way out; sees each stream event
    TERMINAL = "terminal"  # produces the answer (the upstream exchange, a local answer)


@dataclass(slots=True)
class BufferedResponse:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


@dataclass(slots=True)
class StreamingResponse:
    """An answer sent chunk by chunk as it arrives. ``chunks`` yields bytes; ``close`` releases
    the upstream (called when the client goes away or the stream ends)."""

    status: int
    chunks: AsyncIterator[bytes]
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "text/event-stream"
    close: Callable[[], Any] | None = None


Response = BufferedResponse | StreamingResponse


@dataclass(slots=True)
class Context:
    """Everything one request carries through the graph. Stages never reach into globals.

    The first group of fields is the client's request and where it was routed; it does not change
    between attempts. The second group belongs to one attempt at one target: ``start_attempt``
    resets it whole, so a fallback starts from the client's request, not from what an earlier
    attempt's stages changed. A stage keeps data of its own in ``slot(stage)``.
    """

    request_id: str
    raw_body: bytes  # the client's body, as received; never changed
    headers: Any  # inbound request headers (case-insensitive mapping)
    endpoint: str = "messages"  # messages | count_tokens
    started: float = field(default_factory=time.perf_counter)
    head: Any = None  # the request's top-level fields (vandamme.transforms.request_stages.RequestHead)
    client_body: dict | None = None  # the whole client request decoded (lazily); never changed
    requested_model: str = ""  # the model string the client sent
    stream: bool = False
    client_name: str | None = None  # the name of the gateway key the client presented (auth on)
    gateway_key_in_client_key: bool = False  # x-api-key / Authorization hold a gateway key
    route: Any = None  # the matched route (vandamme.transforms.routing.Route) or None
    resolution: list = field(default_factory=list)  # how the model was resolved (for logs/explain)
    targets: list = field(default_factory=list)  # [(provider, model), ...] primary then fallbacks
    fallback_errors: list = field(default_factory=list)  # (provider, model, status, type) per failed target
    timings: dict = field(default_factory=dict)  # stage name -> seconds
    # ---- one attempt at one target (reset by start_attempt)
    attempt: int = 0  # index into targets
    provider: Any = None  # the Provider of this attempt
    model: str = ""  # upstream model name for this attempt
    body: dict | None = None  # this attempt's Anthropic request as stages change it (decoded on demand)
    api_key: str | None = None
    key_order: list[int] | None = None  # the provider key ring's order for this attempt
    upstream_headers: dict[str, str] = field(default_factory=dict)
    upstream_json: dict | None = None  # the OpenAI request while OpenAI-side stages work on it
    upstream_body: bytes | None = None  # what the upstream stage sends
    upstream_path: str = ""  # path appended to the provider's base URL
    upstream_attempts: int = 0  # HTTP exchanges made for this attempt (retries and key failover)
    stop_sequences: list | None = None  # the client's stop_sequences (stop_reason needs them)
    response: Response | None = None
    answer_facts: Any = None  # what the answer noted (usage, stop reason, model): AnswerFacts-like
    slots: dict = field(default_factory=dict)  # stage -> its private per-attempt data
    # ---- the request's outcome, set by ``finish`` (the server calls it once, when the answer is
    # complete: buffered when returned, a stream when it ends or fails, errors included)
    status: int = 0  # the HTTP status sent (499: the client went away before an answer was sent)
    error_type: str | None = None  # Anthropic error type, or "client_closed"; None on success
    input_tokens: int | None = None  # token usage of the answer, when the gateway saw it
    output_tokens: int | None = None
    finish_reason: str | None = None  # the answer's stop reason (Anthropic's: end_turn, tool_use...)
    response_model: str | None = None  # the model the upstream says answered
    first_token_at: float | None = None  # time.perf_counter() of the first streamed answer byte
    finished_at: float | None = None  # time.perf_counter() when finish ran
    on_finish: list = field(default_factory=list)  # callables fn(ctx), run once by finish
    # ---- tracing (vandamme.tracing): what the upstream attempt span reports
    upstream_status: int = 0  # HTTP status of the last upstream answer's head (0: none received)

    def start_attempt(self, index: int, provider: Any, model: str) -> None:
        """Begin an attempt at ``targets[index]`` from the client's request."""
        self.attempt = index
        self.provider = provider
        self.model = model
        self.body = None
        self.api_key = None
        self.key_order = None
        self.upstream_headers = {}
        self.upstream_json = None
        self.upstream_body = None
        self.upstream_path = ""
        self.upstream_attempts = 0
        self.stop_sequences = None
        self.response = None
        self.answer_facts = None
        self.slots = {}

    def finish(self, status: int, error_type: str | None = None) -> None:
        """The answer is complete (or failed, or the client went away): record the outcome, fold in
        what the answer noted (``answer_facts``: usage, stop reason, model) where a stage did not
        set it, and run the ``on_finish`` callbacks. Only the first call counts; a failing callback
        is logged and never reaches the client."""
        if self.finished_at is not None:
            return
        self.finished_at = time.perf_counter()
        self.status = status
        self.error_type = error_type
        facts = self.answer_facts
        if facts is not None:
            if self.input_tokens is None:
                self.input_tokens = facts.input_tokens
            if self.output_tokens is None:
                self.output_tokens = facts.output_tokens
            if self.finish_reason is None:
                self.finish_reason = facts.stop_reason
            if self.response_model is None:
                self.response_model = facts.model
        for fn in self.on_finish:
            try:
                fn(self)
            except Exception as exc:  # noqa: BLE001 - telemetry never fails a request
                logger.opt(exception=exc).error("{} on_finish callback {!r} failed: {}", self.request_id,
                                                getattr(fn, "__qualname__", fn), type(exc).__name__)

    def slot(self, owner: Any) -> dict:
        """Data private to ``owner`` (a stage) for this attempt."""
        data = self.slots.get(owner)
        if data is None:
            data = self.slots[owner] = {}
        return data


class Stage(Protocol):
    """A pipeline stage: a ``name`` (its span name) and ``run(ctx)``. Its kind, the wire format it
    consumes and whether it needs the decoded body are declared once, in the stage registry."""

    name: str

    async def run(self, ctx: Context) -> None: ...


def recording() -> bool:
    """Whether the request being served is traced (sampled): its spans are being recorded
    (``vandamme.tracing``)."""
    return _tracing.current() is not None


class Middleware:
    """Base class of the stages declared under ``middleware:`` (global, per route, per provider).

    A subclass sets ``name``, optionally ``consumes`` (``"anthropic"``: the client's request and
    answer; ``"openai"``: an OpenAI-format provider's request and answer, after conversion) and
    ``config_schema`` (a JSON Schema object with ``default`` values), and overrides the hooks it
    needs. A hook that is not overridden costs nothing: no decode, no span.

    * ``on_request(ctx, body)``: the request on its way in, decoded; change it in place. Assign
      top-level keys rather than mutating nested values: nested values may be shared with other
      requests (``body["system"] = [...]``, not ``body["system"].append(...)``). May be ``async``.
    * ``on_response(ctx, body)``: a non-streamed answer (status 200), decoded; change it in place.
    * ``on_event(ctx, event, data)``: each event of a streamed answer (``event`` is the SSE event
      name, ``data`` the decoded JSON); change ``data`` in place, or return ``False`` to drop it.

    ``self.config`` is the stage's configuration from the spec, defaults applied. The instance is
    built once at compile time and shared by every request: keep per-request data in
    ``ctx.slot(self)``.
    """

    name: ClassVar[str] = ""
    consumes: ClassVar[str] = ANTHROPIC
    config_schema: ClassVar[Mapping[str, Any]] = {"type": "object", "properties": {},
                                                  "additionalProperties": False}
    description: ClassVar[str] = ""

    def __init__(self, config: Mapping[str, Any]):
        self.config = config

    def on_request(self, ctx: Context, body: dict) -> Any:
        return None

    def on_response(self, ctx: Context, body: dict) -> None:
        return None

    def on_event(self, ctx: Context, event: str, data: dict) -> bool | None:
        return None

    @classmethod
    def hooks(cls) -> tuple[str, ...]:
        """The hooks this class overrides."""
        return tuple(h for h in ("on_request", "on_response", "on_event")
                     if getattr(cls, h) is not getattr(Middleware, h))
