"""Anthropic Messages request -> OpenAI chat completions request.

Pure code, no I/O. A ``RequestConverter`` is built once per provider (its options are fixed at
construction time) and ``convert`` runs per request. Every mapping is documented in
``docs/conversion.md``; anything the converter cannot express faithfully raises
``GatewayError(400)`` naming the offending field instead of being dropped silently.
"""
from __future__ import annotations

from typing import Any

import orjson

from vandamme.transforms.errors import GatewayError, invalid_request

# thinking.budget_tokens -> reasoning_effort thresholds (see docs/conversion.md)
REASONING_LOW_BELOW = 4096
REASONING_MEDIUM_BELOW = 16384

TOOL_ERROR_PREFIX = "Error: "
TOOL_IMAGE_PLACEHOLDER = "[the tool result's image(s) follow in the next user message]"

# "system" messages inside `messages` are sent by current Claude Code (mid-conversation context).
_ROLES = ("user", "assistant", "system")


def reasoning_effort(budget_tokens: Any) -> str:
    """Map an Anthropic thinking budget to an OpenAI ``reasoning_effort``."""
    if not isinstance(budget_tokens, int) or isinstance(budget_tokens, bool):
        return "medium"
    if budget_tokens < REASONING_LOW_BELOW:
        return "low"
    if budget_tokens < REASONING_MEDIUM_BELOW:
        return "medium"
    return "high"


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def validate_request(body: Any) -> None:
    """Check the shape of an Anthropic Messages request; raise ``GatewayError(400)`` naming the
    first invalid field. Content blocks are checked in detail by ``RequestConverter.convert``."""
    if not isinstance(body, dict):
        raise invalid_request("request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise invalid_request("model: field required (a non-empty string)")
    if "max_tokens" not in body:
        raise invalid_request("max_tokens: field required")
    max_tokens = body["max_tokens"]
    if not _is_int(max_tokens) or max_tokens <= 0:
        raise invalid_request("max_tokens: must be a positive integer")
    messages = body.get("messages")
    if "messages" not in body:
        raise invalid_request("messages: field required")
    if not isinstance(messages, list):
        raise invalid_request("messages: must be a list")
    if not messages:
        raise invalid_request("messages: must contain at least one message")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise invalid_request(f"messages[{i}]: must be an object")
        role = msg.get("role")
        if role not in _ROLES:
            raise invalid_request(
                f"messages[{i}].role: must be 'user', 'assistant' or 'system', got {role!r}")
        if "content" not in msg:
            raise invalid_request(f"messages[{i}].content: field required")
        content = msg["content"]
        if isinstance(content, list):
            for j, block in enumerate(content):
                if not isinstance(block, dict) or not isinstance(block.get("type"), str):
                    raise invalid_request(
                        f"messages[{i}].content[{j}]: must be an object with a 'type'")
        elif not isinstance(content, str):
            raise invalid_request(f"messages[{i}].content: must be a string or a list of blocks")
    if "system" in body and body["system"] is not None:
        system = body["system"]
        if isinstance(system, list):
            for j, block in enumerate(system):
                if not isinstance(block, dict) or block.get("type") != "text" \
                        or not isinstance(block.get("text"), str):
                    raise invalid_request(f"system[{j}]: must be a text block")
        elif not isinstance(system, str):
            raise invalid_request("system: must be a string or a list of text blocks")
    if "tools" in body and body["tools"] is not None:
        tools = body["tools"]
        if not isinstance(tools, list):
            raise invalid_request("tools: must be a list")
        for j, tool in enumerate(tools):
            if not isinstance(tool, dict):
                raise invalid_request(f"tools[{j}]: must be an object")
            if not isinstance(tool.get("name"), str) or not tool["name"]:
                raise invalid_request(f"tools[{j}].name: field required (a non-empty string)")
    if "stream" in body and body["stream"] is not None and not isinstance(body["stream"], bool):
        raise invalid_request("stream: must be a boolean")
    for key in ("temperature", "top_p"):
        if key in body and body[key] is not None and not _is_number(body[key]):
            raise invalid_request(f"{key}: must be a number")
    if "top_k" in body and body["top_k"] is not None and not _is_int(body["top_k"]):
        raise invalid_request("top_k: must be an integer")
    if "stop_sequences" in body and body["stop_sequences"] is not None:
        stops = body["stop_sequences"]
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise invalid_request("stop_sequences: must be a list of strings")
    if "tool_choice" in body and body["tool_choice"] is not None:
        tc = body["tool_choice"]
        if not isinstance(tc, dict) or tc.get("type") not in ("auto", "any", "tool", "none"):
            raise invalid_request("tool_choice: type must be one of auto, any, tool, none")
        if tc["type"] == "tool" and not isinstance(tc.get("name"), str):
            raise invalid_request("tool_choice.name: field required for type 'tool'")
    for key in ("metadata", "thinking"):
        if body.get(key) is not None and not isinstance(body[key], dict):
            raise invalid_request(f"{key}: must be an object")


# --------------------------------------------------------------------------------------------
# conversion
# --------------------------------------------------------------------------------------------

def _unsupported(where: str, btype: Any) -> GatewayError:
    return invalid_request(f"{where}: unsupported content block type {btype!r}")


def _text_of(block: dict, where: str) -> str:
    text = block.get("text")
    if not isinstance(text, str):
        raise invalid_request(f"{where}.text: must be a string")
    return text


def _image_part(block: dict, where: str) -> dict:
    source = block.get("source")
    if not isinstance(source, dict):
        raise invalid_request(f"{where}.source: field required")
    stype = source.get("type")
    if stype == "base64":
        media_type = source.get("media_type")
        data = source.get("data")
        if not isinstance(media_type, str) or not isinstance(data, str):
            raise invalid_request(f"{where}.source: base64 images need 'media_type' and 'data'")
        url = f"data:{media_type};base64,{data}"
    elif stype == "url":
        url = source.get("url")
        if not isinstance(url, str):
            raise invalid_request(f"{where}.source.url: must be a string")
    else:
        raise invalid_request(f"{where}.source: unsupported image source type {stype!r}")
    return {"type": "image_url", "image_url": {"url": url}}


def _document_text(block: dict, where: str) -> str:
    source = block.get("source")
    if isinstance(source, dict) and source.get("type") == "text" \
            and source.get("media_type", "text/plain") == "text/plain" \
            and isinstance(source.get("data"), str):
        return source["data"]
    stype = source.get("type") if isinstance(source, dict) else None
    raise invalid_request(
        f"{where}: unsupported document source {stype!r} (only text/plain documents can be "
        "sent to an OpenAI-format provider)")


def _tool_result(block: dict, where: str) -> tuple[str, list[dict]]:
    """Return (text for the tool message, image parts for the following user message)."""
    content = block.get("content")
    images: list[dict] = []
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    elif isinstance(content, list):
        texts = []
        for k, sub in enumerate(content):
            sw = f"{where}.content[{k}]"
            stype = sub.get("type") if isinstance(sub, dict) else None
            if stype == "text":
                texts.append(_text_of(sub, sw))
            elif stype == "image":
                images.append(_image_part(sub, sw))
            elif stype == "document":
                texts.append(_document_text(sub, sw))
            else:
                raise _unsupported(sw, stype)
        text = "\n".join(texts)
    else:
        raise invalid_request(f"{where}.content: must be a string or a list of blocks")
    if not text and images:
        text = TOOL_IMAGE_PLACEHOLDER
    if block.get("is_error"):
        text = TOOL_ERROR_PREFIX + text
    return text, images


def _parts_to_content(parts: list[dict]) -> str | list[dict]:
    if len(parts) == 1 and parts[0]["type"] == "text":
        return parts[0]["text"]
    return parts


def _convert_user(content: Any, i: int, out: list[dict]) -> None:
    if isinstance(content, str):
        out.append({"role": "user", "content": content})
        return
    parts: list[dict] = []   # user parts, in order (incl. images of tool results)
    tools: list[dict] = []   # tool messages, in order
    for j, block in enumerate(content):
        where = f"messages[{i}].content[{j}]"
        btype = block.get("type")
        if btype == "text":
            parts.append({"type": "text", "text": _text_of(block, where)})
        elif btype == "image":
            parts.append(_image_part(block, where))
        elif btype == "tool_result":
            tool_use_id = block.get("tool_use_id")
            if not isinstance(tool_use_id, str):
                raise invalid_request(f"{where}.tool_use_id: field required")
            text, images = _tool_result(block, where)
            tools.append({"role": "tool", "tool_call_id": tool_use_id, "content": text})
            parts.extend(images)
        elif btype == "document":
            parts.append({"type": "text", "text": _document_text(block, where)})
        else:
            raise _unsupported(where, btype)
    out.extend(tools)
    if parts:
        out.append({"role": "user", "content": _parts_to_content(parts)})
    elif not tools:
        out.append({"role": "user", "content": ""})


def _convert_assistant(content: Any, i: int, out: list[dict]) -> None:
    if isinstance(content, str):
        if content:
            out.append({"role": "assistant", "content": content})
        return
    parts: list[dict] = []
    calls: list[dict] = []
    for j, block in enumerate(content):
        where = f"messages[{i}].content[{j}]"
        btype = block.get("type")
        if btype == "text":
            text = _text_of(block, where)
            if text:
                parts.append({"type": "text", "text": text})
        elif btype == "tool_use":
            tid = block.get("id")
            name = block.get("name")
            if not isinstance(tid, str) or not isinstance(name, str):
                raise invalid_request(f"{where}: tool_use needs 'id' and 'name'")
            args = block.get("input")
            calls.append({"id": tid, "type": "function", "function": {
                "name": name,
                "arguments": orjson.dumps(args if args is not None else {}).decode()}})
        elif btype == "thinking" or btype == "redacted_thinking":
            continue  # see docs/conversion.md: reasoning history is not replayed
        else:
            raise _unsupported(where, btype)
    if not parts and not calls:
        return  # nothing left (e.g. only thinking blocks)
    msg: dict[str, Any] = {"role": "assistant",
                           "content": _parts_to_content(parts) if parts else None}
    if calls:
        msg["tool_calls"] = calls
    out.append(msg)


def _system_text(system: Any) -> str:
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        texts = []
        for j, block in enumerate(system):
            if not isinstance(block, dict) or block.get("type") != "text":
                btype = block.get("type") if isinstance(block, dict) else None
                raise _unsupported(f"system[{j}]", btype)
            texts.append(_text_of(block, f"system[{j}]"))
        return "\n\n".join(texts)
    raise invalid_request("system: must be a string or a list of text blocks")


def _convert_tools(tools: list) -> list[dict]:
    out = []
    for j, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise invalid_request(f"tools[{j}]: must be an object")
        ttype = tool.get("type")
        if ttype not in (None, "custom"):
            raise invalid_request(
                f"tools[{j}]: unsupported tool type {ttype!r} (server tools cannot be sent to "
                "an OpenAI-format provider)")
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise invalid_request(f"tools[{j}].name: field required")
        fn: dict[str, Any] = {"name": name}
        desc = tool.get("description")
        if isinstance(desc, str):
            fn["description"] = desc
        schema = tool.get("input_schema")
        fn["parameters"] = schema if isinstance(schema, dict) else {"type": "object",
                                                                      "properties": {}}
        out.append({"type": "function", "function": fn})
    return out


def _convert_tool_choice(tc: Any) -> tuple[Any, bool]:
    """Return (OpenAI tool_choice or None, disable_parallel)."""
    if not isinstance(tc, dict):
        raise invalid_request("tool_choice: must be an object")
    ttype = tc.get("type")
    disable = bool(tc.get("disable_parallel_tool_use"))
    if ttype == "auto":
        return "auto", disable
    if ttype == "any":
        return "required", disable
    if ttype == "none":
        return "none", disable
    if ttype == "tool":
        name = tc.get("name")
        if not isinstance(name, str):
            raise invalid_request("tool_choice.name: field required for type 'tool'")
        return {"type": "function", "function": {"name": name}}, disable
    raise invalid_request(f"tool_choice.type: unsupported value {ttype!r}")


class RequestConverter:
    """Anthropic Messages request -> OpenAI chat completions request, for one provider."""

    __slots__ = ("max_tokens_limit", "allow_top_k", "reasoning")

    def __init__(self, max_tokens_limit: int | None = None, allow_top_k: bool = False,
                 reasoning: bool = False):
        self.max_tokens_limit = max_tokens_limit
        self.allow_top_k = allow_top_k
        self.reasoning = reasoning

    def convert(self, body: dict, model: str) -> dict:
        messages: list[dict] = []
        system = body.get("system")
        if system is not None:
            text = _system_text(system)
            if text:
                messages.append({"role": "system", "content": text})

        src = body.get("messages")
        if not isinstance(src, list):
            raise invalid_request("messages: must be a list")
        for i, msg in enumerate(src):
            if not isinstance(msg, dict):
                raise invalid_request(f"messages[{i}]: must be an object")
            role = msg.get("role")
            content = msg.get("content")
            if isinstance(content, list):
                for j, block in enumerate(content):
                    if not isinstance(block, dict):
                        raise invalid_request(f"messages[{i}].content[{j}]: must be an object")
            elif not isinstance(content, str):
                raise invalid_request(
                    f"messages[{i}].content: must be a string or a list of blocks")
            if role == "user":
                _convert_user(content, i, messages)
            elif role == "assistant":
                _convert_assistant(content, i, messages)
            elif role == "system":
                text = _system_text(content)
                if text:
                    messages.append({"role": "system", "content": text})
            else:
                raise invalid_request(f"messages[{i}].role: unsupported role {role!r}")

        out: dict[str, Any] = {"model": model, "messages": messages}

        max_tokens = body.get("max_tokens")
        if max_tokens is not None:
            limit = self.max_tokens_limit
            out["max_tokens"] = max_tokens if limit is None or max_tokens <= limit else limit

        for key in ("temperature", "top_p"):
            value = body.get(key)
            if value is not None:
                out[key] = value
        if self.allow_top_k and body.get("top_k") is not None:
            out["top_k"] = body["top_k"]

        stops = body.get("stop_sequences")
        if stops:
            out["stop"] = stops

        tools = body.get("tools")
        if tools:
            out["tools"] = _convert_tools(tools)
        tc = body.get("tool_choice")
        if tc is not None:
            choice, disable = _convert_tool_choice(tc)
            if tools:  # OpenAI rejects tool_choice / parallel_tool_calls without tools
                out["tool_choice"] = choice
                if disable:
                    out["parallel_tool_calls"] = False

        metadata = body.get("metadata")
        if isinstance(metadata, dict):
            user = metadata.get("user_id")
            if isinstance(user, str) and user:
                out["user"] = user

        if self.reasoning:
            thinking = body.get("thinking")
            if isinstance(thinking, dict) and thinking.get("type") == "enabled":
                out["reasoning_effort"] = reasoning_effort(thinking.get("budget_tokens"))

        if body.get("stream"):
            out["stream"] = True
            out["stream_options"] = {"include_usage": True}
        return out
