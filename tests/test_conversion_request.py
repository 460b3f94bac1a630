"""Anthropic Messages request -> OpenAI chat completions request."""
import pytest

from vandamme.transforms.anthropic_to_openai import (
    TOOL_ERROR_PREFIX,
    TOOL_IMAGE_PLACEHOLDER,
    RequestConverter,
    reasoning_effort,
    validate_request,
)
from vandamme.transforms.errors import GatewayError

CONV = RequestConverter()
IMG = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}


def conv(body, converter=CONV, model="gpt-4o"):
    body = {"model": "claude-x", "max_tokens": 100, **body}
    return converter.convert(body, model)


def msgs(body, **kw):
    return conv(body, **kw)["messages"]


def user(content):
    return {"role": "user", "content": content}


def assistant(content):
    return {"role": "assistant", "content": content}


# ------------------------------------------------------------------ system & text


def test_minimal_request():
    out = conv({"messages": [user("Hi")]})
    assert out == {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}],
                   "max_tokens": 100}


def test_system_string_becomes_first_message():
    assert msgs({"system": "Be brief.", "messages": [user("Hi")]})[0] == {
        "role": "system", "content": "Be brief."}


def test_system_blocks_joined_and_cache_control_dropped():
    system = [{"type": "text", "text": "A", "cache_control": {"type": "ephemeral"}},
              {"type": "text", "text": "B"}]
    assert msgs({"system": system, "messages": [user("Hi")]})[0] == {
        "role": "system", "content": "A\n\nB"}


def test_empty_system_is_omitted():
    assert msgs({"system": "", "messages": [user("Hi")]}) == [{"role": "user", "content": "Hi"}]
    assert msgs({"system": [], "messages": [user("Hi")]}) == [{"role": "user", "content": "Hi"}]


def test_system_non_text_block_rejected():
    with pytest.raises(GatewayError) as e:
        conv({"system": [IMG], "messages": [user("Hi")]})
    assert "system[0]" in e.value.message and "'image'" in e.value.message


def test_single_text_block_becomes_string():
    out = msgs({"messages": [user([{"type": "text", "text": "Hi",
                                    "cache_control": {"type": "ephemeral"}}])]})
    assert out == [{"role": "user", "content": "Hi"}]


def test_several_text_blocks_become_parts():
    out = msgs({"messages": [user([{"type": "text", "text": "A"}, {"type": "text", "text": "B"}])]})
    assert out == [{"role": "user", "content": [{"type": "text", "text": "A"},
                                                {"type": "text", "text": "B"}]}]


def test_assistant_text_and_multiple_blocks():
    out = msgs({"messages": [user("Hi"), assistant("Hello"), user("x"),
                             assistant([{"type": "text", "text": "A"},
                                        {"type": "text", "text": "B"}])]})
    assert out[1] == {"role": "assistant", "content": "Hello"}
    assert out[3] == {"role": "assistant", "content": [{"type": "text", "text": "A"},
                                                       {"type": "text", "text": "B"}]}


# ------------------------------------------------------------------ images & documents


def test_base64_image():
    out = msgs({"messages": [user([{"type": "text", "text": "What?"}, IMG])]})
    assert out[0]["content"] == [
        {"type": "text", "text": "What?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]


def test_url_image():
    img = {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}
    out = msgs({"messages": [user([img])]})
    assert out[0]["content"] == [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]


def test_file_image_rejected():
    img = {"type": "image", "source": {"type": "file", "file_id": "f1"}}
    with pytest.raises(GatewayError) as e:
        conv({"messages": [user([img])]})
    assert e.value.status == 400 and "messages[0].content[0].source" in e.value.message


def test_text_document_becomes_text():
    doc = {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                          "data": "doc body"}}
    out = msgs({"messages": [user([doc, {"type": "text", "text": "Summarize"}])]})
    assert out[0]["content"] == [{"type": "text", "text": "doc body"},
                                 {"type": "text", "text": "Summarize"}]


def test_pdf_document_rejected():
    doc = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                          "data": "JVBER"}}
    with pytest.raises(GatewayError) as e:
        conv({"messages": [user([{"type": "text", "text": "x"}, doc])]})
    assert e.value.status == 400
    assert e.value.message.startswith("messages[0].content[1]")


# ------------------------------------------------------------------ tools


TOOL_USE = {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
            "input": {"city": "Paris"}}


def test_assistant_tool_use_keeps_text_before():
    out = msgs({"messages": [user("Weather?"), assistant([
        {"type": "text", "text": "Let me check."}, TOOL_USE])]})
    assert out[1] == {"role": "assistant", "content": "Let me check.", "tool_calls": [
        {"id": "toolu_1", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]}


def test_assistant_only_tool_use_has_null_content():
    out = msgs({"messages": [user("W?"), assistant([TOOL_USE, dict(TOOL_USE, id="toolu_2")])]})
    assert out[1]["content"] is None
    assert [c["id"] for c in out[1]["tool_calls"]] == ["toolu_1", "toolu_2"]


def test_tool_result_string_and_order():
    out = msgs({"messages": [
        user("W?"),
        assistant([TOOL_USE, dict(TOOL_USE, id="toolu_2")]),
        user([{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
              {"type": "tool_result", "tool_use_id": "toolu_2",
               "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
              {"type": "text", "text": "thanks"}]),
    ]})
    assert out[2:] == [
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "a\nb"},
        {"role": "user", "content": "thanks"},
    ]


def test_tool_result_error_prefix():
    out = msgs({"messages": [user("W?"), assistant([TOOL_USE]), user([
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "boom", "is_error": True}])]})
    assert out[2] == {"role": "tool", "tool_call_id": "toolu_1",
                      "content": TOOL_ERROR_PREFIX + "boom"}


def test_tool_result_without_content():
    out = msgs({"messages": [user("W?"), assistant([TOOL_USE]), user([
        {"type": "tool_result", "tool_use_id": "toolu_1"}])]})
    assert out[2] == {"role": "tool", "tool_call_id": "toolu_1", "content": ""}
    assert len(out) == 3


def test_tool_result_images_go_to_following_user_message():
    out = msgs({"messages": [user("Shot?"), assistant([TOOL_USE]), user([
        {"type": "tool_result", "tool_use_id": "toolu_1",
         "content": [{"type": "text", "text": "here"}, IMG]},
        {"type": "text", "text": "and?"}])]})
    assert out[2] == {"role": "tool", "tool_call_id": "toolu_1", "content": "here"}
    assert out[3] == {"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "text", "text": "and?"}]}


def test_tool_result_only_image_gets_placeholder():
    out = msgs({"messages": [user("Shot?"), assistant([TOOL_USE]), user([
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": [IMG]}])]})
    assert out[2]["content"] == TOOL_IMAGE_PLACEHOLDER
    assert out[3]["role"] == "user" and out[3]["content"][0]["type"] == "image_url"


def test_tool_result_unknown_block_rejected():
    with pytest.raises(GatewayError) as e:
        conv({"messages": [user("W?"), assistant([TOOL_USE]), user([
            {"type": "tool_result", "tool_use_id": "toolu_1",
             "content": [{"type": "audio"}]}])]})
    assert "messages[2].content[0].content[0]" in e.value.message


def test_tools_and_choice():
    tools = [{"name": "get_weather", "description": "Weather", "input_schema": {
        "type": "object", "properties": {"city": {"type": "string"}}},
        "cache_control": {"type": "ephemeral"}},
        {"name": "noop", "input_schema": {"type": "object"}}]
    out = conv({"messages": [user("x")], "tools": tools,
                "tool_choice": {"type": "auto", "disable_parallel_tool_use": True}})
    assert out["tools"] == [
        {"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                          "parameters": tools[0]["input_schema"]}},
        {"type": "function", "function": {"name": "noop", "parameters": {"type": "object"}}}]
    assert out["tool_choice"] == "auto" and out["parallel_tool_calls"] is False


@pytest.mark.parametrize("choice,expected", [
    ({"type": "auto"}, "auto"),
    ({"type": "any"}, "required"),
    ({"type": "none"}, "none"),
    ({"type": "tool", "name": "t"}, {"type": "function", "function": {"name": "t"}}),
])
def test_tool_choice_mapping(choice, expected):
    out = conv({"messages": [user("x")], "tools": [{"name": "t", "input_schema": {}}],
                "tool_choice": choice})
    assert out["tool_choice"] == expected
    assert "parallel_tool_calls" not in out


def test_tool_choice_without_tools_is_dropped():
    out = conv({"messages": [user("x")], "tool_choice": {"type": "auto"}})
    assert "tool_choice" not in out and "parallel_tool_calls" not in out


def test_server_tool_rejected():
    with pytest.raises(GatewayError) as e:
        conv({"messages": [user("x")], "tools": [{"type": "web_search_20250305",
                                                  "name": "web_search"}]})
    assert "tools[0]" in e.value.message


# ------------------------------------------------------------------ thinking & unknowns


def test_thinking_blocks_in_history_dropped():
    out = msgs({"messages": [user("x"), assistant([
        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
        {"type": "redacted_thinking", "data": "xx"},
        {"type": "text", "text": "answer"}])]})
    assert out[1] == {"role": "assistant", "content": "answer"}


def test_assistant_with_only_thinking_is_skipped():
    out = msgs({"messages": [user("x"), assistant([
        {"type": "thinking", "thinking": "hmm", "signature": "s"}]), user("y")]})
    assert out == [{"role": "user", "content": "x"}, {"role": "user", "content": "y"}]


def test_unknown_block_type_names_index():
    with pytest.raises(GatewayError) as e:
        conv({"messages": [user("a"), assistant("b"), user([{"type": "text", "text": "x"},
                                                            {"type": "foo"}])]})
    assert e.value.status == 400
    assert e.value.message == "messages[2].content[1]: unsupported content block type 'foo'"


def test_unknown_assistant_block_rejected():
    with pytest.raises(GatewayError) as e:
        conv({"messages": [user("a"), assistant([{"type": "server_tool_use", "id": "x"}])]})
    assert "messages[1].content[0]" in e.value.message


def test_unknown_role_rejected():
    with pytest.raises(GatewayError) as e:
        conv({"messages": [{"role": "tool", "content": "x"}]})
    assert "messages[0].role" in e.value.message


def test_system_messages_inside_messages_stay_in_place():
    # current Claude Code sends mid-conversation context as role "system" messages
    out = conv({"system": "top", "messages": [user("a"), {"role": "system", "content": [
        {"type": "text", "text": "ctx one"}, {"type": "text", "text": "ctx two"}]}, user("b")]})
    assert [m["role"] for m in out["messages"]] == ["system", "user", "system", "user"]
    assert out["messages"][2]["content"] == "ctx one\n\nctx two"


# ------------------------------------------------------------------ parameters


def test_parameters_passed():
    out = conv({"messages": [user("x")], "temperature": 0.3, "top_p": 0.9, "top_k": 5,
                "stop_sequences": ["END"], "metadata": {"user_id": "u-1"}})
    assert out["temperature"] == 0.3 and out["top_p"] == 0.9
    assert "top_k" not in out
    assert out["stop"] == ["END"]
    assert out["user"] == "u-1"


def test_top_k_allowed():
    out = conv({"messages": [user("x")], "top_k": 5},
               converter=RequestConverter(allow_top_k=True))
    assert out["top_k"] == 5


def test_max_tokens_capped():
    c = RequestConverter(max_tokens_limit=50)
    assert conv({"messages": [user("x")]}, converter=c)["max_tokens"] == 50
    assert conv({"messages": [user("x")], "max_tokens": 20}, converter=c)["max_tokens"] == 20


def test_stream_adds_usage_option():
    out = conv({"messages": [user("x")], "stream": True})
    assert out["stream"] is True and out["stream_options"] == {"include_usage": True}
    assert "stream" not in conv({"messages": [user("x")], "stream": False})


@pytest.mark.parametrize("budget,effort", [(1024, "low"), (4095, "low"), (4096, "medium"),
                                           (16383, "medium"), (16384, "high"), (64000, "high")])
def test_reasoning_effort(budget, effort):
    assert reasoning_effort(budget) == effort
    body = {"messages": [user("x")], "thinking": {"type": "enabled", "budget_tokens": budget}}
    assert conv(body, converter=RequestConverter(reasoning=True))["reasoning_effort"] == effort
    assert "reasoning_effort" not in conv(body)


def test_thinking_disabled_gives_no_effort():
    body = {"messages": [user("x")], "thinking": {"type": "disabled"}}
    assert "reasoning_effort" not in conv(body, converter=RequestConverter(reasoning=True))


def test_unknown_top_level_fields_ignored():
    out = conv({"messages": [user("x")], "service_tier": "auto", "container": "c"})
    assert set(out) == {"model", "messages", "max_tokens"}


# ------------------------------------------------------------------ validation


VALID = {"model": "claude-x", "max_tokens": 10, "messages": [user("hi")]}


def test_validate_accepts_valid():
    validate_request(VALID)
    validate_request({**VALID, "system": [{"type": "text", "text": "s"}], "tools": [],
                      "stream": True, "temperature": 1, "stop_sequences": ["x"]})


@pytest.mark.parametrize("body,field", [
    ([], "request body"),
    ({**VALID, "model": ""}, "model"),
    ({k: v for k, v in VALID.items() if k != "model"}, "model"),
    ({**VALID, "model": 3}, "model"),
    ({k: v for k, v in VALID.items() if k != "max_tokens"}, "max_tokens"),
    ({**VALID, "max_tokens": 0}, "max_tokens"),
    ({**VALID, "max_tokens": "10"}, "max_tokens"),
    ({**VALID, "max_tokens": True}, "max_tokens"),
    ({k: v for k, v in VALID.items() if k != "messages"}, "messages"),
    ({**VALID, "messages": []}, "messages"),
    ({**VALID, "messages": {"role": "user"}}, "messages"),
    ({**VALID, "messages": [{"role": "bot", "content": "x"}]}, "messages[0].role"),
    ({**VALID, "messages": [{"role": "user"}]}, "messages[0].content"),
    ({**VALID, "messages": [user("x"), {"role": "user", "content": 5}]}, "messages[1].content"),
    ({**VALID, "messages": ["x"]}, "messages[0]"),
    ({**VALID, "system": 5}, "system"),
    ({**VALID, "system": [{"type": "image"}]}, "system[0]"),
    ({**VALID, "tools": {}}, "tools"),
    ({**VALID, "tools": [{"description": "x"}]}, "tools[0].name"),
    ({**VALID, "stream": "yes"}, "stream"),
    ({**VALID, "temperature": "hot"}, "temperature"),
    ({**VALID, "stop_sequences": "END"}, "stop_sequences"),
    ({**VALID, "stop_sequences": [1]}, "stop_sequences"),
    ({**VALID, "tool_choice": {"type": "maybe"}}, "tool_choice"),
])
def test_validate_rejects(body, field):
    with pytest.raises(GatewayError) as e:
        validate_request(body)
    assert e.value.status == 400
    assert e.value.error_type == "invalid_request_error"
    assert e.value.message.startswith(field), e.value.message
