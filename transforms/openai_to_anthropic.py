"""OpenAI chat completion (non-streaming) -> Anthropic Message.

Also holds the small helpers the stream converter shares (stop reasons, usage, ids) so both
paths map fields identically. Mapping table: docs/conversion.md.
"""
from __future__ import annotations


import os
from typing import Any

import orjson
from loguru import logger

from transforms.errors import GatewayError

log = logger  # loguru, configured by engine.logs

RAW_ARGUMENTS_KEY = "_raw_arguments"

# OpenAI finish_reason -> Anthropic stop_reason
FINISH_REASONS: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
_STRIP_PREFIXES = ("chatcmpl-", "chatcmpl_", "cmpl-", "msg_")


def random_hex(nbytes: int = 12) -> str:
    return os.urandom(nbytes).hex()


def message_id(upstream_id: Any) -> str:
    """``msg_`` + the upstream id restricted to [A-Za-z0-9_-] (max 64 chars), or random hex."""
    if isinstance(upstream_id, str) and upstream_id:
        s = upstream_id
        for prefix in _STRIP_PREFIXES:
            if s.startswith(prefix):
                s = s[len(prefix):]
                break
        s = "".join(c for c in s[:128] if c in _ID_CHARS)[:64]
        if s:
            return "msg_" + s
    return "msg_" + random_hex()


def tool_use_id(upstream_id: Any) -> str:
    if isinstance(upstream_id, str) and upstream_id:
        return upstream_id
    return "toolu_" + random_hex()


def stop_reason(finish_reason: Any, choice: dict | None,
                stop_sequences: list[str] | None) -> tuple[str | None, str | None]:
    """Return (stop_reason, stop_sequence) for an OpenAI finish_reason.

    OpenAI does not say which stop sequence matched; vLLM reports it in ``choice.stop_reason``
    and SGLang in ``choice.matched_stop``. When one of those names a requested stop sequence the
    result is ``stop_sequence``; otherwise a ``stop`` is ``end_turn``."""
    if finish_reason is None:
        return None, None
    if finish_reason == "stop":
        if stop_sequences and choice is not None:
            for key in ("stop_reason", "matched_stop"):
                matched = choice.get(key)
                if isinstance(matched, str) and matched in stop_sequences:
                    return "stop_sequence", matched
        return "end_turn", None
    return FINISH_REASONS.get(finish_reason, "end_turn"), None


def usage_fields(usage: Any) -> dict | None:
    """OpenAI usage -> Anthropic usage fields (input_tokens excludes cached prompt tokens)."""
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens") or 0
    completion = usage.get("completion_tokens") or 0
    cached = 0
    details = usage.get("prompt_tokens_details")
    if isinstance(details, dict):
        cached = details.get("cached_tokens") or 0
    if not cached:
        # DeepSeek reports prompt cache hits at the top level
        cached = usage.get("prompt_cache_hit_tokens") or 0
    return {
        "input_tokens": max(prompt - cached, 0),
        "output_tokens": completion,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }


def parse_arguments(raw: Any, name: Any = None) -> dict:
    """Tool call arguments (a JSON string) -> input object. Never raises: unparsable or
    non-object arguments become ``{"_raw_arguments": raw}``."""
    if isinstance(raw, dict):
        return raw
    if raw is None or raw == "":
        return {}
    try:
        value = orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError):
        log.warning("tool call {!r}: unparsable arguments kept under {}", name, RAW_ARGUMENTS_KEY)
        return {RAW_ARGUMENTS_KEY: raw if isinstance(raw, str) else str(raw)}
    if isinstance(value, dict):
        return value
    log.warning("tool call {!r}: arguments are not a JSON object; kept under {}", name,
                RAW_ARGUMENTS_KEY)
    return {RAW_ARGUMENTS_KEY: raw}


def reasoning_text(msg: dict) -> str | None:
    value = msg.get("reasoning_content")
    if isinstance(value, str) and value:
        return value
    value = msg.get("reasoning")
    if isinstance(value, str) and value:
        return value
    return None


def convert_response(oa: dict, *, requested_model: str,
                     stop_sequences: list[str] | None = None) -> dict:
    """An OpenAI chat completion object -> an Anthropic Message object."""
    if not isinstance(oa, dict):
        raise GatewayError(502, "upstream returned a malformed completion (not an object)")
    if "error" in oa and not oa.get("choices"):
        from transforms.upstream_errors import upstream_error
        raise upstream_error(502, orjson.dumps(oa), {})
    choices = oa.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and \
        isinstance(choices[0], dict) else {}
    msg = choice.get("message")
    if not isinstance(msg, dict):
        msg = {}

    content: list[dict] = []
    thinking = reasoning_text(msg)
    if thinking:
        content.append({"type": "thinking", "thinking": thinking, "signature": ""})

    calls = msg.get("tool_calls")
    if not isinstance(calls, list):
        calls = []
    fc = msg.get("function_call")  # legacy single function call
    if isinstance(fc, dict) and not calls:
        calls = [{"id": None, "function": fc}]

    text = msg.get("content")
    if isinstance(text, list):  # some providers return content parts
        text = "".join(p.get("text", "") for p in text
                       if isinstance(p, dict) and isinstance(p.get("text"), str))
    refusal = msg.get("refusal")
    if not text and isinstance(refusal, str) and refusal:
        text = refusal
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})

    for call in calls:
        if not isinstance(call, dict):
            continue
        fn = call.get("function") if isinstance(call.get("function"), dict) else {}
        name = fn.get("name") if isinstance(fn.get("name"), str) else ""
        content.append({"type": "tool_use", "id": tool_use_id(call.get("id")), "name": name,
                        "input": parse_arguments(fn.get("arguments"), name)})

    if not content and not calls:
        # never an empty content list: an empty answer is one empty text block (same in streams)
        content.append({"type": "text", "text": ""})

    finish = choice.get("finish_reason")
    reason, sequence = stop_reason(finish, choice, stop_sequences)
    if reason is None:
        reason = "tool_use" if calls else "end_turn"
    if reason == "end_turn" and calls:
        # some providers say "stop" although the answer ends in tool calls
        reason = "tool_use"

    usage = usage_fields(oa.get("usage")) or {
        "input_tokens": 0, "output_tokens": 0,
        "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    return {
        "id": message_id(oa.get("id")),
        "type": "message",
        "role": "assistant",
        "model": requested_model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": usage,
    }
