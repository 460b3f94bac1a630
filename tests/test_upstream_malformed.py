"""An OpenAI 200 answer that is not a completion is an upstream error (502 api_error naming what
was wrong), never an empty end_turn message; the same for malformed stream events (an
``event: error``, then nothing). Unit tests on both converters, then end to end through the real
gateway with a fake OpenAI upstream."""
import httpx
import orjson
import pytest
from aiohttp import web

from fakes.openai_upstream import FakeOpenAI, Reply
from harness import LiveGateway
from tests.test_conversion_stream import check_grammar
from vandamme.transforms.errors import GatewayError
from vandamme.transforms.openai_stream import StreamConverter, parse_sse
from vandamme.transforms.openai_to_anthropic import convert_response


def with_message(message, **choice):
    return {"id": "chatcmpl-1", "object": "chat.completion",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop", **choice}]}


def call(**fields):
    return with_message({"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", **fields}]})


# body -> what the 502 message says after "malformed upstream answer: "
NON_STREAM = [
    ({"choices": []}, "'choices' is empty"),
    ({"choices": None}, "'choices' is null, not a list"),
    ({"id": "x", "object": "chat.completion"}, "'choices' is missing"),
    ({"choices": {"0": {}}}, "'choices' is an object, not a list"),
    ([None], "the body is a list, not an object"),
    (42, "the body is a number, not an object"),
    ("text", "the body is a string, not an object"),
    (None, "the body is null, not an object"),
    ({"choices": [None]}, "choices[0] is null, not an object"),
    ({"choices": [{"message": None}]}, "choices[0].message is null, not an object"),
    ({"choices": [{"finish_reason": "stop"}]}, "choices[0].message is null, not an object"),
    (with_message({"content": 42}), "choices[0].message.content is a number, not a string"),
    (with_message({"content": {"text": "hi"}}),
     "choices[0].message.content is an object, not a string"),
    (with_message({"content": True}), "choices[0].message.content is a boolean, not a string"),
    (with_message({"content": ["hi"]}), "choices[0].message.content[0] is a string, not an object"),
    (with_message({"content": "ok", "refusal": 1}),
     "choices[0].message.refusal is a number, not a string"),
    (with_message({"content": None, "tool_calls": "x"}),
     "choices[0].message.tool_calls is a string, not a list"),
    (with_message({"content": None, "tool_calls": [7]}),
     "choices[0].message.tool_calls[0] is a number, not an object"),
    (call(function={"arguments": "{}"}),
     "choices[0].message.tool_calls[0].function.name is missing"),
    (call(function={"name": "", "arguments": "{}"}),
     "choices[0].message.tool_calls[0].function.name is missing"),
    (call(function={"name": 3}), "choices[0].message.tool_calls[0].function.name is a number, "
                                 "not a string"),
    (call(), "choices[0].message.tool_calls[0].function.name is missing"),
    (call(function="f"), "choices[0].message.tool_calls[0].function is a string, not an object"),
    (call(function={"name": "f", "arguments": 5}),
     "choices[0].message.tool_calls[0].function.arguments is a number, not a string"),
    (with_message({"content": None, "function_call": "f"}),
     "choices[0].message.function_call is a string, not an object"),
    (with_message({"content": None, "function_call": {"arguments": "{}"}}),
     "choices[0].message.function_call.name is missing"),
]


@pytest.mark.parametrize("body,what", NON_STREAM, ids=[w for _, w in NON_STREAM])
def test_non_stream_malformed_answer_is_502(body, what):
    with pytest.raises(GatewayError) as err:
        convert_response(body, requested_model="claude-x")
    assert (err.value.status, err.value.error_type) == (502, "api_error")
    assert err.value.message == "malformed upstream answer: " + what


def test_upstream_text_is_not_echoed():
    with pytest.raises(GatewayError) as err:
        convert_response(with_message({"content": {"secret": "sk-live-123"}}),
                         requested_model="c")
    assert "sk-live-123" not in err.value.message and "secret" not in err.value.message


def test_well_formed_edge_cases_still_convert():
    # a string name with arguments given as an object (some servers), content parts, no usage
    msg = convert_response(call(function={"name": "f", "arguments": {"a": 1}}),
                           requested_model="c")
    assert msg["content"] == [{"type": "tool_use", "id": "c1", "name": "f", "input": {"a": 1}}]
    msg = convert_response(with_message({"content": [{"type": "text", "text": "a"},
                                                      {"type": "text", "text": "b"}]}),
                           requested_model="c")
    assert msg["content"] == [{"type": "text", "text": "ab"}]


def chunk(choice=None, **top):
    body = {"id": "chatcmpl-1", "object": "chat.completion.chunk", **top}
    if choice is not None:
        body["choices"] = [choice]
    return b"data: " + orjson.dumps(body) + b"\n\n"


FIRST = chunk({"index": 0, "delta": {"role": "assistant", "content": "Hi"}})

# stream body -> what the error event says after "malformed upstream answer: "
STREAM = [
    (b"data: [null]\n\n", "stream event is a list, not an object"),
    (b"data: 5\n\n", "stream event is a number, not an object"),
    (chunk(choices="x"), "stream event choices is a string, not a list"),
    (chunk(choices={"index": 0}), "stream event choices is an object, not a list"),
    (chunk(choices=[None]), "stream event choices[0] is null, not an object"),
    (chunk({"index": 0, "delta": "x"}), "stream event choices[0].delta is a string, not an object"),
    (chunk({"index": 0, "delta": [1]}), "stream event choices[0].delta is a list, not an object"),
    (chunk({"index": 0, "delta": {"content": 5}}),
     "stream event choices[0].delta.content is a number, not a string"),
    (chunk({"index": 0, "delta": {"refusal": {"a": 1}}}),
     "stream event choices[0].delta.refusal is an object, not a string"),
    (chunk({"index": 0, "delta": {"tool_calls": "x"}}),
     "stream event choices[0].delta.tool_calls is a string, not a list"),
    (chunk({"index": 0, "delta": {"tool_calls": [None]}}),
     "stream event choices[0].delta.tool_calls[0] is null, not an object"),
    (chunk({"index": 0, "delta": {"tool_calls": [{"index": 0, "function": "f"}]}}),
     "stream event choices[0].delta.tool_calls[0].function is a string, not an object"),
    (chunk({"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"name": 1}}]}}),
     "stream event choices[0].delta.tool_calls[0].function.name is a number, not a string"),
    (chunk({"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "c", "function": {"name": "f", "arguments": 5}}]}}),
     "stream event choices[0].delta.tool_calls[0].function.arguments is a number, not a string"),
    (chunk({"index": 0, "delta": {"function_call": "f"}}),
     "stream event choices[0].delta.function_call is a string, not an object"),
    (chunk({"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "c", "function": {"arguments": '{"a":1}'}}]}})
     + chunk({"index": 0, "delta": {}, "finish_reason": "tool_calls"}),
     "stream event choices[0].delta.tool_calls[0].function.name is missing"),
]


def convert(raw: bytes, size: int | None = None) -> bytes:
    sc = StreamConverter("claude-x")
    if size is None:
        out = sc.feed(raw)
    else:
        out = b"".join(sc.feed(raw[i:i + size]) for i in range(0, len(raw), size))
    return out + sc.finish()


@pytest.mark.parametrize("bad,what", STREAM, ids=[w for _, w in STREAM])
@pytest.mark.parametrize("first", [b"", FIRST], ids=["at once", "after text"])
def test_stream_malformed_event_ends_with_error(bad, what, first):
    later = chunk({"index": 0, "delta": {"content": "never sent"}}) + b"data: [DONE]\n\n"
    raw = first + bad + later
    for size in (None, 1, 7):
        events = parse_sse(convert(raw, size))
        assert events[-1] == ("error", {"type": "error", "error": {
            "type": "api_error", "message": "malformed upstream answer: " + what}})
        assert not any(d.get("delta", {}).get("text") == "never sent" for _, d in events)
        if len(events) > 1:
            check_grammar(events)


@pytest.mark.parametrize("name", [None, ""])
@pytest.mark.parametrize("end", [b'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}\n\n',
                                 b"data: [DONE]\n\n"])
def test_stream_tool_call_whose_name_never_arrives(name, end):
    """The name may come in a later fragment, so it is missing only when the call's block must
    open: at finish_reason or at the end of the stream."""
    raw = FIRST + chunk({"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "c", "function": {"name": name, "arguments": '{"a":1}'}}]}}) + end
    events = parse_sse(convert(raw))
    check_grammar(events)
    assert [d["type"] for _, d in events][-2:] == ["content_block_stop", "error"]
    assert events[-1][1]["error"] == {"type": "api_error", "message": "malformed upstream answer: "
                                      "stream event choices[0].delta.tool_calls[0].function.name "
                                      "is missing"}


def test_tolerated_stream_shapes():
    """Chunks without content are not errors: no/null/empty choices (usage chunks, Azure's
    filter results), a missing or null delta, an empty delta."""
    raw = (chunk(choices=[]) + chunk(choices=None) + chunk()
           + chunk({"index": 0}) + chunk({"index": 0, "delta": None}) + FIRST
           + chunk({"index": 0, "delta": {}, "finish_reason": "stop"}) + b"data: [DONE]\n\n")
    events = parse_sse(convert(raw))
    check_grammar(events)
    assert [d["delta"]["text"] for _, d in events if d["type"] == "content_block_delta"] == ["Hi"]


def test_stream_content_parts_are_text_as_in_the_non_stream_path():
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    events = parse_sse(convert(chunk({"index": 0, "delta": {"content": parts}})))
    assert [d["delta"]["text"] for _, d in events if d["type"] == "content_block_delta"] == ["ab"]


# ------------------------------------------------------------------ end to end


class RawOpenAI(FakeOpenAI):
    """A FakeOpenAI whose non-stream answers can be exact 200 bodies (``raw_bodies``)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.raw_bodies: list[bytes] = []

    async def _chat(self, request):
        if self.raw_bodies:
            self._record(request, orjson.loads(await request.read()))
            return web.Response(body=self.raw_bodies.pop(0), content_type="application/json")
        return await super()._chat(request)


def spec(urls):
    return f"""
version: 1
server: {{max_retries: 0, ping_interval: 5}}
default_provider: openai
providers:
  openai:
    format: openai
    base_url: "{urls['openai']}"
    api_keys: [sk-openai-0123456789]
    models: [gpt-4o]
"""


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    fake = RawOpenAI()
    with LiveGateway(spec, {"openai": fake}, tmp_path_factory.mktemp("malformed")) as gw:
        gw.fake = fake
        yield gw


def post(live, stream: bool):
    body = {"model": "gpt-4o", "max_tokens": 50, "stream": stream,
            "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(live.base_url + "/v1/messages", content=orjson.dumps(body), timeout=15,
                      headers={"content-type": "application/json"})


E2E_NON_STREAM = [(b'{"choices": []}', "'choices' is empty"),
                  (b'{"choices": null}', "'choices' is null, not a list"),
                  (b'{"choices": [{"message": null}]}',
                   "choices[0].message is null, not an object"),
                  (orjson.dumps(with_message({"content": None, "tool_calls": "x"})),
                   "choices[0].message.tool_calls is a string, not a list")]


@pytest.mark.parametrize("body,what", E2E_NON_STREAM, ids=[w for _, w in E2E_NON_STREAM])
def test_e2e_non_stream_malformed_is_502(live, body, what):
    live.fake.raw_bodies.append(body)
    r = post(live, stream=False)
    assert r.status_code == 502
    assert r.json() == {"type": "error", "error": {
        "type": "api_error", "message": "malformed upstream answer: " + what}}


def test_e2e_stream_malformed_chunk_is_an_error_event(live):
    live.fake.enqueue(Reply(raw_stream=FIRST + chunk(choices="x") + b"data: [DONE]\n\n",
                            slice_size=5))
    r = post(live, stream=True)
    assert r.status_code == 200
    events = parse_sse(r.content)
    check_grammar(events)
    assert events[-1] == ("error", {"type": "error", "error": {
        "type": "api_error",
        "message": "malformed upstream answer: stream event choices is a string, not a list"}})
