"""Key rings, failover, cooldown and !PASSTHRU, through the real server and a real upstream that
records which key each request used."""
import asyncio
import threading

import anthropic
import httpx
import pytest

from fakes.anthropic_upstream import AnthropicReply, FakeAnthropic
from harness import LiveGateway

KEYS = ["key-one-0000000001", "key-two-0000000002", "key-three-000000003"]


def ring_spec(urls, retries=0):
    keys = ", ".join(f'"{k}"' for k in KEYS)
    return f"""
version: 1
server: {{max_retries: {retries}, retry_backoff: 0.01}}
default_provider: up
providers:
  up: {{format: anthropic, base_url: "{urls['up']}", api_keys: [{keys}], key_cooldown: 60}}
  mine: {{format: anthropic, base_url: "{urls['mine']}", api_keys: ["!PASSTHRU"]}}
"""


@pytest.fixture
def live(tmp_path):
    up, mine = FakeAnthropic(), FakeAnthropic()
    with LiveGateway(ring_spec, {"up": up, "mine": mine}, tmp_path) as gw:
        gw.up, gw.mine = up, mine
        yield gw


def ask(gw, model="m", api_key="client-key", **kw):
    c = anthropic.Anthropic(base_url=gw.base_url, api_key=api_key, max_retries=0, timeout=10)
    return c.messages.create(model=model, max_tokens=5, messages=[{"role": "user", "content": "x"}], **kw)


def used_keys(fake):
    return [r["headers"].get("x-api-key") for r in fake.requests]


def test_round_robin_order(live):
    for _ in range(6):
        ask(live)
    assert used_keys(live.up) == KEYS + KEYS


@pytest.mark.parametrize("status", [401, 403, 429])
def test_failover_moves_same_request_to_next_key(live, status):
    live.up.enqueue(AnthropicReply(status=status))
    msg = ask(live)
    assert msg.content[0].text
    assert used_keys(live.up) == KEYS[:2]


def test_429_key_cools_down_and_is_skipped(live):
    live.up.enqueue(AnthropicReply(status=429, headers={"retry-after": "30"}))
    ask(live)  # key one: 429 → key two answers
    for _ in range(4):
        ask(live)
    keys = used_keys(live.up)
    assert keys[:2] == KEYS[:2]
    assert KEYS[0] not in keys[2:]  # cooling down for 30 s


def test_all_keys_fail_gives_last_upstream_error(live):
    for _ in KEYS:
        live.up.enqueue(AnthropicReply(status=401, error_body={
            "type": "error", "error": {"type": "authentication_error", "message": "bad key"}}))
    with pytest.raises(anthropic.AuthenticationError) as err:
        ask(live)
    assert err.value.body["error"]["message"] == "bad key"
    assert used_keys(live.up) == KEYS  # each key once, no more


def test_passthru_uses_each_clients_own_key_concurrently(live):
    results = {}

    def client(name):
        for _ in range(5):
            ask(live, model="mine:m", api_key=f"client-{name}-secret")
        results[name] = True

    threads = [threading.Thread(target=client, args=(n,)) for n in ("alice", "bob")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == {"alice": True, "bob": True}
    keys = used_keys(live.mine)
    assert sorted(keys) == ["client-alice-secret"] * 5 + ["client-bob-secret"] * 5
    assert not any(k.startswith("client-") for k in used_keys(live.up))  # never sent elsewhere


def test_passthru_accepts_bearer_and_requires_a_key(live):
    r = httpx.post(live.base_url + "/v1/messages", timeout=10, headers={"authorization": "Bearer tok-123"},
                   json={"model": "mine:m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 200 and used_keys(live.mine) == ["tok-123"]
    r = httpx.post(live.base_url + "/v1/messages", timeout=10,
                   json={"model": "mine:m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"


def test_retries_on_5xx_then_success(tmp_path):
    up, mine = FakeAnthropic(), FakeAnthropic()
    with LiveGateway(lambda u: ring_spec(u, retries=2), {"up": up, "mine": mine}, tmp_path) as gw:
        up.enqueue(AnthropicReply(status=503), AnthropicReply(status=529))
        assert ask(gw).content[0].text
        assert used_keys(up) == [KEYS[0]] * 3  # same key, 2 retries
        up.enqueue(*[AnthropicReply(status=500)] * 3)
        with pytest.raises(anthropic.InternalServerError):
            ask(gw)
        assert len(up.requests) == 6  # 1 + max_retries, then give up
        up.enqueue(AnthropicReply(status=400))
        with pytest.raises(anthropic.BadRequestError):
            ask(gw)
        assert len(up.requests) == 7  # a 400 is not retried


def test_connection_refused_is_502_after_retries(tmp_path):
    from harness import free_port
    dead = f"http://127.0.0.1:{free_port()}"
    spec = lambda u: f"""
version: 1
server: {{max_retries: 1, retry_backoff: 0.01}}
default_provider: gone
providers:
  gone: {{format: anthropic, base_url: "{dead}", api_keys: [k-aaaaaaaaaaaaaaaa]}}
"""
    with LiveGateway(spec, {}, tmp_path) as gw:
        r = httpx.post(gw.base_url + "/v1/messages", timeout=10,
                       json={"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 502
        assert r.json()["error"]["type"] == "api_error"
        assert "k-aaaa" not in r.text
