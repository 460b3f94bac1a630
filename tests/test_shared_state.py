"""Shared state in Redis (state.redis_url / VDM_REDIS_URL, vandamme/transforms/shared_state.py), and fair key
rotation under `vandamme run --workers 2`.

Real parts only: Debian's `redis-server` started on 127.0.0.1 on a free port (no persistence, a
temporary folder, a password so that the URL carries one), real `vandamme run` processes sharing
it, a real fake OpenAI-format upstream (tests/fakes/openai_upstream.py) on 127.0.0.1 that records
the key of every request, and the official `anthropic` SDK as the client. Waits are bounded polls
on observable facts (a key in Redis, a line in a gateway's log), never a bare sleep followed by an
assertion; every process started here is stopped in a `finally`.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import anthropic
import httpx
import pytest

from fakes.openai_upstream import FakeOpenAI, Reply, ToolCall
from harness import Background, ROOT, free_port

REDIS_SERVER = shutil.which("redis-server")
NO_REDIS = "redis-server is not installed (`make redis` installs Debian's; apt-get was unreachable or failed)"

PASSWORD = "redis-pass-5f3b9c1e7d"  # long enough to be a known secret (vandamme.secrets)
KEY_A = "key-aaaa-0000000000000001"
KEY_B = "key-bbbb-0000000000000002"
PREFIX = "vdmtest:"
TOOL = {"name": "lookup", "description": "Look something up",
        "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}
WARNING = "are kept in-process until it is back"  # the one outage warning of a process


def wait_until(predicate, timeout: float = 20.0, what: str = "condition", step: float = 0.05):
    """Poll ``predicate`` until it is true, at most ``timeout`` seconds; fail saying what."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


# --------------------------------------------------------------------------- real servers
class RedisServer:
    """Debian's redis-server on 127.0.0.1:port: no persistence, its own folder, a password."""

    def __init__(self, tmp: Path, port: int | None = None):
        self.dir = tmp / "redis"
        self.dir.mkdir(exist_ok=True)
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://:{PASSWORD}@127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir), "--requirepass", PASSWORD, "--daemonize", "no", "--loglevel", "warning"],
            stdout=open(self.dir / "redis.log", "ab"), stderr=subprocess.STDOUT)
        wait_until(self._pings, 15, "redis-server to answer PING")
        return self

    def client(self):
        import redis
        return redis.Redis(host="127.0.0.1", port=self.port, password=PASSWORD, socket_timeout=2,
                           socket_connect_timeout=2)

    def _pings(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"redis-server exited ({self.proc.returncode}): "
                        f"{(self.dir / 'redis.log').read_text()[-2000:]}")
        try:
            with self.client() as c:
                return bool(c.ping())
        except Exception:
            return False

    def kill(self) -> None:
        """SIGKILL: Redis dies the way a crashed or evicted server does (no goodbye to clients)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class Upstream(Background):
    """A FakeOpenAI served from an event loop on a background thread of this test process."""

    def __init__(self):
        self.fake = FakeOpenAI()
        super().__init__(self.fake)

    def enqueue(self, *replies: Reply) -> None:
        self.loop.call_soon_threadsafe(self.fake.enqueue, *replies)
        wait_until(lambda: len(self.fake.queue) >= len(replies), 5, "the fake's queue")

    def keys(self) -> list[str]:
        return [r["headers"].get("Authorization", "").removeprefix("Bearer ") for r in self.fake.requests]


def vandamme_command() -> list[str]:
    """`vandamme` as installed (`make test` installs it), else the module behind it."""
    script = Path(sys.executable).parent / "vandamme"
    return [str(script)] if script.exists() else [sys.executable, "-m", "vandamme.engine.cli"]


class Gateway:
    """`vandamme run SPECS --port P` as a real subprocess; its log (stderr) goes to a file."""

    def __init__(self, name: str, spec_dir: Path, env: dict, tmp: Path, workers: int | None = None):
        self.name = name
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"{name}.log"
        self.requests = 0  # /v1/messages sent through this gateway (its ring's turn, one worker)
        args = [*vandamme_command(), "run", str(spec_dir), "--host", "127.0.0.1", "--port", str(self.port)]
        if workers:
            args += ["--workers", str(workers)]
        e = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and k != "VDM_REDIS_URL"}
        e.update(env)
        e["PYTHONPATH"] = os.pathsep.join([str(ROOT), e.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, cwd=str(tmp), env=e,
                                     start_new_session=True)

    def wait_ready(self, timeout: float = 60.0) -> "Gateway":
        def healthy():
            if self.proc.poll() is not None:
                pytest.fail(f"gateway {self.name} exited ({self.proc.returncode}):\n{self.log()[-3000:]}")
            try:
                return httpx.get(self.base_url + "/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False
        wait_until(healthy, timeout, f"gateway {self.name} to serve /health", step=0.1)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.base_url, api_key="client-key-not-a-secret", max_retries=0,
                                   timeout=20)

    def ask(self, **kw):
        self.requests += 1
        kw.setdefault("messages", [{"role": "user", "content": "hi"}])
        return self.client().messages.create(model="gemini-2.5-pro", max_tokens=50, **kw)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)  # its own session: workers included
                self.proc.wait(20)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(10)
        self._log.close()


def spec_text(base_url: str, keys=(KEY_A, KEY_B), state: bool = True) -> str:
    key_list = ", ".join(f'"{k}"' for k in keys)
    state_block = f'state: {{key_prefix: "{PREFIX}", timeout: 0.5, reconnect_max: 0.5}}\n' if state else ""
    return f"""version: 1
server: {{max_retries: 0, retry_backoff: 0.01}}
default_provider: gemini
{state_block}thought_signatures: {{cache_ttl: 600, max_cache_size: 100}}
providers:
  gemini:
    format: openai
    base_url: "{base_url}"
    api_keys: [{key_list}]
    key_cooldown: 60
    middleware: [gemini_thought_signatures]
"""


class Cluster:
    """Redis, one upstream and gateway processes sharing Redis through VDM_REDIS_URL."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.redis = RedisServer(tmp)
        self.upstream = Upstream()
        self.gateways: list[Gateway] = []
        self.spec_dir = tmp / "specs"

    def gateway(self, name: str) -> Gateway:
        gw = Gateway(name, self.spec_dir, {"VDM_REDIS_URL": self.redis.url, "LOG_LEVEL": "DEBUG"}, self.tmp)
        self.gateways.append(gw)
        return gw.wait_ready()

    def __enter__(self) -> "Cluster":
        self.redis.start()
        self.upstream.__enter__()
        self.spec_dir.mkdir()
        (self.spec_dir / "gateway.yaml").write_text(spec_text(self.upstream.fake.base_url))
        return self

    def __exit__(self, *exc) -> None:
        try:
            for gw in self.gateways:
                gw.stop()
        finally:
            try:
                self.redis.kill()
            finally:
                self.upstream.__exit__(None, None, None)


@pytest.fixture
def cluster(tmp_path):
    if REDIS_SERVER is None:
        pytest.skip(NO_REDIS)
    with Cluster(tmp_path) as c:
        c.one, c.two = c.gateway("one"), c.gateway("two")
        yield c
        for gw in c.gateways:  # never, in any test: the password in a log line
            assert PASSWORD not in gw.log(), gw.name


def using_redis(gw: Gateway) -> bool:
    return "shared state: using redis://:****@127.0.0.1:" in gw.log()


def mirrored(gw: Gateway, count: int = 1) -> bool:
    return gw.log().count("cooling down for") >= count


# --------------------------------------------------------------------------- (a) thought signatures
@pytest.mark.parametrize("stream", [False, True])
def test_thought_signature_learnt_by_one_gateway_is_restored_by_the_other(cluster, stream):
    up, one, two = cluster.upstream, cluster.one, cluster.two
    assert using_redis(one) and using_redis(two)
    up.enqueue(Reply(tool_calls=[ToolCall("lookup", {"q": "vandamme"}, id="call_shared_1",
                                          extra_content={"google": {"thought_signature": "sig-SHARED=="}})]),
               Reply(text="Found it."))
    messages = [{"role": "user", "content": "find vandamme"}]
    kw = dict(model="gemini-2.5-pro", max_tokens=100, tools=[TOOL], messages=messages)
    if stream:
        with one.client().messages.stream(**kw) as s:
            first = s.get_final_message()
    else:
        first = one.client().messages.create(**kw)
    call = next(b for b in first.content if b.type == "tool_use")
    assert call.id == "call_shared_1"
    with cluster.redis.client() as r:  # written through to Redis, with the cache's TTL
        wait_until(lambda: r.exists(f"{PREFIX}sig:call_shared_1"), 10, "the signature in Redis")
        assert r.get(f"{PREFIX}sig:call_shared_1") == b"sig-SHARED=="
        assert 0 < r.pttl(f"{PREFIX}sig:call_shared_1") <= 600_000

    # the next turn goes to the OTHER gateway, which never saw the answer
    messages += [{"role": "assistant", "content": [{"type": "tool_use", "id": call.id, "name": call.name,
                                                    "input": call.input}]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "ok"}]}]
    second = two.client().messages.create(model="gemini-2.5-pro", max_tokens=100, tools=[TOOL], messages=messages)
    assert second.content[0].text == "Found it."
    sent = up.fake.requests[-1]["json"]["messages"][-2]["tool_calls"][0]
    assert sent["id"] == "call_shared_1"
    assert sent["extra_content"] == {"google": {"thought_signature": "sig-SHARED=="}}


# --------------------------------------------------------------------------- (b) cooldowns
def test_429_cooldown_set_through_one_gateway_is_honoured_by_the_other(cluster):
    up, one, two = cluster.upstream, cluster.one, cluster.two
    up.enqueue(Reply(status=429, error_message="slow down", error_type="rate_limit_error",
                     headers={"retry-after": "30"}))
    one.ask()  # key A (its ring's first turn): 429 -> fails over to key B, which answers
    assert up.keys() == [KEY_A, KEY_B]
    with cluster.redis.client() as r:
        names = [n.decode() for n in r.scan_iter(match=f"{PREFIX}cool:*")]
        assert len(names) == 1 and names[0].startswith(f"{PREFIX}cool:gemini:")
        assert KEY_A not in names[0] and KEY_B not in names[0]  # a hash names the key, never the key
        assert 0 < r.pttl(names[0]) <= 30_000
    wait_until(lambda: mirrored(two), 10, "gateway two to mirror the cooldown")

    two.ask()  # its ring's first turn is key A: cooling down (set by gateway one), so key B
    assert up.keys()[2:] == [KEY_B]
    two.ask()
    assert up.keys()[3:] == [KEY_B]  # still cooling: B again, and no request spent on A

    # a replica started later catches up from Redis before serving
    three = cluster.gateway("three")
    three.ask()
    assert up.keys()[4:] == [KEY_B]


# --------------------------------------------------------------------------- (c) + (d) outage and recovery
def test_redis_killed_then_restarted(cluster):
    up, one, two, redis = cluster.upstream, cluster.one, cluster.two, cluster.redis
    # a signature learnt while Redis is up
    up.enqueue(Reply(tool_calls=[ToolCall("lookup", {"q": "x"}, id="call_before",
                                          extra_content={"google": {"thought_signature": "sig-BEFORE"}})]))
    one.ask(tools=[TOOL])
    one.ask()

    redis.kill()
    wait_until(lambda: WARNING in one.log() and WARNING in two.log(), 20, "the outage warning")

    # (c) every request succeeds: plain ones, a 429 failover, a signature round trip on one gateway
    for i in range(10):
        gw = (one, two)[i % 2]
        assert gw.ask().content[0].text
    if one.requests % 2:  # one request more, so that gateway one's next turn is key A
        one.ask()
    up.enqueue(Reply(status=429, error_message="slow down", headers={"retry-after": "120"}))
    before = len(up.keys())
    assert one.ask().content[0].text  # key A: 429 (cooled locally), key B answers
    assert up.keys()[before:] == [KEY_A, KEY_B]
    up.enqueue(Reply(tool_calls=[ToolCall("lookup", {"q": "y"}, id="call_during",
                                          extra_content={"google": {"thought_signature": "sig-DURING"}})]),
               Reply(text="done"))
    first = one.ask(tools=[TOOL])
    call = next(b for b in first.content if b.type == "tool_use")
    history = [{"role": "user", "content": "y"},
               {"role": "assistant", "content": [{"type": "tool_use", "id": call.id, "name": call.name,
                                                  "input": call.input}]},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "ok"}]}]
    assert one.ask(tools=[TOOL], messages=history).content[0].text == "done"
    assert up.fake.requests[-1]["json"]["messages"][-2]["tool_calls"][0]["extra_content"] == \
        {"google": {"thought_signature": "sig-DURING"}}  # in-process during the outage
    for gw in (one, two):  # ONE warning per gateway, however many requests ran meanwhile
        assert gw.log().count(WARNING) == 1, gw.log()[-3000:]

    # (d) Redis back on the same port (empty: no persistence): both gateways pick it up again
    redis.start()
    wait_until(lambda: "recovered" in one.log() and "recovered" in two.log(), 30, "both to log 'recovered'")
    # what gateway one learnt during the outage was written back: the cooldown of key A ...
    with redis.client() as r:
        wait_until(lambda: r.exists(f"{PREFIX}sig:call_during"), 10, "the written-back signature")
        assert len(list(r.scan_iter(match=f"{PREFIX}cool:*"))) == 1
    # ... reaches gateway two (by pub/sub or by its catch-up on reconnect)
    wait_until(lambda: mirrored(two), 10, "gateway two to mirror the written-back cooldown")
    if two.requests % 2:  # gateway two's next turn is key A
        two.ask()
    before = len(up.keys())
    two.ask()  # its turn is key A, cooling down (learnt by gateway one while Redis was away)
    assert up.keys()[before:] == [KEY_B]

    # and a new cooldown crosses over again: key B 429s through gateway two, gateway one skips it
    # (both keys cool now: a ring whose keys all cool tries the one that is free first: key A,
    # whose 120 s began earlier)
    up.enqueue(Reply(status=429, error_message="slow down", headers={"retry-after": "180"}))
    seen = one.log().count("cooling down for")
    with pytest.raises(anthropic.RateLimitError):
        two.ask()  # key B only (A cools): 429, nothing left to fail over to
    wait_until(lambda: one.log().count("cooling down for") > seen, 10, "gateway one to mirror key B's cooldown")
    before = len(up.keys())
    assert one.ask().content[0].text
    assert up.keys()[before:] == [KEY_A]  # B (180 s) cools longer than A (120 s): A is tried
    for gw in (one, two):
        assert gw.log().count(WARNING) == 1
        assert gw.log().count("recovered") == 1


def test_redis_frozen_requests_still_succeed(cluster):
    """A Redis that accepts nothing and answers nothing (SIGSTOP): the calls that wait on it are cut
    at state.timeout, the request goes on with what the process knows, and one warning is logged."""
    up, one, two, redis = cluster.upstream, cluster.one, cluster.two, cluster.redis
    redis.proc.send_signal(signal.SIGSTOP)
    try:
        unknown = [{"role": "user", "content": "z"},
                   {"role": "assistant", "content": [{"type": "tool_use", "id": "call_nobody_knows",
                                                      "name": "lookup", "input": {"q": "z"}}]},
                   {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_nobody_knows",
                                                 "content": "ok"}]}]
        for gw in (one, two, one, two):  # a restore asks Redis (MGET) for the unknown tool call
            assert gw.ask(tools=[TOOL], messages=unknown).content[0].text
        assert "extra_content" not in up.fake.requests[-1]["json"]["messages"][-2]["tool_calls"][0]
        up.enqueue(Reply(status=429, error_message="slow down", headers={"retry-after": "60"}))
        assert one.ask().content[0].text  # the cooldown's write waits on nobody
        wait_until(lambda: WARNING in one.log() and WARNING in two.log(), 20, "the outage warning")
    finally:
        redis.proc.send_signal(signal.SIGCONT)
    wait_until(lambda: "recovered" in one.log() and "recovered" in two.log(), 30, "both to log 'recovered'")
    for gw in (one, two):
        assert gw.log().count(WARNING) == 1


def test_without_redis_url_rings_and_caches_get_no_store(tmp_path):
    """No state block: the in-process path is the old one (no store object on any ring or cache)."""
    from vandamme.engine.compiler import compile_gateway
    from vandamme.engine.loader import load_spec

    spec_dir = tmp_path / "specs"
    spec_dir.mkdir()
    (spec_dir / "gateway.yaml").write_text(spec_text("http://127.0.0.1:9/v1", state=False))
    gw = compile_gateway(load_spec(spec_dir, {}))
    assert gw.extras["state"].shared is False and gw.extras["state"].status.backend == "memory"
    assert gw.extras["thought_signatures"].store is None
    assert gw.providers["gemini"].pipeline.stages[0].ring.store is None
    redis_gw = compile_gateway(load_spec(spec_dir, {"VDM_REDIS_URL": f"redis://:{PASSWORD}@127.0.0.1:9/0"}))
    assert redis_gw.extras["state"].shared is True  # built, not connected: Gateway.start connects
    assert redis_gw.extras["thought_signatures"].store is redis_gw.extras["state"]
    assert redis_gw.providers["gemini"].pipeline.stages[0].ring.store is redis_gw.extras["state"]


def test_a_bad_redis_url_is_a_spec_error_that_hides_the_value(tmp_path):
    spec_dir = tmp_path / "specs"
    spec_dir.mkdir()
    (spec_dir / "gateway.yaml").write_text(spec_text("http://127.0.0.1:9/v1", state=False))
    e = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    for url in (f"http://:{PASSWORD}@127.0.0.1:6379", f"redis://:{PASSWORD}@127.0.0.1:notaport/0"):
        e["VDM_REDIS_URL"] = url
        out = subprocess.run([*vandamme_command(), "validate", str(spec_dir)], capture_output=True, text=True,
                             env=e, timeout=60, cwd=str(tmp_path))
        assert out.returncode == 1, out.stdout + out.stderr
        assert "env:VDM_REDIS_URL: state.redis_url:" in out.stdout + out.stderr
        assert PASSWORD not in out.stdout + out.stderr and "Traceback" not in out.stdout + out.stderr


# --------------------------------------------------------------------------- config show masks the URL
def test_config_show_masks_the_redis_password(tmp_path):
    spec_dir = tmp_path / "specs"
    spec_dir.mkdir()
    (spec_dir / "gateway.yaml").write_text(spec_text("http://127.0.0.1:9/v1", state=False))
    e = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    e["VDM_REDIS_URL"] = f"redis://user:{PASSWORD}@127.0.0.1:6390/2"
    out = subprocess.run([*vandamme_command(), "config", "show", str(spec_dir)], capture_output=True, text=True,
                         env=e, timeout=60, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert PASSWORD not in out.stdout + out.stderr
    line = next(ln for ln in out.stdout.splitlines() if "redis_url" in ln)
    assert '"redis://user:****@127.0.0.1:6390/2"' in line and "env:VDM_REDIS_URL" in line


# --------------------------------------------------------------------------- --workers 2: fair rotation
N_REQUESTS = 40
WORKERS = 2


def test_workers_2_rotate_keys_fairly(tmp_path):
    """Each worker has its own ring whose turn moves by one per request, so the share of each key
    differs by at most one per worker: |requests on A - requests on B| <= WORKERS, however the
    kernel spreads the connections over the workers (Redis is not involved: the turn is not
    shared state, see vandamme/transforms/shared_state.py)."""
    spec_dir = tmp_path / "specs"
    spec_dir.mkdir()
    with Upstream() as up:
        (spec_dir / "gateway.yaml").write_text(spec_text(up.fake.base_url, state=False))
        gw = Gateway("workers", spec_dir, {"LOG_LEVEL": "INFO"}, tmp_path, workers=WORKERS)
        try:
            gw.wait_ready()
            processes = Counter()
            body = {"model": "gemini-2.5-pro", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
            for _ in range(N_REQUESTS):
                with httpx.Client(timeout=20) as fresh:  # a new connection per request
                    resp = fresh.post(gw.base_url + "/v1/messages", json=body,
                                      headers={"x-api-key": "client-key-not-a-secret", "connection": "close"})
                assert resp.status_code == 200, resp.text
                assert resp.json()["content"][0]["text"]
                processes[resp.headers["request-id"][4:12]] += 1  # req_<process prefix><n>
            counts = Counter(up.keys())
            assert sum(counts.values()) == N_REQUESTS
            assert set(counts) == {KEY_A, KEY_B}
            assert abs(counts[KEY_A] - counts[KEY_B]) <= WORKERS, (counts, processes)
            assert len(processes) <= WORKERS
            print(f"keys {dict(counts)}; requests per worker {dict(processes)}")
        finally:
            gw.stop()
