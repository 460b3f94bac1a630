"""Stage runtime: Pipelines that run stages in order, each in its own span when tracing is on.

The stage protocol, Context and the response types live in the kernel (``vandamme.kernel``); a
stage that produces the answer sets ``ctx.response`` to a ``BufferedResponse`` or a
``StreamingResponse``, and later stages may wrap it (e.g. convert a stream chunk by chunk).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from vandamme.kernel import Context, Stage, StreamingResponse
from vandamme.tracing import RUN_TIMES, STAGE_BITS, current as current_trace, perf, register_names


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
    when tracing is on; with tracing off the loop carries no span code at all, and for a request
    that is not sampled it costs one context-variable read. ``nodes`` describe the stages for
    `vandamme graph`; ``middleware`` names the declared ones in order."""

    __slots__ = ("name", "stages", "nodes", "middleware", "_tracer", "_run", "_names")

    def __init__(self, name: str, stages: Sequence[Stage], tracer: Any = None,
                 nodes: Sequence[StageNode] = (), middleware: tuple[str, ...] = ()):
        self.name = name
        self.stages = tuple(stages)
        self.nodes = tuple(nodes)
        self.middleware = middleware
        self._tracer = tracer  # a vandamme.tracing.RequestTracer, or None: tracing off
        names = tuple(s.name for s in self.stages)
        if len(names) >= 1 << STAGE_BITS:
            raise ValueError(f"pipeline {name}: more than {(1 << STAGE_BITS) - 1} stages")
        self._names = register_names(names) if tracer is not None else -1  # what a traced run records
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
        """One run record in the request's Trace (vandamme.tracing): ``[names, parent, provider,
        model, errors, first, *times]``, with the times the stage boundaries, from index
        ``RUN_TIMES`` on — stage ``j`` runs from ``rec[RUN_TIMES + j]`` to ``rec[RUN_TIMES + j +
        1]`` (one clock read per stage: a stage's span ends where the next one's starts) — and the
        run's target from stage ``first`` on. The spans are built from it when the request is
        over, away from the event loop. While the run goes on, ``trace.cur`` is its index: a span
        opened by a stage finds its parent stage from the length of the record."""
        trace = current_trace()
        if trace is None:  # this request was not sampled: the plain loop
            for stage in self.stages:
                await stage.run(ctx)
            return
        trace.ctx = ctx
        runs = trace.runs
        saved = trace.cur  # the parent: a span (< 0), or the running stage of run ``saved``
        parent = trace.parent_ref()
        rec = [self._names, parent, None, None, None, 0, perf()]
        trace.cur = len(runs)
        runs.append(rec)
        try:
            if ctx.provider is not None:
                for stage in self.stages:
                    await stage.run(ctx)
                    rec.append(perf())
            else:  # the target is not known yet: note the stage from which it is (rec[5])
                rec[5] = len(self.stages)
                for stage in self.stages:
                    await stage.run(ctx)
                    rec.append(perf())
                    if ctx.provider is not None:
                        rec[5] = len(rec) - RUN_TIMES - 2  # the stage that just ran
                        for stage in self.stages[rec[5] + 1:]:
                            await stage.run(ctx)
                            rec.append(perf())
                        break
        except BaseException as exc:
            rec.append(perf())
            j = len(rec) - RUN_TIMES - 2
            rec[4] = {j: exc}
            if ctx.provider is not None and rec[5] > j:
                rec[5] = j
            trace.failed = True
            raise
        finally:
            trace.cur = saved
            p = ctx.provider
            if p is not None:
                rec[2] = p.name
            rec[3] = ctx.model
        if parent == -2 and self._tracer.capture_content and type(ctx.response) is StreamingResponse:
            trace.tap = []
            ctx.response.chunks = _tap(ctx.response.chunks, trace.tap)


async def _tap(chunks, into: list, limit: int = 4 * 1024 * 1024):
    """The answer's chunks as they pass, kept (up to ``limit`` bytes) for the trace's content
    attributes (``telemetry.capture_content``)."""
    size = 0
    async for chunk in chunks:
        if size < limit:
            into.append(chunk)
            size += len(chunk)
        yield chunk
