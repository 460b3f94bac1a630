"""Request tracing on the hot path: plain numbers, no OpenTelemetry objects.

A sampled request carries a :class:`Trace` (a context variable set by the server for the request's
task) that collects plain values:

* ``runs``: one record per pipeline run (``vandamme.engine.pipeline``), ``[names, parent, provider,
  model, errors, first, *times]``: ``names`` indexes the stage names in :data:`NAMES`; ``errors``
  is None or ``{stage index: exception}``; the provider and model are the run's target (noted when
  it ends), known from stage ``first`` on; from index :data:`RUN_TIMES` on, the stage boundaries
  (``time.perf_counter()`` floats: stage ``j`` runs from ``run[RUN_TIMES + j]`` to
  ``run[RUN_TIMES + j + 1]``), in the record itself rather than in a list of their own (one
  object fewer per run for the garbage collector to follow);
* ``spans``: any other span, ``[name, parent, start, end, kind, data, error, events]``: index 0
  is the server span (filled by :meth:`RequestTracer.finish`); the upstream stage adds one CLIENT
  span per HTTP exchange; anything holding the gateway's tracer can open one with
  :meth:`RequestTracer.start_as_current_span`. ``kind`` is an OTLP SpanKind number (INTERNAL 1,
  SERVER 2, CLIENT 3) with ``data`` an attribute dict, or :data:`SERVER_INFO` /
  :data:`ATTEMPT_INFO` with ``data`` a tuple of values in a fixed order (``vandamme.engine.span_export``
  turns them into the semantic-convention attributes).

A parent is a *reference*: ``(run index << 10) | stage index`` for a stage span, ``-(index + 2)``
for a span of ``spans`` (the server span is ``-2``), ``-1`` for none (the remote parent or the
trace root). ``Trace.cur`` tells what new spans are children of (:meth:`Trace.parent_ref`): the
running stage of a run (its index), or a span (its reference); no stage pays for it.

No span id is drawn and no OpenTelemetry object is made on the hot path: when the request is over
(for a stream, when its last byte is sent) the server hands the finished Trace to the tracer's
*sink*, which gives every span its id (so that the parent links — server span, stage spans,
upstream CLIENT spans — are consistent by construction) and builds the spans elsewhere: in an
exporter process (``vandamme.engine.span_export``) or an SDK TracerProvider (``vandamme.engine.telemetry``).

The sampling decision is taken once, when the request starts (:meth:`RequestTracer.begin`): an
incoming W3C ``traceparent`` decides by its sampled flag (parent-based) and gives the trace id and
the remote parent; without one a trace-id ratio decides (the OpenTelemetry ``TraceIdRatioBased``
rule, on the low 64 bits of the trace id). An unsampled request gets no Trace: every stage runs the
plain loop. This module imports nothing of the application (the kernel's layer).
"""
from __future__ import annotations

import random
import re
import time
from contextvars import ContextVar
from typing import Any, Callable

__all__ = ["ATTEMPT_INFO", "CLIENT", "INTERNAL", "RUN_TIMES", "SERVER", "SERVER_INFO", "RequestTracer", "Trace",
           "current", "parse_traceparent", "perf", "run_offsets", "stage_spans"]

INTERNAL, SERVER, CLIENT = 1, 2, 3  # OTLP SpanKind numbers
SERVER_INFO, ATTEMPT_INFO = 12, 13  # a SERVER / CLIENT span whose data is a tuple of values
_KIND_NAMES = {"INTERNAL": INTERNAL, "SERVER": SERVER, "CLIENT": CLIENT}
ROOT = -1
STAGE_BITS = 10  # a pipeline has fewer than 1024 stages
RUN_TIMES = 6  # where a run record's stage boundaries start (see the module's docstring)

def stage_spans(run: list) -> int:
    """How many stage spans a run record holds so far: its stage boundaries less one (while a
    stage runs, that is also the index of the running stage)."""
    return len(run) - RUN_TIMES - 1


def run_offsets(runs) -> tuple[list[int], int]:
    """(index of each run's first stage span, number of stage spans in all) in a trace's span
    order: the stage spans come first, run after run."""
    firsts = []
    n = 0
    for run in runs:
        firsts.append(n)
        n += stage_spans(run)
    return firsts, n


perf = time.perf_counter  # span times on the hot path; Trace.wall0/perf0 turn them into wall-clock ns
_bits = random.getrandbits  # ids need to be unique, not secret (as the OpenTelemetry SDK's)
_trace: ContextVar["Trace | None"] = ContextVar("vandamme_trace", default=None)
current = _trace.get  # the Trace of the request being served, None when it is not sampled

_LOW64 = (1 << 64) - 1


class Trace:
    """The records of one sampled request."""

    __slots__ = ("trace_id", "parent_id", "state", "wall0", "perf0", "runs", "spans", "cur", "ctx",
                 "failed", "tap")

    def __init__(self, trace_id: int, parent_id: int = 0, state: str | None = None):
        self.trace_id = trace_id  # 128-bit int
        self.parent_id = parent_id  # the remote parent's span id (incoming traceparent), 0 for a root
        self.state = state  # the incoming tracestate header, carried on every span
        self.wall0 = time.time_ns()  # the clocks at the start: wall ns = wall0 + (t - perf0) * 1e9
        self.perf0 = perf()  # (also the server span's start)
        self.runs: list = []
        self.spans: list = [None]  # index 0: the server span
        self.cur = -2  # a run index (its running stage) or a span reference: see parent_ref
        self.ctx: Any = None  # the request's Context (set by the pipeline)
        self.failed = False  # some record holds an exception to convert
        self.tap: list | None = None  # streamed answer bytes, when content is captured

    def parent_ref(self) -> int:
        """The reference of the span a span opened now is the child of: the running stage of run
        ``cur`` (``cur`` >= 0: the last of its times is that stage's start), or span ``cur``."""
        cur = self.cur
        if cur < 0:
            return cur
        return (cur << STAGE_BITS) | stage_spans(self.runs[cur])

    def add_span(self, rec: list) -> int:
        """Append a span record (its parent is ``rec[1]``); returns its reference."""
        self.spans.append(rec)
        return -len(self.spans) - 1


_TRACEPARENT = re.compile(r"^[ \t]*([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?[ \t]*$")


def parse_traceparent(value: str) -> tuple[int, int, bool] | None:
    """``(trace id, parent span id, sampled)`` of a W3C ``traceparent`` header, None when invalid
    (then the request starts a trace of its own), as the OpenTelemetry propagator reads it."""
    m = _TRACEPARENT.match(value)
    if m is None:
        return None
    version, trace_hex, span_hex, flags, rest = m.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, bool(int(flags, 16) & 1)


# Stage-name tuples of the pipelines, registered once each (at compile time): a run record names
# its stages by an index into NAMES, so that the names are not copied per request.
NAMES: list[tuple] = []
_NAME_IDS: dict[tuple, int] = {}


def register_names(names: tuple) -> int:
    """The index of ``names`` (a pipeline's stage names) in :data:`NAMES`."""
    i = _NAME_IDS.get(names)
    if i is None:
        i = _NAME_IDS[names] = len(NAMES)
        NAMES.append(names)
    return i


def ratio_bound(ratio: float) -> int:
    """The OpenTelemetry TraceIdRatioBased bound: sampled when (trace id & 2**64-1) < bound."""
    return round(max(0.0, min(1.0, ratio)) * (1 << 64))


class RequestTracer:
    """The gateway's tracer: decides per request whether it is traced (:meth:`begin`), lets code
    open spans (:meth:`start_as_current_span`, the OpenTelemetry Tracer method's shape), and hands
    each finished Trace to ``sink`` (:meth:`finish`).

    ``ratio`` and ``parent_based`` are the sampler (OTEL_TRACES_SAMPLER semantics); ``decide``, when
    given, replaces them: ``decide(trace_id, parent, tracestate)`` with ``parent`` the parsed
    traceparent or None (an SDK TracerProvider's own sampler). ``finisher(tracer, trace, ...)``
    fills the server span and returns the record the sink takes (the engine's, so that this
    module stays free of HTTP and GenAI details).
    """

    __slots__ = ("sink", "_bound", "parent_based", "decide", "capture_content", "finisher")

    def __init__(self, sink: Callable[[Trace], None], ratio: float = 1.0, parent_based: bool = True,
                 decide: Callable | None = None, capture_content: bool = False, finisher: Callable | None = None):
        self.sink = sink
        self._bound = ratio_bound(ratio)
        self.parent_based = parent_based
        self.decide = decide
        self.capture_content = capture_content
        self.finisher = finisher or (lambda tracer, trace, *args: trace)

    # ---- once per request
    def begin(self, traceparent: str | None = None, tracestate: str | None = None) -> Trace | None:
        """A new Trace when this request is sampled, else None. Cheap when it is not: one random
        number against the bound."""
        if traceparent is None and self.decide is None:
            low = _bits(64)
            if low >= self._bound:
                return None
            return Trace(((_bits(64) or 1) << 64) | low)
        parent = parse_traceparent(traceparent) if traceparent else None
        trace_id = parent[0] if parent else (((_bits(64) or 1) << 64) | _bits(64))
        if self.decide is not None:
            if not self.decide(trace_id, parent, tracestate if parent else None):
                return None
        elif parent is not None and self.parent_based:
            if not parent[2]:
                return None
        elif (trace_id & _LOW64) >= self._bound:
            return None
        if parent is None:
            return Trace(trace_id)
        return Trace(trace_id, parent[1], tracestate or None)

    # enter(trace) makes ``trace`` the current one for this task and returns the token that
    # leave(token) takes (the context variable's own methods: no Python call on the hot path)
    enter = staticmethod(_trace.set)
    leave = staticmethod(_trace.reset)

    def finish(self, trace: Trace, *args) -> None:
        """Fill the server span and hand the trace's record to the sink: ``sink(finisher(self,
        trace, *args))``. Never raises: a failure to record a trace must not fail the request."""
        try:
            self.sink(self.finisher(self, trace, *args))
            # Contexts copied from the request's task (timer handles, tasks a stage started) may
            # outlive it and hold the Trace: let it hold nothing of the request.
            trace.ctx = trace.runs = trace.spans = trace.tap = None
        except Exception:  # pragma: no cover - defensive
            import logging

            logging.getLogger("vandamme.tracing").exception("a trace could not be recorded")

    # ---- spans opened by code (OpenTelemetry Tracer shape)
    def start_as_current_span(self, name: str, context: Any = None, kind: Any = None, attributes: dict | None = None,
                              links: Any = None, start_time: int | None = None, record_exception: bool = True,
                              set_status_on_exception: bool = True, end_on_exit: bool = True) -> "SpanScope":
        """A span of the current request, child of the span current when it opens, current itself
        until it closes (use it as a context manager). Outside a sampled request it records
        nothing. ``kind`` is an OpenTelemetry SpanKind or its name."""
        trace = _trace.get()
        k = INTERNAL if kind is None else _KIND_NAMES.get(getattr(kind, "name", str(kind)).upper(), INTERNAL)
        return SpanScope(trace, name, k, dict(attributes) if attributes else {},
                         record_exception or set_status_on_exception)

    start_span = start_as_current_span


class SpanScope:
    """A span opened by :meth:`RequestTracer.start_as_current_span`; the methods of an
    OpenTelemetry span that stages use (``set_attribute(s)``, ``add_event``, ``set_status``,
    ``record_exception``, ``is_recording``)."""

    __slots__ = ("trace", "rec", "saved", "on_exception")

    def __init__(self, trace: Trace | None, name: str, kind: int, attributes: dict, on_exception: bool):
        self.trace = trace
        self.rec = [name, ROOT, 0.0, 0.0, kind, attributes, None, None]
        self.on_exception = on_exception
        self.saved = ROOT

    def __enter__(self) -> "SpanScope":
        trace = self.trace
        if trace is not None:
            self.saved = trace.cur
            self.rec[1] = trace.parent_ref()
            trace.cur = trace.add_span(self.rec)
            self.rec[2] = perf()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        trace = self.trace
        if trace is not None:
            self.rec[3] = perf()
            trace.cur = self.saved
            if exc is not None and self.on_exception and self.rec[6] is None:
                self.rec[6] = exc
                trace.failed = True
        return False

    def end(self, end_time: int | None = None) -> None:
        """(The span closes when its ``with`` block ends.)"""

    def is_recording(self) -> bool:
        return self.trace is not None

    def set_attribute(self, key: str, value: Any) -> None:
        self.rec[5][key] = value

    def set_attributes(self, attributes: dict) -> None:
        self.rec[5].update(attributes)

    def add_event(self, name: str, attributes: dict | None = None, timestamp: float | None = None) -> None:
        """An event (``timestamp``: a ``time.perf_counter()`` value; default now)."""
        events = self.rec[7]
        if events is None:
            events = self.rec[7] = []
        events.append((name, timestamp or perf(), dict(attributes) if attributes else {}))

    def set_status(self, status: Any, description: str | None = None) -> None:
        code = getattr(status, "status_code", status)
        if getattr(code, "name", str(code)).upper().endswith("ERROR"):
            desc = getattr(status, "description", None) or description or ""
            self.rec[6] = (desc, None, None)

    def record_exception(self, exception: BaseException, attributes: dict | None = None,
                         timestamp: float | None = None, escaped: bool = False) -> None:
        """An ``exception`` event with the type and the scrubbed message, never a stack trace."""
        from .secrets import scrub

        self.add_event("exception", {"exception.type": type(exception).__name__,
                                     "exception.message": scrub(str(exception))}, timestamp)
