"""End to end through the real server: the official anthropic SDK → Vandamme → a real fake
Anthropic upstream on 127.0.0.1 (format: anthropic, zero-copy passthrough)."""
import anthropic
import httpx
import orjson
import pytest

from fakes.anthropic_upstream import AnthropicReply, FakeAnthropic
from harness import LiveGateway

UPSTREAM_KEY = "sk-upstream-secret-0123456789"


def spec(urls):
    return f"""
version: 1
default_provider: anthropic
providers:
  anthropic:
    format: anthropic
    base_url: {urls['anthropic']}
    api_keys: ["{UPSTREAM_KEY}"]
    aliases: {{sonnet: claude-sonnet-4-5}}
"""


@pytest.fixture
def live(tmp_path):
    fake = FakeAnthropic()
    with LiveGateway(spec, {"anthropic": fake}, tmp_path) as gw:
        gw.fake = fake
        yield gw


def client(gw, **kw):
    return anthropic.Anthropic(base_url=gw.base_url, api_key="client-key", max_retries=0, timeout=10, **kw)


def test_non_stream_bytes_forwarded_unchanged(live):
    c = client(live)
    msg = c.messages.create(model="claude-sonnet-4-5", max_tokens=50,
                            messages=[{"role": "user", "content": "hi"}])
    assert msg.content[0].text == "Hello from the fake Anthropic upstream."
    assert msg.model == "claude-sonnet-4-5"
    sent = live.fake.requests[-1]
    assert sent["path"] == "/v1/messages"
    assert sent["headers"]["x-api-key"] == UPSTREAM_KEY  # the provider's key, not the client's
    assert sent["headers"]["anthropic-version"]  # the client's version, forwarded
    assert sent["json"]["messages"] == [{"role": "user", "content": "hi"}]


def test_model_alias_is_spliced_without_reserialising(live):
    body = b'{"model":  "sonnet", "max_tokens": 5,   "messages": [{"role":"user","content":"x"}]}'
    r = httpx.post(live.base_url + "/v1/messages", content=body,
                   headers={"content-type": "application/json", "x-api-key": "c"}, timeout=10)
    assert r.status_code == 200, r.text
    assert live.fake.requests[-1]["body"] == body.replace(b'"sonnet"', b'"claude-sonnet-4-5"')


def test_stream_events_arrive_in_order(live):
    c = client(live)
    with c.messages.stream(model="claude-sonnet-4-5", max_tokens=50,
                           messages=[{"role": "user", "content": "hi"}]) as stream:
        events = [e.type for e in stream]
        final = stream.get_final_message()
    assert final.content[0].text == "Hello from the fake Anthropic upstream."
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert final.stop_reason == "end_turn"


def test_upstream_error_keeps_status_and_retry_after(live):
    live.fake.enqueue(AnthropicReply(status=429, headers={"retry-after": "7"}, error_body={
        "type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}))
    c = client(live)
    with pytest.raises(anthropic.RateLimitError) as err:
        c.messages.create(model="claude-sonnet-4-5", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert err.value.response.headers["retry-after"] == "7"
    assert err.value.body["error"]["message"] == "slow down"


def test_mid_stream_failure_ends_with_error_event(live):
    live.fake.enqueue(AnthropicReply(drop_after_events=4))
    body = orjson.dumps({"model": "claude-sonnet-4-5", "max_tokens": 5, "stream": True,
                         "messages": [{"role": "user", "content": "x"}]})
    with httpx.stream("POST", live.base_url + "/v1/messages", content=body, timeout=10,
                      headers={"content-type": "application/json"}) as r:
        text = b"".join(r.iter_bytes()).decode()
    assert r.status_code == 200
    assert "event: message_start" in text
    assert text.rstrip().split("\n\n")[-1].startswith("event: error")


@pytest.mark.parametrize("body,needle", [
    (b"{not json", "not valid JSON"),
    (b"[]", "JSON object"),
    (b'{"model": "m", "messages": [{"role": "user", "content": "x"}]}', "max_tokens"),
    (b'{"model": "m", "max_tokens": 5}', "messages"),
    (b'{"model": 5, "max_tokens": 5, "messages": []}', "model"),
])
def test_bad_requests_get_anthropic_400(live, body, needle):
    r = httpx.post(live.base_url + "/v1/messages", content=body, timeout=10,
                   headers={"content-type": "application/json"})
    assert r.status_code == 400
    err = r.json()
    assert err["type"] == "error" and err["error"]["type"] == "invalid_request_error"
    assert needle in err["error"]["message"]
    assert not live.fake.requests  # nothing reached the upstream


def test_unknown_route_and_method_are_anthropic_shaped(live):
    r = httpx.get(live.base_url + "/v1/nothing", timeout=10)
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    r = httpx.get(live.base_url + "/v1/messages", timeout=10)
    assert r.status_code == 405 and r.json()["type"] == "error"


def test_count_tokens_forwarded(live):
    c = client(live)
    n = c.messages.count_tokens(model="claude-sonnet-4-5", messages=[{"role": "user", "content": "hi"}])
    assert n.input_tokens == 42
    assert live.fake.requests[-1]["path"] == "/v1/messages/count_tokens"


def test_health_names_providers_never_keys(live):
    r = httpx.get(live.base_url + "/health", timeout=10)
    assert r.status_code == 200
    data = r.json()
    assert data["status"] == "ok"
    (p,) = data["providers"]
    assert p["name"] == "anthropic" and p["format"] == "anthropic" and p["keys"] == 1
    assert UPSTREAM_KEY not in r.text
