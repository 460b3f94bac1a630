"""Stage runtime: a per-request Context, the Stage protocol, and Pipelines that run stages in spans.

A stage is a small object with a ``name`` (its span name) and an async ``run(ctx)`` that reads and
writes the Context. A stage that produces the answer sets ``ctx.response`` to a ``BufferedResponse``
or a ``StreamingResponse``; later stages may wrap it (e.g. convert a stream chunk by chunk).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Protocol, Sequence

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode, get_current_span


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
    """Everything one request carries through the graph. Stages never reach into globals."""

    request_id: str
    raw_body: bytes
    headers: Any  # inbound request headers (case-insensitive mapping)
    endpoint: str = "messages"  # messages | count_tokens
    started: float = field(default_factory=time.perf_counter)
    head: Any = None  # the request's top-level fields (transforms.request_stages.RequestHead)
    body: dict | None = None  # the whole Anthropic request, decoded only where a stage needs it
    requested_model: str = ""  # the model string the client sent
    stream: bool = False
    provider: Any = None  # engine.compiler.Provider chosen for this attempt
    model: str = ""  # upstream model name for the chosen provider
    resolution: list = field(default_factory=list)  # how the model was resolved (for logs/explain)
    targets: list = field(default_factory=list)  # [(provider, model), ...] primary then fallbacks
    api_key: str | None = None
    upstream_headers: dict[str, str] = field(default_factory=dict)
    upstream_body: bytes | None = None  # what the upstream stage sends
    upstream_path: str = ""  # path appended to the provider's base URL
    response: Response | None = None
    attrs: dict = field(default_factory=dict)  # free-form per-request data for stages
    timings: dict = field(default_factory=dict)  # stage name -> seconds


class Stage(Protocol):
    name: str

    async def run(self, ctx: Context) -> None: ...


class Pipeline:
    """An ordered, immutable list of stages. ``run`` executes them in order, each in its own span
    when tracing is on; with tracing off the loop carries no span overhead at all."""

    __slots__ = ("name", "stages", "_tracer", "_run")

    def __init__(self, name: str, stages: Sequence[Stage], tracer: trace.Tracer | None = None):
        self.name = name
        self.stages = tuple(stages)
        self._tracer = tracer
        self._run = self._run_traced if tracer is not None else self._run_plain

    @property
    def stage_names(self) -> list[str]:
        return [s.name for s in self.stages]

    async def run(self, ctx: Context) -> None:
        await self._run(ctx)

    async def _run_plain(self, ctx: Context) -> None:
        for stage in self.stages:
            await stage.run(ctx)

    async def _run_traced(self, ctx: Context) -> None:
        if not recording():  # this request was not sampled: no stage spans at all
            return await self._run_plain(ctx)
        tracer = self._tracer
        for stage in self.stages:
            with tracer.start_as_current_span(stage.name, record_exception=True,
                                              set_status_on_exception=False) as span:
                try:
                    await stage.run(ctx)
                except BaseException as exc:
                    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                    raise
                finally:
                    span.set_attributes(span_attributes(ctx, stage.name))


def recording() -> bool:
    """Whether the request's current span is being recorded (sampled)."""
    return get_current_span().is_recording()


def span_attributes(ctx: Context, stage: str) -> dict:
    attrs = {"vandamme.stage": stage, "vandamme.request_id": ctx.request_id}
    if ctx.provider is not None:
        attrs["vandamme.provider"] = ctx.provider.name
        attrs["gen_ai.system"] = ctx.provider.name
    if ctx.model:
        attrs["vandamme.model"] = ctx.model
        attrs["gen_ai.request.model"] = ctx.model
    return attrs
