"""Per-stage cost of a Vandamme request, from the stage spans (docs/performance.md, "Per-stage cost").

In this one process: the real gateway is built from ``bench/specs`` (``vandamme.engine.loader.load_spec`` +
``vandamme.engine.compiler.compile_gateway``) with an OpenTelemetry SDK ``TracerProvider`` whose processor is
``SimpleSpanProcessor(InMemorySpanExporter)``, and served by the real Sanic server
(``vandamme.engine.server.create_app`` + ``app.create_server``) on 127.0.0.1. Its providers point at the
static nginx upstream of ``bench/run.py`` (reused when it already listens on the upstream port,
else started here; an aiohttp stand-in serving the same answers when nginx is missing). A client
subprocess (aiohttp, pinned to the other core) sends ``--warmup`` + ``--n`` sequential requests per
scenario: large converted, large converted stream, large passthrough, large passthrough stream. The
warm-up traces are dropped; for every span name the median and p90 duration (µs) are reported,
with where it nests.

The stage durations are what the gateway records on its hot path (a ``perf_counter`` reading at
each stage boundary, ``vandamme.tracing``); the SDK spans are built from those numbers when the
request is over (``vandamme.engine.telemetry.SdkSink``). What tracing costs is measured twice:
(1) the same requests again with tracing off (the gateway compiled without a tracer), client-side
wall time per request on vs off; (2) SDK micro-benchmarks: 10,000 spans started and ended like a
stage span, with the in-memory processor, with no processor, sampled out, and the OTLP protobuf
encoding per span — what a gateway built on the SDK's live spans would pay per span (the one this
table measures builds SDK spans only at the end; with an OTLP endpoint configured the gateway
uses no SDK span at all, its exporter process encodes the records: docs/operations.md).

    .venv/bin/python bench/stage_costs.py [--n 300] [--warmup 30] [--no-doc]
    .venv/bin/python bench/stage_costs.py --render      # re-render the table from stages.json

Writes ``bench/.work/stages.json`` and the table into docs/performance.md between
``<!-- stages:begin -->`` and ``<!-- stages:end -->``. Only 127.0.0.1 is contacted; every process
started here is stopped on exit. ``bench/run.py`` runs it at the end of ``make bench`` (skip with
``BENCH_STAGES=0``).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work"
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import bodies  # noqa: E402
from machine import cpu_model  # noqa: E402
import upstream  # noqa: E402

HOST = "127.0.0.1"
BEGIN, END = "<!-- stages:begin -->", "<!-- stages:end -->"
HEADERS = {"content-type": "application/json", "anthropic-version": "2023-06-01", "x-api-key": "bench"}
SERVER_SPAN = "POST /v1/messages"
# (key, label, body name, upstream mode)
SCENARIOS = [
    ("conv_large", "converted, large", "large_converted", "json"),
    ("conv_stream", "converted stream, large → 200 chunks", "large_converted_stream", "stream"),
    ("pass_large", "passthrough, large", "large_passthrough", "json"),
    ("pass_stream", "passthrough stream, large → 200 events", "large_passthrough_stream", "stream"),
]
ORDER = [SERVER_SPAN, "parse", "validate", "resolve_target", "dispatch", "decode_body", "select_key",
         "render_headers", "azure_deployment", "anthropic_to_openai", "restore_thought_signatures",
         "passthrough_body", "upstream", "upstream.attempt", "capture_thought_signatures",
         "openai_to_anthropic", "fallback.attempt"]
STREAM_CHUNKS = upstream.STREAM_CHUNKS


def log(*a):
    print(f"[stages {time.strftime('%H:%M:%S')}]", *a, file=sys.stderr, flush=True)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex((HOST, port)) == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def pct(xs, q):
    """q-th percentile (nearest rank on the sorted list); None for no data."""
    if not xs:
        return None
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, int(round(q / 100 * (len(xs) - 1)))))
    return xs[k]


# ---------------------------------------------------------------- client (a subprocess)
async def _client(urls: list[str], body_path: str, total: int, stream: bool, timeout_s: float) -> dict:
    """``total`` sequential requests to each URL, alternating between them request by request (so
    that the tracing-on and tracing-off servers see the same conditions); wall time of each."""
    import aiohttp

    body = Path(body_path).read_bytes()
    times = [[] for _ in urls]
    errors, why = [0] * len(urls), None
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=len(urls)),
                                     timeout=aiohttp.ClientTimeout(total=30)) as s:
        for _ in range(total):
            if time.monotonic() > deadline:
                why = f"stopped after {timeout_s:.0f} s"
                break
            for i, url in enumerate(urls):
                t0 = time.perf_counter()
                status, data = None, b""
                try:
                    async with s.post(url, data=body, headers=HEADERS) as r:
                        status, data = r.status, await r.read()
                        ok = status == 200 and (b"event: message_stop" in data[-400:] if stream
                                                else data[:1] == b"{")
                except Exception as e:  # counted, the run goes on
                    ok, why = False, f"{type(e).__name__}: {e}"
                times[i].append(round((time.perf_counter() - t0) * 1e6, 1))
                if not ok:
                    errors[i] += 1
                    why = why or f"HTTP {status}: {data[:200]!r}"
    return {"times_us": times, "errors": errors, "why": why}


def client_main(args) -> int:
    out = asyncio.run(_client(args.url.split(","), args.body, args.total, args.stream, args.budget))
    sys.stdout.write(json.dumps(out))
    return 0


# ---------------------------------------------------------------- stand-in upstream (no nginx)
def serve_upstream_main(port: int) -> int:
    """aiohttp server answering the same static files as the nginx upstream (used only when nginx
    is not installed)."""
    from aiohttp import web

    answers = {name: fn() for name, fn in upstream.ANSWERS.items()}
    app = web.Application(client_max_size=64 * 1024 * 1024)
    for path, fname, ctype in upstream.ROUTES:
        async def h(request, _b=answers[fname], _c=ctype):
            await request.read()
            return web.Response(body=_b, content_type=_c, headers={"Cache-Control": "no-cache"})
        app.router.add_post(path, h)
    web.run_app(app, host=HOST, port=port, access_log=None, print=None)
    return 0


class Child:
    """A subprocess in its own session, killed as a group."""

    def __init__(self, argv, log_path: Path):
        self.logf = open(log_path, "wb")
        self.p = subprocess.Popen(argv, stdout=self.logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  start_new_session=True)

    def stop(self):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.p.pid, sig)
            except (ProcessLookupError, PermissionError):
                break
            try:
                self.p.wait(5)
                break
            except subprocess.TimeoutExpired:
                continue
        self.logf.close()


def _taskset(cpu: str | None) -> list[str]:
    return ["taskset", "-c", cpu] if cpu is not None and (os.cpu_count() or 1) >= 2 else []


def check_upstream(port: int) -> str | None:
    import urllib.request
    try:
        req = urllib.request.Request(f"http://{HOST}:{port}/json/v1/chat/completions", data=b"{}",
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            j = json.loads(r.read())
        return None if j.get("choices") else "no choices in the answer"
    except Exception as e:
        return f"{type(e).__name__}: {e}"


def ensure_upstream(port: int, cpu: str | None) -> Child | None:
    """Reuse the bench upstream if it listens on ``port``; else start nginx (or the stand-in)."""
    if port_open(port):
        why = check_upstream(port)
        if why:
            raise SystemExit(f"port {port} is taken by something that is not the bench upstream: {why}")
        log(f"reusing the upstream on 127.0.0.1:{port}")
        return None
    WORK.mkdir(parents=True, exist_ok=True)
    import shutil
    if shutil.which("nginx"):
        upstream.write_answers(WORK / "answers")
        conf = WORK / "nginx-upstream-stages.conf"
        conf.write_text(upstream.nginx_upstream_conf(WORK, WORK / "answers", port)
                        .replace("nginx-upstream.pid", "nginx-upstream-stages.pid"))
        child = Child(_taskset(cpu) + ["nginx", "-p", str(WORK), "-c", str(conf)], WORK / "nginx-upstream-stages.log")
        what = "nginx"
    else:
        child = Child(_taskset(cpu) + [sys.executable, str(Path(__file__)), "--serve-upstream", str(port)],
                      WORK / "upstream-stages.log")
        what = "aiohttp stand-in (nginx not found)"
    end = time.monotonic() + 15
    while time.monotonic() < end and not port_open(port):
        if child.p.poll() is not None:
            break
        time.sleep(0.1)
    why = check_upstream(port) if port_open(port) else "did not start"
    if why:
        child.stop()
        raise SystemExit(f"upstream ({what}) on {port}: {why}")
    log(f"started the upstream ({what}) on 127.0.0.1:{port}")
    return child


# ---------------------------------------------------------------- gateway in this process
def build_gateway(spec_dir: Path, up_port: int, port: int, mode: str, tracer_provider):
    from vandamme.engine.compiler import compile_gateway
    from vandamme.engine.loader import load_spec

    environ = {"OPENAI_API_KEY": "bench", "OPENAI_BASE_URL": f"http://{HOST}:{up_port}/{mode}/v1",
               "ANTHROPIC_API_KEY": "bench", "ANTHROPIC_BASE_URL": f"http://{HOST}:{up_port}/{mode}",
               "HOST": HOST, "PORT": str(port)}
    return compile_gateway(load_spec(spec_dir, environ), tracer_provider=tracer_provider)


class Served:
    """The real Sanic server for ``gateway`` in the running loop (as tests/harness.py starts it)."""

    touched = False  # Sanic's TouchUp rewrites its HTTP classes once per process (the first app)

    def __init__(self, gateway, port: int):
        self.gateway, self.port, self.server = gateway, port, None

    async def __aenter__(self):
        from vandamme.engine.server import create_app
        app = create_app(self.gateway)
        app.config.TOUCHUP = not Served.touched
        Served.touched = True
        self.server = await app.create_server(host=HOST, port=self.port, return_asyncio_server=True,
                                              access_log=False)
        await self.server.startup()
        await self.server.before_start()
        await self.server.after_start()
        return self

    async def __aexit__(self, *exc):
        await self.server.before_stop()
        self.server.close()
        await self.server.wait_closed()
        await self.server.after_stop()


async def run_client(url: str, body: Path, total: int, stream: bool, cpu: str | None, budget: float) -> dict:
    argv = _taskset(cpu) + [sys.executable, str(Path(__file__)), "--client", url, "--body", str(body),
                            "--total", str(total), "--budget", str(budget)] + (["--stream"] if stream else [])
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), budget + 30)
    except BaseException:
        try:
            proc.kill()
        except ProcessLookupError:
            pass
        await proc.wait()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"client exited {proc.returncode}: {err.decode(errors='replace')[-500:]}")
    return json.loads(out)


# ---------------------------------------------------------------- span statistics
def span_stats(spans, warmup: int) -> dict:
    """Per span name: n per request, median / p90 duration and self time (µs), parent name."""
    by_trace = defaultdict(list)
    for s in spans:
        by_trace[s.context.trace_id].append(s)
    traces = sorted(by_trace.values(), key=lambda ss: min(x.start_time for x in ss))[warmup:]
    dur, self_t, parents = defaultdict(list), defaultdict(list), defaultdict(Counter)
    for ss in traces:
        ids = {x.context.span_id: x for x in ss}
        child_sum = defaultdict(int)
        for x in ss:
            if x.parent is not None and x.parent.span_id in ids:
                child_sum[x.parent.span_id] += x.end_time - x.start_time
        for x in ss:
            d = x.end_time - x.start_time
            dur[x.name].append(d / 1000)
            self_t[x.name].append((d - child_sum[x.context.span_id]) / 1000)
            p = ids.get(x.parent.span_id) if x.parent is not None else None
            parents[x.name][p.name if p is not None else None] += 1
    n = len(traces)
    out = {}
    for name, xs in dur.items():
        has_children = any(v != w for v, w in zip(xs, self_t[name]))
        out[name] = {
            "per_request": round(len(xs) / n, 2) if n else None,
            "p50_us": round(statistics.median(xs), 1), "p90_us": round(pct(xs, 90), 1),
            "self_p50_us": round(statistics.median(self_t[name]), 1) if has_children else None,
            "self_p90_us": round(pct(self_t[name], 90), 1) if has_children else None,
            "parent": parents[name].most_common(1)[0][0],
        }
    return {"traces": n, "spans_per_request": round(sum(len(t) for t in traces) / n, 2) if n else None,
            "spans": out}


# ---------------------------------------------------------------- SDK micro-benchmarks
def sdk_overhead(sample_spans, n: int = 10_000) -> dict:
    """µs per span, timed like the stage wrapper does it (start_as_current_span, set_attributes,
    end), 10,000 spans inside one parent span."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, TraceIdRatioBased

    attrs = {"vandamme.stage": "x", "vandamme.request_id": "req_0123456789abcdef", "vandamme.provider": "openai",
             "gen_ai.system": "openai", "vandamme.model": "gpt-4o", "gen_ai.request.model": "gpt-4o"}

    def timed(tp, with_parent=True) -> float:
        tracer = tp.get_tracer("bench")
        best = None
        for _ in range(3):  # best of 3: the cost without interference
            t0 = time.perf_counter()
            if with_parent:
                with tracer.start_as_current_span("parent"):
                    for _ in range(n):
                        with tracer.start_as_current_span("stage") as sp:
                            sp.set_attributes(attrs)
            else:
                for _ in range(n):
                    with tracer.start_as_current_span("root") as sp:
                        sp.set_attributes(attrs)
            dt = (time.perf_counter() - t0) / n * 1e6
            best = dt if best is None else min(best, dt)
        return round(best, 2)

    res = {}
    tp = TracerProvider(sampler=ParentBased(ALWAYS_ON))
    exp = InMemorySpanExporter()
    tp.add_span_processor(SimpleSpanProcessor(exp))
    res["span_inmemory_us"] = timed(tp)
    # what of it lands inside a span's own duration: an empty stage span, start to end
    durs = [(x.end_time - x.start_time) / 1000 for x in exp.get_finished_spans() if x.name == "stage"]
    res["empty_span_duration_us"] = round(statistics.median(durs), 2) if durs else None
    exp.clear()
    tp.shutdown()
    tp = TracerProvider(sampler=ParentBased(ALWAYS_ON))
    res["span_no_processor_us"] = timed(tp)
    tp = TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.0)))
    res["span_sampled_out_root_us"] = timed(tp, with_parent=False)
    res["span_sampled_out_child_us"] = timed(tp)
    try:
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
        spans = list(sample_spans)[:2000]
        if spans:
            best = None
            for _ in range(3):
                t0 = time.perf_counter()
                encode_spans(spans).SerializeToString()
                dt = (time.perf_counter() - t0) / len(spans) * 1e6
                best = dt if best is None else min(best, dt)
            res["otlp_encode_per_span_us"] = round(best, 2)
    except ImportError:
        pass
    res["n"] = n
    return res


# ---------------------------------------------------------------- the run
async def measure(args, bodies_paths: dict) -> dict:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased

    exporter = InMemorySpanExporter()
    tp = TracerProvider(resource=Resource.create({"service.name": "vandamme-stages"}),
                        sampler=ParentBased(ALWAYS_ON))  # explicit: OTEL_TRACES_SAMPLER must not apply
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    total = args.warmup + args.n
    res: dict = {"scenarios": {}}
    sample = []
    for key, label, body_name, mode in SCENARIOS:
        stream = "stream" in body_name
        sc: dict = {"label": label, "body_bytes": bodies_paths[body_name].stat().st_size}
        # two servers in this process: tracing on (args.port) and off (a free port); the client
        # alternates between them, so both see the same machine state
        port_off = free_port()
        gw_on = build_gateway(args.spec_dir, args.upstream_port, args.port, mode, tp)
        gw_off = build_gateway(args.spec_dir, args.upstream_port, port_off, mode, None)
        exporter.clear()
        async with Served(gw_on, args.port), Served(gw_off, port_off):
            urls = f"http://{HOST}:{args.port}/v1/messages,http://{HOST}:{port_off}/v1/messages"
            c = await run_client(urls, bodies_paths[body_name], total, stream, args.client_cpu, args.budget)
        for i, which in enumerate(("on", "off")):
            times = c["times_us"][i][args.warmup:]
            wall = {"n": len(times), "errors": c["errors"][i], "p50_us": pct(times, 50), "p90_us": pct(times, 90)}
            if c["errors"][i]:
                wall["why"] = c["why"]
                log(f"  {key} tracing {which}: {c['errors'][i]} errors: {c['why']}")
            sc[f"wall_{which}"] = wall
        spans = exporter.get_finished_spans()
        sc.update(span_stats(spans, args.warmup))
        if key == "conv_large":
            sample = spans[-2000:]
        on, off = sc["wall_on"]["p50_us"], sc["wall_off"]["p50_us"]
        sc["overhead_p50_us"] = round(on - off, 1) if on is not None and off is not None else None
        srv = (sc.get("spans") or {}).get(SERVER_SPAN) or {}
        log(f"  {key}: {sc.get('traces')} traces, {sc.get('spans_per_request')} spans/request, server span p50 "
            f"{srv.get('p50_us')} µs; client wall p50 on {on} / off {off} µs")
        res["scenarios"][key] = sc
    exporter.clear()
    tp.shutdown()
    res["sdk"] = sdk_overhead(sample)
    log(f"  SDK: {res['sdk']}")
    return res


def machine() -> dict:
    import platform
    cpu = cpu_model()
    try:
        from importlib.metadata import version
        otel = version("opentelemetry-sdk")
    except Exception:
        otel = "?"
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "nproc": os.cpu_count(), "cpu": cpu,
            "python": platform.python_version(), "otel_sdk": otel}


# ---------------------------------------------------------------- Markdown
def _f(x, nd=0):
    if x is None:
        return "–"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{nd}f}" if nd else f"{x:.0f}" if abs(x) >= 10 else f"{x:.1f}"


def render(res: dict) -> str:
    m = res["meta"]
    sc = res["scenarios"]
    keys = [k for k, *_ in SCENARIOS if k in sc]
    out = [f"Last run: {m['date']} · {m['nproc']} CPUs ({m['cpu']}) · Python {m['python']} · "
           f"opentelemetry-sdk {m['otel_sdk']} · {m['n']} sequential requests per scenario after "
           f"{m['warmup']} warm-up · gateway on core 0, upstream ({m.get('upstream', 'nginx')}) and client "
           f"on core 1.", ""]
    out.append("Span durations in µs, median / p90 (wall time of the span; for the stages other than "
               "`upstream` that is CPU time, nothing else runs on the loop). \"self\" = the span minus "
               "its child spans.")
    out.append("")
    out.append("| span | nests in | " + " | ".join(f"{sc[k]['label']}" for k in keys) + " |")
    out.append("|---|---|" + "---:|" * len(keys))
    names = [n for n in ORDER if any(n in sc[k].get("spans", {}) for k in keys)]
    names += sorted({n for k in keys for n in sc[k].get("spans", {})} - set(names))

    def cell(k, n, self_=False):
        s = sc[k].get("spans", {}).get(n)
        if not s:
            return "–"
        a, b = (s["self_p50_us"], s["self_p90_us"]) if self_ else (s["p50_us"], s["p90_us"])
        rep = f" (×{s['per_request']:g})" if s["per_request"] and abs(s["per_request"] - 1) > 0.01 else ""
        return f"{_f(a)} / {_f(b)}{rep}"

    for n in names:
        parent = next((sc[k]["spans"][n]["parent"] for k in keys if n in sc[k].get("spans", {})), None)
        label = f"`{n}`" if n != SERVER_SPAN else f"`{n}` (server span)"
        if n == SERVER_SPAN and "conv_stream" in keys:
            label += ", for streams until the last chunk is sent"
        out.append(f"| {label} | {('`' + parent + '`') if parent else '–'} | "
                   + " | ".join(cell(k, n) for k in keys) + " |")
        if any((sc[k].get("spans", {}).get(n) or {}).get("self_p50_us") is not None for k in keys):
            what = {SERVER_SPAN: "Sanic, request/response I/O, the stream body",
                    "dispatch": "target loop around the provider pipeline",
                    "upstream": "retry/key loop around the attempts"}.get(n, "outside its child spans")
            out.append(f"| ↳ `{n}` self ({what}) | | " + " | ".join(cell(k, n, True) for k in keys) + " |")
    out.append("| spans per request | | " + " | ".join(_f(sc[k].get("spans_per_request"), 1) for k in keys) + " |")
    out.append("| client wall time per request, tracing on | | "
               + " | ".join(f"{_f(sc[k]['wall_on']['p50_us'])} / {_f(sc[k]['wall_on']['p90_us'])}" for k in keys) + " |")
    out.append("| client wall time per request, tracing off | | "
               + " | ".join(f"{_f(sc[k]['wall_off']['p50_us'])} / {_f(sc[k]['wall_off']['p90_us'])}" for k in keys) + " |")
    out.append("| tracing overhead per request (on − off, medians) | | "
               + " | ".join(_f(sc[k].get("overhead_p50_us")) for k in keys) + " |")
    errs = sum(sc[k]["wall_on"]["errors"] + sc[k]["wall_off"]["errors"] for k in keys)
    out.append("")
    if errs:
        out.append(f"**{errs} requests failed** during the run (see bench/.work/stages.json).")
        out.append("")
    sdk = res.get("sdk") or {}
    out.append(f"For comparison, live OpenTelemetry SDK spans ({sdk.get('n', 10000):,} spans, best of 3, µs per span): "
               f"start + set_attributes + end of a child span with the in-memory processor "
               f"{_f(sdk.get('span_inmemory_us'), 1)} (of which {_f(sdk.get('empty_span_duration_us'), 1)} between its "
               f"start and end times), without any processor {_f(sdk.get('span_no_processor_us'), 1)}; a sampled-out "
               f"request's root span {_f(sdk.get('span_sampled_out_root_us'), 1)}, a child of it "
               f"{_f(sdk.get('span_sampled_out_child_us'), 1)}; encoding a finished span to OTLP protobuf with the "
               f"SDK's exporter {_f(sdk.get('otlp_encode_per_span_us'), 1)}.")
    k0 = "conv_large" if "conv_large" in sc else (keys[0] if keys else None)
    if k0 and sdk.get("span_inmemory_us"):
        spr = sc[k0].get("spans_per_request") or 0
        est = spr * sdk["span_inmemory_us"]
        out.append("")
        out.append(f"How to read it: a stage's duration is the difference of two clock readings the pipeline loop "
                   f"takes at its boundaries, so it holds next to no bookkeeping of its own (an empty live SDK "
                   f"span would hold {_f(sdk.get('empty_span_duration_us'), 1)} µs); the spans are built from "
                   f"the readings once the response is complete, here as SDK spans handed to the in-memory "
                   f"processor. For {sc[k0]['label']}: {spr:g} spans per request, which as live SDK spans would "
                   f"cost about {spr:g} × {sdk['span_inmemory_us']:.1f} µs ≈ {est:,.0f} µs per request; tracing "
                   f"on here added {_f(sc[k0].get('overhead_p50_us'))} µs of client wall time (on − off). With an "
                   f"OTLP endpoint the spans are built and encoded in the exporter process instead "
                   f"(\"Vandamme pipeline variants\" above: gateway process CPU per request, tracing on against off).")
    return "\n".join(out)


def update_doc(res: dict, doc: Path) -> None:
    text = doc.read_text() if doc.exists() else "# Performance\n"
    if BEGIN not in text or END not in text:
        text = text.rstrip() + f"\n\n## Per-stage cost\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(head + BEGIN + "\n" + render(res) + "\n" + END + tail)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=int(os.environ.get("BENCH_STAGES_N", "300")))
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--port", type=int, default=18920, help="gateway port (0: any free port)")
    ap.add_argument("--upstream-port", type=int, default=18901)
    ap.add_argument("--spec-dir", type=Path, default=HERE / "specs")
    ap.add_argument("--gw-cpu", default="0")
    ap.add_argument("--client-cpu", default="1")
    ap.add_argument("--budget", type=float, default=120.0, help="seconds per client run at most")
    ap.add_argument("--json", type=Path, default=WORK / "stages.json")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "performance.md")
    ap.add_argument("--no-doc", action="store_true", default=os.environ.get("BENCH_NO_DOC") == "1")
    ap.add_argument("--render", action="store_true", help="only re-render the doc from --json")
    ap.add_argument("--client", help=argparse.SUPPRESS)
    ap.add_argument("--body", help=argparse.SUPPRESS)
    ap.add_argument("--total", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--stream", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--serve-upstream", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        args.url = args.client
        return client_main(args)
    if args.serve_upstream:
        return serve_upstream_main(args.serve_upstream)
    if args.render:
        update_doc(json.loads(args.json.read_text()), args.doc)
        print(f"updated {args.doc}")
        return 0

    signal.signal(signal.SIGTERM, lambda s, f: (_ for _ in ()).throw(KeyboardInterrupt(f"signal {s}")))
    if (os.cpu_count() or 1) >= 2:
        try:
            os.sched_setaffinity(0, {int(args.gw_cpu)})
        except (OSError, ValueError):
            pass
    else:
        args.client_cpu = None
    if args.port == 0:
        args.port = free_port()
    elif port_open(args.port):
        log(f"port {args.port} is in use; pass --port 0 for any free port")
        return 2
    os.environ.pop("OTEL_TRACES_SAMPLER", None)
    os.environ.pop("OTEL_TRACES_SAMPLER_ARG", None)
    from vandamme.engine.logs import setup_logging
    setup_logging("WARNING")
    WORK.mkdir(parents=True, exist_ok=True)
    paths = bodies.write_all(WORK / "bodies")
    up = ensure_upstream(args.upstream_port, args.client_cpu)
    t0 = time.monotonic()
    try:
        res = asyncio.run(measure(args, paths))
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        if up is not None:
            up.stop()
    res["meta"] = {**machine(), "n": args.n, "warmup": args.warmup, "elapsed_s": round(time.monotonic() - t0, 1),
                   "upstream": "nginx" if up is None or "nginx" in " ".join(up.p.args) else "aiohttp stand-in"}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=1))
    log(f"raw figures in {args.json}")
    if not args.no_doc:
        update_doc(res, args.doc)
        log(f"{args.doc} updated")
    else:
        print(render(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
