"""OpenAI stream -> Anthropic stream: the StreamConverter and the conversion stages."""
import asyncio

import aiohttp
import orjson
import pytest

from vandamme.kernel import BufferedResponse, Context, StreamingResponse
from tests.fakes.openai_upstream import (
    FakeOpenAI,
    Reply,
    ToolCall,
    build_chunks,
    build_completion,
    encode_stream,
)
from vandamme.transforms.anthropic_to_openai import RequestConverter
from vandamme.transforms.conversion_stages import AnthropicToOpenAI, OpenAIToAnthropic, convert_stream
from vandamme.transforms.errors import GatewayError
from vandamme.transforms.openai_stream import PING, StreamConverter, assemble, parse_sse
from vandamme.transforms.openai_to_anthropic import convert_response


def check_grammar(events):
    """Assert Anthropic's event grammar; return the list of event types."""
    types = [d["type"] for _, d in events]
    for name, data in events:
        assert name == data["type"]
    assert types[0] == "message_start"
    assert types.count("message_start") == 1
    if "error" in types:
        assert types[-1] == "error"
        return types
    assert types[-2:] == ["message_delta", "message_stop"]
    assert types.count("message_delta") == 1 and types.count("message_stop") == 1
    open_index = None
    next_index = 0
    for _, d in events[1:-2]:
        t = d["type"]
        if t == "ping":
            continue
        if t == "content_block_start":
            assert open_index is None, "blocks must not interleave"
            assert d["index"] == next_index
            open_index = d["index"]
            next_index += 1
        elif t == "content_block_delta":
            assert d["index"] == open_index
        elif t == "content_block_stop":
            assert d["index"] == open_index
            open_index = None
        else:
            raise AssertionError(f"unexpected event {t}")
    assert open_index is None
    return types


def run(raw: bytes, size: int | None = None, **kw) -> bytes:
    sc = StreamConverter("claude-sonnet", **kw)
    if size is None:
        out = sc.feed(raw)
    else:
        out = b"".join(sc.feed(raw[i:i + size]) for i in range(0, len(raw), size))
    return out + sc.finish()


def stream_bytes(reply: Reply, include_usage=True, done=True) -> bytes:
    return b"".join(encode_stream(build_chunks(reply, "gpt-4o", "chatcmpl-x", 1, include_usage),
                                  done))


def equivalent(reply: Reply, stops=None) -> dict:
    return convert_response(build_completion(reply, "gpt-4o", "chatcmpl-x", 1),
                            requested_model="claude-sonnet", stop_sequences=stops)


def same_message(a: dict, b: dict) -> None:
    assert a["id"] == b["id"]
    assert a["content"] == b["content"]
    assert a["stop_reason"] == b["stop_reason"]
    assert a["stop_sequence"] == b["stop_sequence"]


REPLIES = {
    "text": Reply(text="Hello, wörld — ünïcode ✓ 日本語 😀!"),
    "reasoning": Reply(text="42", reasoning="Let me think about it carefully."),
    "reasoning_field": Reply(text="ok", reasoning="hmm", reasoning_field="reasoning"),
    "tools": Reply(text="Checking.", tool_calls=[
        ToolCall("get_weather", {"city": "Paris", "units": "metric"}),
        ToolCall("get_time", {"tz": "Europe/Paris"})], cached_tokens=4),
    "interleaved": Reply(tool_calls=[ToolCall("a", {"x": [1, 2, 3], "y": "é"}),
                                     ToolCall("b", {"z": {"deep": True}}),
                                     ToolCall("c", {})], interleave_tool_calls=True,
                         fragment_size=2),
    "length": Reply(text="truncated", finish_reason="length"),
    "filter": Reply(text="", finish_reason="content_filter"),
}


@pytest.mark.parametrize("name", sorted(REPLIES))
def test_every_slice_size_gives_same_result(name):
    reply = REPLIES[name]
    raw = stream_bytes(reply)
    expected = equivalent(reply)
    reference = None
    for size in range(1, min(len(raw), 64) + 1):
        out = run(raw, size)
        events = parse_sse(out)
        check_grammar(events)
        msg = assemble(out)
        same_message(msg, expected)
        if reference is None:
            reference = out
        else:
            assert out == reference
    # and all at once
    assert run(raw) == reference


def test_event_sequence_exact():
    raw = stream_bytes(Reply(text="Hi there", reasoning="hm"))
    events = parse_sse(run(raw, 5))
    assert [d["type"] for _, d in events] == [
        "message_start",
        "content_block_start", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_stop", "message_delta", "message_stop"]
    start = events[0][1]["message"]
    assert start["content"] == [] and start["model"] == "claude-sonnet"
    assert start["usage"] == {"input_tokens": 0, "output_tokens": 0,
                              "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    assert start["id"].startswith("msg_")
    assert events[1][1]["content_block"] == {"type": "thinking", "thinking": "",
                                             "signature": ""}
    assert events[4][1]["content_block"] == {"type": "text", "text": ""}
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"] == {"input_tokens": 12, "cache_read_input_tokens": 0,
                              "cache_creation_input_tokens": 0, "output_tokens": 7}


def test_usage_after_finish_and_cached_tokens():
    raw = stream_bytes(Reply(text="x", prompt_tokens=100, completion_tokens=9, cached_tokens=60))
    msg = assemble(run(raw))
    assert msg["usage"] == {"input_tokens": 40, "cache_read_input_tokens": 60,
                            "cache_creation_input_tokens": 0, "output_tokens": 9}


def test_tool_use_blocks():
    raw = stream_bytes(REPLIES["tools"])
    events = parse_sse(run(raw, 3))
    starts = [d["content_block"] for _, d in events if d["type"] == "content_block_start"]
    assert starts[0] == {"type": "text", "text": ""}
    assert starts[1]["type"] == "tool_use" and starts[1]["name"] == "get_weather"
    assert starts[1]["input"] == {}
    partials = [d["delta"]["partial_json"] for _, d in events
                if d["type"] == "content_block_delta" and d["index"] == 1]
    assert len(partials) > 1
    assert orjson.loads("".join(partials)) == {"city": "Paris", "units": "metric"}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_interleaved_tool_calls_are_serialized():
    raw = stream_bytes(REPLIES["interleaved"])
    msg = assemble(run(raw, 7))
    assert [(b["name"], b["input"]) for b in msg["content"]] == [
        ("a", {"x": [1, 2, 3], "y": "é"}), ("b", {"z": {"deep": True}}), ("c", {})]


def test_text_after_tool_call_opens_new_block():
    chunks = [
        {"choices": [{"index": 0, "delta": {"content": "before"}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "c1", "type": "function",
             "function": {"name": "f", "arguments": "{}"}}]}}]},
        {"choices": [{"index": 0, "delta": {"content": "after"}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    ]
    raw = b"".join(encode_stream(chunks))
    out = run(raw)
    check_grammar(parse_sse(out))
    msg = assemble(out)
    assert [b["type"] for b in msg["content"]] == ["text", "tool_use", "text"]
    assert msg["content"][2]["text"] == "after"


def test_new_id_on_same_index_starts_new_call():
    chunks = [
        {"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "c1", "function": {"name": "f", "arguments": '{"a":1}'}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "c2", "function": {"name": "g", "arguments": '{"b":2}'}}]}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    ]
    msg = assemble(run(b"".join(encode_stream(chunks))))
    assert [(b["id"], b["name"], b["input"]) for b in msg["content"]] == [
        ("c1", "f", {"a": 1}), ("c2", "g", {"b": 2})]


def test_tool_calls_without_index():
    chunks = [
        {"choices": [{"index": 0, "delta": {"tool_calls": [
            {"id": "c1", "function": {"name": "f", "arguments": '{"a":'}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [
            {"function": {"arguments": "1}"}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [
            {"id": "c2", "function": {"name": "g", "arguments": "{}"}}]}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    ]
    msg = assemble(run(b"".join(encode_stream(chunks))))
    assert [(b["id"], b["input"]) for b in msg["content"]] == [("c1", {"a": 1}), ("c2", {})]


def test_name_arriving_late():
    chunks = [
        {"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "c1", "function": {"arguments": '{"a"'}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"name": "f", "arguments": ":1}"}}]}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    ]
    msg = assemble(run(b"".join(encode_stream(chunks))))
    assert msg["content"] == [{"type": "tool_use", "id": "c1", "name": "f", "input": {"a": 1}}]


def test_end_without_done_or_finish_reason():
    raw = stream_bytes(Reply(text="partial"), done=False)
    raw = raw[:raw.rindex(b"data: ")]  # also cut the usage chunk
    raw = raw[:raw.rindex(b"data: ")]  # and the finish chunk
    out = run(raw, 11)
    events = parse_sse(out)
    # The body ended before the answer did (a cut the upstream's server closed cleanly): the text
    # that came is passed on, then an error event says the answer is incomplete, never end_turn.
    assert check_grammar(events)[-1] == "error"
    assert "".join(d["delta"]["text"] for _, d in events if d["type"] == "content_block_delta") == "partial"
    assert events[-1][1]["error"]["type"] == "api_error"
    assert "ended before the answer was complete" in events[-1][1]["error"]["message"]


def test_finish_reason_without_done_is_complete():
    raw = stream_bytes(Reply(text="whole"), done=False)  # finish chunk and usage, no [DONE]
    msg = assemble(run(raw, 7))
    assert msg["content"] == [{"type": "text", "text": "whole"}] and msg["stop_reason"] == "end_turn"


def test_done_with_open_tool_call_is_tool_use():
    chunks = [{"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "c1", "function": {"name": "f", "arguments": '{"a":1}'}}]}}]}]
    out = run(b"".join(encode_stream(chunks, done=True)))  # [DONE], but no finish_reason
    check_grammar(parse_sse(out))
    assert assemble(out)["stop_reason"] == "tool_use"


def test_empty_stream_is_an_error():
    assert parse_sse(run(b"")) == [("error", {"type": "error", "error": {
        "type": "api_error",
        "message": "upstream stream ended before the answer was complete (no finish_reason and no [DONE])"}})]


def test_done_alone_is_a_valid_empty_answer():
    out = run(b"data: [DONE]\n\n")
    check_grammar(parse_sse(out))
    assert assemble(out)["content"] == [{"type": "text", "text": ""}]


def test_last_event_without_trailing_newline():
    raw = b'data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}'
    msg = assemble(run(raw))
    assert msg["content"] == [{"type": "text", "text": "hi"}]


def test_sse_noise_is_ignored():
    raw = (b": keep-alive\n\nevent: message\nid: 1\nretry: 10\n"
           b'data:{"choices":[{"index":0,"delta":{"content":"a"}}]}\r\n\r\n'
           b'data: {"choices":[{"index":1,"delta":{"content":"other choice"}}]}\n\n'
           b'data: {"choices":[{"index":0,"delta":{"content":"b"},"finish_reason":"stop"}]}\n\n'
           b"data: [DONE]\n\n"
           b'data: {"choices":[{"index":0,"delta":{"content":"after done"}}]}\n\n')
    for size in (1, 2, 3, 1000):
        msg = assemble(run(raw, size))
        assert msg["content"] == [{"type": "text", "text": "ab"}]


def test_data_that_is_not_json_ends_the_stream_with_an_error():
    raw = (b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n'
           b"data: not json\n\n"
           b'data: {"choices":[{"index":0,"delta":{"content":"b"},"finish_reason":"stop"}]}\n\n'
           b"data: [DONE]\n\n")
    for size in (1, 5, 1000):
        events = parse_sse(run(raw, size))
        assert check_grammar(events)[-1] == "error"
        assert events[-1][1]["error"]["message"] == \
            "malformed upstream answer: stream event data is not JSON (8 bytes)"
        assert [d["delta"]["text"] for _, d in events if d["type"] == "content_block_delta"] == ["a"]


def test_empty_data_lines_are_skipped():
    raw = (b"data:\n\n"
           b'data: {"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":"stop"}]}\n\n'
           b"data: [DONE]\n\n")
    assert assemble(run(raw))["content"] == [{"type": "text", "text": "a"}]


def test_multiline_data_event():
    raw = b'data: {"choices":[{"index":0,\ndata: "delta":{"content":"x"}}]}\n\ndata: [DONE]\n\n'
    assert assemble(run(raw))["content"] == [{"type": "text", "text": "x"}]


def test_stop_sequence_in_stream():
    raw = stream_bytes(Reply(text="x", choice_extra={"stop_reason": "END"}))
    msg = assemble(run(raw, stop_sequences=["END"]))
    assert msg["stop_reason"] == "stop_sequence" and msg["stop_sequence"] == "END"


def test_upstream_error_object_in_stream():
    raw = stream_bytes(Reply(text="some text", error_in_stream={
        "message": "Rate limit reached", "type": "requests", "code": "429"}))
    for size in (1, 9, len(raw)):
        out = run(raw, size)
        events = parse_sse(out)
        types = check_grammar(events)
        assert types[-1] == "error"
        assert events[-1][1] == {"type": "error", "error": {"type": "rate_limit_error",
                                                            "message": "Rate limit reached"}}


def test_error_first_has_no_message_start():
    out = run(b'data: {"error": {"message": "bad", "type": "server_error"}}\n\n')
    assert parse_sse(out) == [("error", {"type": "error", "error": {
        "type": "api_error", "message": "bad"}})]


def test_error_frame_and_ping():
    sc = StreamConverter("m")
    first = sc.keepalive()  # nothing sent yet: an Anthropic stream opens with message_start
    assert first.startswith(b"event: message_start\n") and first.endswith(PING)
    assert sc.keepalive() == b'event: ping\ndata: {"type": "ping"}\n\n' == PING
    frame = sc.error_frame("overloaded_error", "busy")
    assert frame.startswith(b"event: error\ndata: ")
    assert sc.finish() == b"" and sc.feed(b"data: {}\n\n") == b""
    assert sc.keepalive() == b""  # nothing after the stream ended


def test_message_id_and_model():
    sc = StreamConverter("claude-x", message_id="msg_fixed")
    out = sc.feed(b'data: {"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":"stop"}]}\n\n') \
        + sc.finish()
    assert assemble(out)["id"] == "msg_fixed" and assemble(out)["model"] == "claude-x"


# ------------------------------------------------------------------ convert_stream / stages


async def agen(items, delays=None, fail_at=None):
    for i, item in enumerate(items):
        if delays:
            await asyncio.sleep(delays[i])
        if fail_at is not None and i == fail_at:
            raise aiohttp.ClientPayloadError("connection lost")
        yield item


async def collect(gen):
    return b"".join([c async for c in gen])


async def test_ping_during_upstream_silence():
    raw = stream_bytes(Reply(text="late"))
    closed = []
    gen = convert_stream(agen([raw[:10], raw[10:]], delays=[0, 0.35]), StreamConverter("m"),
                         0.1, lambda: closed.append(1))
    out = await collect(gen)
    events = parse_sse(out)
    pings = [d for _, d in events if d["type"] == "ping"]
    assert len(pings) >= 2
    check_grammar(events)
    assert assemble(out)["content"] == [{"type": "text", "text": "late"}]
    assert closed == [1]


async def test_ping_before_first_upstream_byte_follows_message_start():
    raw = stream_bytes(Reply(text="slow start"))
    out = await collect(convert_stream(agen([raw], delays=[0.25]), StreamConverter("m"), 0.1))
    events = parse_sse(out)
    assert [d["type"] for _, d in events[:2]] == ["message_start", "ping"]
    check_grammar(events)
    assert assemble(out)["content"] == [{"type": "text", "text": "slow start"}]


async def test_mid_stream_exception_gives_error_frame_and_closes():
    raw = stream_bytes(Reply(text="hello world"))
    closed = []

    async def aclose():
        closed.append(1)

    out = await collect(convert_stream(agen([raw[:200], raw[200:]], fail_at=1),
                                       StreamConverter("m"), 5.0, aclose))
    events = parse_sse(out)
    assert events[-1][0] == "error"
    assert events[-1][1]["error"]["type"] == "api_error"
    assert closed == [1]


async def test_gateway_error_mid_stream_keeps_its_type():
    async def broken():
        yield b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n'
        raise GatewayError(504, "upstream timed out", "timeout_error")

    out = await collect(convert_stream(broken(), StreamConverter("m"), None))
    assert parse_sse(out)[-1][1]["error"] == {"type": "timeout_error",
                                              "message": "upstream timed out"}


async def test_close_called_when_client_goes_away():
    closed = []

    async def endless():
        while True:
            yield b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n'
            await asyncio.sleep(0.01)

    gen = convert_stream(endless(), StreamConverter("m"), 1.0, lambda: closed.append(1))
    first = await gen.__anext__()
    assert b"message_start" in first
    await gen.aclose()
    assert closed == [1]


def ctx_for(body, model="gpt-4o"):
    ctx = Context(request_id="r1", raw_body=orjson.dumps(body), headers={})
    ctx.body = body
    ctx.model = model
    ctx.requested_model = body["model"]
    ctx.stream = bool(body.get("stream"))
    return ctx


BODY = {"model": "claude-sonnet", "max_tokens": 50, "stop_sequences": ["END"],
        "messages": [{"role": "user", "content": "Hi"}]}


async def test_request_stage():
    ctx = ctx_for(BODY)
    stage = AnthropicToOpenAI(RequestConverter())
    assert stage.name == "anthropic_to_openai"
    await stage.run(ctx)
    assert ctx.upstream_path == "/chat/completions"
    assert orjson.loads(ctx.upstream_body)["messages"] == [{"role": "user", "content": "Hi"}]
    assert ctx.stop_sequences == ["END"]
    ctx2 = ctx_for(BODY)
    ctx2.upstream_path = "/openai/deployments/x/chat/completions?api-version=1"
    await stage.run(ctx2)
    assert ctx2.upstream_path == "/openai/deployments/x/chat/completions?api-version=1"


async def test_response_stage_buffered():
    ctx = ctx_for(BODY)
    ctx.stop_sequences = None
    ctx.response = BufferedResponse(200, orjson.dumps(build_completion(
        Reply(text="Hey"), "gpt-4o", "chatcmpl-1", 1)))
    stage = OpenAIToAnthropic()
    assert stage.name == "openai_to_anthropic"
    await stage.run(ctx)
    body = orjson.loads(ctx.response.body)
    assert body["content"] == [{"type": "text", "text": "Hey"}]
    assert body["model"] == "claude-sonnet"
    # error answers are left alone
    ctx.response = BufferedResponse(429, b'{"type":"error"}')
    await stage.run(ctx)
    assert ctx.response.body == b'{"type":"error"}'


async def test_stages_against_fake_upstream_stream():
    """Full path: request stage -> real HTTP to FakeOpenAI -> response stage."""
    body = {**BODY, "stream": True}
    async with FakeOpenAI() as fake, aiohttp.ClientSession() as session:
        fake.enqueue(Reply(text="Streaming works", reasoning="think",
                           tool_calls=[ToolCall("f", {"q": "x" * 30})],
                           random_slices=7, delay=0.001))
        ctx = ctx_for(body)
        await AnthropicToOpenAI(RequestConverter()).run(ctx)
        resp = await session.post(fake.base_url + ctx.upstream_path, data=ctx.upstream_body,
                                  headers={"content-type": "application/json"})
        assert resp.headers["content-type"].startswith("text/event-stream")
        ctx.response = StreamingResponse(200, resp.content.iter_any(), close=resp.release)
        await OpenAIToAnthropic(ping_interval=5).run(ctx)
        assert ctx.response.content_type == "text/event-stream"
        out = await collect(ctx.response.chunks)
        sent = fake.requests[0]["json"]
        assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
        assert sent["stop"] == ["END"]
    events = parse_sse(out)
    check_grammar(events)
    msg = assemble(out)
    assert [b["type"] for b in msg["content"]] == ["thinking", "text", "tool_use"]
    assert msg["content"][2]["input"] == {"q": "x" * 30}
    assert msg["stop_reason"] == "tool_use"
    assert msg["usage"]["output_tokens"] == 7


async def test_stages_against_fake_upstream_dropped_connection():
    body = {**BODY, "stream": True}
    async with FakeOpenAI() as fake, aiohttp.ClientSession() as session:
        fake.enqueue(Reply(text="this will be cut off", drop_after_events=3))
        ctx = ctx_for(body)
        await AnthropicToOpenAI(RequestConverter()).run(ctx)
        resp = await session.post(fake.base_url + ctx.upstream_path, data=ctx.upstream_body)
        ctx.response = StreamingResponse(200, resp.content.iter_any(), close=resp.release)
        await OpenAIToAnthropic().run(ctx)
        out = await collect(ctx.response.chunks)
    events = parse_sse(out)
    assert events[0][1]["type"] == "message_start"
    assert events[-1][0] == "error"


async def test_fake_upstream_non_stream_and_errors():
    async with FakeOpenAI(api_key="sk-test") as fake, aiohttp.ClientSession() as session:
        headers = {"Authorization": "Bearer sk-test"}
        fake.enqueue(Reply(tool_calls=[ToolCall("f", {"a": 1})], cached_tokens=3),
                     Reply(status=429, error_message="slow down", headers={"retry-after": "2"}))
        r = await session.post(fake.base_url + "/chat/completions", json=BODY, headers=headers)
        assert r.headers["content-type"].startswith("application/json")
        msg = convert_response(await r.json(), requested_model="c", stop_sequences=None)
        assert msg["content"][0]["input"] == {"a": 1}
        assert msg["usage"]["cache_read_input_tokens"] == 3
        r = await session.post(fake.base_url + "/chat/completions", json=BODY, headers=headers)
        assert r.status == 429 and r.headers["retry-after"] == "2"
        assert (await r.json())["error"]["message"] == "slow down"
        r = await session.get(fake.base_url + "/models", headers=headers)
        assert [m["id"] for m in (await r.json())["data"]] == ["gpt-4o", "gpt-4o-mini"]
        r = await session.get(fake.base_url + "/models")
        assert r.status == 401
        assert fake.requests[0]["headers"]["Authorization"] == "Bearer sk-test"
        assert fake.requests[0]["path"] == "/v1/chat/completions"


async def test_response_stage_drops_body_headers():
    ctx = ctx_for(BODY)
    ctx.response = BufferedResponse(200, orjson.dumps(build_completion(
        Reply(text="Hey"), "gpt-4o", "chatcmpl-1", 1)),
        {"Content-Length": "999", "Content-Encoding": "gzip", "x-request-id": "abc"})
    await OpenAIToAnthropic().run(ctx)
    assert ctx.response.headers == {"x-request-id": "abc"}


def test_anthropic_sdk_accepts_converted_stream_and_message():
    """The official SDK parses our stream and our non-stream message."""
    import anthropic
    try:  # recent SDKs are built on httpx2, older ones on httpx
        import httpx2 as httpx
    except ImportError:
        import httpx

    reply = Reply(text="Hi!", reasoning="think", cached_tokens=2,
                  tool_calls=[ToolCall("get_weather", {"city": "Paris"})])
    sse = run(stream_bytes(reply), 13)
    message = equivalent(reply)

    def handler(request: httpx.Request) -> httpx.Response:
        if orjson.loads(request.content).get("stream"):
            return httpx.Response(200, content=sse,
                                  headers={"content-type": "text/event-stream"})
        return httpx.Response(200, content=orjson.dumps(message),
                              headers={"content-type": "application/json"})

    client = anthropic.Anthropic(api_key="x", base_url="http://gw",
                                 http_client=httpx.Client(transport=httpx.MockTransport(handler)))
    kwargs = {"model": "claude-sonnet", "max_tokens": 10,
              "messages": [{"role": "user", "content": "Hi"}]}
    with client.messages.stream(**kwargs) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(texts) == "Hi!"
    assert [b.type for b in final.content] == ["thinking", "text", "tool_use"]
    assert final.content[2].input == {"city": "Paris"}
    assert final.stop_reason == "tool_use"
    assert final.usage.input_tokens == 10 and final.usage.cache_read_input_tokens == 2
    assert final.usage.output_tokens == 7
    plain = client.messages.create(**kwargs)
    assert plain.model_dump(exclude_none=True)["content"] == final.model_dump(
        exclude_none=True)["content"]


def test_every_slice_size_up_to_whole_stream():
    reply = Reply(text="Añb😀", reasoning="r", tool_calls=[ToolCall("f", {"k": "vé"})],
                  fragment_size=2)
    raw = stream_bytes(reply)
    reference = run(raw)
    check_grammar(parse_sse(reference))
    same_message(assemble(reference), equivalent(reply))
    for size in range(1, len(raw) + 1):
        assert run(raw, size) == reference
