"""The answer audit: what a gateway gets wrong, in its answers and in what it sends upstream.

``bench/run.py`` starts each gateway once more pointing at ``bench/capture_upstream.py`` (the same
static answers as the nginx upstream, but it records the request it received) and sends every
case below through it. ``audit`` compares the gateway's answer with what the upstream answered
(as the Anthropic API would have said it) and the request the upstream received with the one the
client sent. It returns findings, one short sentence per defect; an empty list means every check
passed. The expected values come from ``bench/upstream.py`` and ``bench/bodies.py``, nothing is
written down twice.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import upstream


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    body: str        # bodies.py name
    converted: bool  # Anthropic in -> OpenAI upstream (else Anthropic passthrough)
    stream: bool


CASES = [
    Case("conv", "converted", "large_converted", True, False),
    Case("conv_stream", "converted stream", "large_converted_stream", True, True),
    Case("conv_thinking", "converted with thinking history", "large_converted_thinking", True, False),
    Case("pass", "passthrough", "large_passthrough", False, False),
    Case("pass_stream", "passthrough stream", "large_passthrough_stream", False, True),
]
MAX_LISTED = 4  # paths named per finding


# ---------------------------------------------------------------- parsing
def sse_events(data: bytes) -> list[tuple[str | None, object]]:
    """[(event name or None, parsed data or the raw text)] of an SSE body."""
    out = []
    for block in data.replace(b"\r\n", b"\n").split(b"\n\n"):
        name, payload = None, []
        for line in block.decode("utf-8", "replace").split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                payload.append(line[5:].strip())
        if name is None and not payload:
            continue
        text = "\n".join(payload)
        try:
            out.append((name, json.loads(text)))
        except ValueError:
            out.append((name, text))
    return out


def _openai_expected() -> dict:
    """What the upstream's OpenAI answers say: text, tool call, finish reason, usage."""
    msg = json.loads(upstream.openai_json())
    choice, usage = msg["choices"][0], msg["usage"]
    call = choice["message"]["tool_calls"][0]["function"]
    chunks = [d for _, d in sse_events(upstream.openai_sse()) if isinstance(d, dict)]
    stream_usage = next(c["usage"] for c in chunks if c.get("usage"))
    return {
        "text": choice["message"]["content"], "tool": (call["name"], json.loads(call["arguments"])),
        "usage": (usage["prompt_tokens"], usage["completion_tokens"]),
        "stream_text": "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]),
        "stream_usage": (stream_usage["prompt_tokens"], stream_usage["completion_tokens"]),
    }


OPENAI = _openai_expected()
ANTHROPIC_JSON = json.loads(upstream.anthropic_json())
ANTHROPIC_EVENTS = sse_events(upstream.anthropic_sse())


def json_diff(got, want, path: str = "") -> list[str]:
    """Differences between two JSON values as "added P" / "dropped P" / "changed P"."""
    if isinstance(got, dict) and isinstance(want, dict):
        out = [f"added {path}{k}" for k in got if k not in want]
        out += [f"dropped {path}{k}" for k in want if k not in got]
        for k in want:
            if k in got:
                out += json_diff(got[k], want[k], f"{path}{k}.")
        return out
    if isinstance(got, list) and isinstance(want, list) and len(got) == len(want):
        return [d for i, (g, w) in enumerate(zip(got, want)) for d in json_diff(g, w, f"{path}{i}.")]
    return [] if got == want else [f"changed {path.rstrip('.') or 'the value'}"]


def _listed(diffs: list[str]) -> str:
    more = f" (+{len(diffs) - MAX_LISTED} more)" if len(diffs) > MAX_LISTED else ""
    return ", ".join(diffs[:MAX_LISTED]) + more


# ---------------------------------------------------------------- checks
def _usage_finding(what: str, usage: dict, prompt: int, completion: int) -> list[str]:
    """Anthropic usage against the upstream's OpenAI usage: output = completion tokens; input plus
    cache reads = prompt tokens (or input = prompt tokens with no cache figure)."""
    inp, out = usage.get("input_tokens") or 0, usage.get("output_tokens") or 0
    cached = usage.get("cache_read_input_tokens") or 0
    if out == completion and (inp + cached == prompt or (inp == prompt and not cached)):
        return []
    return [f"{what + ' ' if what else ''}usage input {inp} (+{cached} cached) / output {out}, upstream said {prompt} / {completion}"]


def _converted_message(msg: dict) -> list[str]:
    out = []
    kinds = [b.get("type") for b in msg.get("content") or []]
    if kinds != ["text", "tool_use"]:
        extra = [k for k in kinds if k not in ("text", "tool_use")]
        out.append(f"content blocks {kinds}, upstream had [text, tool_use]"
                   + (f": invents {', '.join(extra)}" if extra else ""))
    texts = [b.get("text") for b in msg.get("content") or [] if b.get("type") == "text"]
    if texts and texts != [OPENAI["text"]]:
        out.append("text differs from the upstream's")
    tools = [(b.get("name"), b.get("input")) for b in msg.get("content") or [] if b.get("type") == "tool_use"]
    if tools and tools != [OPENAI["tool"]]:
        out.append("tool call differs from the upstream's")
    if msg.get("stop_reason") != "tool_use":
        out.append(f"stop_reason {msg.get('stop_reason')!r}, want 'tool_use'")
    return out + _usage_finding("", msg.get("usage") or {}, *OPENAI["usage"])


def _converted_stream(events: list) -> list[str]:
    names = [n for n, _ in events]
    if not names or names[0] != "message_start" or names[-1] != "message_stop":
        return [f"stream starts with {names[:1]} and ends with {names[-1:]}, want message_start … message_stop"]
    out = []
    kinds = [d["content_block"].get("type") for n, d in events if n == "content_block_start"]
    if kinds != ["text"]:
        out.append(f"stream blocks {kinds}, upstream had [text]")
    text = "".join(d["delta"].get("text", "") for n, d in events
                   if n == "content_block_delta" and d["delta"].get("type") == "text_delta")
    if text != OPENAI["stream_text"]:
        out.append(f"streamed text differs from the upstream's ({len(text)} of {len(OPENAI['stream_text'])} chars)")
    usage = dict(events[0][1].get("message", {}).get("usage") or {})
    stop = None
    for n, d in events:
        if n == "message_delta":
            usage.update(d.get("usage") or {})
            stop = (d.get("delta") or {}).get("stop_reason")
    if stop != "end_turn":
        out.append(f"stream stop_reason {stop!r}, want 'end_turn'")
    return out + _usage_finding("streamed", usage, *OPENAI["stream_usage"])


def _system_text(body: dict) -> str:
    s = body.get("system") or ""
    return s if isinstance(s, str) else "".join(b.get("text", "") for b in s)


def _message_text(m: dict) -> str:
    c = m.get("content") or ""
    return c if isinstance(c, str) else "".join(p.get("text", "") for p in c if isinstance(p, dict))


def _converted_request(sent: dict, got: dict, stream: bool) -> list[str]:
    """What reached the OpenAI upstream against what the client sent."""
    out = []
    system = _system_text(sent)[:200]
    if system and not any(m.get("role") in ("system", "developer") and system in _message_text(m)
                          for m in got.get("messages") or []):
        out.append("drops the system prompt")
    if len(got.get("tools") or []) != len(sent.get("tools") or []):
        out.append(f"sends {len(got.get('tools') or [])} of {len(sent.get('tools') or [])} tools")
    results = sum(1 for m in sent["messages"] if isinstance(m["content"], list)
                  for b in m["content"] if b.get("type") == "tool_result")
    sent_results = sum(1 for m in got.get("messages") or [] if m.get("role") == "tool")
    if sent_results != results:
        out.append(f"sends {sent_results} of {results} tool results")
    max_tokens = got.get("max_completion_tokens", got.get("max_tokens"))
    if max_tokens != sent["max_tokens"]:
        out.append(f"sends max_tokens {max_tokens} for the client's {sent['max_tokens']}")
    if stream and not (got.get("stream_options") or {}).get("include_usage"):
        out.append("does not ask for streamed usage (stream_options.include_usage)")
    return out


def _model_finding(sent: dict, got: dict) -> list[str]:
    """The upstream must get the client's model without its ``provider:`` prefix."""
    want = sent["model"].split(":", 1)[-1]
    return [] if got.get("model") == want else [f"sends model {got.get('model')!r} for the client's {want!r}"]


def _passthrough_request(sent: dict, got: dict) -> list[str]:
    diffs = json_diff({**got, "model": None}, {**sent, "model": None})
    return [f"alters the forwarded request: {_listed(diffs)}"] if diffs else []


def _stream_finding(events: list) -> list[str]:
    """A passthrough stream must be the upstream's events, unchanged."""
    if events == ANTHROPIC_EVENTS:
        return []
    i = next((i for i, (a, b) in enumerate(zip(events, ANTHROPIC_EVENTS)) if a != b),
             min(len(events), len(ANTHROPIC_EVENTS)))
    first = repr(events[i])[:70] if i < len(events) else "the end of the stream"
    return [f"alters the stream: {len(events)} events for the upstream's {len(ANTHROPIC_EVENTS)}, "
            f"event {i} reads {first}"]


def audit(case: Case, client_body: bytes, status: int, answer: bytes, forwarded: bytes | None) -> list[str]:
    """Findings for one case: the client's body, the gateway's status and answer, and the body the
    upstream received (None if no request reached it)."""
    if status != 200:
        return [f"HTTP {status}: {answer[:100].decode('utf-8', 'replace')}…"]
    found = []
    sent = json.loads(client_body)
    if forwarded is None:
        found.append("no request reached the upstream")
    else:
        got = json.loads(forwarded)
        found += _model_finding(sent, got) + (_converted_request(sent, got, case.stream) if case.converted
                                              else _passthrough_request(sent, got))
    try:
        if case.stream:
            events = sse_events(answer)
            found += _converted_stream(events) if case.converted else _stream_finding(events)
        else:
            msg = json.loads(answer)
            if case.converted:
                found += _converted_message(msg)
            elif diffs := json_diff(msg, ANTHROPIC_JSON):
                found.append(f"alters the answer: {_listed(diffs)}")
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
        found.append(f"unreadable answer ({type(e).__name__}: {e})")
    return found
