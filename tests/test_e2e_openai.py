"""End to end over an OpenAI-format provider: the official anthropic SDK → Vandamme (real Sanic
server) → a real fake OpenAI chat-completions server on 127.0.0.1."""
import asyncio
import json
import time

import anthropic
import httpx
import orjson
import pytest

from fakes.openai_upstream import FakeOpenAI, Reply, ToolCall
from harness import LiveGateway


def spec(urls):
    return f"""
version: 1
server: {{max_retries: 0, ping_interval: 0.2}}
default_provider: openai
providers:
  openai:
    format: openai
    base_url: "{urls['openai']}"
    api_keys: [sk-openai-0123456789]
    aliases: {{haiku: gpt-4o-mini, sonnet: gpt-4o}}
    models: [gpt-4o]
"""


class TrackingOpenAI(FakeOpenAI):
    """Notes when the gateway closes a stream early (client went away)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.disconnected = None

    async def _stream(self, request, reply, frames):
        try:
            return await super()._stream(request, reply, frames)
        except (asyncio.CancelledError, ConnectionResetError):
            self.disconnected = time.monotonic()
            raise


@pytest.fixture
def live(tmp_path):
    fake = TrackingOpenAI()
    with LiveGateway(spec, {"openai": fake}, tmp_path) as gw:
        gw.fake = fake
        gw.client = anthropic.Anthropic(base_url=gw.base_url, api_key="client", max_retries=0, timeout=15)
        yield gw


WEATHER_TOOL = {"name": "get_weather", "description": "Weather for a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                                 "required": ["city"]}}


def test_create_plain_text(live):
    msg = live.client.messages.create(model="claude-sonnet-4-5-20250929", max_tokens=100, system="Be brief.",
                                      messages=[{"role": "user", "content": "hello"}])
    assert msg.id.startswith("msg_")
    assert msg.model == "claude-sonnet-4-5-20250929"  # the name the client asked for
    assert msg.content[0].type == "text" and msg.content[0].text == "Hello! How can I help you today?"
    assert msg.stop_reason == "end_turn"
    assert msg.usage.input_tokens == 12 and msg.usage.output_tokens == 7
    sent = live.fake.requests[-1]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["Authorization"] == "Bearer sk-openai-0123456789"
    assert sent["json"]["model"] == "gpt-4o"  # sonnet alias
    assert sent["json"]["messages"][0] == {"role": "system", "content": "Be brief."}


def test_stream_final_message(live):
    live.fake.enqueue(Reply(text="streamed answer in pieces", random_slices=7))
    with live.client.messages.stream(model="haiku", max_tokens=100,
                                     messages=[{"role": "user", "content": "hi"}]) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_message()
    assert final.content[0].text == "streamed answer in pieces"
    assert final.stop_reason == "end_turn"
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert live.fake.requests[-1]["json"]["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("stream", [False, True])
def test_full_tool_use_loop(live, stream):
    live.fake.enqueue(
        Reply(text="Let me check.", tool_calls=[ToolCall("get_weather", {"city": "Paris"}, id="call_1")],
              random_slices=3),
        Reply(text="It is sunny in Paris."))
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    kw = dict(model="gpt-4o", max_tokens=200, tools=[WEATHER_TOOL], messages=messages)
    if stream:
        with live.client.messages.stream(**kw) as s:
            first = s.get_final_message()
    else:
        first = live.client.messages.create(**kw)
    assert first.stop_reason == "tool_use"
    assert [b.type for b in first.content] == ["text", "tool_use"]
    call = first.content[1]
    assert call.name == "get_weather" and call.input == {"city": "Paris"} and call.id == "call_1"
    messages += [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}]}]
    second = live.client.messages.create(model="gpt-4o", max_tokens=200, tools=[WEATHER_TOOL], messages=messages)
    assert second.content[0].text == "It is sunny in Paris."
    sent = live.fake.requests[-1]["json"]
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    assert sent["messages"][-2]["tool_calls"][0]["id"] == "call_1"
    assert sent["messages"][-1] == {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}


def test_count_tokens_is_estimated_locally(live):
    n = live.client.messages.count_tokens(model="gpt-4o", messages=[{"role": "user", "content": "hello there " * 50}])
    assert 50 <= n.input_tokens <= 400
    assert not live.fake.requests  # never sent upstream


def test_models_lists_upstream_models_and_aliases(live):
    ids = [m.id for m in live.client.models.list()]
    assert "openai:gpt-4o" in ids and "openai:gpt-4o-mini" in ids
    assert "haiku" in ids and "sonnet" in ids
    before = len(live.fake.requests)
    live.client.models.list()
    assert len(live.fake.requests) == before  # cached


@pytest.mark.parametrize("status,exc", [(400, anthropic.BadRequestError), (401, anthropic.AuthenticationError),
                                        (403, anthropic.PermissionDeniedError), (404, anthropic.NotFoundError),
                                        (413, anthropic.APIStatusError), (429, anthropic.RateLimitError),
                                        (500, anthropic.InternalServerError), (503, anthropic.APIStatusError)])
def test_upstream_errors_keep_status(live, status, exc):
    live.fake.enqueue(*[Reply(status=status, error_message=f"upstream says {status}",
                              headers={"retry-after": "3"})] * 2)
    with pytest.raises(exc) as err:
        live.client.messages.create(model="gpt-4o", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == status
    assert err.value.body["type"] == "error"
    assert f"upstream says {status}" in err.value.body["error"]["message"]
    if status == 429:
        assert err.value.response.headers["retry-after"] == "3"


def test_mid_stream_upstream_failure_ends_with_error_event(live):
    live.fake.enqueue(Reply(text="partial answer that breaks", drop_after_events=3))
    body = orjson.dumps({"model": "gpt-4o", "max_tokens": 50, "stream": True,
                         "messages": [{"role": "user", "content": "x"}]})
    with httpx.stream("POST", live.base_url + "/v1/messages", content=body, timeout=15,
                      headers={"content-type": "application/json"}) as r:
        frames = b"".join(r.iter_bytes()).decode().strip().split("\n\n")
    assert frames[0].startswith("event: message_start")
    assert frames[-1].startswith("event: error")
    assert json.loads(frames[-1].split("data: ", 1)[1])["type"] == "error"


def test_unknown_block_type_is_a_clear_400(live):
    with pytest.raises(anthropic.BadRequestError) as err:
        live.client.messages.create(model="gpt-4o", max_tokens=5, messages=[
            {"role": "user", "content": [{"type": "hologram", "data": "x"}]}])
    assert "hologram" in err.value.body["error"]["message"]
    assert not live.fake.requests


def test_pings_while_upstream_is_silent(live):
    live.fake.enqueue(Reply(text="late answer", delay=0.7))  # silent between chunks
    body = orjson.dumps({"model": "gpt-4o", "max_tokens": 50, "stream": True,
                         "messages": [{"role": "user", "content": "x"}]})
    with httpx.stream("POST", live.base_url + "/v1/messages", content=body, timeout=15) as r:
        text = b"".join(r.iter_bytes()).decode()
    assert "event: ping" in text and text.rstrip().endswith('"message_stop"}')


def test_client_disconnect_cancels_upstream(live):
    live.fake.enqueue(Reply(text=" ".join(["word"] * 200), delay=0.05))
    body = orjson.dumps({"model": "gpt-4o", "max_tokens": 50, "stream": True,
                         "messages": [{"role": "user", "content": "x"}]})
    with httpx.stream("POST", live.base_url + "/v1/messages", content=body, timeout=15) as r:
        for chunk in r.iter_bytes():
            if b"content_block_delta" in chunk:
                break
    closed_at = time.monotonic()
    deadline = closed_at + 5
    while live.fake.disconnected is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert live.fake.disconnected is not None, "upstream stream was not cancelled"
