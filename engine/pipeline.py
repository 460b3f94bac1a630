"""Stage runtime: Pipelines that run stages in order, each in its own span when tracing is on.

The stage protocol, Context and the response types live in the kernel (``vandamme.kernel``); a
stage that produces the answer sets ``ctx.response`` to a ``BufferedResponse`` or a
``StreamingResponse``, and later stages may wrap it (e.g. convert a stream chunk by chunk).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from opentelemetry import trace

from vandamme.kernel import Context, Stage, recording
from vandamme.secrets import record_error


@dataclass(frozen=True, slots=True)
class StageNode:
    """A stage in a compiled pipeline, with what the registry declares of it and where it came
    from: ``origin`` is the spec position (``file:line:col``), ``env:VAR`` or ``built in``."""

    stage: Any
    name: str
    kind: str
    consumes: str
    needs_body: bool
    origin: str
    side: str  # "request" (on the way in) or "response" (on the way out)
    defined_by: str = "built in"  # where the stage's code comes from: built in, plugin X, import Y

    @property
    def detail(self) -> str | None:
        return getattr(self.stage, "detail", None)

    def as_dict(self) -> dict:
        out = {"name": self.name, "kind": self.kind, "consumes": self.consumes, "side": self.side,
               "needs_body": self.needs_body, "source": self.origin, "defined_by": self.defined_by}
        if self.detail:
            out["detail"] = self.detail
        return out


class Pipeline:
    """An ordered, immutable list of stages. ``run`` executes them in order, each in its own span
    when tracing is on; with tracing off the loop carries no span overhead at all. ``nodes``
    describe the stages for `vandamme graph`; ``middleware`` names the declared ones in order."""

    __slots__ = ("name", "stages", "nodes", "middleware", "_tracer", "_run")

    def __init__(self, name: str, stages: Sequence[Stage], tracer: trace.Tracer | None = None,
                 nodes: Sequence[StageNode] = (), middleware: tuple[str, ...] = ()):
        self.name = name
        self.stages = tuple(stages)
        self.nodes = tuple(nodes)
        self.middleware = middleware
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
            with tracer.start_as_current_span(stage.name, record_exception=False,
                                              set_status_on_exception=False) as span:
                try:
                    await stage.run(ctx)
                except BaseException as exc:
                    record_error(span, exc)
                    raise
                finally:
                    span.set_attributes(span_attributes(ctx, stage.name))


def span_attributes(ctx: Context, stage: str) -> dict:
    attrs = {"vandamme.stage": stage, "vandamme.request_id": ctx.request_id}
    if ctx.client_name is not None:
        attrs["vandamme.client"] = ctx.client_name
    if ctx.provider is not None:
        attrs["vandamme.provider"] = ctx.provider.name
        attrs["gen_ai.system"] = ctx.provider.name
    if ctx.model:
        attrs["vandamme.model"] = ctx.model
        attrs["gen_ai.request.model"] = ctx.model
    return attrs
