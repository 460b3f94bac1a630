"""OpenTelemetry tracing: what the gateway records and where the spans go.

Tracing is on when an OTLP endpoint is configured (``telemetry.otlp_endpoint`` or
``OTEL_EXPORTER_OTLP_ENDPOINT``): :func:`tracer_provider_for` then returns a
:class:`vandamme.engine.span_export.SpanExport`, which sends the spans to ``<endpoint>/v1/traces`` over
OTLP/HTTP from an exporter process of its own. An OpenTelemetry SDK ``TracerProvider`` may be
given to ``compile_gateway`` instead (tests, embedding): its sampler decides and its span
processors receive the spans (:class:`SdkSink`).

Each request is one trace. On the hot path the gateway only records plain numbers
(``vandamme.tracing``: a record per stage, per upstream attempt, per fallback target); when the
request is over — for a stream, when its last byte has gone — :func:`finish_server_span` fills the
server span (HTTP and GenAI semantic conventions) and the trace goes to the sink, which gives every
span its id and builds it. ``telemetry.sample_ratio`` decides once per request, at its start,
whether it is recorded (parent-based: an incoming ``traceparent`` decides by its sampled flag).
"""
from __future__ import annotations

import asyncio
import os
import random
import socket
from typing import TYPE_CHECKING, Any

from vandamme.secrets import add_keys, scrub
from vandamme.tracing import CLIENT, INTERNAL, NAMES, SERVER, SERVER_INFO, RequestTracer, Trace, perf

from .span_export import (SpanExport, otlp_headers, request_of, sampler_from_env, span_count, stage_attributes,
                          walk)
from .version import VERSION

if TYPE_CHECKING:
    from .compiler import Settings

SPAN_NAMES = {"messages": "POST /v1/messages", "count_tokens": "POST /v1/messages/count_tokens"}
ROUTES = {"messages": "/v1/messages", "count_tokens": "/v1/messages/count_tokens"}


def service_attributes(settings: "Settings") -> dict:
    """The OpenTelemetry resource attributes naming this process, for its spans and its metrics
    alike: ``service.name`` (``telemetry.service_name``), ``service.version`` and
    ``service.instance.id`` (host and process id: each worker of a ``--workers N`` server, each
    replica, is an instance of its own)."""
    return {"service.name": settings.service_name, "service.version": VERSION,
            "service.instance.id": f"{socket.gethostname()}-{os.getpid()}"}


def tracer_provider_for(settings: "Settings", environ=None) -> SpanExport | None:
    """The span export of this process when an OTLP endpoint is configured, else None (tracing
    off: the stage runtime runs without span code)."""
    environ = os.environ if environ is None else environ
    endpoint = settings.otlp_endpoint or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not endpoint:
        return None
    endpoint = endpoint.rstrip("/")
    if not endpoint.endswith("/v1/traces"):
        endpoint += "/v1/traces"
    from opentelemetry.sdk.resources import Resource

    headers = otlp_headers(environ)
    add_keys(headers.values())  # a collector's API key is a secret like any other
    resource = Resource.create(service_attributes(settings)).attributes
    if settings.sample_ratio is not None:
        ratio, parent_based = float(settings.sample_ratio), True
    else:
        ratio, parent_based = sampler_from_env(environ)
    return SpanExport(endpoint, dict(resource), headers, ratio=ratio, parent_based=parent_based, environ=environ)


def tracer_for(provider: Any, settings: "Settings") -> RequestTracer:
    """The gateway's tracer over ``provider``: a SpanExport, or an OpenTelemetry SDK
    TracerProvider (its sampler decides per request, its span processors get the spans)."""
    capture = bool(getattr(settings, "capture_content", False))
    if isinstance(provider, SpanExport):
        return RequestTracer(provider.submit, provider.ratio, provider.parent_based, capture_content=capture,
                             finisher=finish_server_span)
    sink = SdkSink(provider)
    return RequestTracer(sink, decide=sink.decide, capture_content=capture, finisher=finish_server_span)


# ---------------------------------------------------------------- the server span
def finish_server_span(tracer: RequestTracer, trace: Trace, request: Any, endpoint: str, out: Any = None,
                       exc: BaseException | None = None) -> tuple:
    """The server span of a finished request — its values in the order of
    ``span_export.server_attributes`` (HTTP server and GenAI conventions; the outcome from the
    Context's ``finish``) —, every exception in the trace turned into a scrubbed
    ``(description, type, message)``, and the trace's *record* for the sink: ``(trace id, remote
    parent span id or 0, tracestate, wall0, perf0, runs, spans)``, plain values only."""
    end = perf()
    ctx = trace.ctx
    if exc is None and ctx is not None and ctx.status and ctx.status < 500 and not tracer.capture_content:
        # the usual case, kept short: an answer sent, its outcome on the Context
        p = ctx.provider
        info = ("POST", request.path, ROUTES[endpoint], _scheme(request), ctx.status, ctx.error_type,
                ctx.request_id, endpoint, p.name if p is not None else None, ctx.requested_model, ctx.model,
                ctx.client_name, getattr(ctx.head, "max_tokens", None), ctx.stream,
                ctx.response_model, ctx.input_tokens, ctx.output_tokens, ctx.finish_reason, None)
        trace.spans[0] = [SPAN_NAMES[endpoint], -1, trace.perf0, end, SERVER_INFO, info, None, None]
        if trace.failed:
            _scrub_errors(trace)
        return trace.trace_id, trace.parent_id, trace.state, trace.wall0, trace.perf0, trace.runs, trace.spans
    status = ctx.status if ctx is not None else 0
    error_type = ctx.error_type if ctx is not None else None
    if exc is not None:
        cancelled = isinstance(exc, asyncio.CancelledError)
        status = status or (499 if cancelled else 500)
        error_type = error_type or ("client_closed" if cancelled else type(exc).__name__)
    elif not status and out is not None:
        status = out.status
    if not error_type and status >= 500:
        error_type = str(status)
    err = None
    if exc is not None and not isinstance(exc, asyncio.CancelledError):
        err = (type(exc).__name__, type(exc).__name__, scrub(str(exc)))
    elif status >= 500:
        err = (error_type, None, None)
    if ctx is None:
        info = (request.method, request.path, ROUTES[endpoint], _scheme(request), status, error_type, "", endpoint,
                None, None, None, None, None, False, None, None, None, None, None)
    else:
        p = ctx.provider
        head = ctx.head
        extra = _content(ctx, trace) if tracer.capture_content else None
        info = (request.method, request.path, ROUTES[endpoint], _scheme(request), status, error_type, ctx.request_id,
                endpoint, p.name if p is not None else None, ctx.requested_model, ctx.model, ctx.client_name,
                getattr(head, "max_tokens", None), ctx.stream, ctx.response_model, ctx.input_tokens,
                ctx.output_tokens, ctx.finish_reason, extra)
    trace.spans[0] = [SPAN_NAMES[endpoint], -1, trace.perf0, end, SERVER_INFO, info, err, None]
    if trace.failed:
        _scrub_errors(trace)
    return trace.trace_id, trace.parent_id, trace.state, trace.wall0, trace.perf0, trace.runs, trace.spans


def _scheme(request: Any) -> str:
    """The connection's scheme (Sanic's ``request.scheme`` parses forwarding headers: µs)."""
    info = request.conn_info
    return "https" if info is not None and info.ssl else "http"


def _content(ctx: Any, trace: Trace) -> dict | None:
    """The opted-in prompt and completion (vandamme.engine.trace_content)."""
    from vandamme.kernel import BufferedResponse

    from . import trace_content

    if ctx.endpoint != "messages":
        return None
    attrs = trace_content.input_attributes(ctx.raw_body)
    resp = ctx.response
    if trace.tap is not None:
        attrs.update(trace_content.output_from_stream(trace.tap))
    elif isinstance(resp, BufferedResponse) and resp.status == 200:
        attrs.update(trace_content.output_from_body(resp.body))
    return attrs


def _scrub(exc: BaseException) -> tuple:
    name = type(exc).__name__
    return name, name, scrub(str(exc))


def _scrub_errors(trace: Trace) -> None:
    """Exceptions in the records -> ``(description, type, scrubbed message)`` (never a stack)."""
    for run in trace.runs:
        if run[4]:
            run[4] = {j: _scrub(e) if isinstance(e, BaseException) else e for j, e in run[4].items()}
    for rec in trace.spans:
        if rec is not None and isinstance(rec[6], BaseException):
            rec[6] = _scrub(rec[6])
    trace.failed = False


# ---------------------------------------------------------------- an SDK TracerProvider as the sink
class SdkSink:
    """Finished traces as OpenTelemetry SDK ``ReadableSpan``s, handed to ``provider``'s span
    processors (``on_end``) when the request is over; the provider's sampler decides per request
    (``decide``). For tests and for embedding the gateway in an SDK-instrumented process; the
    gateway's own export is :class:`vandamme.engine.span_export.SpanExport`."""

    def __init__(self, provider: Any):
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        self.provider = provider
        self.scope = InstrumentationScope("vandamme")

    def decide(self, trace_id: int, parent, tracestate: str | None) -> bool:
        from opentelemetry import trace as api
        from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags, TraceState

        context = None
        if parent is not None:
            state = TraceState.from_header([tracestate]) if tracestate else None
            context = api.set_span_in_context(NonRecordingSpan(SpanContext(
                parent[0], parent[1], is_remote=True, trace_flags=TraceFlags(1 if parent[2] else 0),
                trace_state=state)))
        result = self.provider.sampler.should_sample(context, trace_id, "request", SpanKind.SERVER)
        return result.decision.is_sampled()

    def __call__(self, record: tuple) -> None:
        processor = getattr(self.provider, "_active_span_processor", None)
        if processor is None:
            return
        for span in readable_spans(record, self.provider.resource, self.scope):
            processor.on_end(span)


def readable_spans(record: tuple, resource: Any, scope: Any) -> list:
    """The SDK ReadableSpans of one trace record (``finish_server_span``)."""
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

    trace_id, parent_id, state = record[:3]
    request_id, client = request_of(record)
    kinds = {INTERNAL: SpanKind.INTERNAL, SERVER: SpanKind.SERVER, CLIENT: SpanKind.CLIENT}
    flags = TraceFlags(TraceFlags.SAMPLED)
    trace_state = TraceState.from_header([state]) if state else None
    contexts = [SpanContext(trace_id, random.getrandbits(64) or 1, False, flags, trace_state)
                for _ in range(span_count(record))]
    remote = SpanContext(trace_id, parent_id, True, flags, trace_state) if parent_id else None
    out = []
    for i, parent, start, end, kind, name, stage, attrs, err, events in walk(record, contexts, remote, NAMES):
        if stage is not None:
            attrs = stage_attributes(*stage)
            if client is not None:
                attrs["vandamme.client"] = client
        else:
            attrs = dict(attrs)
        attrs.setdefault("vandamme.request_id", request_id)
        ev = [Event(n, a, t) for n, t, a in events or ()]
        status = Status(StatusCode.UNSET)
        if err is not None:
            status = Status(StatusCode.ERROR, err[0] or None)
            if err[1] is not None:
                ev.append(Event("exception", {"exception.type": err[1], "exception.message": err[2]}, end))
        out.append(ReadableSpan(
            name, context=contexts[i], parent=contexts[parent] if parent >= 0 else remote, resource=resource,
            attributes=attrs, events=ev, kind=kinds.get(kind, SpanKind.INTERNAL), status=status,
            start_time=start, end_time=end, instrumentation_scope=scope))
    return out
