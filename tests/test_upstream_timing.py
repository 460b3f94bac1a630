"""Backoff schedule (no timed assertions: the bounds are computed, not measured) and read
timeouts through the real server."""
import anthropic
import httpx

from fakes.openai_upstream import FakeOpenAI, Reply
from harness import LiveGateway
from vandamme.transforms.upstream import backoff_delay


def test_backoff_is_exponential_with_full_jitter():
    upper = lambda retry: backoff_delay(retry, 0.5, rand=lambda lo, hi: hi)
    lower = lambda retry: backoff_delay(retry, 0.5, rand=lambda lo, hi: lo)
    assert [upper(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert all(lower(n) == 0.0 for n in (1, 2, 3))
    assert all(0.0 <= backoff_delay(3, 0.5) <= 2.0 for _ in range(100))


def test_read_timeout_is_504_and_retried(tmp_path):
    fake = FakeOpenAI()
    spec = lambda u: f"""
version: 1
server: {{request_timeout: 0.3, max_retries: 1, retry_backoff: 0.01}}
default_provider: o
providers:
  o: {{format: openai, base_url: "{u['o']}", api_keys: [k-0123456789ab]}}
"""
    with LiveGateway(spec, {"o": fake}, tmp_path) as gw:
        fake.enqueue(Reply(first_delay=1.0), Reply(first_delay=1.0))
        r = httpx.post(gw.base_url + "/v1/messages", timeout=10, json={
            "model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 504
        assert r.json()["error"]["type"] == "timeout_error"
        assert len(fake.requests) == 2  # first try + one retry
        c = anthropic.Anthropic(base_url=gw.base_url, api_key="x", max_retries=0, timeout=10)
        fake.enqueue(Reply(first_delay=1.0))  # a slow first try, then a fast retry
        assert c.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}]).content
