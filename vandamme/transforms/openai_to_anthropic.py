"""OpenAI chat completion (non-streaming) -> Anthropic Message.

The field rules (blocks, stop reason, usage, ids, malformed answers) live in
``vandamme.transforms.response_rules``, shared with the stream converter. Mapping table:
docs/conversion.md.
"""
from __future__ import annotations

from vandamme.transforms.response_rules import (
    answer_error,
    arguments_text,
    call_function,
    empty_answer_block,
    json_type,
    malformed,
    message_id,
    message_usage,
    parse_arguments,
    reasoning_text,
    stop_reason,
    text_block,
    text_value,
    thinking_block,
    tool_call_list,
    tool_name,
    tool_use_block,
    tool_use_id,
)


def convert_response(oa: object, *, requested_model: str,
                     stop_sequences: list[str] | None = None) -> dict:
    """An OpenAI chat completion object -> an Anthropic Message object.

    Raises the upstream's error for an error body, and ``GatewayError(502)`` for an answer that
    is not a completion (no choice, no message, parts of the wrong type)."""
    if not isinstance(oa, dict):
        raise malformed(f"the body is {json_type(oa)}, not an object")
    error = answer_error(oa)
    if error is not None:
        raise error
    choice = _first_choice(oa)
    msg = choice.get("message")
    if not isinstance(msg, dict):
        raise malformed(f"choices[0].message is {json_type(msg)}, not an object")

    content: list[dict] = []
    thinking = reasoning_text(msg)
    if thinking:
        content.append(thinking_block(thinking))
    for field in ("content", "refusal"):
        text = text_value(msg.get(field), "choices[0].message." + field)
        if text:
            content.append(text_block(text))
    calls = _tool_uses(msg)
    content += calls
    if not content:
        content.append(empty_answer_block())

    reason, sequence = stop_reason(choice.get("finish_reason"), choice, stop_sequences,
                                   bool(calls))
    return {
        "id": message_id(oa.get("id")),
        "type": "message",
        "role": "assistant",
        "model": requested_model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": message_usage(oa.get("usage")),
    }


def _first_choice(oa: dict) -> dict:
    choices = oa.get("choices")
    if not isinstance(choices, list):
        if "choices" not in oa:
            raise malformed("'choices' is missing")
        raise malformed(f"'choices' is {json_type(choices)}, not a list")
    if not choices:
        raise malformed("'choices' is empty")
    if not isinstance(choices[0], dict):
        raise malformed(f"choices[0] is {json_type(choices[0])}, not an object")
    return choices[0]


def _tool_uses(msg: dict) -> list[dict]:
    """tool_use blocks for ``tool_calls``, or for the legacy single ``function_call``."""
    where = "choices[0].message.tool_calls"
    functions = [(f"{where}[{i}].function", call.get("id"), call_function(call, f"{where}[{i}]"))
                 for i, call in enumerate(tool_call_list(msg.get("tool_calls"), where))]
    legacy = msg.get("function_call")
    if legacy is not None:
        where = "choices[0].message.function_call"
        if not isinstance(legacy, dict):
            raise malformed(f"{where} is {json_type(legacy)}, not an object")
        if not functions:
            functions = [(where, None, legacy)]
    blocks = []
    for at, call_id, fn in functions:
        name = tool_name(fn.get("name"), at)
        text = arguments_text(fn.get("arguments"), at)
        blocks.append(tool_use_block(tool_use_id(call_id), name, parse_arguments(text, name)))
    return blocks
