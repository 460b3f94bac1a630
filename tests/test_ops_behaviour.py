"""What an operator sees: JSON log lines with one schema (Sanic's own lines included), a
`request-id` on every response, a degraded /health and a start warning when the default provider
cannot serve, a one-line error for a port in use, SIGHUP with several workers and `run --watch`.

`vandamme run` runs as a real subprocess (stderr to a file, read once it has stopped); upstreams
are real aiohttp fakes on 127.0.0.1 in a background event loop."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from vandamme.engine.version import VERSION
from fakes.openai_upstream import FakeOpenAI
from harness import Background, LiveGateway, ROOT, free_port, run_cli

SCHEMA = ("time", "level", "message", "request_id", "provider", "model", "status", "duration_ms", "logger", "pid")
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
MSG = {"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


class Gateway:
    """``vandamme run DIR ARGS`` as a subprocess; stdout and stderr go to files."""

    def __init__(self, tmp_path: Path, spec_dir: Path, *args: str, env: dict | None = None):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.out_path, self.err_path = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
        e = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
        e.update(env or {})
        self._out, self._err = open(self.out_path, "w"), open(self.err_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "vandamme.engine.cli", "run", str(spec_dir), "--host", "127.0.0.1",
                                      "--port", str(self.port), *args], cwd=ROOT, env=e,
                                     stdout=self._out, stderr=self._err,
                                     # its own process group: Sanic's "Killing" path kills the group
                                     start_new_session=True)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"exited {self.proc.returncode}: {self.err_path.read_text()[-3000:]}")
            try:
                if httpx.get(self.base_url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("not serving: " + self.err_path.read_text()[-3000:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the main process, its workers and manager
                self.proc.wait(10)
        self._out.close()
        self._err.close()

    def stderr(self) -> str:
        return self.err_path.read_text()

    def stdout(self) -> str:
        return self.out_path.read_text()


def get(url: str, **kw) -> httpx.Response:
    """One request on a connection of its own (a new connection may land on any worker)."""
    return httpx.get(url, timeout=10, headers={"connection": "close"}, **kw)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- JSON logs

def test_json_logs_every_line_one_schema(tmp_path):
    fake = FakeOpenAI()
    with Background(fake):
        specs = tmp_path / "specs"
        specs.mkdir()
        (specs / "gateway.yaml").write_text(f"""
version: 1
server: {{max_retries: 0}}
logging: {{json: true, access_log: true}}
default_provider: nokey
providers:
  up: {{format: openai, base_url: "{fake.base_url}", requires_key: false}}
  down: {{format: openai, base_url: "http://127.0.0.1:9/v1", requires_key: false}}
  nokey: {{format: openai, base_url: "http://127.0.0.1:9/v1"}}
""")
        gw = Gateway(tmp_path, specs, env={"LOG_LEVEL": "DEBUG"})
        try:
            gw.wait_ready()
            ok = httpx.post(gw.base_url + "/v1/messages", json={"model": "up:gpt-4o", **MSG}, timeout=10)
            down = httpx.post(gw.base_url + "/v1/messages", json={"model": "down:m", **MSG}, timeout=10)
            bad = httpx.post(gw.base_url + "/v1/messages", content=b"{not json", timeout=10)
            missing = httpx.get(gw.base_url + "/no/such/route", timeout=10)
            health = httpx.get(gw.base_url + "/health", timeout=10)
        finally:
            gw.stop()
    assert (ok.status_code, down.status_code, bad.status_code, missing.status_code) == (200, 502, 400, 404)
    assert health.json()["status"] == "degraded"
    lines = [ln for ln in gw.stderr().splitlines() if ln.strip()]
    records = []
    for ln in lines:
        rec = json.loads(ln)  # every line parses
        assert isinstance(rec, dict) and all(k in rec for k in SCHEMA), ln
        assert ISO_UTC.match(rec["time"]), ln
        assert rec["level"] in ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"), ln
        assert "record" not in rec  # not loguru's own serialize dump
        records.append(rec)
    assert gw.stdout().strip() == ""
    by_logger = {r["logger"] for r in records}
    assert any(name.startswith("sanic.") for name in by_logger), by_logger  # Sanic's own lines, same schema
    access = {r["request_id"]: r for r in records if r["request_id"]}
    a_ok = access[ok.headers["request-id"]]
    assert (a_ok["provider"], a_ok["model"], a_ok["status"]) == ("up", "gpt-4o", 200)
    assert isinstance(a_ok["duration_ms"], (int, float)) and a_ok["duration_ms"] >= 0
    a_down = access[down.headers["request-id"]]
    assert (a_down["provider"], a_down["status"], a_down["level"]) == ("down", 502, "WARNING")
    assert access[bad.headers["request-id"]]["status"] == 400
    warnings = [r["message"] for r in records if r["level"] == "WARNING" and r["request_id"] is None]
    assert any("default provider 'nokey' is inactive" in m for m in warnings), warnings  # the start warning
    listening = [i for i, r in enumerate(records) if "listening on" in r["message"]]
    assert len(listening) == 1


UNCAUGHT = """
import logging, warnings
from vandamme.engine.logs import setup_logging
setup_logging("INFO", json=True)
logging.getLogger("asyncio").error("from asyncio %s", "x")
logging.getLogger("some.library").warning("a library's %s", "line")
warnings.warn("careful")
raise RuntimeError("boom")
"""


def test_json_logs_standard_loggers_warnings_and_uncaught_exceptions():
    r = subprocess.run([sys.executable, "-c", UNCAUGHT], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    records = [json.loads(ln) for ln in r.stderr.splitlines() if ln.strip()]
    assert all(all(k in rec for k in SCHEMA) for rec in records)
    by_logger = {rec["logger"]: rec for rec in records}
    assert by_logger["asyncio"]["message"] == "from asyncio x" and by_logger["asyncio"]["level"] == "ERROR"
    assert by_logger["some.library"]["level"] == "WARNING"
    assert "careful" in by_logger["py.warnings"]["message"]
    crash = records[-1]
    assert crash["level"] == "CRITICAL" and "RuntimeError: boom" in crash["exception"]


# --------------------------------------------------------------------------- request-id everywhere

GATEWAY_KEY = "gw-ops-key-0123456789abcdef"


def auth_spec(u):
    return f"""
version: 1
server:
  header_timeout: 1
  auth: {{keys: [{{name: ops, key: {GATEWAY_KEY}}}]}}
default_provider: o
providers:
  o: {{format: openai, base_url: "http://127.0.0.1:9/v1", requires_key: false}}
"""


def raw_exchange(port: int, data: bytes, timeout: float = 10) -> bytes:
    """Send ``data`` on a fresh connection; what comes back: one whole response (by its
    content-length) or everything until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                break
            out += chunk
            head, sep, body = out.partition(b"\r\n\r\n")
            m = re.search(rb"(?im)^content-length: *(\d+)", head)
            if sep and m and len(body) >= int(m.group(1)):
                break
    return out


def test_every_response_carries_a_request_id(tmp_path):
    with LiveGateway(auth_spec, {}, tmp_path) as gw:
        base, port = gw.base_url, int(gw.base_url.rsplit(":", 1)[1])
        key = {"x-vandamme-key": GATEWAY_KEY}
        answers = {
            "health": httpx.get(base + "/health", timeout=10),
            "models refused": httpx.get(base + "/v1/models", timeout=10),
            "aliases refused": httpx.get(base + "/v1/aliases", timeout=10),
            "models": httpx.get(base + "/v1/models", headers=key, timeout=10),
            "aliases": httpx.get(base + "/v1/aliases", headers=key, timeout=10),
            "messages refused": httpx.post(base + "/v1/messages", json={"model": "o:m", **MSG}, timeout=10),
            "messages invalid": httpx.post(base + "/v1/messages", content=b"[1]", headers=key, timeout=10),
            "messages upstream down": httpx.post(base + "/v1/messages", json={"model": "o:m", **MSG}, headers=key,
                                                 timeout=10),
            "count_tokens": httpx.post(base + "/v1/messages/count_tokens", json={"model": "o:m", **MSG},
                                       headers=key, timeout=10),
            "not found": httpx.get(base + "/nope", timeout=10),
            "method not allowed": httpx.put(base + "/health", timeout=10),
        }
        expected = {"health": 200, "models refused": 401, "aliases refused": 401, "models": 200, "aliases": 200,
                    "messages refused": 401, "messages invalid": 400, "messages upstream down": 502,
                    "count_tokens": 200, "not found": 404, "method not allowed": 405}
        # every other GET route without parameters (metrics, dashboard... whoever registered them)
        for route in gw.app.router.routes:
            if "GET" in route.methods and "<" not in route.path:
                answers[f"route /{route.path}"] = httpx.get(f"{base}/{route.path}", headers=key, timeout=10)
        too_large = raw_exchange(port, b"POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                                       b"content-length: 40000000\r\n\r\n")
        bad_line = raw_exchange(port, b"GET /a\x00b HTTP/1.1\r\nhost: x\r\n\r\n")
        late_head = raw_exchange(port, b"GET /health HTTP/1.1\r\nhost: x\r\n")  # never finished: 408 after 1 s
    for what, status in expected.items():
        assert answers[what].status_code == status, (what, answers[what].text)
    ids = []
    for what, r in answers.items():
        assert r.headers.get("request-id", "").startswith("req_"), (what, r.status_code, dict(r.headers))
        ids.append(r.headers["request-id"])
    for what, raw, status in (("413", too_large, b"413"), ("400 request line", bad_line, b"400"),
                              ("408", late_head, b"408")):
        head = raw.split(b"\r\n\r\n", 1)[0]
        assert head.split(b" ")[1:2] == [status], (what, raw[:300])
        m = re.search(rb"(?im)^request-id: (req_\w+)\r?$", head)
        assert m, (what, head)
        ids.append(m.group(1).decode())
    assert len(set(ids)) == len(ids)  # each answer its own id
    for what in ("models refused", "not found", "method not allowed", "messages invalid"):
        assert answers[what].json()["type"] == "error"


# --------------------------------------------------------------------------- health

def provider_spec(default: str, o_key: bool = True) -> str:
    return f"""
version: 1
default_provider: {default}
providers:
  o: {{format: openai, base_url: "http://127.0.0.1:9/v1", {'requires_key: false' if o_key else 'api_keys: []'}}}
  g: {{format: openai, base_url: "http://127.0.0.1:9/v1"}}
"""


@pytest.mark.parametrize("default,o_key,reasons", [
    ("o", True, []),
    ("g", True, ["default provider 'g' is inactive"]),
    ("o", False, ["no provider is active", "default provider 'o' is inactive"]),
])
def test_health_says_degraded_with_the_reason(tmp_path, default, o_key, reasons):
    with LiveGateway(lambda u: provider_spec(default, o_key), {}, tmp_path) as gw:
        r = httpx.get(gw.base_url + "/health", timeout=10)
    data = r.json()
    assert r.status_code == 200  # degraded is still 200: the process serves; see docs/operations.md
    assert data["version"] == VERSION and data["generation"] == 1
    assert data["status"] == ("degraded" if reasons else "ok")
    got = data.get("reasons", [])
    assert len(got) == len(reasons) and all(g.startswith(w) for g, w in zip(got, reasons)), got


def test_start_warning_in_text_logs(tmp_path):
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "gateway.yaml").write_text(provider_spec("g"))
    gw = Gateway(tmp_path, specs)
    try:
        gw.wait_ready()
        assert get(gw.base_url + "/health").json()["status"] == "degraded"
    finally:
        gw.stop()
    err = gw.stderr()
    lines = err.splitlines()
    warn = [i for i, ln in enumerate(lines) if "WARNING" in ln and "degraded: default provider 'g' is inactive" in ln]
    listening = [i for i, ln in enumerate(lines) if "vandamme listening on" in ln]
    assert warn and listening and warn[0] < listening[0], err
    assert not any(ln.lstrip().startswith("{") for ln in lines)  # text logs stay text


# --------------------------------------------------------------------------- port in use

@pytest.mark.parametrize("workers", [1, 2])
def test_port_in_use_is_one_line_and_exit_1(tmp_path, workers):
    (tmp_path / "gateway.yaml").write_text(provider_spec("o"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = run_cli("run", str(tmp_path), "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
                    timeout=60)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stderr.splitlines() == [f"vandamme: cannot listen on 127.0.0.1:{port}: address already in use"], r.stderr
    assert r.stdout == ""


# --------------------------------------------------------------------------- workers share connections

def wait_for_line(gw: Gateway, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in gw.stderr():
        if gw.proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"no {text!r}: {gw.stderr()[-3000:]}")
        time.sleep(0.02)


def health_pid_on(sock: socket.socket) -> int:
    """GET /health on an open keep-alive connection: the pid of the worker that accepted it."""
    sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    while len(body) < length:
        body += sock.recv(65536)
    return json.loads(body)["pid"]


def test_workers_share_connections_evenly_and_the_port_answers_once_listening_is_logged(tmp_path):
    """Each worker listens on a socket of its own (SO_REUSEPORT): 64 connections opened at once —
    a connection pool, wrk — are spread across both workers by the kernel instead of going to
    whichever worker woke first. The listening line is logged once both workers listen. A second
    server on the same port is refused, as with one worker."""
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "gateway.yaml").write_text(alias_spec({"one": "o:m1"}))
    gw = Gateway(tmp_path, specs, "--workers", "2")
    conns: list[socket.socket] = []
    try:
        wait_for_line(gw, "vandamme listening on")
        with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as first:  # no refusal window
            health_pid_on(first)
        conns = [socket.create_connection(("127.0.0.1", gw.port), timeout=10) for _ in range(64)]
        per_worker: dict[int, int] = {}
        for c in conns:
            pid = health_pid_on(c)
            per_worker[pid] = per_worker.get(pid, 0) + 1
        assert len(per_worker) == 2, per_worker
        # a hash over 64 connections: each worker's share is binomial(64, 1/2); below 16 has odds of ~1e-4
        assert min(per_worker.values()) >= 16, per_worker
        other = tmp_path / "other"
        other.mkdir()
        r = run_cli("run", str(specs), "--host", "127.0.0.1", "--port", str(gw.port), "--workers", "2",
                    cwd=other, timeout=60)
        assert r.returncode == 1 and "address already in use" in r.stderr, (r.returncode, r.stderr[-2000:])
        assert gw.proc.poll() is None
    finally:
        for c in conns:
            c.close()
        gw.stop()
    assert "Traceback" not in gw.stderr()


def children_of(pid: int) -> set[int]:
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out.update(int(x) for x in (task / "children").read_text().split())
        except OSError:
            pass
    return out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_right_after_start_stops_every_process(tmp_path, sig):
    """SIGTERM / SIGINT to the main process of a 2-worker server the moment it says it listens:
    it exits 0 with every worker and Sanic's manager gone. (Sanic's own handler could hang the
    main process here for good: engine/shutdown.py.) Three times, to meet the early window."""
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "gateway.yaml").write_text(alias_spec({"one": "o:m1"}))
    for round_ in range(3):
        run_dir = tmp_path / f"run{round_}"
        run_dir.mkdir()
        gw = Gateway(run_dir, specs, "--workers", "2")
        try:
            wait_for_line(gw, "vandamme listening on")
            kids = children_of(gw.proc.pid)
            assert len(kids) >= 3, kids  # two workers and the manager
            gw.proc.send_signal(sig)
            try:
                rc = gw.proc.wait(20)  # a bound, not a speed target: the bug was a hang
            except subprocess.TimeoutExpired:
                raise AssertionError("the main process did not stop: " + gw.stderr()[-2000:]) from None
            assert rc == 0, gw.stderr()[-2000:]
            deadline = time.monotonic() + 10
            while any(Path(f"/proc/{k}").exists() for k in kids) and time.monotonic() < deadline:
                time.sleep(0.05)
            left = [k for k in kids if Path(f"/proc/{k}").exists()
                    and Path(f"/proc/{k}/stat").read_text().split(") ")[1][0] != "Z"]
            assert not left, f"processes left behind: {left}"
        finally:
            gw.stop()
        assert "Traceback" not in gw.stderr()


# --------------------------------------------------------------------------- reloads

def alias_spec(aliases: dict[str, str]) -> str:
    body = ", ".join(f"{k}: {v}" for k, v in aliases.items())
    return f"""
version: 1
logging: {{json: true}}
default_provider: o
providers:
  o: {{format: openai, base_url: "http://127.0.0.1:9/v1", requires_key: false}}
aliases: {{{body}}}
"""


class Traffic(threading.Thread):
    """Requests on new connections, one after another, until stopped; every failure kept."""

    def __init__(self, base_url: str):
        super().__init__(daemon=True)
        self.base_url = base_url
        self.stopped = threading.Event()
        self.done = 0
        self.failures: list[str] = []

    def run(self):
        while not self.stopped.is_set():
            try:
                r = httpx.post(self.base_url + "/v1/messages/count_tokens", json={"model": "one", **MSG},
                               headers={"connection": "close"}, timeout=10)
                if r.status_code != 200:
                    self.failures.append(f"{r.status_code} {r.text[:200]}")
                a = get(self.base_url + "/v1/aliases")
                if a.status_code != 200:
                    self.failures.append(f"aliases {a.status_code}")
            except httpx.HTTPError as exc:
                self.failures.append(repr(exc))
            self.done += 1


def worker_generations(base_url: str, want_pids: int, until, tries: int = 400) -> dict[int, int]:
    """/health on new connections until ``until(seen)`` holds for ``want_pids`` worker pids (pid ->
    the highest generation seen), at most ``tries`` requests."""
    seen: dict[int, int] = {}
    for _ in range(tries):
        h = get(base_url + "/health").json()
        seen[h["pid"]] = max(seen.get(h["pid"], 0), h["generation"])
        if len(seen) >= want_pids and until(seen):
            break
        time.sleep(0.02)
    return seen


def aliases_now(base_url: str, n: int = 20) -> list[set[str]]:
    return [{d["name"] for d in get(base_url + "/v1/aliases").json()["data"]} for _ in range(n)]


def test_sighup_to_the_main_process_reloads_every_worker(tmp_path):
    specs = tmp_path / "specs"
    specs.mkdir()
    spec_file = specs / "gateway.yaml"
    spec_file.write_text(alias_spec({"one": "o:m1"}))
    gw = Gateway(tmp_path, specs, "--workers", "2")
    traffic = Traffic(gw.base_url)
    try:
        gw.wait_ready()
        before = worker_generations(gw.base_url, 2, lambda seen: True)
        assert len(before) == 2 and set(before.values()) == {1}, before  # two workers, both on generation 1
        traffic.start()
        write_atomic(spec_file, alias_spec({"one": "o:m1", "two": "o:m2"}))
        gw.proc.send_signal(signal.SIGHUP)
        after = worker_generations(gw.base_url, 2, lambda seen: all(g >= 2 for g in seen.values()))
        assert set(after) == set(before) and all(g == 2 for g in after.values()), after
        assert all("two" in names for names in aliases_now(gw.base_url)), "a worker still serves the old spec"
        time.sleep(0.5)  # traffic goes on a little on the new generation
        traffic.stopped.set()
        traffic.join(20)
        assert traffic.done > 0 and traffic.failures == []
        assert gw.proc.poll() is None  # the main process did not die of the signal
    finally:
        traffic.stopped.set()
        gw.stop()
    records = [json.loads(ln) for ln in gw.stderr().splitlines() if ln.strip()]
    assert gw.stdout().strip() == ""
    pids = {r["pid"] for r in records}
    assert len(pids) >= 3  # the main process and both workers log in the same JSON schema
    assert sum("reloaded: generation 2" in r["message"] for r in records) == 2


@pytest.mark.parametrize("workers", [1, 2])
def test_watch_reloads_on_a_spec_change_and_keeps_serving_on_an_invalid_one(tmp_path, workers):
    specs = tmp_path / "specs"
    specs.mkdir()
    spec_file = specs / "gateway.yaml"
    spec_file.write_text(alias_spec({"one": "o:m1"}))
    gw = Gateway(tmp_path, specs, "--workers", str(workers), "--watch")
    try:
        gw.wait_ready()
        base = worker_generations(gw.base_url, workers, lambda seen: True)
        assert len(base) == workers
        # a new file in the folder
        write_atomic(specs / "more.yaml", "aliases: {two: o:m2}\n")
        gens = worker_generations(gw.base_url, workers, lambda seen: all(g >= 2 for g in seen.values()), tries=600)
        assert all(g == 2 for g in gens.values()), gens
        assert all("two" in names for names in aliases_now(gw.base_url))
        # an invalid change: logged, the running graph keeps serving
        write_atomic(specs / "more.yaml", "aliases: {two: [not, a, string]}\n")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and gw.stderr().count("reload rejected") < workers:
            time.sleep(0.2)
        assert gw.stderr().count("reload rejected") >= workers, gw.stderr()[-2000:]
        assert all("two" in names for names in aliases_now(gw.base_url))
        # the file removed
        (specs / "more.yaml").unlink()
        gens = worker_generations(gw.base_url, workers, lambda seen: all(g >= 3 for g in seen.values()), tries=600)
        assert all(g == 3 for g in gens.values()), gens
        assert all("two" not in names for names in aliases_now(gw.base_url))
    finally:
        gw.stop()
    records = [json.loads(ln) for ln in gw.stderr().splitlines() if ln.strip()]
    changed = [r["message"] for r in records if "changed (" in r["message"]]
    assert any("added more.yaml" in m for m in changed) and any("removed more.yaml" in m for m in changed), changed
