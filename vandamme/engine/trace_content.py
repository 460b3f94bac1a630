"""Prompt and completion content on the server span, only when the spec opts in
(``telemetry.capture_content: true``), in the shapes of the OpenTelemetry GenAI conventions:
``gen_ai.system_instructions``, ``gen_ai.input.messages`` and ``gen_ai.output.messages``, each a
JSON string (the conventions' form for span attributes), built from the client's Anthropic request
and the Anthropic answer it got (buffered, or the streamed events put back together). Every string
goes through the secret scrubber first. Off by default: then nothing here runs.
"""
from __future__ import annotations

from typing import Any

import orjson

from vandamme.secrets import scrub

_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_call",
           "refusal": "content_filter"}


def _parts(content: Any) -> list[dict]:
    """Anthropic content (a string or blocks) as GenAI message parts."""
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    out = []
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            out.append({"type": "text", "content": block.get("text", "")})
        elif kind in ("thinking", "redacted_thinking"):
            out.append({"type": "reasoning", "content": block.get("thinking", "")})
        elif kind in ("tool_use", "server_tool_use"):
            out.append({"type": "tool_call", "id": block.get("id"), "name": block.get("name"),
                        "arguments": block.get("input")})
        elif kind == "tool_result":
            out.append({"type": "tool_call_response", "id": block.get("tool_use_id"),
                        "response": block.get("content")})
        else:  # images, documents...: their kind, not their bytes
            out.append({"type": str(kind)})
    return out


def _dumps(value: Any) -> str:
    return scrub(orjson.dumps(value).decode())


def input_attributes(raw_body: bytes) -> dict:
    """``gen_ai.system_instructions`` and ``gen_ai.input.messages`` of a Messages request."""
    try:
        body = orjson.loads(raw_body)
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(body, dict):
        return {}
    out = {}
    system = body.get("system")
    if system:
        out["gen_ai.system_instructions"] = _dumps(_parts(system))
    messages = body.get("messages")
    if isinstance(messages, list):
        out["gen_ai.input.messages"] = _dumps([{"role": m.get("role"), "parts": _parts(m.get("content"))}
                                               for m in messages if isinstance(m, dict)])
    return out


def output_attributes(message: Any) -> dict:
    """``gen_ai.output.messages`` of an Anthropic message (one choice)."""
    if not isinstance(message, dict) or message.get("type") != "message":
        return {}
    reason = message.get("stop_reason")
    return {"gen_ai.output.messages": _dumps([{"role": "assistant", "parts": _parts(message.get("content")),
                                               "finish_reason": _FINISH.get(reason, reason or "")}])}


def output_from_body(body: bytes) -> dict:
    try:
        return output_attributes(orjson.loads(body))
    except orjson.JSONDecodeError:
        return {}


def output_from_stream(chunks: list[bytes]) -> dict:
    """The answer message put back together from Anthropic SSE events (as much as was kept)."""
    message: dict | None = None
    for line in b"".join(chunks).split(b"\n"):
        if not line.startswith(b"data:"):
            continue
        try:
            event = orjson.loads(line[5:])
        except orjson.JSONDecodeError:
            continue
        if not isinstance(event, dict):
            continue
        kind = event.get("type")
        if kind == "message_start" and isinstance(event.get("message"), dict):
            message = dict(event["message"])
            message["content"] = list(message.get("content") or [])
        elif message is None:
            continue
        elif kind == "content_block_start" and isinstance(event.get("content_block"), dict):
            block = dict(event["content_block"])
            if block.get("type") in ("tool_use", "server_tool_use"):
                block["_json"] = ""
            message["content"].append(block)
        elif kind == "content_block_delta" and message["content"] and isinstance(event.get("delta"), dict):
            block, delta = message["content"][-1], event["delta"]
            dtype = delta.get("type")
            if dtype == "text_delta":
                block["text"] = block.get("text", "") + str(delta.get("text", ""))
            elif dtype == "thinking_delta":
                block["thinking"] = block.get("thinking", "") + str(delta.get("thinking", ""))
            elif dtype == "input_json_delta":
                block["_json"] = block.get("_json", "") + str(delta.get("partial_json", ""))
        elif kind == "message_delta" and isinstance(event.get("delta"), dict):
            message["stop_reason"] = event["delta"].get("stop_reason")
    if message is None:
        return {}
    for block in message["content"]:
        text = block.pop("_json", None)
        if text:
            try:
                block["input"] = orjson.loads(text)
            except orjson.JSONDecodeError:
                block["input"] = text
    return output_attributes(message)
