"""One set of response rules: the same OpenAI answer converts to the same Anthropic message
whether it comes as one JSON completion (convert_response) or as an SSE stream cut at any byte
boundaries (StreamConverter, rebuilt with assemble)."""
import orjson
import pytest

from vandamme.transforms.errors import GatewayError
from vandamme.transforms.openai_stream import StreamConverter, assemble
from vandamme.transforms.openai_to_anthropic import convert_response
from vandamme.transforms.response_rules import message_usage, stop_reason

STOPS = ["END", "###"]
CALLS = [{"id": "call_a", "type": "function",
          "function": {"name": "get_weather", "arguments": '{"city": "Paris", "n": [1, 2]}'}},
         {"id": "call_b", "type": "function", "function": {"name": "noop", "arguments": ""}}]

# name -> (message, finish_reason, choice extras, usage)
ANSWERS = {
    "content+refusal": ({"content": "Hello", "refusal": "No."}, "stop", {}, None),
    "refusal only": ({"content": None, "refusal": "I can't help with that."},
                     "content_filter", {}, None),
    "empty content null": ({"content": None}, "stop", {}, None),
    "empty content string": ({"content": ""}, "stop", {}, None),
    "tool calls, finish stop": ({"content": "Checking.", "tool_calls": CALLS}, "stop", {}, None),
    "tool calls, finish tool_calls": ({"content": None, "tool_calls": CALLS}, "tool_calls", {},
                                      None),
    "tool calls, no finish": ({"tool_calls": CALLS[:1]}, None, {}, None),
    "legacy function_call": ({"function_call": {"name": "f", "arguments": '{"a": 1}'}},
                             "function_call", {}, None),
    "reasoning_content": ({"content": "42", "reasoning_content": "Let me think."}, "stop", {},
                          None),
    "reasoning": ({"content": "ok", "reasoning": "hmm"}, "stop", {}, None),
    "reasoning only": ({"content": None, "reasoning_content": "thinking…"}, "length", {}, None),
    "stop sequence (vLLM)": ({"content": "x"}, "stop", {"stop_reason": "END"}, None),
    "stop sequence (SGLang)": ({"content": "x"}, "stop", {"matched_stop": "###"}, None),
    "stop sequence not requested": ({"content": "x"}, "stop", {"stop_reason": "other"}, None),
    "EOS token id": ({"content": "x"}, "stop", {"stop_reason": 128009}, None),
    "length": ({"content": "truncated"}, "length", {}, None),
    "content_filter": ({"content": "partial"}, "content_filter", {}, None),
    "unknown finish": ({"content": "x"}, "something_new", {}, None),
    "usage with cached tokens": ({"content": "x"}, "stop", {}, {
        "prompt_tokens": 100, "completion_tokens": 9, "total_tokens": 109,
        "prompt_tokens_details": {"cached_tokens": 60}}),
    "usage, DeepSeek cache hits": ({"content": "x"}, "stop", {}, {
        "prompt_tokens": 50, "completion_tokens": 5, "prompt_cache_hit_tokens": 20}),
    "unicode": ({"content": "wörld — 日本語 😀", "reasoning_content": "ü"}, "stop", {}, None),
}


def completion(name: str) -> dict:
    message, finish, extra, usage = ANSWERS[name]
    choice = {"index": 0, "message": {"role": "assistant", **message}, "logprobs": None,
              "finish_reason": finish, **extra}
    out = {"id": "chatcmpl-Rules1", "object": "chat.completion", "model": "m",
           "choices": [choice]}
    if usage is not None:
        out["usage"] = usage
    return out


def pieces(text: str, size: int = 3) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]


def stream_of(oa: dict, crlf: bool = False) -> bytes:
    """The same answer as OpenAI streams it: role chunk, reasoning, content, refusal, tool-call
    headers and argument fragments, finish chunk, usage chunk, [DONE]."""
    choice = oa["choices"][0]
    msg = choice["message"]

    def chunk(delta, finish=None, extra=None):
        c = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish, **(extra or {})}
        return {"id": oa["id"], "object": "chat.completion.chunk", "model": "m", "choices": [c]}

    chunks = [chunk({"role": "assistant", "content": ""})]
    for field in ("reasoning_content", "reasoning", "content", "refusal"):
        if msg.get(field):
            chunks += [chunk({field: p}) for p in pieces(msg[field])]
    for i, call in enumerate(msg.get("tool_calls") or []):
        fn = call["function"]
        chunks.append(chunk({"tool_calls": [{"index": i, "id": call["id"], "type": "function",
                                             "function": {"name": fn["name"], "arguments": ""}}]}))
        chunks += [chunk({"tool_calls": [{"index": i, "function": {"arguments": p}}]})
                   for p in pieces(fn["arguments"], 4)]
    if msg.get("function_call"):
        fn = msg["function_call"]
        chunks.append(chunk({"function_call": {"name": fn["name"], "arguments": ""}}))
        chunks += [chunk({"function_call": {"arguments": p}}) for p in pieces(fn["arguments"])]
    extra = {k: choice[k] for k in ("stop_reason", "matched_stop") if k in choice}
    if choice["finish_reason"] is not None:
        chunks.append(chunk({}, choice["finish_reason"], extra))
    if "usage" in oa:
        chunks.append({"id": oa["id"], "object": "chat.completion.chunk", "choices": [],
                       "usage": oa["usage"]})
    sep = b"\r\n\r\n" if crlf else b"\n\n"
    return b"".join(b"data: " + orjson.dumps(c) + sep for c in chunks) + b"data: [DONE]" + sep


def streamed(raw: bytes, size: int | None) -> dict:
    sc = StreamConverter("claude-model", stop_sequences=STOPS)
    if size is None:
        out = sc.feed(raw)
    else:
        out = b"".join(sc.feed(raw[i:i + size]) for i in range(0, len(raw), size))
    return assemble(out + sc.finish())


def generated_ids_masked(message: dict) -> dict:
    """Tool calls without an upstream id get a random ``toolu_`` id (a different one per run)."""
    for block in message["content"]:
        if block["type"] == "tool_use" and block["id"].startswith("toolu_"):
            block["id"] = "toolu_<generated>"
    return message


@pytest.mark.parametrize("name", sorted(ANSWERS))
def test_stream_and_non_stream_give_the_same_message(name):
    oa = completion(name)
    expected = generated_ids_masked(
        convert_response(oa, requested_model="claude-model", stop_sequences=STOPS))
    for crlf in (False, True):
        raw = stream_of(oa, crlf)
        for size in (1, 2, 3, 5, 7, 13, 64, None):
            assert generated_ids_masked(streamed(raw, size)) == expected, (crlf, size)


def test_refusal_is_its_own_block_after_the_content():
    msg = convert_response(completion("content+refusal"), requested_model="c")
    assert msg["content"] == [{"type": "text", "text": "Hello"}, {"type": "text", "text": "No."}]


def test_empty_answer_is_one_empty_text_block_in_both_paths():
    msg = convert_response(completion("empty content null"), requested_model="c")
    assert msg["content"] == [{"type": "text", "text": ""}]


@pytest.mark.parametrize("body", [
    {"error": {"message": "Rate limit reached", "type": "requests", "code": "429"}},
    {"error": {"message": "bad", "type": "invalid_request_error", "code": None}},
    {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}},
    {"error": "plain text"},
    {"error": {"code": 500}},
    {"id": "x", "error": {"message": "mid-stream", "code": 502},
     "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}]},
])
def test_upstream_error_objects_map_alike(body):
    with pytest.raises(GatewayError) as err:
        convert_response(body, requested_model="c")
    sc = StreamConverter("c")
    out = sc.feed(b"data: " + orjson.dumps(body) + b"\n\n") + sc.finish()
    assert assemble(out) == {"type": "error", "error": {"type": err.value.error_type,
                                                        "message": err.value.message}}


def test_error_object_status_and_type():
    def mapped(body):
        with pytest.raises(GatewayError) as err:
            convert_response(body, requested_model="c")
        return err.value.status, err.value.error_type, err.value.message

    assert mapped({"error": {"message": "slow down", "code": "429"}}) == (
        429, "rate_limit_error", "slow down")
    # an OpenAI error type is not an Anthropic one, even when the names coincide
    assert mapped({"error": {"message": "m", "type": "invalid_request_error"}}) == (
        502, "api_error", "m")
    assert mapped({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}) \
        == (502, "overloaded_error", "busy")
    assert mapped({"error": {"code": 500}}) == (500, "api_error", "upstream error")


@pytest.mark.parametrize("finish,choice,tools,expected", [
    ("stop", {}, False, ("end_turn", None)),
    ("stop", {}, True, ("tool_use", None)),
    ("stop", {"stop_reason": "END"}, False, ("stop_sequence", "END")),
    ("stop", {"stop_reason": "END"}, True, ("stop_sequence", "END")),
    ("stop", {"matched_stop": "nope"}, False, ("end_turn", None)),
    ("length", {}, True, ("max_tokens", None)),
    ("tool_calls", {}, False, ("tool_use", None)),
    ("function_call", {}, False, ("tool_use", None)),
    ("content_filter", {}, True, ("refusal", None)),
    (None, {}, False, ("end_turn", None)),
    (None, {}, True, ("tool_use", None)),
    ("weird", {}, False, ("end_turn", None)),
    (["not", "a", "string"], {}, False, ("end_turn", None)),
])
def test_stop_reason(finish, choice, tools, expected):
    assert stop_reason(finish, choice, STOPS, tools) == expected


def test_message_usage():
    zero = {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0}
    assert message_usage(None) == zero
    assert message_usage("junk") == zero
    assert message_usage({"prompt_tokens": "10", "completion_tokens": True}) == zero
    assert message_usage({"prompt_tokens": 10, "completion_tokens": 2,
                          "prompt_tokens_details": {"cached_tokens": 4}}) == {
        "input_tokens": 6, "output_tokens": 2, "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 4}
