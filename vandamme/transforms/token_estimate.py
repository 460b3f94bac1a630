"""Offline input-token estimate: ``/v1/messages/count_tokens`` on OpenAI-format providers, and
the ``min_input_tokens`` route condition (so a route and count_tokens agree on a body).

No tokenizer vocabulary can be downloaded at run time, so this is a calibrated heuristic (method
and measured error: docs/conversion.md, "Token estimate"):

* ASCII text: ``chars / CHARS_PER_TOKEN``; JSON (tool schemas, tool inputs): ``chars /
  JSON_CHARS_PER_TOKEN``; non-ASCII characters: ``NON_ASCII_TOKENS_PER_CHAR`` each;
* images: ``width * height / 750`` after Anthropic's downscaling (long edge <= 1568 px, <= 1.15
  megapixels), with the size read from the PNG/GIF/JPEG/WebP header of base64 data, or
  ``IMAGE_DEFAULT_TOKENS`` when it cannot be known (URL images);
* ``MESSAGE_OVERHEAD`` per message, ``TOOL_OVERHEAD`` per tool, ``REPLY_OVERHEAD`` once.
"""
from __future__ import annotations

import base64
import math
from typing import Any

import orjson

CHARS_PER_TOKEN = 4.0
JSON_CHARS_PER_TOKEN = 4.0
NON_ASCII_TOKENS_PER_CHAR = 1.0
MESSAGE_OVERHEAD = 4
TOOL_OVERHEAD = 8
REPLY_OVERHEAD = 3
IMAGE_DEFAULT_TOKENS = 1600
IMAGE_MAX_EDGE = 1568
IMAGE_MAX_PIXELS = 1_150_000
NON_TEXT_DOCUMENT_TOKENS = 1600


def text_tokens(s: str, chars_per_token: float = CHARS_PER_TOKEN) -> float:
    if not s:
        return 0.0
    n = len(s)
    if s.isascii():
        return n / chars_per_token
    ascii_chars = len(s.encode("ascii", "ignore"))
    return ascii_chars / chars_per_token + (n - ascii_chars) * NON_ASCII_TOKENS_PER_CHAR


def json_tokens(value: Any) -> float:
    try:
        s = orjson.dumps(value).decode()
    except TypeError:
        s = str(value)
    return text_tokens(s, JSON_CHARS_PER_TOKEN)


def image_size(data_b64: str) -> tuple[int, int] | None:
    """(width, height) from the header of a base64 PNG, GIF, JPEG or WebP, else None."""
    try:
        head = base64.b64decode(data_b64[:44], validate=False)
    except (ValueError, TypeError):
        return None
    if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 24:
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        return int.from_bytes(head[6:8], "little"), int.from_bytes(head[8:10], "little")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP" and len(head) >= 30:
        kind = head[12:16]
        if kind == b"VP8X":
            return (int.from_bytes(head[24:27], "little") + 1,
                    int.from_bytes(head[27:30], "little") + 1)
        if kind == b"VP8 ":
            return (int.from_bytes(head[26:28], "little") & 0x3FFF,
                    int.from_bytes(head[28:30], "little") & 0x3FFF)
        if kind == b"VP8L" and len(head) >= 25:
            b = head[21:25]
            w = 1 + (((b[1] & 0x3F) << 8) | b[0])
            h = 1 + (((b[3] & 0x0F) << 10) | (b[2] << 2) | ((b[1] & 0xC0) >> 6))
            return w, h
        return None
    if head[:2] == b"\xff\xd8":
        return _jpeg_size(data_b64)
    return None


def _jpeg_size(data_b64: str) -> tuple[int, int] | None:
    # SOF markers usually sit in the first few KB (after EXIF); scan at most 256 KB.
    chunk = data_b64[: 256 * 1024 * 4 // 3]
    chunk = chunk[: len(chunk) - len(chunk) % 4]
    try:
        data = base64.b64decode(chunk, validate=False)
    except (ValueError, TypeError):
        return None
    i = 2
    n = len(data)
    while i + 9 < n:
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            i += 1 if marker == 0xFF else 2
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h = int.from_bytes(data[i + 5:i + 7], "big")
            w = int.from_bytes(data[i + 7:i + 9], "big")
            return w, h
        i += 2 + length
    return None


def image_tokens(width: int, height: int) -> int:
    """Anthropic's published approximation, after its downscaling to fit the limits."""
    if width <= 0 or height <= 0:
        return IMAGE_DEFAULT_TOKENS
    scale = min(1.0, IMAGE_MAX_EDGE / max(width, height),
                math.sqrt(IMAGE_MAX_PIXELS / (width * height)))
    w = width * scale
    h = height * scale
    return max(1, math.ceil(w * h / 750))


def _image(block: dict) -> float:
    source = block.get("source")
    if isinstance(source, dict) and source.get("type") == "base64" \
            and isinstance(source.get("data"), str):
        size = image_size(source["data"])
        if size:
            return image_tokens(*size)
    return IMAGE_DEFAULT_TOKENS


def _document(block: dict) -> float:
    source = block.get("source")
    if isinstance(source, dict) and source.get("type") == "text" \
            and isinstance(source.get("data"), str):
        return text_tokens(source["data"])
    return NON_TEXT_DOCUMENT_TOKENS


def _block(block: Any) -> float:
    if isinstance(block, str):
        return text_tokens(block)
    if not isinstance(block, dict):
        return 0.0
    btype = block.get("type")
    if btype == "text":
        text = block.get("text")
        return text_tokens(text) if isinstance(text, str) else 0.0
    if btype == "image":
        return _image(block)
    if btype == "document":
        return _document(block)
    if btype == "tool_use":
        name = block.get("name")
        return (text_tokens(name) if isinstance(name, str) else 0.0) + \
            json_tokens(block.get("input") or {}) + 3
    if btype == "tool_result":
        content = block.get("content")
        if isinstance(content, str):
            return text_tokens(content) + 3
        if isinstance(content, list):
            return sum(_block(b) for b in content) + 3
        return 3.0
    if btype in ("thinking", "redacted_thinking"):
        return 0.0  # not sent to OpenAI-format providers (see docs/conversion.md)
    return json_tokens(block)


def estimate_tokens(body: dict) -> int:
    """Estimated input tokens of an Anthropic Messages request (the body of count_tokens)."""
    total = float(REPLY_OVERHEAD)
    system = body.get("system")
    if isinstance(system, str) and system:
        total += MESSAGE_OVERHEAD + text_tokens(system)
    elif isinstance(system, list) and system:
        total += MESSAGE_OVERHEAD + sum(_block(b) for b in system)
    messages = body.get("messages")
    if isinstance(messages, list):
        for msg in messages:
            if not isinstance(msg, dict):
                continue
            total += MESSAGE_OVERHEAD
            content = msg.get("content")
            if isinstance(content, str):
                total += text_tokens(content)
            elif isinstance(content, list):
                for block in content:
                    total += _block(block)
    tools = body.get("tools")
    if isinstance(tools, list):
        for tool in tools:
            if not isinstance(tool, dict):
                continue
            total += TOOL_OVERHEAD
            name = tool.get("name")
            if isinstance(name, str):
                total += text_tokens(name)
            desc = tool.get("description")
            if isinstance(desc, str):
                total += text_tokens(desc)
            schema = tool.get("input_schema")
            if schema is not None:
                total += json_tokens(schema)
    return max(1, math.ceil(total))
