"""Metrics: what the gateway counts, and where it shows it.

One recording path, on ``prometheus_client`` instruments (label children bound once per label
set and cached, so a request costs a tuple, a dict lookup and a few increments):

* the OpenTelemetry GenAI client metrics, with their attributes as labels (``.`` -> ``_``):
  ``gen_ai.client.operation.duration`` (s), ``gen_ai.client.token.usage`` ({token}) and
  ``gen_ai.client.operation.time_to_first_chunk`` (s, streams only), each with
  ``gen_ai.operation.name`` (``chat``; ``count_tokens`` for that endpoint), ``gen_ai.provider.name``,
  ``gen_ai.request.model``, ``gen_ai.response.model`` (and ``error.type`` / ``gen_ai.token.type``);
* the gateway's own ``vandamme_*`` metrics: requests by endpoint, provider, model, route, status
  and error type; requests in flight and active streams; upstream attempts, retries, key
  failovers and route fallbacks; keys in cooldown; reloads.

Shown as ``GET /metrics`` (Prometheus text), ``GET /metrics/running-totals`` (JSON totals per
provider, per model and overall, latency percentiles interpolated from the duration histogram's
buckets as Prometheus' ``histogram_quantile`` does) and ``GET /metrics/recent`` (the last requests,
no content). Exported over OTLP when telemetry is configured: an OpenTelemetry SDK MeterProvider
whose periodic reader converts the same figures to OTLP at export time, on its own thread, so
that export adds nothing per request.

With ``vandamme run --workers N`` every figure is for the whole server whichever worker answers:
``prometheus_client``'s multiprocess mode (each worker writes its values to memory-mapped files
in a private folder that ``vandamme run`` creates before the workers start and removes at exit;
a scrape merges them), and each worker's recent requests in a small ring file in that folder.

The recorder is the ``record_metrics`` stage's (vandamme/transforms/metrics_stage.py): ``attach`` hands it
to each compiled gateway this server serves, with per-provider counters for the ``upstream`` stage.
"""
from __future__ import annotations

import asyncio
import glob
import itertools
import math
import mmap
import os
import re
import struct
import time
from collections import deque
from datetime import datetime, timezone
from typing import Any, Iterable

import orjson
import prometheus_client
from loguru import logger
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.exposition import choose_encoder
from sanic import Request
from sanic.response import raw

from vandamme.transforms.errors import ERROR_TYPES, GatewayError, error_type_for
from vandamme.kernel import Context, StreamingResponse

from .version import VERSION

from .metrics_env import MULTIPROC_ENV, SINCE_ENV, WORKERS_ENV, prepare_workers  # noqa: F401,E402
CLIENT_CLOSED = "client_closed"  # error type of a request whose client went away
OTHER = "_other"  # the model label of models past metrics.max_models
REFRESH_SECONDS = 1.0  # how often a worker updates its gauges (in flight, streams, cooldowns)

# Semantic-convention bucket boundaries, with finer ones below 10 ms (a gateway's own answers) and
# longer ones past 82 s (long streams). A superset of the advised boundaries still aggregates to them.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12,
                    10.24, 20.48, 40.96, 81.92, 163.84, 327.68, 655.36)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216,
                 67108864)
# Error types a label may carry (bounded: an upstream stream's own error event names its type).
KNOWN_ERRORS = frozenset(ERROR_TYPES.values()) | {CLIENT_CLOSED}
GENAI = ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "gen_ai_response_model")
OPERATIONS = {"messages": "chat", "count_tokens": "count_tokens"}


class Instrument:
    """One metric: its Prometheus name and labels, its OpenTelemetry name, unit and attributes."""

    __slots__ = ("prom", "otel", "kind", "unit", "help", "labels", "attrs", "buckets", "mode")

    def __init__(self, prom: str, otel: str, kind: str, unit: str, help: str, labels: tuple[str, ...],
                 attrs: tuple[str, ...], buckets: tuple = (), mode: str = ""):
        self.prom, self.otel, self.kind, self.unit, self.help = prom, otel, kind, unit, help
        self.labels = labels  # Prometheus label names
        self.attrs = attrs  # the OpenTelemetry attribute of each label
        self.buckets = buckets
        self.mode = mode  # multiprocess mode of a gauge


def _genai_attrs(*extra: str) -> tuple[str, ...]:
    return ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model",
            "gen_ai.response.model", *extra)


DURATION = Instrument(
    "gen_ai_client_operation_duration_seconds", "gen_ai.client.operation.duration", "histogram", "s",
    "GenAI operation duration: from the request's arrival to its last answer byte (or error).",
    GENAI + ("error_type",), _genai_attrs("error.type"), DURATION_BUCKETS)
TOKENS = Instrument(
    "gen_ai_client_token_usage", "gen_ai.client.token.usage", "histogram", "{token}",
    "Number of input and output tokens used, as the answer's usage reports them (chat only).",
    GENAI + ("gen_ai_token_type",), _genai_attrs("gen_ai.token.type"), TOKEN_BUCKETS)
FIRST_CHUNK = Instrument(
    "gen_ai_client_operation_time_to_first_chunk_seconds", "gen_ai.client.operation.time_to_first_chunk",
    "histogram", "s", "Time from the request's arrival to the first byte of its streamed answer (streams only).",
    GENAI, _genai_attrs(), DURATION_BUCKETS)
REQUESTS = Instrument(
    "vandamme_requests", "vandamme.requests", "counter", "{request}",
    "Requests answered, by endpoint, provider, model, route, HTTP status and error type.",
    ("endpoint", "provider", "model", "route", "status", "error_type"),
    ("vandamme.endpoint", "vandamme.provider", "vandamme.model", "vandamme.route",
     "http.response.status_code", "error.type"))
IN_FLIGHT = Instrument(
    "vandamme_requests_in_flight", "vandamme.requests.in_flight", "gauge", "{request}",
    "Requests being served now (provider and model empty until resolved).",
    ("provider", "model"), ("vandamme.provider", "vandamme.model"), mode="livesum")
ACTIVE_STREAMS = Instrument(
    "vandamme_active_streams", "vandamme.active_streams", "gauge", "{stream}",
    "Streamed answers being sent now.", ("provider", "model"), ("vandamme.provider", "vandamme.model"),
    mode="livesum")
ATTEMPTS = Instrument(
    "vandamme_upstream_attempts", "vandamme.upstream.attempts", "counter", "{attempt}",
    "HTTP exchanges with a provider (first tries, retries and key failovers).",
    ("provider",), ("vandamme.provider",))
RETRIES = Instrument(
    "vandamme_upstream_retries", "vandamme.upstream.retries", "counter", "{retry}",
    "Retries on the same key after a connection error, timeout, 5xx or 529.",
    ("provider",), ("vandamme.provider",))
FAILOVERS = Instrument(
    "vandamme_key_failovers", "vandamme.key_failovers", "counter", "{failover}",
    "Moves of a request to the provider's next key after a 401, 403 or 429.",
    ("provider",), ("vandamme.provider",))
FALLBACKS = Instrument(
    "vandamme_fallbacks", "vandamme.fallbacks", "counter", "{fallback}",
    "Route targets that failed and were left for the route's next target (labels: the failed one).",
    ("provider", "model", "error_type"), ("vandamme.provider", "vandamme.model", "error.type"))
COOLDOWN = Instrument(
    "vandamme_keys_in_cooldown", "vandamme.keys.in_cooldown", "gauge", "{key}",
    "Keys cooling down after a 429 (with several workers: the most any one worker has).",
    ("provider",), ("vandamme.provider",), mode="livemax")
RELOADS = Instrument(
    "vandamme_reloads", "vandamme.reloads", "counter", "{reload}",
    "Spec reloads by result (ok, rejected); each worker reloads, and counts, on its own.",
    ("result",), ("vandamme.result",))
INSTRUMENTS = (DURATION, TOKENS, FIRST_CHUNK, REQUESTS, IN_FLIGHT, ACTIVE_STREAMS, ATTEMPTS, RETRIES,
               FAILOVERS, FALLBACKS, COOLDOWN, RELOADS)


# --------------------------------------------------------------------------- helpers
def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_STREAM_ERROR = re.compile(rb'"error"\s*:\s*\{[^{}]*?"type"\s*:\s*"([A-Za-z_]{1,64})"')
_ERROR_EVENTS = (b"event: error", b"event:error")


def stream_error_type(last: bytes) -> str | None:
    """The error type of a stream whose last chunk holds an ``error`` event (an upstream failure
    mid-stream, or the upstream's own error event), else None. Called once per stream, on its last
    chunk only: nothing is looked at per chunk."""
    at = max(last.rfind(_ERROR_EVENTS[0]), last.rfind(_ERROR_EVENTS[1]))
    if at < 0:
        return None
    m = _STREAM_ERROR.search(last, at)
    etype = m.group(1).decode() if m else "api_error"
    return etype if etype in KNOWN_ERRORS else "api_error"


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """The q-quantile of a histogram given as sorted (upper bound, cumulative count) pairs, the last
    one +Inf: Prometheus' ``histogram_quantile`` (linear interpolation inside the bucket the rank
    falls in, from 0 for the first bucket; the highest finite bound if it falls in +Inf). None
    without observations."""
    if not buckets:
        return None
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return prev_le
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return prev_le


class ModelLabels:
    """Model name -> label value: the first ``cap`` distinct names (up to 200 printable characters)
    as they are, every other one as ``_other``, so that clients sending arbitrary model names cannot
    grow the label set without bound."""

    __slots__ = ("cap", "admitted", "known")

    def __init__(self, cap: int):
        self.cap = cap
        self.admitted = 0
        self.known: dict[str, str] = {"": ""}

    def __call__(self, name: str | None) -> str:
        if name is None:
            return ""
        label = self.known.get(name)
        if label is None:
            label = self._admit(name)
        return label

    def _admit(self, name: str) -> str:
        if self.admitted < self.cap and len(name) <= 200 and name.isprintable():
            self.admitted += 1
            label = name
        else:
            label = OTHER
        if len(self.known) < 4 * self.cap + 64:  # remember refusals too, within a bound
            self.known[name] = label
        return label


# --------------------------------------------------------------------------- recent requests
_RECENT_FIELDS = ("time", "request_id", "model_asked", "provider", "model", "status", "error_type",
                  "latency_ms", "input_tokens", "output_tokens", "stream")


def _recent_dict(entry) -> dict:
    out = dict(zip(_RECENT_FIELDS, entry))
    out["time"] = iso(out["time"])
    return out


class RingFile:
    """This worker's last requests in a memory-mapped ring of fixed slots (``recent_<pid>.ring``
    in the multiprocess folder), so that any worker can read every worker's. A write is a copy into
    memory (no system call); a reader skips a slot it finds half-written."""

    SLOT = 1024
    HEADER = struct.Struct("<Q")
    LENGTH = struct.Struct("<H")

    def __init__(self, folder: str, capacity: int):
        self.capacity = max(1, capacity)
        self.path = os.path.join(folder, f"recent_{os.getpid()}.ring")
        size = self.HEADER.size + self.capacity * self.SLOT
        with open(self.path, "wb") as f:
            f.truncate(size)
        self._file = open(self.path, "r+b")
        self._mm = mmap.mmap(self._file.fileno(), size)
        self.count = 0

    def add(self, entry: tuple) -> None:
        data = orjson.dumps(entry)
        if len(data) > self.SLOT - self.LENGTH.size:
            return  # cannot happen with the 200-character cut of each string
        off = self.HEADER.size + (self.count % self.capacity) * self.SLOT
        mm = self._mm
        self.LENGTH.pack_into(mm, off, 0)  # a reader sees an empty slot while it is rewritten
        mm[off + 2:off + 2 + len(data)] = data
        self.LENGTH.pack_into(mm, off, len(data))
        self.count += 1
        self.HEADER.pack_into(mm, 0, self.count)

    def close(self) -> None:
        try:
            self._mm.close()
            self._file.close()
        except (OSError, ValueError):
            pass

    @classmethod
    def read_all(cls, folder: str) -> list:
        out = []
        for path in glob.glob(os.path.join(folder, "recent_*.ring")):
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError:
                continue
            if len(data) < cls.HEADER.size:
                continue
            count = cls.HEADER.unpack_from(data, 0)[0]
            slots = (len(data) - cls.HEADER.size) // cls.SLOT
            for i in range(min(count, slots)):
                off = cls.HEADER.size + i * cls.SLOT
                n = cls.LENGTH.unpack_from(data, off)[0]
                if not n or n > cls.SLOT - 2:
                    continue
                try:
                    entry = orjson.loads(data[off + 2:off + 2 + n])
                except orjson.JSONDecodeError:
                    continue
                if type(entry) is list and len(entry) == len(_RECENT_FIELDS):
                    out.append(entry)
        return out


# --------------------------------------------------------------------------- the recorder
class ProviderCounts:
    """The ``upstream`` stage's counters for one provider (vandamme.transforms.upstream.Upstream.counts)."""

    __slots__ = ("attempt", "retry", "failover")

    def __init__(self, attempts, retries, failovers):
        self.attempt = attempts.inc
        self.retry = retries.inc
        self.failover = failovers.inc


class Bundle:
    """The label children one kind of request records into, bound once (the token and first-chunk
    ones when first needed, so that kinds of request that never have them show no empty series)."""

    __slots__ = ("metrics", "genai", "chat", "requests", "duration", "_tokens_in", "_tokens_out", "_first_chunk")

    def __init__(self, metrics: "Metrics", genai: tuple, requests, duration):
        self.metrics = metrics
        self.genai = genai
        self.chat = genai[0] == "chat"
        self.requests = requests
        self.duration = duration
        self._tokens_in = self._tokens_out = self._first_chunk = None

    def tokens_in(self):
        child = self._tokens_in
        if child is None:
            child = self._tokens_in = self.metrics.tokens.labels(*self.genai, "input")
        return child

    def tokens_out(self):
        child = self._tokens_out
        if child is None:
            child = self._tokens_out = self.metrics.tokens.labels(*self.genai, "output")
        return child

    def first_chunk(self):
        child = self._first_chunk
        if child is None:
            child = self._first_chunk = self.metrics.first_chunk.labels(*self.genai)
        return child


class Recorder:
    """What the ``record_metrics`` stage calls: ``started(ctx)`` when a request enters the front
    pipeline, and (through ``ctx.on_finish``) ``finished(ctx)`` once its answer is complete."""

    MAX_BUNDLES = 4096

    def __init__(self, metrics: "Metrics"):
        self.m = metrics
        self.inflight: dict[int, Context] = {}
        self.bundles: dict[tuple, Bundle] = {}
        self.models = ModelLabels(metrics.max_models)
        self.fallbacks: dict[tuple, Any] = {}
        self._finished = self.finished  # one bound method, appended to every request

    def started(self, ctx: Context) -> None:
        self.inflight[id(ctx)] = ctx
        ctx.on_finish.append(self._finished)

    def _bundle(self, key: tuple) -> Bundle:
        endpoint, provider, model, route, status, error, response_model = key
        m = self.m
        op = OPERATIONS.get(endpoint, endpoint)
        genai = (op, provider, model, response_model)
        bundle = Bundle(m, genai, m.requests.labels(endpoint, provider, model, route, str(status), error),
                        m.duration.labels(*genai, error))
        if len(self.bundles) >= self.MAX_BUNDLES:
            self.bundles.clear()
        self.bundles[key] = bundle
        return bundle

    def finished(self, ctx: Context) -> None:
        self.inflight.pop(id(ctx), None)
        provider = ctx.provider
        models = self.models
        if provider is not None:
            pname = provider.name
            model = models(ctx.model)
        else:
            pname = model = ""
        route = ctx.route
        error = ctx.error_type
        if error is None:
            error = "" if ctx.status < 400 else error_type_for(ctx.status)
        elif error not in KNOWN_ERRORS:  # a plugin's own error type: the label set stays bounded
            error = "api_error"
        key = (ctx.endpoint, pname, model, route.name if route is not None else "", ctx.status, error,
               models(ctx.response_model))
        bundle = self.bundles.get(key)
        if bundle is None:
            bundle = self._bundle(key)
        bundle.requests.inc()
        seconds = ctx.finished_at - ctx.started
        bundle.duration.observe(seconds)
        if bundle.chat:
            n = ctx.input_tokens
            if n is not None:
                bundle.tokens_in().observe(n)
            n = ctx.output_tokens
            if n is not None:
                bundle.tokens_out().observe(n)
            if ctx.first_token_at is not None:
                bundle.first_chunk().observe(ctx.first_token_at - ctx.started)
        if ctx.fallback_errors:
            self._fallbacks(ctx.fallback_errors)
        recent = self.m.recent_log
        if recent is not None:
            asked = ctx.requested_model
            recent.add((time.time(), ctx.request_id, asked if len(asked) <= 200 else asked[:200], pname,
                        model, ctx.status, error or None, round(seconds * 1e3, 3), ctx.input_tokens,
                        ctx.output_tokens, ctx.stream))

    def _fallbacks(self, failed: list) -> None:
        for pname, model, _status, etype in failed:
            key = (pname, self.models(model), etype if etype in KNOWN_ERRORS else "api_error")
            child = self.fallbacks.get(key)
            if child is None:
                child = self.fallbacks[key] = self.m.fallbacks.labels(*key)
            child.inc()

    def gauges(self) -> tuple[dict, dict]:
        """{(provider, model): n} of the requests in flight and of the streams being sent."""
        flying: dict[tuple, int] = {}
        streams: dict[tuple, int] = {}
        for ctx in list(self.inflight.values()):
            provider = ctx.provider
            key = (provider.name, self.models(ctx.model)) if provider is not None else ("", "")
            flying[key] = flying.get(key, 0) + 1
            if type(ctx.response) is StreamingResponse:
                streams[key] = streams.get(key, 0) + 1
        return flying, streams


class RecentList:
    """This process's last requests (single worker): a bounded deque of tuples."""

    def __init__(self, capacity: int):
        self.entries: deque = deque(maxlen=max(1, capacity))
        self.add = self.entries.append

    def all(self) -> list:
        return list(self.entries)


# --------------------------------------------------------------------------- the metrics
class Metrics:
    """The server's metrics (``app.ctx.metrics``): instruments, the recorder, the exposition and
    the JSON views. ``multiproc_dir`` (default: $PROMETHEUS_MULTIPROC_DIR, set by ``vandamme run``
    for several workers) switches to prometheus_client's multiprocess mode."""

    def __init__(self, settings, multiproc_dir: str | None = None):
        self.settings = settings
        self.max_models = settings.metrics_max_models
        self.multiproc_dir = multiproc_dir if multiproc_dir is not None else os.environ.get(MULTIPROC_ENV)
        if self.multiproc_dir and not os.path.isdir(self.multiproc_dir):
            logger.warning("{} is not a folder: metrics count for this worker only", self.multiproc_dir)
            self.multiproc_dir = None
        if self.multiproc_dir and not getattr(values.ValueClass, "_multiprocess", False):
            # prometheus_client picks its value class at import; the folder may have been set after
            values.ValueClass = values.MultiProcessValue()
        prometheus_client.disable_created_metrics()  # the same samples with one worker or several
        self.since = float(os.environ.get(SINCE_ENV) or time.time())
        self.workers = int(os.environ.get(WORKERS_ENV) or 1) if self.multiproc_dir else 1
        self.registry = CollectorRegistry(auto_describe=False)
        made = {}
        for inst in INSTRUMENTS:
            if inst.kind == "histogram":
                made[inst.prom] = Histogram(inst.prom, inst.help, inst.labels, registry=self.registry,
                                            buckets=inst.buckets)
            elif inst.kind == "counter":
                made[inst.prom] = Counter(inst.prom, inst.help, inst.labels, registry=self.registry)
            else:
                made[inst.prom] = Gauge(inst.prom, inst.help, inst.labels, registry=self.registry,
                                        multiprocess_mode=inst.mode)
        self.duration = made[DURATION.prom]
        self.tokens = made[TOKENS.prom]
        self.first_chunk = made[FIRST_CHUNK.prom]
        self.requests = made[REQUESTS.prom]
        self.in_flight = made[IN_FLIGHT.prom]
        self.active_streams = made[ACTIVE_STREAMS.prom]
        self.attempts = made[ATTEMPTS.prom]
        self.retries = made[RETRIES.prom]
        self.failovers = made[FAILOVERS.prom]
        self.fallbacks = made[FALLBACKS.prom]
        self.cooldown = made[COOLDOWN.prom]
        self.reloads = made[RELOADS.prom]
        self.reloads.labels("ok")
        self.reloads.labels("rejected")
        if self.multiproc_dir:
            from prometheus_client.multiprocess import MultiProcessCollector

            self.scrape_registry = CollectorRegistry(auto_describe=False)
            MultiProcessCollector(self.scrape_registry, path=self.multiproc_dir)
            self.recent_log: RingFile | RecentList | None = RingFile(self.multiproc_dir, settings.metrics_recent) \
                if settings.metrics_recent else None
        else:
            self.scrape_registry = self.registry
            self.recent_log = RecentList(settings.metrics_recent) if settings.metrics_recent else None
        self.recorder = Recorder(self)
        self.rings: dict[str, Any] = {}
        self._counts: dict[str, ProviderCounts] = {}
        self._gauge_keys: dict[str, set] = {"flying": set(), "streams": set()}
        self.meter_provider = None

    # ---- wiring
    def provider_counts(self, name: str) -> ProviderCounts:
        counts = self._counts.get(name)
        if counts is None:
            counts = self._counts[name] = ProviderCounts(self.attempts.labels(name), self.retries.labels(name),
                                                         self.failovers.labels(name))
        return counts

    def attach(self, gateway) -> None:
        """Make ``gateway`` (compiled, about to serve) record here: the recorder to its
        ``record_metrics`` stage, per-provider counters to its ``upstream`` stages (bound now), and
        its key rings to the cooldown gauge."""
        for stage in gateway.front.stages:
            if stage.name == "record_metrics":
                stage.recorder = self.recorder
        rings = {}
        for p in gateway.providers.values():
            for pipe in (p.pipeline, p.count_pipeline, *p.route_pipelines.values()):
                if pipe is None:
                    continue
                for stage in pipe.stages:
                    if stage.name == "upstream" and hasattr(stage, "counts"):
                        stage.counts = self.provider_counts(p.name)
                        if getattr(stage, "ring", None) is not None and len(stage.ring):
                            rings[p.name] = stage.ring
        for gone in set(self.rings) - set(rings):
            self.cooldown.labels(gone).set(0)
        self.rings = rings
        for name in rings:
            self.cooldown.labels(name)

    def reload_result(self, ok: bool) -> None:
        self.reloads.labels("ok" if ok else "rejected").inc()

    # ---- gauges (read from the requests in flight and the key rings; set by this worker)
    def refresh(self) -> None:
        flying, streams = self.recorder.gauges()
        for gauge, counts, name in ((self.in_flight, flying, "flying"), (self.active_streams, streams, "streams")):
            before = self._gauge_keys[name]
            for key in before - counts.keys():
                gauge.labels(*key).set(0)
            for key, n in counts.items():
                gauge.labels(*key).set(n)
            self._gauge_keys[name] = set(counts)
        for name, ring in list(self.rings.items()):
            try:
                self.cooldown.labels(name).set(ring.cooling())
            except RuntimeError:  # its dict changed while read (another thread): next time
                pass

    # ---- views
    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """(body, content type): Prometheus text, or OpenMetrics when the scraper asks for it."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.scrape_registry), content_type

    def families(self) -> dict:
        return {f.name: f for f in self.scrape_registry.collect()}

    def running_totals(self) -> dict:
        """``{"since", "workers", "overall": T, "providers": {name: T}, "models": {"p:m": T}}``;
        T = requests, errors, input/output tokens, active streams, latency p50/p95/p99 in ms."""
        fams = self.families()
        overall = _totals()
        providers: dict[str, dict] = {}
        models: dict[str, dict] = {}

        def targets(provider: str, model: str) -> list[dict]:
            out = [overall]
            if provider:
                out.append(providers.setdefault(provider, _totals()))
                if model:
                    out.append(models.setdefault(f"{provider}:{model}", _totals()))
            return out

        for s in _samples(fams, REQUESTS.prom, "_total"):
            lab = s.labels
            n = int(s.value)
            err = bool(lab.get("error_type")) or int(lab.get("status") or 0) >= 400
            for t in targets(lab.get("provider", ""), lab.get("model", "")):
                t["requests"] += n
                if err:
                    t["errors"] += n
        for s in _samples(fams, TOKENS.prom, "_sum"):
            lab = s.labels
            field = "input_tokens" if lab.get("gen_ai_token_type") == "input" else "output_tokens"
            for t in targets(lab.get("gen_ai_provider_name", ""), lab.get("gen_ai_request_model", "")):
                t[field] += int(s.value)
        for s in _samples(fams, ACTIVE_STREAMS.prom, ""):
            for t in targets(s.labels.get("provider", ""), s.labels.get("model", "")):
                t["active_streams"] += int(s.value)
        for s in _samples(fams, DURATION.prom, "_bucket"):
            lab = s.labels
            le = float(lab["le"])
            for t in targets(lab.get("gen_ai_provider_name", ""), lab.get("gen_ai_request_model", "")):
                t["_buckets"][le] = t["_buckets"].get(le, 0.0) + s.value
        for t in (overall, *providers.values(), *models.values()):
            buckets = sorted(t.pop("_buckets").items())
            t["latency_ms"] = {name: _ms(histogram_quantile(q, buckets))
                               for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))}
        return {"since": iso(self.since), "workers": self.workers, "overall": overall,
                "providers": dict(sorted(providers.items())), "models": dict(sorted(models.items()))}

    def recent(self, limit: int = 50) -> list[dict]:
        """The last ``limit`` requests, newest first (every worker's, with several)."""
        log = self.recent_log
        if log is None or limit <= 0:
            return []
        entries = RingFile.read_all(self.multiproc_dir) if self.multiproc_dir else log.all()
        entries.sort(key=lambda e: e[0], reverse=True)
        return [_recent_dict(e) for e in entries[:limit]]

    # ---- lifecycle
    def close(self) -> None:
        if isinstance(self.recent_log, RingFile):
            self.recent_log.close()
        if self.multiproc_dir:
            try:
                from prometheus_client import multiprocess

                multiprocess.mark_process_dead(os.getpid(), self.multiproc_dir)
            except OSError:
                pass


def _totals() -> dict:
    return {"requests": 0, "errors": 0, "input_tokens": 0, "output_tokens": 0, "active_streams": 0,
            "_buckets": {}}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e3, 3)


def _samples(fams: dict, name: str, suffix: str) -> Iterable:
    fam = fams.get(name)
    if fam is None:
        return ()
    want = name + suffix
    return (s for s in fam.samples if s.name == want)


# --------------------------------------------------------------------------- OTLP export
def _otlp_metrics_url(settings, environ) -> str | None:
    url = environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
    if url:
        return url
    endpoint = settings.otlp_endpoint or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not endpoint:
        return None
    endpoint = endpoint.rstrip("/")
    if endpoint.endswith("/v1/traces"):
        endpoint = endpoint[: -len("/v1/traces")]
    return endpoint if endpoint.endswith("/v1/metrics") else endpoint + "/v1/metrics"


def _otlp_modules() -> tuple:
    """The OpenTelemetry SDK and OTLP/HTTP exporter classes of the metrics export (with what they
    import: protobuf, requests, urllib3 — about 260 modules, ~19,000 objects the garbage collector
    tracks)."""
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (MetricsData, PeriodicExportingMetricReader,  # noqa: F401
                                                  ResourceMetrics, ScopeMetrics)
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope  # noqa: F401
    import requests  # noqa: F401 - the exporter's HTTP transport imports it when the exporter is made

    return OTLPMetricExporter, MeterProvider, PeriodicExportingMetricReader, Resource


def preload_otlp(settings, environ=None) -> None:
    """Import the metrics export's modules now, when OTLP export is configured. Called while the
    app is built, so that they are part of the startup heap the server freezes once it is up
    (gc.freeze, vandamme.engine.server; with several workers, imported once before the workers
    are forked). Imported by the export when it starts (after the freeze), they were ~6 times
    the rest of what every full garbage collection walks: ~2 µs of CPU per request under load
    (bench/tracing_ab.py with GC callbacks, 2026-11-24), traced or not."""
    environ = os.environ if environ is None else environ
    if _otlp_metrics_url(settings, environ):
        _otlp_modules()


def meter_provider_for(metrics: Metrics, environ=None):
    """An OpenTelemetry SDK MeterProvider exporting this worker's figures over OTLP/HTTP, or None
    when no endpoint is configured. Its periodic reader (a thread) converts the Prometheus
    instruments to OTLP data points at each export: cumulative sums, gauges and explicit-bucket
    histograms, with the semantic-convention names and attributes."""
    environ = os.environ if environ is None else environ
    settings = metrics.settings
    url = _otlp_metrics_url(settings, environ)
    if not url:
        return None
    OTLPMetricExporter, MeterProvider, PeriodicExportingMetricReader, Resource = _otlp_modules()

    interval = settings.metrics_export_interval
    interval_ms = interval * 1e3 if interval is not None else None  # None: OTEL_METRIC_EXPORT_INTERVAL or 60 s
    from .telemetry import service_attributes

    resource = Resource.create(service_attributes(settings))
    bridge = OTLPBridge(metrics, resource)

    class BridgeReader(PeriodicExportingMetricReader):
        """The SDK's periodic reader, with the gateway's figures added to each collection
        (``_receive_metrics`` is the reader's documented extension point)."""

        def _receive_metrics(self, metrics_data, timeout_millis: float = 10_000, **kwargs) -> None:
            try:
                metrics_data = bridge.merge(metrics_data)
            except Exception as exc:  # noqa: BLE001 - export trouble never reaches a request
                logger.opt(exception=exc).warning("metrics export: conversion failed ({})", type(exc).__name__)
            super()._receive_metrics(metrics_data, timeout_millis=timeout_millis, **kwargs)

    reader = BridgeReader(OTLPMetricExporter(endpoint=url), export_interval_millis=interval_ms)
    provider = MeterProvider(resource=resource, metric_readers=[reader])
    # One instrument on the SDK's own API (an observable counter: nothing per request), which also
    # keeps every collection non-empty so that the reader always exports.
    from opentelemetry.metrics import Observation

    def reloads(options):
        for fam in metrics.reloads.collect():
            for s in fam.samples:
                if s.name.endswith("_total"):
                    yield Observation(int(s.value), {"vandamme.result": s.labels["result"]})

    provider.get_meter("vandamme", VERSION).create_observable_counter(
        RELOADS.otel, callbacks=[reloads], unit=RELOADS.unit, description=RELOADS.help)
    return provider


class OTLPBridge:
    """Prometheus instruments of this process -> OpenTelemetry SDK metric data."""

    def __init__(self, metrics: Metrics, resource):
        self.metrics = metrics
        self.resource = resource
        self.start_ns = int(time.time() * 1e9)
        self.by_prom = {inst.prom: inst for inst in INSTRUMENTS if inst is not RELOADS}  # that one: SDK-native

    def merge(self, data):
        from opentelemetry.sdk.metrics.export import MetricsData, ResourceMetrics, ScopeMetrics
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        converted = self.convert()
        resource_metrics = list(data.resource_metrics) if data is not None else []
        if resource_metrics:
            first = resource_metrics[0]
            scopes = list(first.scope_metrics)
            ours = next((i for i, sm in enumerate(scopes) if sm.scope.name == "vandamme"), None)
            if ours is None:
                scopes.append(ScopeMetrics(scope=InstrumentationScope("vandamme", VERSION), metrics=converted,
                                           schema_url=""))
            else:
                sm = scopes[ours]
                scopes[ours] = ScopeMetrics(scope=sm.scope, metrics=[*converted, *sm.metrics], schema_url=sm.schema_url)
            resource_metrics[0] = ResourceMetrics(resource=first.resource, scope_metrics=scopes,
                                                  schema_url=first.schema_url)
        else:
            scope = ScopeMetrics(scope=InstrumentationScope("vandamme", VERSION), metrics=converted, schema_url="")
            resource_metrics = [ResourceMetrics(resource=self.resource, scope_metrics=[scope], schema_url="")]
        return MetricsData(resource_metrics=resource_metrics)

    def convert(self) -> list:
        from opentelemetry.sdk.metrics.export import (AggregationTemporality, Gauge, Histogram,
                                                      HistogramDataPoint, Metric, NumberDataPoint, Sum)

        now = time.time_ns()
        start = self.start_ns
        out = []
        for fam in self.metrics.registry.collect():  # this process's own values
            inst = self.by_prom.get(fam.name)
            if inst is None:
                continue
            if inst.kind == "histogram":
                points: dict[tuple, dict] = {}
                for s in fam.samples:
                    labels = {k: v for k, v in s.labels.items() if k != "le"}
                    key = tuple(sorted(labels.items()))
                    p = points.setdefault(key, {"labels": labels, "buckets": [], "sum": 0.0, "count": 0})
                    if s.name.endswith("_bucket"):
                        p["buckets"].append((float(s.labels["le"]), s.value))
                    elif s.name.endswith("_sum"):
                        p["sum"] = s.value
                    elif s.name.endswith("_count"):
                        p["count"] = int(s.value)
                dps = []
                for p in points.values():
                    if not p["count"]:
                        continue
                    cumulative = sorted(p["buckets"])
                    counts, prev = [], 0.0
                    for _, c in cumulative:
                        counts.append(int(c - prev))
                        prev = c
                    dps.append(HistogramDataPoint(
                        attributes=self.attributes(inst, p["labels"]), start_time_unix_nano=start,
                        time_unix_nano=now, count=p["count"], sum=p["sum"], bucket_counts=counts,
                        explicit_bounds=[le for le, _ in cumulative if not math.isinf(le)],
                        min=None, max=None))
                if dps:
                    out.append(Metric(inst.otel, inst.help, inst.unit,
                                      Histogram(dps, AggregationTemporality.CUMULATIVE)))
                continue
            dps = [NumberDataPoint(attributes=self.attributes(inst, s.labels), start_time_unix_nano=start,
                                   time_unix_nano=now, value=int(s.value))
                   for s in fam.samples if not s.name.endswith("_created")]
            if not dps:
                continue
            data = Sum(dps, AggregationTemporality.CUMULATIVE, True) if inst.kind == "counter" else Gauge(dps)
            out.append(Metric(inst.otel, inst.help, inst.unit, data))
        return out

    @staticmethod
    def attributes(inst: Instrument, labels: dict) -> dict:
        out = {}
        for label, attr in zip(inst.labels, inst.attrs):
            value = labels.get(label, "")
            if value == "":
                continue
            out[attr] = int(value) if attr == "http.response.status_code" else value
        return out


# --------------------------------------------------------------------------- workers
# --------------------------------------------------------------------------- routes
def register_routes(app, live) -> Metrics | None:
    """``GET /metrics``, ``/metrics/running-totals``, ``/metrics/recent`` for the server ``live``
    (vandamme.engine.server.Serving) serves; ``app.ctx.metrics``. Nothing when ``metrics.enabled`` is false.

    Auth: with gateway keys declared (server.auth.keys) and ``metrics.require_key`` (the default),
    the three endpoints need a gateway key, like ``/v1/aliases``; Prometheus sends one with its
    scrape ``authorization`` setting (``Authorization: Bearer``). They hold no secret and no
    content either way: counts, durations, provider and model names, request ids."""
    settings = live.current.gateway.settings
    app.ctx.metrics = None
    if not settings.metrics_enabled:
        return None
    metrics = Metrics(settings)
    app.ctx.metrics = metrics
    try:
        preload_otlp(settings)  # the export itself starts with the server (its thread is the worker's)
    except Exception:  # noqa: BLE001 - reported when the export starts (_metrics_start)
        pass
    metrics.attach(live.current.gateway)
    inner = live.reloader
    if inner is not None:
        def reloader():
            """Compile (vandamme.engine.server.Serving.reload runs this in a thread), then record here."""
            try:
                gateway = inner()
            except Exception:
                metrics.reload_result(False)
                raise
            metrics.attach(gateway)
            metrics.reload_result(True)
            return gateway

        live.reloader = reloader
    ids = itertools.count(1)
    tasks: list[asyncio.Task] = []

    async def refresher() -> None:
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            metrics.refresh()

    @app.after_server_start
    async def _metrics_start(app_):
        tasks.append(asyncio.get_running_loop().create_task(refresher()))
        try:
            metrics.meter_provider = meter_provider_for(metrics)
        except Exception as exc:  # noqa: BLE001 - a bad exporter setting must not stop the server
            logger.opt(exception=exc).error("metrics: OTLP export not started ({})", type(exc).__name__)

    @app.before_server_stop
    async def _metrics_stop(app_):
        for task in tasks:
            task.cancel()
        tasks.clear()

    @app.after_server_stop
    async def _metrics_close(app_):
        provider, metrics.meter_provider = metrics.meter_provider, None
        if provider is not None:
            await asyncio.to_thread(provider.shutdown)  # the last export
        metrics.close()

    async def refused(request: Request):
        if not live.current.gateway.settings.metrics_require_key:
            return None
        authenticate = live.current.authenticate
        if authenticate is None:
            return None
        ctx = Context(f"metrics_{next(ids)}", b"", request.headers)
        try:
            await authenticate.run(ctx)
        except GatewayError as exc:
            return raw(exc.body(), status=exc.status, headers=dict(exc.headers), content_type="application/json")
        return None

    @app.get("/metrics")
    async def metrics_prometheus(request: Request):
        no = await refused(request)
        if no is not None:
            return no
        metrics.refresh()
        body, content_type = await asyncio.to_thread(metrics.exposition, request.headers.get("accept"))
        return raw(body, content_type=content_type, headers={"cache-control": "no-store"})

    @app.get("/metrics/running-totals")
    async def metrics_running_totals(request: Request):
        no = await refused(request)
        if no is not None:
            return no
        metrics.refresh()
        body = orjson.dumps(await asyncio.to_thread(metrics.running_totals))
        return raw(body, content_type="application/json", headers={"cache-control": "no-store"})

    @app.get("/metrics/recent")
    async def metrics_recent(request: Request):
        no = await refused(request)
        if no is not None:
            return no
        try:
            limit = int(request.args.get("limit", 50))
        except ValueError:
            return raw(GatewayError(400, "limit: expected an integer").body(), status=400,
                       content_type="application/json")
        limit = max(0, min(limit, 10000))
        body = orjson.dumps({"data": await asyncio.to_thread(metrics.recent, limit)})
        return raw(body, content_type="application/json", headers={"cache-control": "no-store"})

    return metrics


__all__ = ["CLIENT_CLOSED", "INSTRUMENTS", "Metrics", "histogram_quantile", "meter_provider_for",
           "prepare_workers", "register_routes", "stream_error_type"]
