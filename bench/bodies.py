"""Deterministic request bodies for the benchmark (no randomness: the same bytes on every run).

* ``large``: a Claude-Code-sized Anthropic Messages request: a ~10 KB system prompt, 15 tools with
  JSON schemas, 10 turns with ``tool_use`` / ``tool_result`` blocks; 40-60 KB in total.
* ``small``: a ~300-byte request with one user message.

Each comes in a converted flavour (model ``gpt-4o``, sent to the default provider ``openai``) and a
passthrough flavour (model ``anthropic:claude-sonnet-4-5``), non-stream and stream; the large
converted one also with extended thinking on (``with_thinking``: what Claude Code sends then).

``python bench/bodies.py OUTDIR`` writes every body as ``OUTDIR/<name>.json`` and prints the sizes.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

CONVERTED_MODEL = "gpt-4o"
PASSTHROUGH_MODEL = "anthropic:claude-sonnet-4-5"

_WORDS = (
    "the agent reads files edits code runs tests and reports results while keeping changes small "
    "focused reviewed and reversible so that every step can be checked by the user before it lands"
).split()


def _text(n_chars: int, salt: int) -> str:
    """Deterministic prose of about ``n_chars`` characters."""
    out: list[str] = []
    size = 0
    i = salt
    while size < n_chars:
        w = _WORDS[(i * 7 + salt) % len(_WORDS)]
        out.append(w)
        size += len(w) + 1
        i += 1
    return " ".join(out)[:n_chars]


def _system_prompt() -> str:
    parts = ["You are an interactive CLI tool that helps users with software engineering tasks."]
    for k in range(24):
        parts.append(f"\n\n# Section {k + 1}\n" + _text(400, k))
    return "".join(parts)[:10_240]


_TOOL_NAMES = [
    "Task", "Bash", "Glob", "Grep", "LS", "ExitPlanMode", "Read", "Edit", "MultiEdit", "Write",
    "NotebookEdit", "WebFetch", "TodoWrite", "WebSearch", "BashOutput",
]


def _tools() -> list[dict]:
    tools = []
    for i, name in enumerate(_TOOL_NAMES):
        props = {
            "path": {"type": "string", "description": _text(120, i)},
            "pattern": {"type": "string", "description": _text(90, i + 1)},
            "limit": {"type": "integer", "minimum": 1, "description": "Maximum number of results"},
            "mode": {"type": "string", "enum": ["content", "files_with_matches", "count"]},
            "options": {
                "type": "object",
                "properties": {
                    "case_insensitive": {"type": "boolean"},
                    "context_lines": {"type": "integer", "minimum": 0},
                    "globs": {"type": "array", "items": {"type": "string"}},
                },
                "additionalProperties": False,
            },
        }
        tools.append(
            {
                "name": name,
                "description": _text(700, i + 3),
                "input_schema": {
                    "type": "object",
                    "properties": props,
                    "required": ["path"],
                    "additionalProperties": False,
                    "$schema": "http://json-schema.org/draft-07/schema#",
                },
            }
        )
    return tools


def _turns() -> list[dict]:
    msgs: list[dict] = [
        {"role": "user", "content": [{"type": "text", "text": "Fix the failing test in the parser module. " + _text(300, 5)}]}
    ]
    for t in range(10):
        tid = f"toolu_{t:02d}{'a' * 20}"
        msgs.append(
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": _text(200, t + 11)},
                    {"type": "tool_use", "id": tid, "name": _TOOL_NAMES[t % len(_TOOL_NAMES)],
                     "input": {"path": f"src/module_{t}.py", "pattern": "def parse", "limit": 50}},
                ],
            }
        )
        msgs.append(
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": tid,
                     "content": [{"type": "text", "text": _text(1300, t + 17)}]},
                ]
                + ([{"type": "text", "text": "Continue."}] if t % 3 == 2 else []),
            }
        )
    msgs.append({"role": "assistant", "content": [{"type": "text", "text": _text(300, 99)}]})
    msgs.append({"role": "user", "content": [{"type": "text", "text": "Now run the tests again."}]})
    return msgs


def large(model: str, stream: bool) -> dict:
    body = {
        "model": model,
        "max_tokens": 32000,
        "system": [{"type": "text", "text": _system_prompt(), "cache_control": {"type": "ephemeral"}}],
        "tools": _tools(),
        "messages": _turns(),
        "temperature": 1,
        "metadata": {"user_id": "user_bench_session_0000"},
    }
    if stream:
        body["stream"] = True
    return body


def with_thinking(body: dict) -> dict:
    """``body`` as Claude Code sends it with extended thinking on: a ``thinking`` budget and, in
    every earlier assistant turn, the signed ``thinking`` block the API asks clients to send back."""
    out = dict(body, thinking={"type": "enabled", "budget_tokens": 31999})
    out["messages"] = [
        dict(m, content=[{"type": "thinking", "thinking": _text(400, i), "signature": f"EqQBCkgIBhABGAIi{i:04d}"}]
             + m["content"]) if m["role"] == "assistant" else m
        for i, m in enumerate(body["messages"])
    ]
    return out


def small(model: str, stream: bool) -> dict:
    body = {
        "model": model,
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "Write a haiku about a gateway that forwards requests quickly and never drops a byte. Keep it to three lines, then add one sentence explaining the image you chose."}],
        "system": "You are a concise assistant.",
        "temperature": 0.7,
    }
    if stream:
        body["stream"] = True
    return body


def all_bodies() -> dict[str, bytes]:
    def enc(d: dict) -> bytes:
        return json.dumps(d, separators=(",", ":"), ensure_ascii=False).encode()

    return {
        "small_converted": enc(small(CONVERTED_MODEL, False)),
        "small_converted_stream": enc(small(CONVERTED_MODEL, True)),
        "small_passthrough": enc(small(PASSTHROUGH_MODEL, False)),
        "large_converted": enc(large(CONVERTED_MODEL, False)),
        "large_converted_stream": enc(large(CONVERTED_MODEL, True)),
        "large_converted_thinking": enc(with_thinking(large(CONVERTED_MODEL, False))),
        "large_passthrough": enc(large(PASSTHROUGH_MODEL, False)),
        "large_passthrough_stream": enc(large(PASSTHROUGH_MODEL, True)),
    }


def write_all(outdir: Path) -> dict[str, Path]:
    outdir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, data in all_bodies().items():
        p = outdir / f"{name}.json"
        p.write_bytes(data)
        paths[name] = p
    return paths


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/.work/bodies")
    for name, p in write_all(out).items():
        print(f"{name:28s} {p.stat().st_size:7d} bytes")
