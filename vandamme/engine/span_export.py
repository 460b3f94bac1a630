"""Span export from a process of its own, so that tracing costs the serving process a few
microseconds per request.

The gateway process (:class:`SpanExport`, the sink of the gateway's ``RequestTracer``) gets each
finished request's *record* — one tuple of plain values (``vandamme.engine.telemetry.finish_server_span``) —,
marshals it at once onto a buffer, and every ~50 ms writes the buffer to a pipe (non-blocking:
when the exporter falls behind, the bytes wait in memory up to a bound, then traces are dropped
and counted; a request never waits for telemetry). The exporter process (``python -m
vandamme.engine.span_export``, started at the first traced request, one per gateway process) reads the
pipe, gives every span its id, encodes the spans straight to OTLP protobuf (:class:`Encoder`: the
bytes that repeat — stage names, attribute keys, providers, models — are encoded once and reused)
and posts batches to ``<endpoint>/v1/traces`` over OTLP/HTTP, as the SDK's BatchSpanProcessor and
OTLP exporter would (``OTEL_BSP_SCHEDULE_DELAY``, ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``,
``OTEL_EXPORTER_OTLP_HEADERS``, ``..._TIMEOUT``, ``..._COMPRESSION``, ``..._CERTIFICATE``, and
their ``_TRACES_`` forms). It exits when the pipe closes (the gateway stopped), after sending what
it holds.

Pipe frames: one type byte, a 4-byte little-endian length, the payload: ``C`` the configuration
(JSON, first), ``N`` stage-name tuples of pipelines (JSON, appended to ``Encoder.names`` in
order), ``T`` trace records (each a 4-byte length and the marshalled record), ``F`` a flush
request (its token comes back on the exporter's stdout as ``A <token>`` once everything before it
was posted). The exporter reports problems as ``W <message>`` lines on the same stdout; the
gateway logs them.

The exporter process imports only the standard library and ``vandamme.tracing``.

Where it runs: like any child process, it inherits its gateway process's CPU affinity and
priority — an operator's ``taskset``, systemd ``CPUAffinity=`` or container cpuset applies to it
as to the worker —, and it is left there on purpose: moving it to other CPUs would escape a
placement the operator chose (e.g. cores kept for something else), and a lower priority (nice,
SCHED_BATCH) did not lower the worker's CPU per request in measurements, while a nice'd exporter
could fall behind, and drop traces, when the worker saturates their CPU. The price, when the
worker has one core to itself (as in the benchmarks): the exporter's ~20-25 µs per traced request
run on that core, and the worker spends ~2-3 µs more per traced request (caches and scheduling;
measured against the exporter moved to the other core, bench/tracing_ab.py, 2026-11-24).
"""
from __future__ import annotations

import json
import marshal
import os
import random
import struct
import sys
import time
from typing import Any

from vandamme.tracing import ATTEMPT_INFO, NAMES, RUN_TIMES, SERVER_INFO, STAGE_BITS, run_offsets, stage_spans

_FRAME = struct.Struct("<cI")
_LEN = struct.Struct("<I")  # each marshalled record in a T frame is preceded by its length
FLUSH_DELAY = 0.05  # s between the gateway's writes to the pipe
FLUSH_BYTES = 256 * 1024  # waiting bytes that make a write happen before the timer
MAX_PENDING = 32 * 1024 * 1024  # bytes the gateway holds for a slow exporter before dropping


# ---------------------------------------------------------------- shared by both sides
STAGE_MASK = (1 << STAGE_BITS) - 1


def stage_attributes(name: str, provider: str | None, model: str | None) -> dict:
    """The attributes of a stage span (with ``vandamme.request_id`` and ``vandamme.client`` of
    its request)."""
    attrs = {"vandamme.stage": name}
    if provider:
        attrs["vandamme.provider"] = attrs["gen_ai.provider.name"] = provider
    if model:
        attrs["vandamme.model"] = attrs["gen_ai.request.model"] = model
    return attrs


def server_attributes(info: tuple) -> dict:
    """The server span's attributes (HTTP server and GenAI conventions) from its values
    (``vandamme.engine.telemetry.finish_server_span``)."""
    (method, path, route, scheme, status, error_type, request_id, endpoint, provider, requested_model, model,
     client, max_tokens, stream, response_model, input_tokens, output_tokens, finish_reason, extra) = info
    a = {"http.request.method": method, "url.path": path, "http.route": route, "url.scheme": scheme}
    if status:
        a["http.response.status_code"] = status
    if error_type:
        a["error.type"] = error_type
    a["vandamme.request_id"] = request_id
    if endpoint == "messages":
        a["gen_ai.operation.name"] = "chat"
    if provider:
        a["gen_ai.provider.name"] = a["vandamme.provider"] = provider
    if requested_model:
        a["gen_ai.request.model"] = requested_model
    if model:
        a["vandamme.model"] = model
    if client is not None:
        a["vandamme.client"] = client
    if max_tokens is not None:
        a["gen_ai.request.max_tokens"] = max_tokens
    if stream:
        a["gen_ai.request.stream"] = True
    if response_model:
        a["gen_ai.response.model"] = response_model
    if input_tokens is not None:
        a["gen_ai.usage.input_tokens"] = input_tokens
    if output_tokens is not None:
        a["gen_ai.usage.output_tokens"] = output_tokens
    if finish_reason:
        a["gen_ai.response.finish_reasons"] = [finish_reason]
    if extra:
        a.update(extra)
    return a


def attempt_attributes(info: tuple) -> dict:
    """An upstream attempt span's attributes (HTTP client and GenAI conventions) from its values
    (``vandamme.transforms.upstream.Upstream._traced_attempt``)."""
    (provider, host, port), attempt, key_index, status, error_type, model, endpoint = info
    a = {"http.request.method": "POST", "server.address": host, "server.port": port}
    if endpoint == "messages":
        a["gen_ai.operation.name"] = "chat"
    a["gen_ai.provider.name"] = a["vandamme.provider"] = provider
    if model:
        a["gen_ai.request.model"] = model
    a["vandamme.attempt"] = attempt
    if attempt > 1:
        a["http.request.resend_count"] = attempt - 1
    a["vandamme.key_index"] = key_index
    if status:
        a["http.response.status_code"] = status
    a["vandamme.outcome"] = "error" if error_type else "ok" if status else "cancelled"
    if error_type:
        a["error.type"] = error_type
    return a


def walk(record: tuple, ids: list, remote: Any, names_table: list):
    """Every span of a trace record, in order, as ``(index, parent index or -1, start ns, end ns,
    kind, name, stage, attributes, error, events)``: ``stage`` is ``(name, provider, model)`` for a
    stage span (``attributes`` None), None for the others. Index ``i`` is ``ids[i]``'s span; the
    stage spans come first, run after run. ``names_table``: the stage names by run name index
    (``vandamme.tracing.NAMES``)."""
    _, _, _, wall0, perf0, runs, spans = record
    firsts, span0 = run_offsets(runs)  # index of each run's first stage span; the first other span

    def index(ref: int) -> int:
        if ref >= 0:
            return firsts[ref >> STAGE_BITS] + (ref & STAGE_MASK)
        return -1 if ref == -1 else span0 - ref - 2

    i = 0
    for run in runs:
        names, parent, provider, model, errors, first = run[:RUN_TIMES]
        times = run[RUN_TIMES:]
        names = names_table[names]
        p = index(parent)
        for j in range(len(times) - 1):
            name = names[j]
            yield (i, p, wall0 + int((times[j] - perf0) * 1e9), wall0 + int((times[j + 1] - perf0) * 1e9),
                   1, name, (name, provider, model) if j >= first else (name, None, None), None,
                   errors.get(j) if errors else None, None)
            i += 1
    for rec in spans:
        if rec is not None:
            name, parent, start, end, kind, data, err, events = rec
            if kind == SERVER_INFO:
                kind, data = 2, server_attributes(data)
            elif kind == ATTEMPT_INFO:
                kind, data = 3, attempt_attributes(data)
            if events:
                events = [(ename, wall0 + int((t - perf0) * 1e9), eattrs) for ename, t, eattrs in events]
            yield (i, index(parent), wall0 + int((start - perf0) * 1e9), wall0 + int((end - perf0) * 1e9),
                   kind, name, None, data, err, events)
        i += 1


def span_count(record: tuple) -> int:
    """How many span ids ``walk`` needs for ``record``."""
    return sum(stage_spans(run) for run in record[5]) + len(record[6])


def request_of(record: tuple) -> tuple[str, str | None]:
    """``(request id, client name)`` of a trace record (from its server span's values)."""
    server = record[6][0]
    if server is not None and server[4] == SERVER_INFO:
        return server[5][6], server[5][11]
    return "", None


def otlp_headers(environ) -> dict[str, str]:
    """``OTEL_EXPORTER_OTLP_TRACES_HEADERS`` (or ``OTEL_EXPORTER_OTLP_HEADERS``): ``k=v,k2=v2``."""
    from urllib.parse import unquote

    raw = environ.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS") or environ.get("OTEL_EXPORTER_OTLP_HEADERS") or ""
    out = {}
    for item in raw.split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            out[unquote(key.strip()).lower()] = unquote(value.strip())
    return out


def sampler_from_env(environ) -> tuple[float, bool]:
    """``(ratio, parent based)`` from ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``
    (default ``parentbased_always_on``)."""
    name = (environ.get("OTEL_TRACES_SAMPLER") or "parentbased_always_on").strip().lower()
    try:
        arg = float(environ.get("OTEL_TRACES_SAMPLER_ARG") or 1.0)
    except ValueError:
        arg = 1.0
    table = {"always_on": (1.0, False), "always_off": (0.0, False), "traceidratio": (arg, False),
             "parentbased_always_on": (1.0, True), "parentbased_always_off": (0.0, True),
             "parentbased_traceidratio": (arg, True)}
    return table.get(name, (1.0, True))


def _env(environ, name: str, default: str | None = None) -> str | None:
    return environ.get(f"OTEL_EXPORTER_OTLP_TRACES_{name}") or environ.get(f"OTEL_EXPORTER_OTLP_{name}") or default


# ---------------------------------------------------------------- the gateway side
class SpanExport:
    """The sink of the gateway's tracer when spans go out over OTLP: records buffered here,
    written to the exporter process's pipe (see the module's docstring). Also what
    ``vandamme.engine.telemetry.tracer_provider_for`` returns: ``force_flush`` and ``shutdown`` as on an SDK
    TracerProvider."""

    def __init__(self, endpoint: str, resource: dict, headers: dict[str, str] | None = None, *,
                 ratio: float = 1.0, parent_based: bool = True, environ=None):
        import threading

        environ = os.environ if environ is None else environ
        self.endpoint = endpoint
        self.ratio = ratio
        self.parent_based = parent_based

        def num(name: str, default: float) -> float:
            try:
                return float(environ.get(name) or default)
            except ValueError:
                return default

        self.config = {
            "endpoint": endpoint, "headers": dict(headers or {}),
            "resource": {k: (list(v) if isinstance(v, tuple) else v) for k, v in resource.items()},
            "timeout": num("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", num("OTEL_EXPORTER_OTLP_TIMEOUT", 10.0)),
            "compression": (_env(environ, "COMPRESSION", "none") or "none").lower(),
            "certificate": _env(environ, "CERTIFICATE"),
            "delay": num("OTEL_BSP_SCHEDULE_DELAY", 5000.0) / 1000.0,
            "batch": int(num("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)),
        }
        self._lock = threading.Lock()
        self._pending = bytearray()  # frames not yet written to the pipe
        self._records = bytearray()  # marshalled trace records not yet in a frame
        self._count = 0  # how many
        self._proc = None
        self._pid = os.getpid()
        self._scheduled = False
        self._started_at = 0.0
        self._tokens = 0
        self._acks: set[int] = set()
        self._out = b""
        self._closed = False
        self._names_sent = 0  # how many of vandamme.tracing.NAMES the exporter has been sent
        self._warned_at = 0.0
        self.dropped = 0  # trace records dropped (exporter too slow, or gone)
        import atexit

        atexit.register(self.shutdown)

    # ---- on the event loop, once per traced request
    def submit(self, record: tuple) -> None:
        """One finished trace's record (``vandamme.engine.telemetry.finish_server_span``): marshalled at
        once (so that no record object outlives the request and burdens the garbage collector)
        onto the bytes that the next write sends."""
        if self._closed:
            return
        if len(NAMES) != self._names_sent:  # a pipeline traced for the first time: its names first
            self._send_names()
        try:
            data = marshal.dumps(record)
        except ValueError:  # an attribute value marshal cannot carry (set by a plugin): as text
            data = marshal.dumps(_plain(record))
        records = self._records
        records += _LEN.pack(len(data))
        records += data
        self._count += 1
        if len(records) >= FLUSH_BYTES:
            self._flush()
        elif not self._scheduled:
            self._scheduled = True
            try:
                import asyncio

                asyncio.get_running_loop().call_later(FLUSH_DELAY, self._on_timer)
            except RuntimeError:
                self._scheduled = False
                self._flush()

    def _send_names(self) -> None:
        names, self._names_sent = NAMES[self._names_sent:], len(NAMES)
        self._queue(b"N", json.dumps(names).encode())

    def _on_timer(self) -> None:
        self._scheduled = False
        self._flush()
        if self._pending and not self._scheduled and not self._closed:  # the pipe was full: try again
            import asyncio

            self._scheduled = True
            asyncio.get_running_loop().call_later(FLUSH_DELAY, self._on_timer)

    def _flush(self) -> None:
        """The records so far as one frame; write as much of what waits as the pipe takes; read
        the exporter's reports."""
        with self._lock:
            records, count = self._records, self._count
            if records:
                self._records, self._count = bytearray(), 0
                if len(self._pending) + len(records) > MAX_PENDING:
                    self.dropped += count
                    self._warn(f"span export is behind; {self.dropped} traces dropped so far")
                else:
                    self._queue(b"T", records)
            if self._pending:
                self._write()
            self._read_reports()

    def _queue(self, kind: bytes, payload: bytes) -> None:
        self._pending += _FRAME.pack(kind, len(payload))
        self._pending += payload

    def _write(self) -> None:
        proc = self._child()
        if proc is None:
            return
        try:
            n = os.write(proc.stdin.fileno(), self._pending)
        except BlockingIOError:
            return
        except OSError:  # the exporter is gone: start another at the next write
            self._lost("the span exporter process exited")
            return
        if n == len(self._pending):
            self._pending.clear()
        else:
            del self._pending[:n]

    def _child(self):
        """The exporter process, started on first use (again if it died, at most every 5 s)."""
        if self._pid != os.getpid():  # forked: the pipe belongs to the parent
            self._pid, self._proc, self._pending, self._out = os.getpid(), None, bytearray(), b""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            return proc
        if proc is not None:
            self._lost(f"the span exporter process exited ({proc.returncode})")
        now = time.monotonic()
        if self._started_at and now - self._started_at < 5.0:
            return None
        self._started_at = now
        import fcntl
        import subprocess

        try:
            proc = subprocess.Popen([sys.executable, "-m", "vandamme.engine.span_export"], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=None, close_fds=True)
        except OSError as exc:
            self._warn(f"cannot start the span exporter process: {exc}")
            return None
        for f in (proc.stdin, proc.stdout):
            os.set_blocking(f.fileno(), False)
        try:
            fcntl.fcntl(proc.stdin.fileno(), 1031, 1 << 20)  # F_SETPIPE_SZ: 1 MiB of room
        except OSError:
            pass
        config = json.dumps(self.config).encode()
        names = json.dumps(NAMES[:self._names_sent]).encode()  # what the frames waiting may name
        self._pending[:0] = _FRAME.pack(b"C", len(config)) + config + _FRAME.pack(b"N", len(names)) + names
        self._proc = proc
        return proc

    def _lost(self, why: str) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                proc.stdin.close()
            except OSError:
                pass
        self._out = b""
        self._pending = bytearray()
        self._warn(why)

    def _read_reports(self) -> None:
        """``W`` lines logged, ``A`` flush acknowledgements noted (non-blocking)."""
        proc = self._proc
        if proc is None:
            return
        try:
            data = os.read(proc.stdout.fileno(), 65536)
        except (BlockingIOError, OSError, ValueError):
            return
        self._out += data
        *lines, self._out = self._out.split(b"\n")
        for line in lines:
            kind, _, text = line.decode("utf-8", "replace").partition(" ")
            if kind == "A":
                self._acks.add(int(text))
            elif kind == "W":
                self._warn(text, force=True)

    def _warn(self, message: str, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._warned_at > 60:
            self._warned_at = now
            from loguru import logger

            logger.warning("tracing: {}", message)

    # ---- the SDK TracerProvider's management methods
    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Everything recorded so far posted to the endpoint (True), or the time ran out."""
        import select

        deadline = time.monotonic() + timeout_millis / 1000
        self._flush()
        with self._lock:
            if self._proc is None and not self._pending:
                return True
            self._tokens += 1
            token = self._tokens
            self._queue(b"F", str(token).encode())
            while self._pending and time.monotonic() < deadline:
                proc = self._child()
                if proc is None:
                    return False
                select.select([], [proc.stdin], [], max(0.0, deadline - time.monotonic()))
                self._write()
            while token not in self._acks and self._proc is not None and time.monotonic() < deadline:
                select.select([self._proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
                self._read_reports()
                if self._proc is not None and self._proc.poll() is not None:
                    self._read_reports()
                    break
            ok = token in self._acks
            self._acks.discard(token)
            return ok

    def shutdown(self, timeout_millis: int = 5000) -> None:
        """Send what is recorded (waiting at most ``timeout_millis``), then close the pipe: the
        exporter posts what it holds and exits."""
        if self._closed:
            return
        self._closed = True
        if self._pid != os.getpid():
            return
        self.force_flush(timeout_millis)
        proc = self._proc
        if proc is None:
            return
        try:
            proc.stdin.close()
            proc.wait(timeout_millis / 1000)
        except Exception:
            proc.kill()


def _plain(value: Any) -> Any:
    """``value`` with whatever marshal cannot carry (an object a plugin put in an attribute) as
    its text."""
    if value is None or type(value) in (str, int, float, bool, bytes):
        return value
    if type(value) in (list, tuple):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


# ---------------------------------------------------------------- OTLP protobuf, by hand
_SMALL = [bytes((i,)) for i in range(128)]
_TIMES = struct.Struct("<BQBQ")  # start_time_unix_nano (7) and end_time_unix_nano (8), fixed64
_DOUBLE = struct.Struct("<d")
_FIXED64 = struct.Struct("<Q")
_FLAGS_LOCAL = b"\x85\x01" + struct.pack("<I", 0x101)  # flags (16): sampled, parent is local
_FLAGS_REMOTE = b"\x85\x01" + struct.pack("<I", 0x301)  # sampled, parent is remote
_ERROR_CODE = b"\x18\x02"  # Status.code = STATUS_CODE_ERROR
_KINDS = {1: b"\x30\x01", 2: b"\x30\x02", 3: b"\x30\x03"}


_UNIQUE = frozenset({"vandamme.request_id"})  # attribute values never seen twice: not kept


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _SMALL[n]
    if n < 0x4000:
        return bytes(((n & 0x7F) | 0x80, n >> 7))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _ld(tag: bytes, payload: bytes) -> bytes:
    return tag + _varint(len(payload)) + payload


def _text(tag: bytes, value: str) -> bytes:
    b = value.encode("utf-8", "replace")
    return tag + _varint(len(b)) + b


def _any(value: Any) -> bytes:
    """An AnyValue message."""
    if isinstance(value, str):
        return _text(b"\x0a", value)
    if value is True:
        return b"\x10\x01"
    if value is False:
        return b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE.pack(value)
    if isinstance(value, (list, tuple)):
        return _ld(b"\x2a", b"".join(_ld(b"\x0a", _any(v)) for v in value))
    if isinstance(value, bytes):
        return _ld(b"\x3a", value)
    if isinstance(value, dict):
        return _ld(b"\x32", b"".join(_ld(b"\x0a", _kv(str(k), v)) for k, v in value.items()))
    return _text(b"\x0a", str(value))


def _kv(key: str, value: Any) -> bytes:
    """A KeyValue message."""
    return _text(b"\x0a", key) + _ld(b"\x12", _any(value))


class Encoder:
    """Trace records -> OTLP ``Span`` messages (each as a ``ScopeSpans.spans`` field), and a batch
    of them -> an ``ExportTraceServiceRequest``. What repeats is encoded once: a stage span's name,
    kind and attributes per (stage, provider, model); each attribute of the other spans per
    (key, value)."""

    def __init__(self, resource: dict, scope: str = "vandamme", version: str = ""):
        res = b"".join(_ld(b"\x0a", _kv(k, v)) for k, v in resource.items())
        scope_msg = _text(b"\x0a", scope) + (_text(b"\x12", version) if version else b"")
        self._resource = _ld(b"\x0a", res)  # ResourceSpans.resource
        self._scope = _ld(b"\x0a", scope_msg)  # ScopeSpans.scope
        self._stages: dict = {}
        self._attrs: dict = {}
        self._names: dict = {}
        self._infos: dict = {}
        self.names: list[tuple] = []  # the stage names of the gateway's pipelines (``N`` frames)

    def _attr(self, key: str, value: Any) -> bytes:
        """``Span.attributes`` field (9) of one key/value; a string or int value's bytes are kept
        per key (up to 4,096 values a key) unless the key's values never repeat."""
        t = type(value)
        if (t is str or t is int) and key not in _UNIQUE:
            cache = self._attrs.get(key)
            if cache is None:
                cache = self._attrs[key] = {}
            out = cache.get(value)
            if out is None:
                if len(cache) >= 4096:
                    cache.clear()
                out = cache[value] = _ld(b"\x4a", _kv(key, value))
            return out
        return _ld(b"\x4a", _kv(key, value))

    def _name(self, name: str, kind: int = 0) -> bytes:  # noqa: ARG002 (kind: encoded apart)
        """A span's name field."""
        out = self._names.get(name)
        if out is None:
            if len(self._names) > 20000:
                self._names.clear()
            out = self._names[name] = _text(b"\x2a", name)
        return out

    def _run_blocks(self, names: int, provider: str | None, model: str | None, first: int) -> list[bytes]:
        """Each stage span's name, kind and attributes for a run of pipeline ``names``."""
        key = (names, provider, model, first)
        out = self._stages.get(key)
        if out is None:
            if len(self._stages) > 20000:
                self._stages.clear()
            out = self._stages[key] = [self._stage((name, provider, model) if j >= first else (name, None, None))
                                       for j, name in enumerate(self.names[names])]
        return out

    def _stage(self, key: tuple) -> bytes:
        """A stage span's name, kind and attributes for (name, provider, model)."""
        return (_text(b"\x2a", key[0]) + _KINDS[1]
                + b"".join(self._attr(k, v) for k, v in stage_attributes(*key).items()))

    def _info(self, kind: int, info: tuple, request_id: bytes) -> bytes:
        """A server or upstream attempt span's kind and attributes from its values: the part that
        repeats across requests is encoded once."""
        if kind == ATTEMPT_INFO:
            out = self._infos.get(info)
            if out is None:
                out = self._infos[info] = _KINDS[3] + b"".join(
                    self._attr(k, v) for k, v in attempt_attributes(info).items())
            return out + request_id
        # SERVER_INFO: all but the request id, the token counts and the content are repeated values
        key = info[:6] + info[7:15] + info[17:18]
        out = self._infos.get(key)
        if out is None:
            attrs = server_attributes(info[:6] + ("",) + info[7:15] + (None, None, info[17], None))
            out = self._infos[key] = _KINDS[2] + b"".join(self._attr(k, v) for k, v in attrs.items()
                                                          if k != "vandamme.request_id")
        out += request_id
        if info[15] is not None:
            out += self._attr("gen_ai.usage.input_tokens", info[15])
        if info[16] is not None:
            out += self._attr("gen_ai.usage.output_tokens", info[16])
        if info[18]:
            out += b"".join(self._attr(k, v) for k, v in info[18].items())
        return out

    def spans(self, record: tuple, out: list, ids=None) -> None:
        """Append the encoded spans of one trace record to ``out`` (the spans ``walk`` gives,
        encoded run by run). ``ids(n)`` draws the span ids."""
        trace_id, parent_id, state, wall0, perf0, runs, spans = record
        request_id, client = request_of(record)
        sids = (ids or _random_ids)(span_count(record))
        if len(self._infos) > 20000:
            self._infos.clear()
        tid = b"\x0a\x10" + trace_id.to_bytes(16, "big") + (_text(b"\x1a", state) if state else b"")
        head = tid + b"\x12\x08"
        rid = self._attr("vandamme.request_id", request_id)
        stage_common = rid + (self._attr("vandamme.client", client) if client is not None else b"")
        remote = (b"\x22\x08" + parent_id.to_bytes(8, "big"), _FLAGS_REMOTE) if parent_id else (b"", _FLAGS_LOCAL)
        firsts, span0 = run_offsets(runs)

        def parent_of(ref: int):
            if ref >= 0:
                return b"\x22\x08" + sids[firsts[ref >> STAGE_BITS] + (ref & STAGE_MASK)], _FLAGS_LOCAL
            return remote if ref == -1 else (b"\x22\x08" + sids[span0 - ref - 2], _FLAGS_LOCAL)

        pack_times = _TIMES.pack
        append = out.append
        i = 0
        for run in runs:
            names, parent, provider, model, errors, first = run[:RUN_TIMES]
            blocks = self._run_blocks(names, provider, model, first)
            pfield, flags = parent_of(parent)
            start = wall0 + int((run[RUN_TIMES] - perf0) * 1e9)
            for j in range(stage_spans(run)):
                end = wall0 + int((run[RUN_TIMES + j + 1] - perf0) * 1e9)
                span = b"".join((head, sids[i], pfield, blocks[j], stage_common, pack_times(0x39, start, 0x41, end),
                                 flags))
                start = end
                if errors and j in errors:
                    span += _events_status(None, errors[j], end)
                append(b"\x12" + _varint(len(span)) + span)
                i += 1
        for rec in spans:
            if rec is not None:
                name, parent, start, end, kind, data, err, events = rec
                if kind == SERVER_INFO or kind == ATTEMPT_INFO:
                    body = self._name(name) + self._info(kind, data, rid)
                else:
                    body = self._name(name, kind) + _KINDS.get(kind, _KINDS[1]) + b"".join(
                        [self._attr(k, v) for k, v in data.items()])
                    if "vandamme.request_id" not in data:
                        body += rid
                end = wall0 + int((end - perf0) * 1e9)
                if events or err is not None:
                    body += _events_status([(en, wall0 + int((t - perf0) * 1e9), ea) for en, t, ea in events or ()],
                                           err, end)
                pfield, flags = parent_of(parent)
                span = b"".join((head, sids[i], pfield, body,
                                 pack_times(0x39, wall0 + int((start - perf0) * 1e9), 0x41, end), flags))
                append(b"\x12" + _varint(len(span)) + span)
            i += 1

    def request(self, spans: list[bytes]) -> bytes:
        """An ExportTraceServiceRequest holding ``spans`` (encoded by :meth:`spans`)."""
        scope_spans = self._scope + b"".join(spans)
        rs = self._resource + _ld(b"\x12", scope_spans)
        return _ld(b"\x0a", rs)


def _events_status(events, err, end: int) -> bytes:
    """A span's events (``(name, time ns, attributes)``) and, for ``err`` = ``(description,
    exception type or None, message)``, the ``exception`` event and status ERROR."""
    out = b""
    for name, ts, attrs in events or ():
        ev = b"\x09" + _FIXED64.pack(ts) + _text(b"\x12", name) + b"".join(
            _ld(b"\x1a", _kv(k, v)) for k, v in attrs.items())
        out += _ld(b"\x5a", ev)
    if err is not None:
        desc, etype, emsg = err
        if etype is not None:
            ev = (b"\x09" + _FIXED64.pack(end) + _text(b"\x12", "exception")
                  + _ld(b"\x1a", _kv("exception.type", etype)) + _ld(b"\x1a", _kv("exception.message", emsg or "")))
            out += _ld(b"\x5a", ev)
        out += _ld(b"\x7a", (_text(b"\x12", desc) if desc else b"") + _ERROR_CODE)
    return out


def _random_ids(n: int) -> list[bytes]:
    """``n`` random 8-byte span ids (none zero)."""
    raw = random.getrandbits(64 * n).to_bytes(8 * n, "little")
    out = [raw[i:i + 8] for i in range(0, 8 * n, 8)]
    if _ZERO_ID in out:
        out = [sid if sid != _ZERO_ID else b"\0" * 7 + b"\1" for sid in out]
    return out


_ZERO_ID = b"\0" * 8


# ---------------------------------------------------------------- the exporter process
class _Sender:
    """POSTs export requests to the OTLP/HTTP endpoint on one kept-alive connection."""

    RETRY_STATUSES = (429, 502, 503, 504)

    def __init__(self, config: dict, report):
        from urllib.parse import urlsplit

        url = urlsplit(config["endpoint"])
        self.https = url.scheme == "https"
        self.host, self.port = url.hostname, url.port or (443 if self.https else 80)
        self.path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        self.timeout = float(config.get("timeout") or 10.0)
        self.compression = config.get("compression") or "none"
        self.certificate = config.get("certificate")
        self.headers = {"Content-Type": "application/x-protobuf", "User-Agent": "vandamme-span-export",
                        **(config.get("headers") or {})}
        if self.compression == "gzip":
            self.headers["Content-Encoding"] = "gzip"
        self.report = report
        self.conn = None

    def _connect(self):
        import http.client

        if self.https:
            import ssl

            context = ssl.create_default_context(cafile=self.certificate) if self.certificate else None
            return http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=context)
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def send(self, body: bytes, deadline: float) -> bool:
        if self.compression == "gzip":
            import gzip

            body = gzip.compress(body, 5)
        delay = 0.5
        while True:
            try:
                if self.conn is None:
                    self.conn = self._connect()
                self.conn.request("POST", self.path, body=body, headers=self.headers)
                resp = self.conn.getresponse()
                resp.read()
                status = resp.status
                if resp.will_close:
                    self.conn.close()
                    self.conn = None
            except Exception as exc:  # connection refused or reset, timeout, a bad status line
                if self.conn is not None:
                    self.conn.close()
                    self.conn = None
                status, why = None, f"{type(exc).__name__}: {exc}"
            else:
                if 200 <= status < 300:
                    return True
                why = f"HTTP {status}"
            if status is not None and status not in self.RETRY_STATUSES or time.monotonic() + delay > deadline:
                self.report(f"OTLP export to {self.host}:{self.port}{self.path} failed ({why}); "
                            "a batch of spans was dropped")
                return False
            time.sleep(delay)
            delay *= 2


def _exporter_main() -> int:
    import select
    import signal

    # The gateway ends this process by closing the pipe (it then sends what it holds); a signal to
    # the whole process group (Ctrl-C, a service manager) must not lose the last spans.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    fd = sys.stdin.buffer.fileno()
    out = sys.stdout.buffer

    def report(text: str) -> None:
        out.write(b"W " + text.replace("\n", " ").encode() + b"\n")
        out.flush()

    data = bytearray()
    config = None
    encoder = sender = None
    batch: list[bytes] = []
    due = None  # when the batch must go at the latest
    eof = False
    while not eof:
        timeout = None if due is None else max(0.0, due - time.monotonic())
        ready, _, _ = select.select([fd], [], [], timeout)
        if ready:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                eof = True
            data += chunk
        pos = 0
        view = memoryview(bytes(data))  # (a copy: the bytearray may grow while payloads are in use)
        while len(data) - pos >= _FRAME.size:
            kind, size = _FRAME.unpack_from(data, pos)
            if len(data) - pos - _FRAME.size < size:
                break
            payload = view[pos + _FRAME.size:pos + _FRAME.size + size]
            pos += _FRAME.size + size
            if kind == b"C":
                config = json.loads(bytes(payload))
                encoder = Encoder(config["resource"])
                sender = _Sender(config, report)
            elif kind == b"N" and encoder is not None:
                encoder.names.extend(tuple(n) for n in json.loads(bytes(payload)))
            elif kind == b"T" and encoder is not None:
                at = 0
                while at < size:
                    (n,) = _LEN.unpack_from(payload, at)
                    at += 4 + n
                    try:
                        encoder.spans(marshal.loads(payload[at - n:at]), batch)
                    except Exception as exc:  # a malformed record: skip it, keep the rest
                        report(f"a trace could not be encoded ({type(exc).__name__}: {exc})")
                    if len(batch) >= config["batch"]:
                        sender.send(encoder.request(batch), time.monotonic() + config["timeout"])
                        batch = []
                if batch and due is None:
                    due = time.monotonic() + config["delay"]
            elif kind == b"F":
                if batch and sender is not None:
                    sender.send(encoder.request(batch), time.monotonic() + config["timeout"])
                batch, due = [], None
                out.write(b"A " + bytes(payload) + b"\n")
                out.flush()
        del data[:pos]
        if batch and (eof or (due is not None and time.monotonic() >= due)):
            sender.send(encoder.request(batch), time.monotonic() + (5.0 if eof else config["timeout"]))
            batch, due = [], None
        elif not batch:
            due = None
    return 0


if __name__ == "__main__":
    sys.exit(_exporter_main())
