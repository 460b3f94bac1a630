"""Benchmark orchestrator for Vandamme (``make bench``).

Starts a static nginx upstream, then, one system at a time, the system under test (direct to the
upstream, nginx as a reverse proxy, vandamme-proxy 2.0.9, optionally LiteLLM, and Vandamme itself),
checks one answer per scenario, loads it with wrk at concurrency 1 and 64, measures the system's
CPU time per request from /proc, its RSS, stream timings at concurrency 1 and the memory held by
1,000 concurrent slow streams; for Vandamme also the cost of tracing (off, on at sample ratio 1.0,
on at 0.1) and, at the end, the per-stage cost table (``bench/stage_costs.py``). Writes
``bench/.work/results.json`` and the result tables into ``docs/performance.md`` between
``<!-- bench:begin -->`` and ``<!-- bench:end -->`` (the stage table between ``<!-- stages:begin -->``
and ``<!-- stages:end -->``, raw figures in ``bench/.work/stages.json``).

Environment:
  BENCH_DURATION  seconds per wrk run (default 10)       BENCH_REPEAT    runs per point (default 3)
  BENCH_LITELLM=1 also run LiteLLM proxy (installs it into bench/.work/venv-litellm)
  BENCH_SYSTEMS   comma list to restrict (direct,nginx,vdm,litellm,vandamme)
  BENCH_STREAMS   concurrent slow streams (default 1000)  BENCH_TRACING=0 skip tracing off/1.0/0.1
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

import bodies  # noqa: E402
from machine import cpu_model  # noqa: E402
import upstream  # noqa: E402

HOST = "127.0.0.1"
UP_PORT, PROXY_PORT, SLOW_PORT, OTLP_PORT, GW_PORT = 18901, 18902, 18911, 18912, 18920
DURATION = float(os.environ.get("BENCH_DURATION", "10"))
REPEAT = int(os.environ.get("BENCH_REPEAT", "3"))
N_STREAMS = int(os.environ.get("BENCH_STREAMS", "1000"))
LITELLM = os.environ.get("BENCH_LITELLM", "0") == "1"
TRACING = os.environ.get("BENCH_TRACING", "1") != "0"
STAGES = os.environ.get("BENCH_STAGES", "1") != "0"
# tracing variants: (key, telemetry.sample_ratio; None = tracing off)
TRACING_VARIANTS = [("off", None), ("1.0", 1.0), ("0.1", 0.1)]
ONLY = [s for s in os.environ.get("BENCH_SYSTEMS", "").split(",") if s]
PROJECT_PY = ROOT / ".venv" / "bin" / "python"
AUX_PY = str(PROJECT_PY) if PROJECT_PY.exists() else sys.executable
VDM_BIN = WORK / "venv-vdm" / "bin" / "vdm"
LITELLM_BIN = WORK / "venv-litellm" / "bin" / "litellm"
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


def rss_mb(pid: int) -> float:
    """Sum of VmRSS over the process tree, MiB."""
    kb = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        kb += int(line.split()[1])
                        break
        except OSError:
            continue
    return kb / 1024


class RssSampler:
    def __init__(self, pid: int, period: float = 0.1):
        self.pid, self.period, self.max = pid, period, 0.0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.max = max(self.max, rss_mb(self.pid))
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
        r["rss_max_mb"] = sampler.max
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


class StartFailed(Exception):
    pass


@dataclass
class System:
    key: str
    label: str
    raw: bool = False                   # answers in the upstream's own format (direct, nginx)
    procs: list = field(default_factory=list)
    pid: int | None = None              # the process tree measured for CPU and RSS

    def url(self, sc: Scenario) -> str:
        if self.raw:
            return f"http://{HOST}:{self.port}{sc.raw_path}"
        return f"http://{HOST}:{GW_PORT}/v1/messages"

    port = GW_PORT

    def start(self, mode: str, env_extra: dict | None = None) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        for p in self.procs:
            p.stop()
        self.procs = []
        self.pid = None


def upstream_bases(mode: str) -> tuple[str, str]:
    """(OpenAI base incl. /v1, Anthropic base without /v1) for a mode."""
    if mode == "slow":
        return f"http://{HOST}:{SLOW_PORT}/v1", f"http://{HOST}:{SLOW_PORT}"
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

    def argv(self, mode: str) -> list[str]:
        raise NotImplementedError

    def env(self, mode: str, extra: dict | None) -> dict:
        return gw_env(mode, extra)

    def cwd(self) -> Path | None:
        return None

    def start(self, mode, env_extra=None):
        if port_open(GW_PORT):
            raise StartFailed(f"port {GW_PORT} already in use")
        try:
            p = Proc(f"{self.key}-{mode}", self.argv(mode), cpu=GW_CPU, env=self.env(mode, env_extra),
                     cwd=self.cwd())
        except OSError as e:
            raise StartFailed(str(e))
        self.procs = [p]
        if not wait_port(GW_PORT, self.start_timeout, p):
            why = "exited" if not p.alive() else f"no port after {self.start_timeout:.0f}s"
            tail = p.tail()
            self.stop()
            raise StartFailed(f"{why}: {tail}")
        time.sleep(0.5)
        self.pid = p.pid


class Vdm(Gateway):
    def __init__(self):
        super().__init__("vdm", "vandamme-proxy 2.0.9")

    def argv(self, mode):
        if not VDM_BIN.exists():
            raise OSError(f"{VDM_BIN} missing (make bench installs it)")
        return [str(VDM_BIN), "server", "start", "--host", HOST, "--port", str(GW_PORT)]

    def env(self, mode, extra):
        home = WORK / "vdm-home"
        home.mkdir(exist_ok=True)
        return gw_env(mode, {"ANTHROPIC_API_FORMAT": "anthropic", "VDM_STRICT_PROFILE_VALIDATION": "false",
                             "HOME": str(home), **(extra or {})})

    def cwd(self):
        return WORK / "vdm-home"


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
    spec_dir = HERE / "specs"

    def __init__(self):
        super().__init__("vandamme", "Vandamme")

    def argv(self, mode):
        if not VANDAMME_BIN.exists():
            raise OSError(f"{VANDAMME_BIN} missing (make install)")
        return [str(VANDAMME_BIN), "run", str(self.spec_dir)]


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
            r = run_wrk(url, body_path, c, DURATION, sysm.pid)
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

    # 1,000 concurrent slow streams (not for direct: nothing in between to measure)
    if not isinstance(sysm, Direct) and N_STREAMS > 0:
        sc = next(s for s in SCENARIOS if s.key == "conv_stream")
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

    # tracing on vs off (Vandamme only)
    if isinstance(sysm, Vandamme) and TRACING and sink is not None:
        out["tracing"] = run_tracing(sysm, body_paths)
    return out


def run_tracing(sysm: "Vandamme", body_paths: dict) -> dict:
    """Tracing off, on at sample ratio 1.0 and on at 0.1, measured back to back (a fresh gateway
    per variant) on the two non-stream converted scenarios at c64. "on" = a spec overlay with
    ``telemetry.otlp_endpoint`` (the local OTLP sink) and ``telemetry.sample_ratio``; "off" = the
    plain bench spec. Each variant's throughput is compared with "off" from this same block."""
    old = sysm.spec_dir
    res: dict = {"variants": {}, "order": [k for k, _ in TRACING_VARIANTS]}
    try:
        for vkey, ratio in TRACING_VARIANTS:
            env: dict = {}
            if ratio is None:
                sysm.spec_dir = old
            else:
                tdir = WORK / f"specs-tracing-{vkey}"
                shutil.rmtree(tdir, ignore_errors=True)
                shutil.copytree(HERE / "specs", tdir)
                (tdir / "zz-telemetry.yaml").write_text(
                    f"telemetry:\n  service_name: vandamme-bench\n  otlp_endpoint: http://{HOST}:{OTLP_PORT}\n"
                    f"  sample_ratio: {ratio}\n")
                sysm.spec_dir = tdir
                env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{HOST}:{OTLP_PORT}",
                       "OTEL_SERVICE_NAME": "vandamme-bench"}
            res["variants"][vkey] = out = {"sample_ratio": ratio}
            try:
                sysm.start("json", env)
            except StartFailed as e:
                out["status"] = "failed to start"
                out["error"] = str(e)[-500:]
                log(f"  tracing {vkey}: failed to start")
                continue
            sink0 = http_get_json(f"http://{HOST}:{OTLP_PORT}/stats")
            try:
                for key in ("conv_small", "conv_large"):
                    sc = next(s for s in SCENARIOS if s.key == key)
                    bp = body_paths[sc.body]
                    why = check_answer(sysm.url(sc), bp.read_bytes(), "anthropic", False)
                    if why:
                        out[key] = {"status": f"failed: {why[:200]}"}
                        continue
                    run_wrk(sysm.url(sc), bp, 8, 1, None)  # warm-up
                    runs = [run_wrk(sysm.url(sc), bp, 64, DURATION, sysm.pid) for _ in range(REPEAT)]
                    out[key] = {"status": "ok", "rps": med([r["rps"] for r in runs]),
                                "cpu_ms_per_req": med([r["cpu_ms_per_req"] for r in runs]),
                                "requests": sum(r["ok"] for r in runs),
                                "errors": sum(r["errors"] for r in runs)}
                    log(f"  tracing {vkey} {key}: {out[key]}")
                if ratio is not None:
                    time.sleep(2)  # let the batch exporter flush
                sink1 = http_get_json(f"http://{HOST}:{OTLP_PORT}/stats")
                out["sink"] = {k: (sink1.get(k) or 0) - (sink0.get(k) or 0) for k in ("requests", "bytes")} \
                    if "error" not in sink0 and "error" not in sink1 else sink1
            finally:
                sysm.stop()
    finally:
        sysm.spec_dir = old
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
            "nginx": ver(["nginx", "-v"]), "wrk": ver(["wrk", "-v"]),
            "duration_s": DURATION, "repeat": REPEAT, "streams": N_STREAMS}


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
    busy = [p for p in (UP_PORT, PROXY_PORT, SLOW_PORT, OTLP_PORT, GW_PORT) if port_open(p)]
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
        if not wait_port(OTLP_PORT, 20, sink):
            sink = None

        systems: list[System] = [Direct(up), NginxProxy(), Vdm()]
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
