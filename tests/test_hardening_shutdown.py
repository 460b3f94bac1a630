"""Shutdown drain, on a real `vandamme run` process: after SIGTERM, requests in flight may finish
until server.drain_timeout; then each stream still running gets an SSE `error` event
(overloaded_error, "server shutting down"), any other request a 503. The process exits as soon as
the last one ends, not after a fixed grace."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

from fakes.drip_upstream import DripUpstream
from harness import free_port

VANDAMME = Path(sys.executable).parent / "vandamme"


@contextmanager
def running_gateway(tmp_path: Path, upstream: str, drain_timeout: float):
    """`vandamme run` on a fresh port, serving one passthrough provider; killed if still running."""
    port = free_port()
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "gateway.yaml").write_text(f"""
version: 1
server: {{port: {port}, drain_timeout: {drain_timeout}, max_retries: 0}}
default_provider: a
providers:
  a: {{format: anthropic, base_url: "{upstream}", api_keys: [k-000000000000]}}
""")
    env = {**os.environ, "LOG_LEVEL": "INFO"}
    proc = subprocess.Popen([str(VANDAMME), "run", str(specs)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                httpx.get(base + "/health", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < deadline, "gateway did not start"
                time.sleep(0.1)
        yield proc, base
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)


class Stream(threading.Thread):
    """One streaming request of ``deltas`` text deltas; records its SSE events and when it ended.
    Its client stays open afterwards, keeping the connection alive as SDK clients do."""

    def __init__(self, base: str, deltas: int):
        super().__init__(daemon=True)
        self.base, self.deltas = base, deltas
        self.client = httpx.Client(timeout=30)
        self.events: list[str] = []
        self.data: list[str] = []
        self.ended = 0.0

    def run(self):
        body = {"model": "drip", "max_tokens": self.deltas, "stream": True,
                "messages": [{"role": "user", "content": "x"}]}
        with self.client.stream("POST", self.base + "/v1/messages", json=body) as r:
            for line in r.iter_lines():
                if line.startswith("event: "):
                    self.events.append(line[7:])
                elif line.startswith("data: "):
                    self.data.append(line[6:])
        self.ended = time.monotonic()


class Buffered(Stream):
    """One request without streaming, answered after ``deltas`` intervals; records the answer."""

    def run(self):
        body = {"model": "drip", "max_tokens": self.deltas, "messages": [{"role": "user", "content": "x"}]}
        self.answer = self.client.post(self.base + "/v1/messages", json=body)
        self.ended = time.monotonic()


def start_streams(base: str, upstream: DripUpstream, *lengths: int, kind=Stream) -> list[Stream]:
    streams = [kind(base, n) for n in lengths]
    expected = upstream.started + len(streams)
    for s in streams:
        s.start()
    deadline = time.monotonic() + 10
    while upstream.started < expected:
        assert time.monotonic() < deadline, "streams did not reach the upstream"
        time.sleep(0.02)
    time.sleep(0.3)  # the first events are through: the streams are in flight
    return streams


def wait_exit(proc: subprocess.Popen, limit: float) -> float:
    """Seconds until ``proc`` exits (fails after ``limit``)."""
    t0 = time.monotonic()
    proc.wait(limit)
    return time.monotonic() - t0


def test_short_streams_finish_and_the_process_exits_when_they_end(tmp_path):
    with DripUpstream(interval=0.2) as upstream, running_gateway(tmp_path, upstream.base_url, 10) as (proc, base):
        streams = start_streams(base, upstream, 5, 5, 5)  # about 1 s each
        sigterm = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        exited_after = wait_exit(proc, 9)
        for s in streams:
            s.join(5)
            assert s.events[-1] == "message_stop" and "error" not in s.events
            assert s.data.count('{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", '
                                '"text": "t4 "}}') == 1
        last_end = max(s.ended for s in streams) - sigterm
        # Exit follows the last stream (under 1 s of SIGTERM), far before the 10 s drain or
        # Sanic's 15 s grace.
        assert last_end < 2.0
        assert exited_after < last_end + 1.5, (exited_after, last_end)
        assert proc.returncode == 0


def test_a_stream_past_the_drain_timeout_gets_an_error_event(tmp_path):
    with DripUpstream(interval=0.2) as upstream, running_gateway(tmp_path, upstream.base_url, 1) as (proc, base):
        short, long = start_streams(base, upstream, 3, 200)  # 0.6 s, 40 s
        buffered, = start_streams(base, upstream, 200, kind=Buffered)
        sigterm = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        # a new connection is refused once shutdown has begun
        deadline = time.monotonic() + 3
        while True:
            try:
                httpx.get(base + "/health", timeout=1)
            except httpx.ConnectError:
                break
            assert time.monotonic() < deadline, "still accepting connections after SIGTERM"
            time.sleep(0.05)
        exited_after = wait_exit(proc, 8)
        for request in (short, long, buffered):
            request.join(5)
        assert short.events[-1] == "message_stop" and "error" not in short.events
        assert long.events[-1] == "error" and "message_stop" not in long.events
        assert long.data[-1] == ('{"type":"error","error":{"type":"overloaded_error",'
                                 '"message":"server shutting down"}}')
        assert buffered.answer.status_code == 503
        assert buffered.answer.json() == {"type": "error", "error": {"type": "overloaded_error",
                                                                     "message": "server shutting down"}}
        for request in (long, buffered):
            cut_at = request.ended - sigterm
            assert 0.9 < cut_at < 2.5, cut_at  # at the 1 s drain deadline
        assert exited_after < 4, exited_after
        assert "stream cut at the drain deadline" in proc.stdout.read()
