"""A misbehaving upstream, fault by fault, for a converted (OpenAI-format) and a passthrough
(Anthropic-format) provider, with and without stream (tests/fakes/fault_upstream.py lists the
faults and what the client must get for each). Every case checks that the client gets that
within a bound (an Anthropic error answer, a stream ending with an Anthropic ``error`` event, or
for a fault that does not spoil the answer, the answer), that the next request is served, and that
the process's open files and the providers' pooled connections come back to where they were."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import aiohttp
import httpx
import pytest

from fakes.anthropic_upstream import sse_events
from fakes.fault_upstream import (ANSWER, FAULTS, GAPS, PROVIDERS, FaultUpstream, answer_text, case_name, cases,
                                  model_for, providers_yaml, verdict)
from harness import LiveGateway, free_port
from vandamme.transforms.openai_stream import parse_sse
from vandamme.transforms.upstream import Upstream

REQUEST_TIMEOUT = 0.5  # server.request_timeout (and connect_timeout) of the gateway under test
MAX_RETRIES = 1
# The slowest case: every attempt waits out request_timeout (the backoff is 0.01 s). A case
# over this bound counts as a hang; the client itself gives up at CLIENT_BOUND.
ANSWER_BOUND = REQUEST_TIMEOUT * (MAX_RETRIES + 1) + 2.0
CLIENT_BOUND = 8.0
FD_SLACK = 2  # one more keep-alive connection than before: its two ends are both in this process
IDLE_BOUND = 2  # idle keep-alive connections a provider's pool may hold after a case
SETTLE = 3.0  # seconds open files and pools get to come back


def spec(urls: dict, closed_port: int) -> str:
    return f"""
version: 1
server: {{request_timeout: {REQUEST_TIMEOUT}, connect_timeout: {REQUEST_TIMEOUT}, max_retries: {MAX_RETRIES},
          retry_backoff: 0.01, max_response_bytes: 4096}}
default_provider: an
{providers_yaml(urls["faults"], closed_port)}"""


@dataclass
class Received:
    status: int
    body: bytes
    seconds: float
    hung: bool  # still unanswered or unfinished when the client gave up


def ask(gw, model: str, stream: bool, prompt: str) -> Received:
    """One request on a fresh connection, read to its end or until CLIENT_BOUND seconds."""
    started = time.monotonic()
    body = bytearray()
    status, hung = 0, False
    json = {"model": model, "max_tokens": 50, "stream": stream, "messages": [{"role": "user", "content": prompt}]}
    try:
        with httpx.Client(timeout=CLIENT_BOUND) as client, \
                client.stream("POST", gw.base_url + "/v1/messages", json=json) as r:
            status = r.status_code
            for chunk in r.iter_bytes():
                body += chunk
                if time.monotonic() - started > CLIENT_BOUND:
                    hung = True
                    break
    except httpx.TimeoutException:
        hung = True
    return Received(status, bytes(body), time.monotonic() - started, hung)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def pool_connections(provider) -> tuple[int, int]:
    """(idle, in use) connections of a provider's pool. aiohttp has no public counters: its
    TCPConnector keeps idle keep-alive connections in ``_conns`` (key -> deque of (protocol,
    time)) and those lent to a request in ``_acquired`` (a set); both have been there since
    aiohttp 3.0. Read on the gateway's loop."""
    connector = provider.session.connector
    return sum(len(idle) for idle in connector._conns.values()), len(connector._acquired)


def settled(gw, fds_before: int) -> tuple[int, dict]:
    """Wait (at most SETTLE seconds) until open files are back to ``fds_before`` + FD_SLACK and
    no pool lends or keeps too many connections; returns the last counts seen."""
    deadline = time.monotonic() + SETTLE
    while True:
        pools = {name: gw.call(pool_connections(p)) for name, p in gw.gateway.providers.items()}
        fds = open_fds()
        ok = fds <= fds_before + FD_SLACK and all(idle <= IDLE_BOUND and used == 0 for idle, used in pools.values())
        if ok or time.monotonic() > deadline:
            return fds, pools
        time.sleep(0.05)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    closed_port = free_port()  # nothing listens here: connection refused
    with LiveGateway(lambda urls: spec(urls, closed_port), {"faults": FaultUpstream()},
                     tmp_path_factory.mktemp("faults")) as gw:
        for provider in PROVIDERS.values():  # warm the pools: each case starts with its keep-alive connection
            for stream in (False, True):
                assert serves(gw, provider, stream, "warm-up") is None
        yield gw


def serves(gw, provider: str, stream: bool, prompt: str) -> str | None:
    """None when a correct request to ``provider`` gets its answer; else what was wrong."""
    r = ask(gw, f"{provider}:ok", stream, prompt)
    return "no answer in time" if r.hung else verdict(ANSWER, r.status, r.body, stream, answer_text(prompt))


@pytest.mark.parametrize("fault,api,stream", cases(), ids=[case_name(c) for c in cases()])
def test_upstream_fault(live, fault, api, stream):
    provider = PROVIDERS[api]
    fds_before = open_fds()
    prompt = f"{fault} {api} {stream}"

    got = ask(live, model_for(fault, api), stream, prompt)
    assert not got.hung and got.seconds < ANSWER_BOUND, \
        f"no answer within {ANSWER_BOUND} s (HTTP {got.status}, {got.body[:200]!r})"
    problem = verdict(FAULTS[fault].expect(stream), got.status, got.body, stream, answer_text(prompt, fault))

    # whatever the answer, the next request is served and nothing stays open
    assert serves(live, provider, stream, "the next request") is None
    fds, pools = settled(live, fds_before)
    assert fds <= fds_before + FD_SLACK, f"{fds} open files, {fds_before} before the case"
    assert all(used == 0 for _, used in pools.values()), f"pooled connections still lent: {pools}"
    assert all(idle <= IDLE_BOUND for idle, _ in pools.values()), f"idle pooled connections: {pools}"

    gap = GAPS.get((fault, api, stream))
    if gap is not None:
        if problem is None:
            pytest.fail(f"a known gap no longer shows: remove {(fault, api, stream)} from GAPS")
        pytest.xfail(f"{gap}: {problem}")
    assert problem is None, problem


# ---------------------------------------------------------------------- the passthrough's events

class UpstreamBody:
    """What the passthrough reads of an aiohttp response: ``content.iter_any()``."""

    def __init__(self, chunks: list[bytes], failure: Exception | None = None):
        self.content, self.chunks, self.failure = self, chunks, failure

    async def iter_any(self):
        for chunk in self.chunks:
            yield chunk
        if self.failure is not None:
            raise self.failure


async def passed_on(chunks: list[bytes], failure: Exception | None = None) -> list[bytes]:
    upstream = Upstream(None, None, 0, 0.0, passthrough_stream=True, max_response_bytes=1024)
    return [chunk async for chunk in upstream._passthrough_chunks(UpstreamBody(chunks, failure))]


STREAM = b"".join(sse_events("m", "one two three"))


def pieces(data: bytes, size: int = 7) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("stream", [STREAM, STREAM.replace(b"\n", b"\r\n")], ids=["lf", "crlf"])
async def test_a_whole_passthrough_stream_passes_unchanged_in_whole_events(stream):
    out = await passed_on(pieces(stream))
    assert b"".join(out) == stream
    assert all(chunk.endswith((b"\n\n", b"\n\r\n")) for chunk in out)  # never half an event


@pytest.mark.parametrize("failure,cut,error", [
    (aiohttp.ClientPayloadError("reset"), 100, "upstream connection failed mid-stream"),
    (None, 100, "upstream stream ended before message_stop"),
    (None, STREAM.index(b"event: message_delta") + 30, "upstream stream ended before message_stop"),
])
async def test_a_broken_passthrough_stream_ends_with_one_error_event_after_whole_events(failure, cut, error):
    out = b"".join(await passed_on(pieces(STREAM[:cut]), failure))
    events = parse_sse(out)  # every event whole: its data parses
    assert [name for name, _ in events].count("error") == 1 and events[-1][0] == "error"
    assert error in events[-1][1]["error"]["message"]
    assert STREAM.startswith(out[:out.rindex(b"event: error")])


async def test_the_passthrough_adds_nothing_after_the_upstreams_own_end():
    unterminated = STREAM.rstrip(b"\n")  # message_stop without its blank line: still the end
    assert b"".join(await passed_on(pieces(unterminated))) == unterminated
    begun = b"".join(sse_events("m", "one two three")[:4])
    upstream_error = b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}\n\n'
    assert b"".join(await passed_on(pieces(begun + upstream_error))) == begun + upstream_error


async def test_an_endless_passthrough_event_is_cut_at_max_response_bytes():
    out = await passed_on([b"event: content_block_delta\ndata: {" + b"x" * 600, b"y" * 600])
    events = parse_sse(b"".join(out))
    assert [name for name, _ in events] == ["error"] and "max_response_bytes (1024)" in events[0][1]["error"]["message"]
