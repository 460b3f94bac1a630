"""OpenAI chat completion -> Anthropic Message (non-streaming)."""
import logging

import pytest

from vandamme.transforms.errors import GatewayError
from vandamme.transforms.openai_to_anthropic import convert_response
from vandamme.transforms.response_rules import RAW_ARGUMENTS_KEY, message_id


def completion(message, finish="stop", usage=None, **choice_extra):
    choice = {"index": 0, "message": {"role": "assistant", **message}, "logprobs": None,
              "finish_reason": finish, **choice_extra}
    out = {"id": "chatcmpl-AbC123", "object": "chat.completion", "created": 1, "model": "gpt-4o",
           "choices": [choice]}
    if usage is not None:
        out["usage"] = usage
    return out


def conv(oa, stops=None):
    return convert_response(oa, requested_model="claude-sonnet", stop_sequences=stops)


def test_plain_text():
    out = conv(completion({"content": "Hello", "refusal": None, "annotations": []},
                          usage={"prompt_tokens": 10, "completion_tokens": 3,
                                 "total_tokens": 13}))
    assert out == {
        "id": "msg_AbC123", "type": "message", "role": "assistant", "model": "claude-sonnet",
        "content": [{"type": "text", "text": "Hello"}],
        "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 3, "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 0}}


def test_annotations_never_become_blocks():
    out = conv(completion({"content": "Hi", "annotations": [
        {"type": "url_citation", "url_citation": {"url": "https://x"}}]}))
    assert out["content"] == [{"type": "text", "text": "Hi"}]


def test_cached_tokens():
    out = conv(completion({"content": "x"}, usage={
        "prompt_tokens": 100, "completion_tokens": 5,
        "prompt_tokens_details": {"cached_tokens": 80}}))
    assert out["usage"]["input_tokens"] == 20
    assert out["usage"]["cache_read_input_tokens"] == 80
    assert out["usage"]["output_tokens"] == 5


def test_reasoning_first_then_text():
    for field in ("reasoning_content", "reasoning"):
        out = conv(completion({"content": "42", field: "Let me think"}))
        assert out["content"] == [
            {"type": "thinking", "thinking": "Let me think", "signature": ""},
            {"type": "text", "text": "42"}]


def test_tool_calls():
    out = conv(completion({"content": "", "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "noop", "arguments": ""}},
    ]}, finish="tool_calls"))
    assert out["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "noop", "input": {}}]
    assert out["stop_reason"] == "tool_use"


def test_text_kept_before_tool_calls():
    out = conv(completion({"content": "Checking.", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        finish="tool_calls"))
    assert [b["type"] for b in out["content"]] == ["text", "tool_use"]


def test_unparsable_arguments_kept_raw(caplog):
    with caplog.at_level(logging.WARNING, logger="vandamme.conversion"):
        out = conv(completion({"content": None, "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{bad"}}]},
            finish="tool_calls"))
    assert out["content"][0]["input"] == {RAW_ARGUMENTS_KEY: "{bad"}
    assert "unparsable" in caplog.text


def test_non_object_arguments_kept_raw():
    out = conv(completion({"tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]},
        finish="tool_calls"))
    assert out["content"][0]["input"] == {RAW_ARGUMENTS_KEY: "[1]"}


def test_legacy_function_call():
    out = conv(completion({"content": None, "function_call": {"name": "f", "arguments": '{"a":1}'}},
                          finish="function_call"))
    block = out["content"][0]
    assert block["type"] == "tool_use" and block["name"] == "f" and block["input"] == {"a": 1}
    assert block["id"].startswith("toolu_")
    assert out["stop_reason"] == "tool_use"


def test_stop_with_tool_calls_is_tool_use():
    out = conv(completion({"tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}))
    assert out["stop_reason"] == "tool_use"


@pytest.mark.parametrize("finish,reason", [("stop", "end_turn"), ("length", "max_tokens"),
                                           ("content_filter", "refusal"),
                                           ("something_new", "end_turn"), (None, "end_turn")])
def test_finish_reasons(finish, reason):
    assert conv(completion({"content": "x"}, finish=finish))["stop_reason"] == reason


def test_stop_sequence_from_vllm_stop_reason():
    out = conv(completion({"content": "x"}, stop_reason="END"), stops=["END"])
    assert out["stop_reason"] == "stop_sequence" and out["stop_sequence"] == "END"


def test_stop_sequence_from_sglang_matched_stop():
    out = conv(completion({"content": "x"}, matched_stop="###"), stops=["###", "END"])
    assert out["stop_reason"] == "stop_sequence" and out["stop_sequence"] == "###"


def test_stop_without_match_info_is_end_turn():
    out = conv(completion({"content": "x"}), stops=["END"])
    assert out["stop_reason"] == "end_turn" and out["stop_sequence"] is None
    # a token id (vLLM EOS) is not a stop sequence
    out = conv(completion({"content": "x"}, stop_reason=128009), stops=["END"])
    assert out["stop_reason"] == "end_turn"


def test_refusal_text():
    out = conv(completion({"content": None, "refusal": "I can't help with that."},
                          finish="content_filter"))
    assert out["content"] == [{"type": "text", "text": "I can't help with that."}]
    assert out["stop_reason"] == "refusal"


def test_refusal_after_content_is_its_own_text_block():
    out = conv(completion({"content": "Hello", "refusal": "No."}))
    assert out["content"] == [{"type": "text", "text": "Hello"}, {"type": "text", "text": "No."}]


def test_empty_answer_is_one_empty_text_block():
    assert conv(completion({"content": None}))["content"] == [{"type": "text", "text": ""}]
    assert conv(completion({"content": ""}))["content"] == [{"type": "text", "text": ""}]
    # but no empty text next to thinking or tool calls
    assert conv(completion({"content": "", "reasoning_content": "r"}))["content"] == [
        {"type": "thinking", "thinking": "r", "signature": ""}]


def test_no_usage_gives_zeros():
    out = conv(completion({"content": "x"}))
    assert out["usage"]["input_tokens"] == 0 and out["usage"]["output_tokens"] == 0


def test_message_ids():
    assert message_id("chatcmpl-abc/../x y") == "msg_abcxy"
    assert message_id("gen-1234") == "msg_gen-1234"
    rnd = message_id(None)
    assert rnd.startswith("msg_") and len(rnd) == 28
    assert message_id("///").startswith("msg_") and len(message_id("///")) == 28


def test_error_body_with_200_raises():
    with pytest.raises(GatewayError) as e:
        conv({"error": {"message": "model overloaded", "type": "server_error"}})
    assert e.value.message == "model overloaded"


def test_empty_choices_is_an_upstream_error():
    with pytest.raises(GatewayError) as e:
        conv({"id": "x", "choices": []})
    assert (e.value.status, e.value.error_type) == (502, "api_error")
    assert e.value.message == "malformed upstream answer: 'choices' is empty"
