"""Benchmark orchestrator for Vandamme (``make bench``).

Starts a static nginx upstream, then, one system at a time, the system under test (direct to the
upstream, nginx as a reverse proxy, the Sanic + aiohttp stack floor (``bench/stack_floor.py``),
vandamme-proxy 2.0.9, claude-code-router, optionally LiteLLM, and Vandamme itself), checks one
answer per scenario, loads it with wrk at concurrency 1 and 64, measures the system's CPU time per
request from /proc, its RSS, stream timings at concurrency 1 and the memory held by 1,000
concurrent slow streams, and audits every gateway's answers against a recording upstream
(``bench/answers.py``). For Vandamme also: its pipeline variants against the plain pipeline in one
block (tracing on at sample ratio 1.0, 0.1 and 0, two declared body-touching middleware), 1 and 2
workers unpinned, and at the end the per-stage cost table (``bench/stage_costs.py``). Writes
``bench/.work/results.json`` and the result tables into ``docs/performance.md`` between
``<!-- bench:begin -->`` and ``<!-- bench:end -->`` (the stage table between ``<!-- stages:begin -->``
and ``<!-- stages:end -->``, raw figures in ``bench/.work/stages.json``).

Environment:
  BENCH_DURATION  seconds per concurrency-64 wrk run (default 8; concurrency-1 runs last half as long)
  BENCH_REPEAT    runs per point (default 3)
  BENCH_SYSTEMS   comma list to restrict (direct,nginx,floor,vdm,ccr,litellm,vandamme)
  BENCH_SCENARIOS comma list to restrict (conv_small,conv_large,pass_large,conv_stream,pass_stream)
  BENCH_LITELLM=1 also run LiteLLM proxy (installs it into bench/.work/venv-litellm)
  BENCH_STREAMS   concurrent slow streams (default 1000; 0 skips the test)
  BENCH_TRACING=0 / BENCH_MIDDLEWARE=0  leave the tracing / middleware variants out of the variants block
  BENCH_WORKERS=0 skip the 1-vs-2-workers block           BENCH_AUDIT=0  skip the answer audit
  BENCH_STAGES=0  skip the per-stage cost table           BENCH_STAGES_N  requests per scenario (300)
  BENCH_NO_DOC=1  do not touch docs/performance.md

Every process started here is killed on exit, Ctrl-C or error. Only 127.0.0.1 is ever contacted.
"""
from __future__ import annotations

import asyncio
import datetime as _dt
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work"
sys.path.insert(0, str(HERE))

import answers  # noqa: E402
import bodies  # noqa: E402
from machine import cpu_model  # noqa: E402
import upstream  # noqa: E402

HOST = "127.0.0.1"
UP_PORT, PROXY_PORT, SLOW_PORT, OTLP_PORT, CAPTURE_PORT, GW_PORT = 18901, 18902, 18911, 18912, 18913, 18920
SIDE_PORTS = (18921, 18922, 18923, 18924, 18925)  # gateways measured side by side (Vandamme's variants, workers)
DURATION = float(os.environ.get("BENCH_DURATION", "8"))
C1_DURATION = DURATION / 2
REPEAT = int(os.environ.get("BENCH_REPEAT", "3"))
N_STREAMS = int(os.environ.get("BENCH_STREAMS", "1000"))


def _on(name: str, default: str = "1") -> bool:
    return os.environ.get(name, default) != "0"


LITELLM = os.environ.get("BENCH_LITELLM", "0") == "1"
TRACING, MIDDLEWARE, WORKERS, AUDIT, STAGES = (_on(k) for k in (
    "BENCH_TRACING", "BENCH_MIDDLEWARE", "BENCH_WORKERS", "BENCH_AUDIT", "BENCH_STAGES"))
ONLY = [s for s in os.environ.get("BENCH_SYSTEMS", "").split(",") if s]
ONLY_SCENARIOS = [s for s in os.environ.get("BENCH_SCENARIOS", "").split(",") if s]
PROJECT_PY = ROOT / ".venv" / "bin" / "python"
AUX_PY = str(PROJECT_PY) if PROJECT_PY.exists() else sys.executable
VDM_BIN = WORK / "venv-vdm" / "bin" / "vdm"
LITELLM_BIN = WORK / "venv-litellm" / "bin" / "litellm"
CCR_PACKAGE = WORK / "ccr" / "node_modules" / "@musistudio" / "claude-code-router"
CCR_HOME = WORK / "ccr-home"
VANDAMME_BIN = ROOT / ".venv" / "bin" / "vandamme"
NCPU = os.cpu_count() or 1
GW_CPU, LOAD_CPU = ("0", "1") if NCPU >= 2 else ("0", "0")
CLK = os.sysconf("SC_CLK_TCK")
STREAM_CHUNKS = upstream.STREAM_CHUNKS


def log(*a):
    print(f"[bench {time.strftime('%H:%M:%S')}]", *a, flush=True)


# ---------------------------------------------------------------- processes
_PROCS: list["Proc"] = []


class Proc:
    """A child in its own session (so its whole group can be killed), pinned with taskset."""

    def __init__(self, name: str, argv: list[str], *, cpu: str | None = None, env: dict | None = None,
                 cwd: Path | None = None):
        self.name = name
        self.logpath = WORK / f"{name}.log"
        self.logf = open(self.logpath, "wb")
        full = (["taskset", "-c", cpu] if cpu is not None else []) + argv
        self.p = subprocess.Popen(full, stdout=self.logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  env=env, cwd=str(cwd) if cwd else None, start_new_session=True)
        self.pid = self.p.pid
        _PROCS.append(self)

    def alive(self) -> bool:
        return self.p.poll() is None

    def stop(self, timeout: float = 8.0) -> None:
        if self.p.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # the group may outlive its leader (workers): kill whatever is left of it
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.p.wait(3)
        except subprocess.TimeoutExpired:
            pass
        self.logf.close()
        if self in _PROCS:
            _PROCS.remove(self)

    def tail(self, n: int = 15) -> str:
        try:
            lines = self.logpath.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])


def stop_all() -> None:
    for p in list(reversed(_PROCS)):
        try:
            p.stop(timeout=5)
        except Exception as e:  # never leave anything behind because one stop failed
            log(f"stop {p.name}: {e}")


def _on_term(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


# ---------------------------------------------------------------- /proc measurements
def _stat_fields(pid) -> list[bytes] | None:
    """/proc/PID/stat after the command name: field 4 (ppid) is [1], utime..cstime are [11:15];
    None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            s = f.read()
    except OSError:
        return None
    return s[s.rfind(b")") + 2:].split()


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit() and (rest := _stat_fields(d)) is not None:
            kids.setdefault(int(rest[1]), []).append(int(d))
    return kids


def tree(pid: int) -> list[int]:
    kids = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def cpu_seconds(pid: int) -> float:
    """utime+stime of the process tree, plus cutime+cstime (children already reaped)."""
    total = 0
    for p in tree(pid):
        if (rest := _stat_fields(p)) is not None:
            total += int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14])
    return total / CLK


def cpu_by_process(pid: int) -> dict[int, float]:
    """utime+stime of each process of the tree, seconds, by pid."""
    out = {}
    for p in tree(pid):
        if (rest := _stat_fields(p)) is not None:
            out[p] = (int(rest[11]) + int(rest[12])) / CLK
    return out


def _kb_field_by_process(pid: int, proc_file: str, field: str) -> dict[int, float]:
    """A kB figure (``field`` of /proc/PID/``proc_file``) of every process of the tree, MiB, by pid."""
    out = {}
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/{proc_file}") as f:
                for line in f:
                    if line.startswith(field):
                        out[p] = int(line.split()[1]) / 1024
                        break
        except OSError:
            continue
    return out


def rss_by_process(pid: int) -> dict[int, float]:
    """VmRSS of every process of the tree, MiB, by pid."""
    return _kb_field_by_process(pid, "status", "VmRSS:")


def pss_by_process(pid: int) -> dict[int, float]:
    """Proportional set size of every process of the tree, MiB, by pid: pages shared between
    processes (forked workers share their parent's) counted once in all, split among the sharers."""
    return _kb_field_by_process(pid, "smaps_rollup", "Pss:")


def rss_mb(pid: int) -> float:
    """Sum of VmRSS over the process tree, MiB."""
    return sum(rss_by_process(pid).values())


class RssSampler:
    """Samples the tree's RSS every ``period`` s: the maximum of the sum (``max``) and each
    process's own maximum (``per_process``, by pid)."""

    def __init__(self, pid: int, period: float = 0.1):
        self.pid, self.period, self.max = pid, period, 0.0
        self.per_process: dict[int, float] = {}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            now = rss_by_process(self.pid)
            self.max = max(self.max, sum(now.values()))
            for p, mb in now.items():
                self.per_process[p] = max(self.per_process.get(p, 0.0), mb)
            self._stop.wait(self.period)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *a):
        self._stop.set()
        self._t.join(2)


# ---------------------------------------------------------------- helpers
def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex((HOST, port)) == 0


def wait_port(port: int, timeout: float, proc: Proc | None = None) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and not proc.alive():
            return False
        if port_open(port):
            return True
        time.sleep(0.1)
    return False


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def run_wrk(url: str, body: Path, conns: int, duration: float, pid: int | None) -> dict:
    env = dict(os.environ, BENCH_BODY=str(body))
    argv = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{conns}", f"-d{max(1, round(duration))}s",
            "--timeout", "30s", "-s", str(HERE / "post.lua"), url]
    cpu0 = cpu_seconds(pid) if pid else None
    by_pid0 = cpu_by_process(pid) if pid else None
    sampler = RssSampler(pid) if pid else None
    t0 = time.monotonic()
    if sampler:
        sampler.__enter__()
    try:
        out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=duration + 60)
    finally:
        if sampler:
            sampler.__exit__()
    wall = time.monotonic() - t0
    cpu1 = cpu_seconds(pid) if pid else None
    by_pid1 = cpu_by_process(pid) if pid else None
    m = re.search(r"^BENCH_JSON (\{.*\})$", out.stdout, re.M)
    if not m:
        raise RuntimeError(f"wrk produced no summary: {out.stdout[-400:]} {out.stderr[-400:]}")
    r = json.loads(m.group(1))
    secs = r["duration_us"] / 1e6
    r["rps"] = r["requests"] / secs if secs else 0.0
    r["errors"] = r["non2xx"] + r["err_connect"] + r["err_read"] + r["err_write"] + r["err_timeout"]
    r["wall_s"] = wall
    if pid:
        r["cpu_s"] = cpu1 - cpu0
        r["cpu_ms_per_req"] = (r["cpu_s"] * 1000 / r["ok"]) if r["ok"] else None
        # the same, per process of the tree (e.g. Vandamme's span exporter apart from the gateway)
        r["cpu_s_by_pid"] = {p: by_pid1[p] - by_pid0.get(p, 0.0) for p in by_pid1}
        r["rss_max_mb"] = sampler.max
        r["rss_max_by_pid_mb"] = sampler.per_process
    return r


# ---------------------------------------------------------------- HTTP checks and stream timing (aiohttp)
import aiohttp  # noqa: E402  (the project venv has it; make bench runs this with .venv/bin/python)

HEADERS = {"content-type": "application/json", "anthropic-version": "2023-06-01", "x-api-key": "bench"}
_OPENAI_TEXT = re.compile(rb'"delta":\{"content":"[^"]')


async def _check(url: str, body: bytes, expect: str, stream: bool) -> str | None:
    """Return None if the answer looks right, else a short reason."""
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        async with s.post(url, data=body, headers=HEADERS) as r:
            data = await r.read()
            ctype = r.headers.get("content-type", "")
            if r.status != 200:
                return f"HTTP {r.status}: {data[:200]!r}"
    if not stream:
        if "json" not in ctype:
            return f"content-type {ctype!r}"
        try:
            j = json.loads(data)
        except ValueError:
            return f"not JSON: {data[:120]!r}"
        if expect == "anthropic":
            if j.get("type") != "message" or not isinstance(j.get("content"), list) or not j["content"]:
                return f"not an Anthropic message: {data[:160]!r}"
        elif not j.get("choices"):
            return f"not an OpenAI completion: {data[:160]!r}"
        return None
    if "text/event-stream" not in ctype:
        return f"content-type {ctype!r}"
    if expect == "anthropic":
        n = data.count(b"text_delta")
        for needle in (b"event: message_start", b"event: content_block_start", b"event: message_delta",
                       b"event: message_stop"):
            if needle not in data:
                return f"stream lacks {needle.decode()!r}"
        if n < STREAM_CHUNKS * 0.9:
            return f"only {n} text deltas"
    else:
        if b"data: [DONE]" not in data or data.count(b"chat.completion.chunk") < STREAM_CHUNKS * 0.9:
            return "not a complete OpenAI stream"
    return None


def check_answer(url, body, expect, stream) -> str | None:
    try:
        return asyncio.run(asyncio.wait_for(_check(url, body, expect, stream), 40))
    except Exception as e:
        return f"{type(e).__name__}: {e}"


async def _stream_times(url: str, body: bytes, expect: str, n: int, budget: float) -> dict:
    """Sequential streams at concurrency 1: time to first body byte, to first text delta, to end."""
    ttfb, first_text, total = [], [], []
    errors = 0
    end = time.monotonic() + budget
    timeout = aiohttp.ClientTimeout(total=60)
    pat = None if expect == "anthropic" else _OPENAI_TEXT
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=1)) as s:
        for i in range(n):
            if i >= 3 and time.monotonic() > end:
                break
            t0 = time.perf_counter()
            t_first = t_text = None
            buf = b""
            try:
                async with s.post(url, data=body, headers=HEADERS) as r:
                    if r.status != 200:
                        errors += 1
                        await r.read()
                        continue
                    async for chunk in r.content.iter_any():
                        now = time.perf_counter()
                        if t_first is None:
                            t_first = now
                        if t_text is None:
                            buf = (buf + chunk)[-4096:]
                            if (b"text_delta" in buf) if pat is None else bool(pat.search(buf)):
                                t_text = now
                t_end = time.perf_counter()
            except Exception:
                errors += 1
                continue
            if i == 0:
                continue  # the first stream warms the connection; not counted
            ttfb.append((t_first - t0) * 1000)
            first_text.append(((t_text or t_end) - t0) * 1000)
            total.append((t_end - t0) * 1000)
    return {"n": len(total), "errors": errors, "ttfb_ms": med(ttfb), "first_text_ms": med(first_text),
            "total_ms": med(total)}


def stream_times(url, body, expect, n=30, budget=None) -> dict:
    budget = budget if budget is not None else max(3.0, DURATION)
    try:
        return asyncio.run(asyncio.wait_for(_stream_times(url, body, expect, n, budget), budget + 90))
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"}


async def _many_streams(url: str, body: bytes, n: int, pid: int, ramp_s: float = 6.0,
                        settle_s: float = 12.0, hold_s: float = 4.0) -> dict:
    """Open ``n`` streams through the gateway (slow upstream behind it), sample the gateway's RSS
    while they are all open, then drop them. Bounded to ramp_s + settle_s + hold_s seconds."""
    established = 0
    failed = 0
    started = asyncio.Event()
    first_bytes: list[float] = []

    async def one(s: aiohttp.ClientSession):
        nonlocal established, failed
        t0 = time.perf_counter()
        try:
            async with s.post(url, data=body, headers=HEADERS) as r:
                if r.status != 200:
                    failed += 1
                    await r.read()
                    return
                got = False
                async for _ in r.content.iter_any():
                    if not got:
                        got = True
                        established += 1
                        first_bytes.append(time.perf_counter() - t0)
                        if established >= n:
                            started.set()
        except asyncio.CancelledError:
            raise
        except Exception:
            failed += 1

    conn = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    rss_before = rss_mb(pid)
    cpu0 = cpu_seconds(pid)
    tasks = []
    t_start = time.monotonic()
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as s:
        try:
            batch = max(1, n // 20)
            for i in range(0, n, batch):
                for _ in range(min(batch, n - i)):
                    tasks.append(asyncio.create_task(one(s)))
                await asyncio.sleep(ramp_s / 20)
            try:
                await asyncio.wait_for(started.wait(), settle_s)
            except asyncio.TimeoutError:
                pass
            t_open = time.monotonic() - t_start
            peak = 0.0
            end = time.monotonic() + hold_s
            while time.monotonic() < end:
                peak = max(peak, rss_mb(pid))
                await asyncio.sleep(0.2)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return {"requested": n, "established": established, "failed": failed, "open_after_s": round(t_open, 2),
            "rss_before_mb": round(rss_before, 1), "rss_max_mb": round(peak, 1),
            "cpu_s": round(cpu_seconds(pid) - cpu0, 2),
            "first_byte_p50_ms": round(1000 * med(first_bytes), 1) if first_bytes else None}


def many_streams(url, body, n, pid) -> dict:
    try:
        return asyncio.run(asyncio.wait_for(_many_streams(url, body, n, pid), 60))
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"}


# ---------------------------------------------------------------- scenarios and systems
@dataclass
class Scenario:
    key: str
    label: str
    body: str          # bodies.py name
    mode: str          # json | stream (which upstream base URLs the system is started with)
    raw_path: str      # the upstream path for direct / nginx proxy
    raw_format: str    # what the upstream itself answers: openai | anthropic
    stream: bool


SCENARIOS = [
    Scenario("conv_small", "converted, non-stream, small (298 B)", "small_converted", "json",
             "/json/v1/chat/completions", "openai", False),
    Scenario("conv_large", "converted, non-stream, large (53 KB)", "large_converted", "json",
             "/json/v1/chat/completions", "openai", False),
    Scenario("pass_large", "Anthropic passthrough, non-stream, large", "large_passthrough", "json",
             "/json/v1/messages", "anthropic", False),
    Scenario("conv_stream", "converted, stream, large → 200 chunks", "large_converted_stream", "stream",
             "/stream/v1/chat/completions", "openai", True),
    Scenario("pass_stream", "Anthropic passthrough, stream, large → 200 deltas", "large_passthrough_stream",
             "stream", "/stream/v1/messages", "anthropic", True),
]


SCENARIO_BY_KEY = {s.key: s for s in SCENARIOS}
if ONLY_SCENARIOS:
    SCENARIOS = [s for s in SCENARIOS if s.key in ONLY_SCENARIOS]


class StartFailed(Exception):
    pass


@dataclass
class System:
    key: str
    label: str
    raw: bool = False                   # answers in the upstream's own format (direct, nginx)
    procs: list = field(default_factory=list)
    pid: int | None = None              # the process tree measured for CPU and RSS

    port = GW_PORT
    cpu: str | None = GW_CPU            # the core the system is pinned to (None: unpinned)
    passthrough = True                  # has an Anthropic passthrough mode

    def url(self, sc: Scenario) -> str:
        return f"http://{HOST}:{self.port}{sc.raw_path if self.raw else '/v1/messages'}"

    def supports(self, sc: Scenario) -> bool:
        return self.passthrough or sc.raw_format != "anthropic"

    def start(self, mode: str, env_extra: dict | None = None) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        for p in self.procs:
            p.stop()
        self.procs = []
        self.pid = None


def upstream_bases(mode: str) -> tuple[str, str]:
    """(OpenAI base incl. /v1, Anthropic base without /v1) for a mode: json / stream (the nginx
    upstream), slow (bench/slow_upstream.py), check (bench/capture_upstream.py, the answer audit)."""
    port = {"slow": SLOW_PORT, "check": CAPTURE_PORT}.get(mode)
    if port is not None:
        return f"http://{HOST}:{port}/v1", f"http://{HOST}:{port}"
    return f"http://{HOST}:{UP_PORT}/{mode}/v1", f"http://{HOST}:{UP_PORT}/{mode}"


def gw_env(mode: str, extra: dict | None = None) -> dict:
    ob, ab = upstream_bases(mode)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "VDM_", "LITELLM_"))}
    for k in list(env):
        if k.endswith(("_API_KEY", "_BASE_URL", "_API_FORMAT")) or k in ("HOST", "PORT", "HTTP_PROXY",
                                                                        "HTTPS_PROXY", "http_proxy", "https_proxy"):
            env.pop(k)
    env.update({"OPENAI_API_KEY": "bench", "OPENAI_BASE_URL": ob, "ANTHROPIC_API_KEY": "bench",
                "ANTHROPIC_BASE_URL": ab, "HOST": HOST, "PORT": str(GW_PORT), "NO_PROXY": "*",
                "PYTHONUNBUFFERED": "1"})
    env.update(extra or {})
    return env


class Direct(System):
    def __init__(self, up: Proc):
        super().__init__("direct", "direct to upstream (floor)", raw=True)
        self.port = UP_PORT
        self.up = up

    def start(self, mode, env_extra=None):
        self.pid = self.up.pid  # CPU/RSS figures are the upstream nginx's own


class NginxProxy(System):
    def __init__(self):
        super().__init__("nginx", "nginx reverse proxy", raw=True)
        self.port = PROXY_PORT

    def start(self, mode, env_extra=None):
        if self.procs:
            return
        conf = WORK / "nginx-proxy.conf"
        conf.write_text(upstream.nginx_proxy_conf(WORK, PROXY_PORT, UP_PORT if mode != "slow" else SLOW_PORT))
        p = Proc("nginx-proxy", ["nginx", "-p", str(WORK), "-c", str(conf)], cpu=GW_CPU)
        self.procs = [p]
        if not wait_port(PROXY_PORT, 15, p):
            raise StartFailed(p.tail())
        self.pid = p.pid

    def url(self, sc):
        return f"http://{HOST}:{PROXY_PORT}{sc.raw_path}"


class Gateway(System):
    start_timeout = 60.0
    home: Path | None = None  # HOME (and working directory) of a peer that keeps files there
    audited = True            # its answers go through the answer audit

    def argv(self, mode: str) -> list[str]:
        raise NotImplementedError

    def env(self, mode: str, extra: dict | None) -> dict:
        return gw_env(mode, {"HOME": str(self.home), **(extra or {})} if self.home else extra)

    def cwd(self) -> Path | None:
        if self.home:
            self.home.mkdir(parents=True, exist_ok=True)
        return self.home

    def start(self, mode, env_extra=None):
        if port_open(self.port):
            raise StartFailed(f"port {self.port} already in use")
        try:
            p = Proc(f"{self.key}-{mode}", self.argv(mode), cpu=self.cpu,
                     env=self.env(mode, {"PORT": str(self.port), **(env_extra or {})}), cwd=self.cwd())
        except OSError as e:
            raise StartFailed(str(e))
        self.procs = [p]
        if not wait_port(self.port, self.start_timeout, p):
            why = "exited" if not p.alive() else f"no port after {self.start_timeout:.0f}s"
            tail = p.tail()
            self.stop()
            raise StartFailed(f"{why}: {tail}")
        time.sleep(0.5)
        self.pid = p.pid


class StackFloor(Gateway):
    """bench/stack_floor.py: Sanic + one pooled aiohttp session, forwarding bytes to the
    Anthropic-format upstream in every scenario (it converts nothing, so it is not audited: it
    forwards even the ``provider:`` prefix of the model name)."""
    audited = False

    def __init__(self):
        super().__init__("floor", "Sanic+aiohttp stack floor")

    def argv(self, mode):
        return [AUX_PY, str(HERE / "stack_floor.py"), "--host", HOST, "--port", str(GW_PORT),
                "--upstream", upstream_bases(mode)[1]]


class Vdm(Gateway):
    """vandamme-proxy 2.0.9 in its fastest correct configuration: LOG_LEVEL=WARNING (at its
    default INFO it is 1.4-1.8x slower and fails with RecursionError under overlapping requests),
    no request-metrics logging; its caches left at their defaults (on), under its HOME."""
    home = WORK / "vdm-home"

    def __init__(self):
        super().__init__("vdm", "vandamme-proxy 2.0.9")

    def argv(self, mode):
        if not VDM_BIN.exists():
            raise OSError(f"{VDM_BIN} missing (make bench installs it)")
        return [str(VDM_BIN), "server", "start", "--host", HOST, "--port", str(GW_PORT)]

    def env(self, mode, extra):
        return super().env(mode, {"ANTHROPIC_API_FORMAT": "anthropic", "VDM_STRICT_PROFILE_VALIDATION": "false",
                                  "LOG_LEVEL": "WARNING", "LOG_REQUEST_METRICS": "false", **(extra or {})})


class ClaudeCodeRouter(Gateway):
    """claude-code-router (npm), one Node process: ``ccr start`` runs its server in the foreground.
    HOME is bench/.work/ccr-home, so its config (``~/.claude-code-router/config.json``, written here
    per mode), PID file and logs stay there. Logging off; no passthrough mode."""
    home = CCR_HOME
    passthrough = False

    def __init__(self):
        try:
            version = json.loads((CCR_PACKAGE / "package.json").read_text())["version"]
        except (OSError, ValueError, KeyError):
            version = "(not installed)"
        super().__init__("ccr", f"claude-code-router {version}")

    def argv(self, mode):
        node, cli = shutil.which("node"), CCR_PACKAGE / "dist" / "cli.js"
        if not node or not cli.exists():
            raise OSError("node or claude-code-router missing (make bench installs it where npm is present)")
        conf = self.home / ".claude-code-router"
        conf.mkdir(parents=True, exist_ok=True)
        (conf / ".claude-code-router.pid").unlink(missing_ok=True)  # a stale one makes `ccr start` exit at once
        (conf / "config.json").write_text(json.dumps({
            "HOST": HOST, "PORT": GW_PORT, "LOG": False, "NON_INTERACTIVE_MODE": True, "API_TIMEOUT_MS": 600000,
            "Providers": [{"name": "openai", "api_base_url": upstream_bases(mode)[0] + "/chat/completions",
                           "api_key": "bench", "models": [bodies.CONVERTED_MODEL]}],
            "Router": {"default": f"openai,{bodies.CONVERTED_MODEL}"},
        }, indent=1))
        return [node, str(cli), "start"]


class LiteLLM(Gateway):
    start_timeout = 180.0

    def __init__(self):
        super().__init__("litellm", "LiteLLM proxy")

    def argv(self, mode):
        if not LITELLM_BIN.exists():
            raise OSError(f"{LITELLM_BIN} missing")
        ob, ab = upstream_bases(mode)
        cfg = WORK / f"litellm-{mode}.yaml"
        cfg.write_text(
            "model_list:\n"
            f"  - model_name: gpt-4o\n    litellm_params: {{model: openai/gpt-4o, api_base: '{ob}', api_key: bench}}\n"
            f"  - model_name: 'anthropic:claude-sonnet-4-5'\n    litellm_params: {{model: anthropic/claude-sonnet-4-5, api_base: '{ab}', api_key: bench}}\n"
            "litellm_settings: {telemetry: false}\n"
        )
        return [str(LITELLM_BIN), "--config", str(cfg), "--host", HOST, "--port", str(GW_PORT), "--num_workers", "1"]

    def env(self, mode, extra):
        return gw_env(mode, {"LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
                             "LITELLM_USE_CHAT_COMPLETIONS_URL_FOR_ANTHROPIC_MESSAGES": "true",
                             "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False",
                             **(extra or {})})


class Vandamme(Gateway):
    """``vandamme run SPEC_DIR`` (the bench spec unless told), one worker pinned unless told."""

    def __init__(self, key: str = "vandamme", label: str = "Vandamme", spec_dir: Path = HERE / "specs",
                 workers: int = 1, cpu: str | None = GW_CPU, port: int = GW_PORT):
        super().__init__(key, label)
        self.spec_dir, self.workers, self.cpu, self.port = spec_dir, workers, cpu, port

    def argv(self, mode):
        if not VANDAMME_BIN.exists():
            raise OSError(f"{VANDAMME_BIN} missing (make install)")
        return [str(VANDAMME_BIN), "run", str(self.spec_dir), "--workers", str(self.workers)]

    def start(self, mode, env_extra=None):
        super().start(mode, env_extra)
        if self.workers > 1:  # the port answers as soon as the first worker listens
            end = time.monotonic() + 30
            while len(self.worker_pids()) < self.workers and time.monotonic() < end:
                time.sleep(0.2)

    def worker_pids(self) -> set[int]:
        """The pids Sanic's log names as started workers of this process."""
        log_text = self.procs[0].logpath.read_text(errors="replace") if self.procs else ""
        return {int(m) for m in re.findall(r"Worker ready \[(\d+)\]", log_text)}


# ---------------------------------------------------------------- the run
def measure_scenario(sysm: System, sc: Scenario, body_path: Path) -> dict:
    url = sysm.url(sc)
    expect = sc.raw_format if sysm.raw else "anthropic"
    body = body_path.read_bytes()
    why = check_answer(url, body, expect, sc.stream)
    if why:
        log(f"  {sc.key}: answer check failed: {why}")
        return {"status": f"failed: {why[:300]}"}
    res: dict = {"status": "ok", "url": url, "runs": {"c1": [], "c64": []}}
    run_wrk(url, body_path, 8, 1, None)  # warm-up
    for rep in range(REPEAT):
        for c in (1, 64):
            r = run_wrk(url, body_path, c, C1_DURATION if c == 1 else DURATION, sysm.pid)
            res["runs"][f"c{c}"].append(r)
            log(f"  {sc.key} rep{rep + 1} c{c}: {r['rps']:.0f} req/s, "
                f"cpu {r.get('cpu_ms_per_req') or 0:.3f} ms/req, p50 {r['lat_p50_us'] / 1000:.2f} ms, "
                f"errors {r['errors']}")
    for c in ("c1", "c64"):
        allruns = res["runs"][c]
        # runs where more than 1% of the answers were errors are left out of the medians
        runs = [r for r in allruns if r["errors"] <= 0.01 * max(1, r["requests"])] or allruns
        res[c] = {
            "excluded_runs": len(allruns) - len(runs) if len(runs) < len(allruns) else 0,
            "rps": med([r["rps"] for r in runs]),
            "p50_ms": med([r["lat_p50_us"] / 1000 for r in runs]),
            "p99_ms": med([r["lat_p99_us"] / 1000 for r in runs]),
            "cpu_ms_per_req": med([r.get("cpu_ms_per_req") for r in runs]),
            "requests": med([r["requests"] for r in runs]),
            "errors": sum(r["errors"] for r in allruns),
            "rss_max_mb": max((r.get("rss_max_mb") or 0) for r in allruns),
        }
    # Primary CPU figure: c64, unless too few requests completed for in-flight work to be negligible
    # (then c1, whose error is at most one request).
    if (res["c64"]["requests"] or 0) >= 20 * 64 and res["c64"]["cpu_ms_per_req"] is not None:
        res["cpu_ms_per_req"], res["cpu_from"] = res["c64"]["cpu_ms_per_req"], "c64"
    else:
        res["cpu_ms_per_req"], res["cpu_from"] = res["c1"]["cpu_ms_per_req"], "c1"
    if sc.stream:
        res["stream_c1"] = stream_times(url, body, expect)
        log(f"  {sc.key} stream c1: {res['stream_c1']}")
    return res


def run_system(sysm: System, body_paths: dict, sink: Proc | None) -> dict:
    out: dict = {"label": sysm.label, "status": "ok", "scenarios": {}}
    log(f"== {sysm.label}")
    # Gateways are restarted for every scenario (a fresh process each time: vandamme-proxy 2.0.9
    # degrades with the number of overlapping requests it has served, see docs/performance.md);
    # direct and the nginx proxy are started once.
    fresh = isinstance(sysm, Gateway)
    for s in SCENARIOS:
        if not sysm.supports(s):
            out["scenarios"][s.key] = {"status": "n/a: no passthrough mode"}
            continue
        try:
            sysm.start(s.mode)
        except StartFailed as e:
            log(f"  failed to start ({s.key}): {str(e)[-600:]}")
            out["scenarios"][s.key] = {"status": "failed to start"}
            out.setdefault("start_error", str(e)[-2000:])
            if not any(v.get("status") == "ok" for v in out["scenarios"].values()):
                out["status"] = "failed to start"
            continue
        out["status"] = "ok"
        try:
            if "idle_rss_mb" not in out:
                time.sleep(1.0)
                out["idle_rss_mb"] = round(rss_mb(sysm.pid), 1)
            try:
                out["scenarios"][s.key] = measure_scenario(sysm, s, body_paths[s.body])
            except Exception as e:
                log(f"  {s.key}: error {type(e).__name__}: {e}")
                out["scenarios"][s.key] = {"status": f"failed: {type(e).__name__}: {str(e)[:200]}"}
            if sysm.procs and not all(p.alive() for p in sysm.procs):
                log("  system died")
                out["scenarios"][s.key]["died"] = True
        finally:
            if fresh:
                sysm.stop()
    sysm.stop()
    if out["status"] == "failed to start" and not any(
            v.get("status") == "ok" for v in out["scenarios"].values()):
        return out
    out["load_rss_mb"] = round(max([v["c64"]["rss_max_mb"] for v in out["scenarios"].values()
                                    if v.get("status") == "ok"] or [0]), 1) or None

    if isinstance(sysm, Gateway) and sysm.audited and AUDIT:
        out["answers"] = run_audit(sysm, body_paths)

    # 1,000 concurrent slow streams (not for direct: nothing in between to measure)
    if not isinstance(sysm, Direct) and N_STREAMS > 0:
        sc = SCENARIO_BY_KEY["conv_stream"]
        try:
            if isinstance(sysm, NginxProxy):
                sysm.stop()
            sysm.start("slow")
            url = sysm.url(sc).replace("/stream/v1/chat/completions", "/v1/chat/completions")
            out["streams"] = many_streams(url, body_paths["small_converted_stream"].read_bytes(), N_STREAMS, sysm.pid)
            log(f"  {N_STREAMS} streams: {out['streams']}")
        except StartFailed as e:
            out["streams"] = {"error": "failed to start"}
            log(f"  slow mode failed to start: {str(e)[-300:]}")
        finally:
            sysm.stop()

    if isinstance(sysm, Vandamme):
        if (TRACING and sink is not None) or MIDDLEWARE:
            out["variants"] = run_variants(body_paths, with_sink=sink is not None)
        if WORKERS:
            out["workers"] = run_workers(body_paths)
    return out


# ---------------------------------------------------------------- the answer audit
async def _audit(url: str, cases: list, body_paths: dict) -> dict:
    last_url = f"http://{HOST}:{CAPTURE_PORT}/last/"
    out: dict = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
        async def last_request(fmt: str) -> bytes | None:
            async with s.get(last_url + fmt) as r:
                return await r.read() if r.status == 200 else None

        for case in cases:
            fmt = "openai" if case.converted else "anthropic"
            body = body_paths[case.body].read_bytes()
            try:
                await last_request(fmt)  # forget an earlier case's request
                async with s.post(url, data=body, headers=HEADERS) as r:
                    status, answer = r.status, await r.read()
                found = answers.audit(case, body, status, answer, await last_request(fmt))
            except Exception as e:  # recorded as the finding; the audit goes on
                status, found = None, [f"{type(e).__name__}: {e}"]
            out[case.key] = {"label": case.label, "status": status, "findings": found}
    return out


def run_audit(sysm: "Gateway", body_paths: dict) -> dict:
    """The answer audit (bench/answers.py): the system started once more against the recording
    upstream, every case it supports sent through it once."""
    cases = [c for c in answers.CASES if c.converted or sysm.passthrough]
    try:
        sysm.start("check")
    except StartFailed as e:
        log(f"  answer audit: failed to start: {str(e)[-300:]}")
        return {"status": "failed to start"}
    try:
        url = sysm.url(SCENARIO_BY_KEY["conv_large"])
        res = {"status": "ok", "cases": asyncio.run(asyncio.wait_for(_audit(url, cases, body_paths), 120))}
    except Exception as e:
        res = {"status": f"failed: {type(e).__name__}: {e}"}
    finally:
        sysm.stop()
    for case in (res.get("cases") or {}).values():
        log(f"  answers, {case['label']}: {'; '.join(case['findings']) or 'correct'}")
    return res


# ---------------------------------------------------------------- Vandamme's variants and workers
TELEMETRY_OVERLAY = "telemetry:\n  service_name: vandamme-bench\n  otlp_endpoint: {endpoint}\n  sample_ratio: {ratio}\n"
# two body-touching middleware on the converted path
MIDDLEWARE_OVERLAY = """middleware:
  - inject_system: {text: "Follow the ACME coding policy."}
  - drop_params: {fields: [top_k]}
"""
VARIANT_SCENARIOS = ("conv_small", "conv_large")
WORKER_SCENARIOS = ("conv_large", "pass_large")
WORKER_COUNTS = (1, 2)


def spec_variant(name: str, overlay: str) -> Path:
    """bench/specs plus one overlay file, as bench/.work/specs-NAME/zz-NAME.yaml."""
    d = WORK / f"specs-{name}"
    shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(HERE / "specs", d)
    (d / f"zz-{name}.yaml").write_text(overlay)
    return d


def load_side_by_side(gateways: list, keys, body_paths: dict, before_stop=None) -> list[dict]:
    """Start every gateway (each on its own port, JSON upstream); per scenario: check each one's
    answer and warm it up, then REPEAT rounds in which each gets one DURATION run at concurrency
    64 in turn, so that a change in the machine's load touches them alike (medians); then
    ``before_stop(gw)`` (its dict is merged into that gateway's result) and stop them all. Also each
    tree's RSS at idle and its maximum under load, in all and per process (by pid)."""
    results = []
    try:
        for gw in gateways:
            try:
                gw.start("json")
                results.append({"status": "ok", "rss_idle_by_pid_mb": rss_by_process(gw.pid),
                                "pss_idle_by_pid_mb": pss_by_process(gw.pid), "rss_max_mb": 0.0,
                                "rss_max_by_pid_mb": {}})
            except StartFailed as e:
                log(f"  {gw.label}: failed to start")
                results.append({"status": "failed to start", "error": str(e)[-500:]})
        live = [(gw, out) for gw, out in zip(gateways, results) if out["status"] == "ok"]
        for key in keys:
            sc = SCENARIO_BY_KEY[key]
            bp = body_paths[sc.body]
            loaded = []
            for gw, out in live:
                why = check_answer(gw.url(sc), bp.read_bytes(), "anthropic", False)
                if why:
                    out[key] = {"status": f"failed: {why[:200]}"}
                    continue
                run_wrk(gw.url(sc), bp, 8, 1, None)  # warm-up
                loaded.append((gw, out, []))
            for _ in range(REPEAT):
                for gw, out, runs in loaded:
                    runs.append(run_wrk(gw.url(sc), bp, 64, DURATION, gw.pid))
            for gw, out, runs in loaded:
                out[key] = {"status": "ok", "rps": med([r["rps"] for r in runs]),
                            "cpu_ms_per_req": med([r["cpu_ms_per_req"] for r in runs]),
                            # the gateway's own process (the one serving), and the rest of its tree
                            # (e.g. Vandamme's span exporter process)
                            "cpu_ms_per_req_main": med([r["cpu_s_by_pid"].get(gw.pid, 0.0) * 1000 / r["ok"]
                                                        for r in runs if r["ok"]]),
                            "cpu_ms_per_req_others": med([sum(v for p, v in r["cpu_s_by_pid"].items() if p != gw.pid)
                                                          * 1000 / r["ok"] for r in runs if r["ok"]]),
                            "requests": sum(r["ok"] for r in runs), "errors": sum(r["errors"] for r in runs),
                            # CPU seconds of each process over all rounds (how the work was shared)
                            "cpu_s_by_pid": {p: round(sum(r["cpu_s_by_pid"].get(p, 0.0) for r in runs), 3)
                                             for p in {p for r in runs for p in r["cpu_s_by_pid"]}}}
                for r in runs:
                    out["rss_max_mb"] = max(out["rss_max_mb"], r["rss_max_mb"])
                    for pid, mb in r["rss_max_by_pid_mb"].items():
                        out["rss_max_by_pid_mb"][pid] = max(out["rss_max_by_pid_mb"].get(pid, 0.0), mb)
                log(f"  {gw.label} {key}: {out[key]}")
        if before_stop:
            for gw, out in live:
                out.update(before_stop(gw))
    finally:
        for gw in gateways:
            gw.stop()
    return results


def run_variants(body_paths: dict, with_sink: bool) -> dict:
    """Vandamme's pipeline variants against the plain pipeline, side by side in one block (each its
    own gateway; ``load_side_by_side``) on the non-stream converted scenarios at c64: tracing on (a
    spec overlay with ``telemetry.otlp_endpoint`` = the local OTLP sink, under a path of its own
    so the sink counts each variant's exports apart, and ``telemetry.sample_ratio`` 1.0 / 0.1 / 0) and
    two declared body-touching middleware (``MIDDLEWARE_OVERLAY``). Each variant's throughput is
    compared with the plain pipeline's from this same block."""
    variants = [{"key": "plain", "label": "plain pipeline", "kind": "plain"}]
    if TRACING and with_sink:
        variants += [{"key": f"tracing-{r:g}", "label": f"tracing on, sample ratio {r:g}", "kind": "tracing",
                      "sample_ratio": r} for r in (1.0, 0.1, 0.0)]
    if MIDDLEWARE:
        variants.append({"key": "middleware", "label": "middleware: inject_system + drop_params",
                         "kind": "middleware"})
    gateways = []
    for i, v in enumerate(variants):
        spec_dir = HERE / "specs"
        if v["kind"] == "tracing":
            spec_dir = spec_variant(v["key"], TELEMETRY_OVERLAY.format(
                endpoint=f"http://{HOST}:{OTLP_PORT}/{v['key']}", ratio=v["sample_ratio"]))
        elif v["kind"] == "middleware":
            spec_dir = spec_variant(v["key"], MIDDLEWARE_OVERLAY)
        gateways.append(Vandamme(key=f"vandamme-{v['key']}", label=f"Vandamme, {v['label']}", spec_dir=spec_dir,
                                 port=SIDE_PORTS[i]))
    sink0 = http_get_json(f"http://{HOST}:{OTLP_PORT}/stats")

    def exports(gw):
        if not gw.key.startswith("vandamme-tracing"):
            return {}
        time.sleep(2)  # let the batch exporter flush
        prefix = gw.key.removeprefix("vandamme-")
        sink1 = http_get_json(f"http://{HOST}:{OTLP_PORT}/stats")
        if "error" in sink0 or "error" in sink1:
            return {"sink": sink1}
        before, after = (sk.get("by_prefix", {}).get(prefix) or {} for sk in (sink0, sink1))
        return {"sink": {k: (after.get(k) or 0) - (before.get(k) or 0) for k in ("requests", "bytes")}}

    runs = load_side_by_side(gateways, VARIANT_SCENARIOS, body_paths, exports)
    return {"order": [v["key"] for v in variants],
            "variants": {v["key"]: {**v, **run} for v, run in zip(variants, runs)}}


def process_roles(gw: "Vandamme") -> dict[int, str]:
    """What each process of the gateway's tree is: main (or "single process" with one worker),
    worker (Sanic's log names them), the multiprocessing resource tracker, or Sanic's shared-state
    manager (the other spawned process)."""
    workers = gw.worker_pids()
    roles = {}
    for pid in tree(gw.pid):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if pid == gw.pid:
            roles[pid] = "single process" if pid in workers else "main"
        else:
            roles[pid] = ("worker" if pid in workers else "resource tracker" if b"resource_tracker" in cmd
                          else "manager")
    return roles


def run_workers(body_paths: dict) -> dict:
    """Vandamme with 1 and 2 workers (``vandamme run --workers N``), unpinned, side by side
    (``load_side_by_side``) on the Claude-Code-sized scenarios at c64: throughput, CPU per request,
    each worker's share of the work, RSS and PSS of every process; then 3 workers idle, for PSS."""
    gateways = [Vandamme(key=f"vandamme-{n}w", label=f"Vandamme, {n} worker{'s' if n > 1 else ''} unpinned",
                         workers=n, cpu=None, port=SIDE_PORTS[i]) for i, n in enumerate(WORKER_COUNTS)]
    runs = load_side_by_side(gateways, WORKER_SCENARIOS, body_paths, lambda gw: {"roles": process_roles(gw)})
    res: dict = {"order": list(WORKER_COUNTS), "runs": {}}
    for n, run in zip(WORKER_COUNTS, runs):
        roles = run.pop("roles", {})
        idle, peak = run.pop("rss_idle_by_pid_mb", {}), run.pop("rss_max_by_pid_mb", {})
        pss = run.pop("pss_idle_by_pid_mb", {})
        run["processes"] = [{"pid": pid, "role": roles.get(pid, "exited"), "idle_mb": round(idle.get(pid, 0.0), 1),
                             "pss_idle_mb": round(pss.get(pid, 0.0), 1), "load_max_mb": round(peak.get(pid, 0.0), 1)}
                            for pid in sorted(set(idle) | set(peak))]
        workers = [pid for pid, role in roles.items() if role in ("worker", "single process")]
        for key in WORKER_SCENARIOS:  # each worker's share of the CPU the workers spent under load
            sc = run.get(key) or {}
            by_pid = sc.pop("cpu_s_by_pid", {}) if isinstance(sc, dict) else {}
            total = sum(by_pid.get(pid, 0.0) for pid in workers)
            if total > 0:
                sc["worker_cpu_share"] = [round(by_pid.get(pid, 0.0) / total, 3) for pid in sorted(workers)]
        res["runs"][str(n)] = run
    # one more worker, idle only: what each worker past the second adds (1 -> 2 also adds the main
    # process and Sanic's manager, paid once)
    n = WORKER_COUNTS[-1] + 1
    gw = Vandamme(key=f"vandamme-{n}w", label=f"Vandamme, {n} workers idle", workers=n, cpu=None, port=SIDE_PORTS[0])
    try:
        gw.start("json")
        time.sleep(1)
        roles = process_roles(gw)
        res["idle_only"] = {"workers": n, "processes": [{"pid": pid, "role": roles.get(pid, "exited"),
                                                         "pss_idle_mb": round(mb, 1)}
                                                        for pid, mb in sorted(pss_by_process(gw.pid).items())]}
    except StartFailed as e:
        res["idle_only"] = {"workers": n, "status": "failed to start", "error": str(e)[-300:]}
    finally:
        gw.stop()
    return res


def run_stage_costs() -> dict:
    """bench/stage_costs.py in its own process (pinned to the gateway core; its client to the load
    core), reusing the upstream nginx; bounded in time, its process group killed on the way out."""
    argv = [AUX_PY, str(HERE / "stage_costs.py"), "--upstream-port", str(UP_PORT), "--port", str(GW_PORT),
            "--gw-cpu", GW_CPU, "--client-cpu", LOAD_CPU]
    if os.environ.get("BENCH_NO_DOC") == "1":
        argv.append("--no-doc")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    log("== per-stage cost (bench/stage_costs.py)")
    p = Proc("stage-costs", argv, cpu=GW_CPU, env=env, cwd=ROOT)
    try:
        rc = p.p.wait(900)
    except subprocess.TimeoutExpired:
        rc = None
    tail = p.tail(6)
    p.stop()
    for line in tail.splitlines():
        log("  " + line)
    if rc != 0:
        return {"status": f"failed (exit {rc})" if rc is not None else "failed (timed out after 900 s)",
                "log": str(p.logpath)}
    return {"status": "ok", "json": str(WORK / "stages.json"), "log": str(p.logpath)}


def http_get_json(url: str):
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.loads(r.read())
    except Exception as e:
        return {"error": str(e)}


def machine_info() -> dict:
    cpu = cpu_model()

    def ver(argv):
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            line = (r.stdout + r.stderr).strip().splitlines()[0]
            return re.sub(r"^nginx version: |\s*Copyright.*$|\s*\[epoll\]", "", line)
        except Exception:
            return None

    return {"date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "nproc": NCPU,
            "cpu": cpu, "kernel": platform.release(), "python": platform.python_version(),
            "nginx": ver(["nginx", "-v"]), "wrk": ver(["wrk", "-v"]), "node": ver(["node", "--version"]),
            "duration_s": DURATION, "c1_duration_s": C1_DURATION, "repeat": REPEAT, "streams": N_STREAMS}


def main() -> int:
    signal.signal(signal.SIGTERM, _on_term)
    WORK.mkdir(parents=True, exist_ok=True)
    try:
        os.sched_setaffinity(0, {int(LOAD_CPU)})
    except OSError:
        pass
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, min(hard if hard != resource.RLIM_INFINITY else 65536, 65536))
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError):
        pass
    for tool in ("nginx", "wrk", "taskset"):
        if not shutil.which(tool):
            log(f"{tool} not found: run `make bench` (it installs nginx and wrk)")
            return 2
    busy = [p for p in (UP_PORT, PROXY_PORT, SLOW_PORT, OTLP_PORT, CAPTURE_PORT, GW_PORT, *SIDE_PORTS)
            if port_open(p)]
    if busy:
        log(f"ports already in use: {busy}; stop whatever holds them")
        return 2

    body_paths = bodies.write_all(WORK / "bodies")
    upstream.write_answers(WORK / "answers")
    (WORK / "nginx-upstream.conf").write_text(upstream.nginx_upstream_conf(WORK, WORK / "answers", UP_PORT))
    results: dict = {"meta": machine_info(), "systems": {}}
    results["meta"]["bodies"] = {k: p.stat().st_size for k, p in body_paths.items()}
    log(f"duration {DURATION}s x {REPEAT}, gateway on cpu {GW_CPU}, load on cpu {LOAD_CPU}")

    t_begin = time.monotonic()
    try:
        up = Proc("nginx-upstream", ["nginx", "-p", str(WORK), "-c", str(WORK / "nginx-upstream.conf")], cpu=LOAD_CPU)
        if not wait_port(UP_PORT, 15, up):
            log("upstream nginx did not start:\n" + up.tail())
            return 1
        slow = Proc("slow-upstream", [AUX_PY, str(HERE / "slow_upstream.py"), "--port", str(SLOW_PORT)], cpu=LOAD_CPU)
        sink = Proc("otlp-sink", [AUX_PY, str(HERE / "otlp_sink.py"), "--port", str(OTLP_PORT)], cpu=LOAD_CPU)
        if not wait_port(SLOW_PORT, 20, slow):
            log("slow upstream did not start:\n" + slow.tail())
            return 1
        capture = Proc("capture-upstream", [AUX_PY, str(HERE / "capture_upstream.py"), "--port", str(CAPTURE_PORT)],
                       cpu=LOAD_CPU)
        if not wait_port(OTLP_PORT, 20, sink):
            sink = None
        if not wait_port(CAPTURE_PORT, 20, capture):
            log("recording upstream did not start:\n" + capture.tail())
            return 1

        systems: list[System] = [Direct(up), NginxProxy(), StackFloor(), Vdm(), ClaudeCodeRouter()]
        if LITELLM:
            systems.append(LiteLLM())
        systems.append(Vandamme())
        if ONLY:
            systems = [s for s in systems if s.key in ONLY]
        for sysm in systems:
            try:
                results["systems"][sysm.key] = run_system(sysm, body_paths, sink)
            finally:
                sysm.stop()
            save(results)
        if STAGES and (not ONLY or "vandamme" in ONLY):
            results["stages"] = run_stage_costs()
            save(results)
    except KeyboardInterrupt:
        log("interrupted; stopping everything")
        results["meta"]["interrupted"] = True
        save(results)
        return 130
    finally:
        stop_all()
    results["meta"]["elapsed_s"] = round(time.monotonic() - t_begin)
    save(results)
    if os.environ.get("BENCH_NO_DOC") != "1":
        import report
        report.update_doc(results, ROOT / "docs" / "performance.md")
        log("docs/performance.md updated")
    log(f"done in {results['meta']['elapsed_s']} s; results in {WORK / 'results.json'}")
    return 0


def save(results: dict) -> None:
    (WORK / "results.json").write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    sys.exit(main())
