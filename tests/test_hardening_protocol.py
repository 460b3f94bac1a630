"""Client connections, with real sockets against the real gateway (vandamme/engine/http_protocol.py): slow
clients are cut at their deadlines (server.header_timeout, body_timeout, body_min_rate) with a
408 while a normal client is unaffected, and a request line Sanic cannot parse gets a 400."""
from __future__ import annotations

import json
import logging
import select
import socket
import threading
import time

import httpx
import pytest

from fakes.anthropic_upstream import FakeAnthropic
from harness import LiveGateway

HEADER_TIMEOUT, BODY_TIMEOUT, BODY_MIN_RATE = 1.0, 1.5, 1000
SLACK = 1.0  # Sanic checks deadlines every header_timeout / 2


def spec(u):
    return f"""
version: 1
server: {{header_timeout: {HEADER_TIMEOUT}, body_timeout: {BODY_TIMEOUT}, body_min_rate: {BODY_MIN_RATE}}}
default_provider: a
providers:
  a: {{format: anthropic, base_url: "{u['a']}", api_keys: [k-000000000000]}}
"""


@pytest.fixture
def gateway(tmp_path):
    with LiveGateway(spec, {"a": FakeAnthropic()}, tmp_path) as gw:
        yield gw


def port_of(gw) -> int:
    return int(gw.base_url.rsplit(":", 1)[1])


def head(length: int | None = None, chunked: bool = False) -> bytes:
    framing = "Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {length}\r\n"
    return (f"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"x-api-key: k\r\nConnection: close\r\n{framing}\r\n").encode()


def message_body(size: int) -> bytes:
    """A valid Messages request of exactly ``size`` bytes."""
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": ""}]}
    pad = size - len(json.dumps(body).encode())
    body["messages"][0]["content"] = "x" * pad
    return json.dumps(body).encode()


def send_slowly(port: int, pieces: list[bytes], gap: float, limit: float = 15.0) -> tuple[float, bytes]:
    """Send ``pieces`` ``gap`` seconds apart, then wait; stop as soon as the server answers or
    closes. Returns (seconds until then, what the server sent)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=limit)
    t0 = time.monotonic()
    got = b""
    try:
        for piece in pieces:
            s.sendall(piece)
            if select.select([s], [], [], gap)[0]:
                break
        while time.monotonic() - t0 < limit:
            data = s.recv(65536)
            if not data:
                break
            got += data
    except OSError:
        pass
    finally:
        s.close()
    return time.monotonic() - t0, got


def status_and_error(raw: bytes) -> tuple[int, dict]:
    status_line, _, rest = raw.partition(b"\r\n")
    _, _, body = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), json.loads(body)


def test_slow_clients_are_cut_and_a_normal_client_is_not(gateway):
    port = port_of(gateway)
    trickled_head = [bytes([b]) for b in head(100)]  # a byte per 0.1 s: 10 s for the head
    stalled_body = [head(100) + message_body(100)[:50]]  # then nothing
    trickled_body = [head(100)] + [bytes([b]) for b in message_body(100)]  # 10 s for the body
    trickled_chunks = [head(chunked=True)] + [b"1\r\nx\r\n"] * 100
    clients = ([("head", trickled_head)] * 8 + [("body", stalled_body)] * 8
               + [("body", trickled_body)] * 8 + [("body", trickled_chunks)] * 4)
    results: list = [None] * len(clients)

    def client(i, pieces):
        results[i] = send_slowly(port, pieces, gap=0.1)

    threads = [threading.Thread(target=client, args=(i, p)) for i, (_, p) in enumerate(clients)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    # a normal client meanwhile: answered at once
    t0 = time.monotonic()
    r = httpx.post(gateway.base_url + "/v1/messages", timeout=5, headers={"x-api-key": "k"},
                   json={"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200 and time.monotonic() - t0 < 1.0
    for t in threads:
        t.join(20)

    for (kind, _), (elapsed, raw) in zip(clients, results):
        limit = HEADER_TIMEOUT if kind == "head" else BODY_TIMEOUT
        assert limit - 0.2 < elapsed < limit + SLACK, (kind, elapsed)
        status, err = status_and_error(raw)
        assert status == 408
        assert err == {"type": "error", "error": {"type": "invalid_request_error",
                                                   "message": f"request {kind} not received within {limit:g} s"}}


def test_the_rest_of_a_body_after_an_early_answer_is_bounded_too(gateway):
    # a 404 is answered at once; Sanic then reads the rest of the body before the next request
    with socket.create_connection(("127.0.0.1", port_of(gateway)), timeout=10) as s:
        s.sendall(b"POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 404 ")
        t0 = time.monotonic()
        with pytest.raises(OSError):
            for _ in range(100):  # 10 s at this pace
                s.sendall(b"x")
                if select.select([s], [], [], 0.1)[0] and not s.recv(1):
                    raise ConnectionResetError("closed by the server")
    assert BODY_TIMEOUT - 0.2 < time.monotonic() - t0 < BODY_TIMEOUT + SLACK


def test_a_large_body_at_a_fair_rate_is_not_cut(gateway):
    # 4,000 bytes at 1,000 B/s minimum: 4 s allowed; sent in about 2 s, past the 1.5 s floor.
    body = message_body(4000)
    pieces = [head(4000)] + [body[i:i + 200] for i in range(0, 4000, 200)]
    elapsed, raw = send_slowly(port_of(gateway), pieces, gap=0.1)
    status, answer = status_and_error(raw)
    assert status == 200 and answer["type"] == "message", answer
    assert elapsed > BODY_TIMEOUT


@pytest.mark.parametrize("url", [b"/\x00", b"/v1/messages\x00", b"/\x01x", b"/a\x7f"])
def test_a_control_byte_in_the_request_line_gets_a_400(gateway, caplog, url):
    caplog.set_level(logging.DEBUG)
    with socket.create_connection(("127.0.0.1", port_of(gateway)), timeout=5) as s:
        s.sendall(b"POST " + url + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    status, err = status_and_error(raw)
    assert status == 400
    assert err["type"] == "error" and err["error"]["type"] == "invalid_request_error"
    assert "Traceback" not in caplog.text and not any(r.exc_info for r in caplog.records)
    # the server is still serving
    assert httpx.get(gateway.base_url + "/health", timeout=5).status_code == 200
