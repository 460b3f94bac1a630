"""`make soak`: a bounded soak of a real `vandamme run` process in front of the fault-injecting
upstream of the tests (tests/fakes/fault_upstream.py), all on 127.0.0.1.

    make soak                          # 10 minutes
    SOAK_SECONDS=120 make soak

Knobs (environment): SOAK_SECONDS (600), SOAK_RATE requests per second (40), SOAK_CLIENTS
concurrent clients (8), SOAK_FAULTS the share of requests asking for an injected fault (0.08),
SOAK_SEED (1).

Traffic: requests go out at a steady rate from the clients (each on its keep-alive connection).
Each picks, seeded, a converted (OpenAI-format) or passthrough (Anthropic-format) provider,
stream or not, and with probability SOAK_FAULTS an injected fault instead: one of the catalogue's
(fault, format, stream) cases, named by the model (``oa:reset-mid-body``; ``oa_closed:ok`` for a
refused connection), leaving out the known gaps (``GAPS``), where the gateway does not keep its
promise. Every answer is judged by ``fault_upstream.verdict``: an injected fault must come back as
its Anthropic error (or, where the fault does not spoil it, as the answer); every other request
must be the upstream's answer, text for text.

Measured on the gateway process (/proc/<pid>): RSS at start (before traffic), at the end of the
warm-up (the first quarter of the run, at most 60 s) and at the end of the traffic, both of these
under traffic; open files with no traffic: at start, and at the end once the clients have closed
their connections and the providers' idle pooled connections have expired (the spec sets the
pool's keepalive_timeout to 2 s and the soak waits it out).

Goals (exit status 1 when one is missed): no wrong answer, injected or not; RSS growth from the
end of the warm-up to the end under 10 %; open files at the end at most 2 more than at start; no
traceback in the gateway's log; the gateway still running at the end. Writes
bench/.work/soak.json and the gateway's log, bench/.work/soak-gateway.log.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fakes.fault_upstream import (ANSWER, FAULTS, GAPS, PROVIDERS, FaultUpstream, answer_text,  # noqa: E402
                                  case_name, cases, model_for, providers_yaml, verdict)
from harness import free_port  # noqa: E402

WORK = ROOT / "bench" / ".work"
VANDAMME = Path(sys.executable).parent / "vandamme"
REQUEST_TIMEOUT = 2.0  # server.request_timeout: the slowest fault takes two of these
CLIENT_BOUND = 20.0  # a client gives up on an answer after this long: counted as a wrong answer
POOL_KEEPALIVE = 2.0  # providers' pool keepalive_timeout, waited out before the last count of open files
RSS_GROWTH_GOAL = 0.10
FD_SLACK = 2


def spec(upstream: str, port: int, closed_port: int) -> str:
    return f"""
version: 1
server: {{port: {port}, request_timeout: {REQUEST_TIMEOUT}, connect_timeout: 1, max_retries: 1,
          retry_backoff: 0.05, max_response_bytes: 32768}}
logging: {{level: WARNING}}
default_provider: an
{providers_yaml(upstream, closed_port, f"pool: {{keepalive_timeout: {POOL_KEEPALIVE}}}")}"""


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class Tally:
    requests: int = 0
    injected: Counter = field(default_factory=Counter)  # case name -> requests
    wrong: Counter = field(default_factory=Counter)  # "injected" / "not injected" -> wrong answers
    examples: list = field(default_factory=list)  # the first wrong answers, for the report
    latencies: list = field(default_factory=list)  # seconds, answers without a fault

    def record(self, case: str | None, problem: str | None, seconds: float) -> None:
        self.requests += 1
        if case is not None:
            self.injected[case] += 1
        elif problem is None:
            self.latencies.append(seconds)
        if problem is not None:
            self.wrong["injected" if case else "not injected"] += 1
            if len(self.examples) < 20:
                self.examples.append(f"{case or 'no fault'}: {problem}")


class Traffic:
    """The request schedule: request ``i`` goes out at ``start + i / rate`` (or as soon as a
    client is free, when all are busy), with its kind drawn from a seeded generator."""

    def __init__(self, base_url: str, rate: float, seconds: float, fault_share: float, seed: int):
        self.base_url = base_url
        self.rate = rate
        self.seconds = seconds
        self.fault_share = fault_share
        self.random = random.Random(seed)
        self.injectable = [c for c in cases() if c not in GAPS]
        self.start = 0.0
        self.sent = 0
        self.tally = Tally()

    def next_request(self) -> tuple[float, dict, tuple | None] | None:
        """(when, request body, injected case or None), or None when the run is over."""
        when = self.start + self.sent / self.rate
        if when >= self.start + self.seconds:
            return None
        prompt = f"soak request {self.sent}"
        self.sent += 1
        if self.random.random() < self.fault_share:
            case = self.random.choice(self.injectable)
            fault, api, stream = case
        else:
            case, fault = None, "ok"
            api, stream = self.random.choice(list(PROVIDERS)), self.random.random() < 0.5
        body = {"model": model_for(fault, api), "max_tokens": 50, "stream": stream, "messages": [{"role": "user", "content": prompt}]}
        return when, body, case

    async def client(self, session: aiohttp.ClientSession) -> None:
        loop = asyncio.get_running_loop()
        while (planned := self.next_request()) is not None:
            when, body, case = planned
            await asyncio.sleep(max(0.0, when - loop.time()))
            fault = case[0] if case else "ok"
            expect = FAULTS[fault].expect(body["stream"]) if case else ANSWER
            started = loop.time()
            try:
                async with session.post(self.base_url + "/v1/messages", json=body) as resp:
                    received = await resp.read()
                problem = verdict(expect, resp.status, received, body["stream"],
                                  answer_text(body["messages"][0]["content"], fault))
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                problem = f"the client got {type(exc).__name__}"
            self.tally.record(case_name(case) if case else None, problem, loop.time() - started)


class Gateway:
    """`vandamme run` on a generated spec folder; its log goes to ``log``."""

    def __init__(self, spec_text: str, port: int, log: Path):
        self.folder = tempfile.TemporaryDirectory(prefix="vandamme-soak-")
        (Path(self.folder.name) / "gateway.yaml").write_text(spec_text)
        self.base_url = f"http://127.0.0.1:{port}"
        self.log = log
        self.proc: subprocess.Popen | None = None

    async def start(self, session: aiohttp.ClientSession) -> None:
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen([str(VANDAMME), "run", self.folder.name], stdout=out,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"soak: the gateway exited at start-up; see {self.log}")
            try:
                async with session.get(self.base_url + "/health") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        raise SystemExit("soak: the gateway did not start within 30 s")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.folder.cleanup()

    def tracebacks(self) -> int:
        return self.log.read_text(errors="replace").count("Traceback (most recent call last)")


def measured(what, pid: int) -> int | None:
    """``what(pid)``, or None once the process is gone."""
    try:
        return what(pid)
    except (FileNotFoundError, ProcessLookupError):
        return None


async def sample(pid: int, traffic: Traffic, timeline: list, every: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    while True:
        timeline.append({"t": round(loop.time() - traffic.start, 1), "rss_kb": measured(rss_kb, pid),
                         "open_files": measured(open_files, pid), "requests": traffic.tally.requests})
        await asyncio.sleep(every)


async def quiet_open_files(pid: int, start: int) -> int | None:
    """Open files once the idle pooled connections have expired: after POOL_KEEPALIVE + 1 s,
    polled for up to 10 s more (aiohttp's pool sweeps expired connections on a timer) until
    back within FD_SLACK of ``start``."""
    await asyncio.sleep(POOL_KEEPALIVE + 1)
    deadline = time.monotonic() + 10
    while True:
        now = measured(open_files, pid)
        if now is None or now <= start + FD_SLACK or time.monotonic() > deadline:
            return now
        await asyncio.sleep(0.5)


async def soak(seconds: float, rate: float, clients: int, fault_share: float, seed: int) -> dict:
    WORK.mkdir(parents=True, exist_ok=True)
    warmup = min(60.0, seconds / 4)
    port = free_port()
    async with FaultUpstream(hold=5 * REQUEST_TIMEOUT) as upstream:
        gateway = Gateway(spec(upstream.base_url, port, free_port()), port, WORK / "soak-gateway.log")
        try:
            async with aiohttp.ClientSession() as probe:
                await gateway.start(probe)
            pid = gateway.proc.pid
            rss_start, files_start = rss_kb(pid), open_files(pid)
            traffic = Traffic(gateway.base_url, rate, seconds, fault_share, seed)
            timeline: list = []
            loop = asyncio.get_running_loop()
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients),
                                             timeout=aiohttp.ClientTimeout(total=CLIENT_BOUND)) as session:
                traffic.start = loop.time()
                sampler = asyncio.ensure_future(sample(pid, traffic, timeline))
                workers = [asyncio.ensure_future(traffic.client(session)) for _ in range(clients)]
                await asyncio.sleep(warmup)
                rss_warm = measured(rss_kb, pid)
                await asyncio.sleep(max(0.0, traffic.start + seconds - loop.time()))
                rss_end = measured(rss_kb, pid)
                _, late = await asyncio.wait(workers, timeout=CLIENT_BOUND + 5)
                for worker in (*late, sampler):
                    worker.cancel()
            files_end = await quiet_open_files(pid, files_start)
            alive = gateway.proc.poll() is None
        finally:
            gateway.stop()
    tally = traffic.tally
    latencies = sorted(tally.latencies) or [0.0]
    growth = (rss_end - rss_warm) / rss_warm if rss_warm and rss_end else None
    report = {
        "seconds": seconds, "rate": rate, "clients": clients, "fault_share": fault_share, "seed": seed,
        "warmup_seconds": warmup,
        "requests": tally.requests, "planned": traffic.sent,
        "injected": sum(tally.injected.values()), "injected_by_case": dict(sorted(tally.injected.items())),
        "wrong_injected": tally.wrong["injected"], "wrong_not_injected": tally.wrong["not injected"],
        "wrong_examples": tally.examples,
        "latency_ms": {"p50": round(1e3 * statistics.median(latencies), 1),
                       "p99": round(1e3 * latencies[int(0.99 * (len(latencies) - 1))], 1),
                       "max": round(1e3 * latencies[-1], 1)},
        "rss_kb": {"start": rss_start, "after_warmup": rss_warm, "end": rss_end},
        "rss_growth": growth,
        "open_files": {"start": files_start, "end": files_end},
        "tracebacks": gateway.tracebacks(), "alive_at_end": alive,
        "timeline": timeline,
    }
    report["goals"] = {
        "every request answered": tally.requests == traffic.sent,
        "no wrong answer": not tally.wrong,
        f"RSS growth after warm-up < {RSS_GROWTH_GOAL:.0%}": growth is not None and growth < RSS_GROWTH_GOAL,
        f"open files flat (at most start + {FD_SLACK})": files_end is not None and files_end <= files_start + FD_SLACK,
        "no traceback in the gateway log": report["tracebacks"] == 0,
        "gateway alive at the end": alive,
    }
    return report


def show(r: dict) -> None:
    mib = lambda kb: f"{kb / 1024:.1f} MiB" if kb else "-"  # noqa: E731
    lat = r["latency_ms"]
    print(f"soak: {r['seconds']:g} s at {r['rate']:g} requests/s from {r['clients']} clients, "
          f"{r['fault_share']:.0%} injected faults, warm-up {r['warmup_seconds']:g} s")
    print(f"  requests            {r['requests']} of {r['planned']} planned")
    print(f"  injected faults     {r['injected']} ({len(r['injected_by_case'])} kinds): "
          f"{r['wrong_injected']} answered otherwise than promised")
    print(f"  not injected        {r['requests'] - r['injected']}: {r['wrong_not_injected']} failures; "
          f"latency p50 {lat['p50']} ms, p99 {lat['p99']} ms, max {lat['max']} ms")
    rss, growth = r["rss_kb"], r["rss_growth"]
    print(f"  gateway RSS         start {mib(rss['start'])}, after warm-up {mib(rss['after_warmup'])}, "
          f"end {mib(rss['end'])} ({'-' if growth is None else f'{growth:+.1%}'} after warm-up)")
    print(f"  gateway open files  start {r['open_files']['start']}, end {r['open_files']['end']}")
    print(f"  tracebacks in log   {r['tracebacks']}")
    for example in r["wrong_examples"]:
        print(f"  wrong: {example}")
    for goal, met in r["goals"].items():
        print(f"  [{'ok' if met else 'MISSED'}] {goal}")


def main() -> int:
    env = os.environ.get
    report = asyncio.run(soak(float(env("SOAK_SECONDS", "600")), float(env("SOAK_RATE", "40")),
                              int(env("SOAK_CLIENTS", "8")), float(env("SOAK_FAULTS", "0.08")),
                              int(env("SOAK_SEED", "1"))))
    (WORK / "soak.json").write_text(json.dumps(report, indent=1))
    show(report)
    return 0 if all(report["goals"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
