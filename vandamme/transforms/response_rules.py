"""How the parts of an OpenAI answer become parts of an Anthropic Message, written once.

Both the non-stream conversion (``openai_to_anthropic.convert_response``, reading
``choices[0].message``) and the stream conversion (``openai_stream.StreamConverter``, reading
``choices[0].delta``) call these, so a buffered and a streamed answer convert alike (the mapping
table: docs/conversion.md, section 2).

* blocks, in the order the parts are read: thinking (``reasoning_content``, else ``reasoning``),
  text (``content``), refusal (``refusal``: **its own text block after the content text**, so
  neither is lost and the two never run together), tool_use (``tool_calls``, legacy
  ``function_call``); an answer without any block is one empty text block;
* ``stop_reason`` from ``finish_reason`` (stop sequences, and ``tool_use`` whenever the answer
  has tool calls and the reason would otherwise be ``end_turn``);
* ``usage`` (``input_tokens`` excludes cache reads), message and tool-use ids;
* an answer that is an error object is that error; a part of the wrong type is a
  ``GatewayError(502, "malformed upstream answer: <where> ...", "api_error")`` naming the field
  and the type found, never the upstream text.
"""
from __future__ import annotations

import os
from typing import Any

import orjson
from loguru import logger

from vandamme.transforms.errors import GatewayError
from vandamme.transforms.upstream_errors import embedded_error

log = logger  # loguru, configured by vandamme.engine.logs

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


# ------------------------------------------------------------------------------------ errors

def json_type(value: Any) -> str:
    """``value``'s JSON type with its article, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def malformed(what: str) -> GatewayError:
    return GatewayError(502, f"malformed upstream answer: {what}", "api_error")


def answer_error(obj: dict) -> GatewayError | None:
    """The error an answer (a completion or a stream event) carries instead of content: a
    non-empty ``error`` (OpenAI style, also beside ``choices`` as OpenRouter sends it mid-stream)
    or ``type: "error"`` (Anthropic style). None for a normal answer."""
    if obj.get("error") or obj.get("type") == "error":
        return embedded_error(obj)
    return None


# ------------------------------------------------------------------------------------ ids

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
    """The tool call's own id, or a generated ``toolu_…`` one when it has none."""
    if isinstance(upstream_id, str) and upstream_id:
        return upstream_id
    return "toolu_" + random_hex()


# ------------------------------------------------------------------------------------ parts

def reasoning_text(part: dict) -> str | None:
    """The reasoning of a message or delta: ``reasoning_content``, else ``reasoning`` (each only
    when a non-empty string)."""
    value = part.get("reasoning_content")
    if value and isinstance(value, str):
        return value
    value = part.get("reasoning")
    if value and isinstance(value, str):
        return value
    return None


def text_value(value: Any, where: str) -> str:
    """``content`` or ``refusal``: a string, null (no text) or a list of parts whose ``text``
    strings are joined."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, list):
        texts = []
        for i, part in enumerate(value):
            if not isinstance(part, dict):
                raise malformed(f"{where}[{i}] is {json_type(part)}, not an object")
            text = part.get("text")
            if isinstance(text, str):
                texts.append(text)
        return "".join(texts)
    raise malformed(f"{where} is {json_type(value)}, not a string")


def tool_call_list(value: Any, where: str) -> list[dict]:
    """``tool_calls``: null (none) or a list of objects."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise malformed(f"{where} is {json_type(value)}, not a list")
    for i, call in enumerate(value):
        if not isinstance(call, dict):
            raise malformed(f"{where}[{i}] is {json_type(call)}, not an object")
    return value


def call_function(call: dict, where: str) -> dict:
    """A tool call's ``function`` object (``{}`` when absent, as in stream fragments)."""
    fn = call.get("function")
    if fn is None:
        return {}
    if not isinstance(fn, dict):
        raise malformed(f"{where}.function is {json_type(fn)}, not an object")
    return fn


def tool_name(value: Any, where: str) -> str:
    """The ``name`` of the tool call function at ``where``: required, a non-empty string."""
    if isinstance(value, str) and value:
        return value
    if value is None or value == "":
        raise malformed(f"{where}.name is missing")
    raise malformed(f"{where}.name is {json_type(value)}, not a string")


def arguments_text(value: Any, where: str) -> str:
    """The ``arguments`` of the tool call function at ``where`` as JSON text: a string (as
    is), an object (some servers send one; compact JSON) or null (empty)."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, dict):
        return orjson.dumps(value).decode()
    raise malformed(f"{where}.arguments is {json_type(value)}, not a string")


def parse_arguments(text: str, name: str) -> dict:
    """Tool call arguments (JSON text) -> input object. Never raises: the model's own broken or
    non-object JSON becomes ``{"_raw_arguments": text}`` (and a warning in the log)."""
    if not text:
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        log.warning("tool call {!r}: unparsable arguments kept under {}", name, RAW_ARGUMENTS_KEY)
        return {RAW_ARGUMENTS_KEY: text}
    if isinstance(value, dict):
        return value
    log.warning("tool call {!r}: arguments are not a JSON object; kept under {}", name,
                RAW_ARGUMENTS_KEY)
    return {RAW_ARGUMENTS_KEY: text}


# ------------------------------------------------------------------------------------ blocks

def thinking_block(thinking: str) -> dict:
    """OpenAI-format servers give no signature, so it is empty."""
    return {"type": "thinking", "thinking": thinking, "signature": ""}


def text_block(text: str) -> dict:
    return {"type": "text", "text": text}


def tool_use_block(block_id: str, name: str, tool_input: dict) -> dict:
    return {"type": "tool_use", "id": block_id, "name": name, "input": tool_input}


def empty_answer_block() -> dict:
    """The block of an answer that has none, so that ``content[0]`` always exists."""
    return text_block("")


# ------------------------------------------------------------------------------------ stop, usage

def stop_reason(finish_reason: Any, choice: dict | None, stop_sequences: list[str] | None,
                has_tool_calls: bool) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence) for an OpenAI ``finish_reason``.

    OpenAI does not say which stop sequence matched; vLLM reports it in ``choice.stop_reason``
    and SGLang in ``choice.matched_stop``: when one of those names a requested stop sequence
    the result is ``stop_sequence``. A missing, non-string or unknown finish_reason counts as
    ``stop``. An answer with tool calls that would end in ``end_turn`` ends in ``tool_use``
    (some providers say ``stop`` after tool calls)."""
    if finish_reason == "stop" and stop_sequences and choice is not None:
        for key in ("stop_reason", "matched_stop"):
            matched = choice.get(key)
            if isinstance(matched, str) and matched in stop_sequences:
                return "stop_sequence", matched
    reason = FINISH_REASONS.get(finish_reason, "end_turn") \
        if isinstance(finish_reason, str) else "end_turn"
    if reason == "end_turn" and has_tool_calls:
        reason = "tool_use"
    return reason, None


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def message_usage(usage: Any) -> dict:
    """OpenAI ``usage`` -> Anthropic ``usage`` (zeros when absent). ``input_tokens`` excludes
    cached prompt tokens (``prompt_tokens_details.cached_tokens``, or DeepSeek's
    ``prompt_cache_hit_tokens``); OpenAI reports no cache writes."""
    if not isinstance(usage, dict):
        usage = {}
    details = usage.get("prompt_tokens_details")
    cached = _count(details.get("cached_tokens")) if isinstance(details, dict) else 0
    if not cached:
        cached = _count(usage.get("prompt_cache_hit_tokens"))
    return {
        "input_tokens": max(_count(usage.get("prompt_tokens")) - cached, 0),
        "output_tokens": _count(usage.get("completion_tokens")),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }
