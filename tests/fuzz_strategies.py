"""Hypothesis strategies for fuzzing the gateway over HTTP (tests/test_fuzz.py).

A case is an :class:`HttpCase`: a method, a request target, headers and a body, all raw bytes.
Bodies are Anthropic Messages requests that are valid (text, system as a string and as blocks,
tools with schemas, tool_use/tool_result turns, thinking, images, documents, stop_sequences,
stream, temperature/top_p/top_k, metadata), almost valid (one node of a valid request deleted,
given another type, an out-of-range, huge or deeply nested value, bad UTF-8, raw control bytes or
an invalid JSON token, or an unknown key added), or garbage. Around them: random
``anthropic-version``/``anthropic-beta`` values (control bytes included), ``x-api-key``, content
types, unknown headers, known and unknown paths with odd characters, and any method.

The framing is always right (``HttpCase.wire`` computes Content-Length, sends
``connection: close`` and never lets a CR or LF into the request line or a header): the point is
what the gateway makes of the content. Framing faults are tests/test_hardening_protocol.py's.
"""
from __future__ import annotations

import base64
import copy
import json
from dataclasses import dataclass
from urllib.parse import quote

import orjson
from hypothesis import strategies as st

from vandamme.engine.loader import _subtree as node_paths

# Model names the fuzz gateway (tests/test_fuzz.py) knows: its default provider, each provider by
# prefix, an alias per provider, the two fallback routes, the two middleware routes, a Claude
# Code name and an unknown provider.
MODELS = ("gpt-4o", "oa:gpt-4o-mini", "fast", "an:claude-sonnet-4-5", "claude", "fb-model",
          "fbo-model", "mw-model", "mwo-model", "claude-3-5-haiku-20241022", "nosuch:model")
MODEL_PREFIXES = ("", "oa:", "an:", "fb-", "fbo-", "mw-", "mwo-")

text = st.text(max_size=24)
model_names = st.one_of(st.sampled_from(MODELS),
                        st.builds(str.__add__, st.sampled_from(MODEL_PREFIXES), text))
identifiers = st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,15}", fullmatch=True)
tool_use_ids = st.from_regex(r"toolu_[A-Za-z0-9]{1,12}", fullmatch=True)
EPHEMERAL = {"type": "ephemeral"}

# ------------------------------------------------------------------------------ JSON values

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1),
                         st.floats(allow_nan=False, allow_infinity=False), text)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(text, inner, max_size=4)), max_leaves=8)
json_objects = st.dictionaries(text, json_values, max_size=4)


def block(kind: str, **fields) -> st.SearchStrategy[dict]:
    """A content block of ``kind``: the given fields, sometimes a cache_control."""
    return st.fixed_dictionaries({"type": st.just(kind), **fields},
                                 optional={"cache_control": st.just(EPHEMERAL)})


# ------------------------------------------------------------------------------ valid requests

text_blocks = block("text", text=text)
image_sources = st.one_of(
    st.fixed_dictionaries({"type": st.just("base64"),
                           "media_type": st.sampled_from(["image/png", "image/jpeg", "image/gif", "image/webp"]),
                           "data": st.binary(max_size=24).map(lambda b: base64.b64encode(b).decode())}),
    st.fixed_dictionaries({"type": st.just("url"), "url": st.just("https://example.com/cat.png") | text}))
image_blocks = block("image", source=image_sources)
document_blocks = block("document", source=st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "media_type": st.just("text/plain"), "data": text}),
    st.fixed_dictionaries({"type": st.just("base64"), "media_type": st.just("application/pdf"),
                           "data": st.just("JVBERi0xLjQK")})))
thinking_blocks = st.one_of(block("thinking", thinking=text, signature=text),
                            block("redacted_thinking", data=text))
user_content = st.one_of(text, st.lists(st.one_of(text_blocks, image_blocks, document_blocks),
                                        min_size=1, max_size=3))
assistant_content = st.one_of(text, st.lists(st.one_of(text_blocks, thinking_blocks), min_size=1, max_size=3))
tool_result_content = st.one_of(st.none(), text, st.lists(st.one_of(text_blocks, image_blocks), max_size=2))


@st.composite
def tool_rounds(draw) -> list[dict]:
    """An assistant turn calling tools, and the user turn answering every call."""
    ids = draw(st.lists(tool_use_ids, min_size=1, max_size=3, unique=True))
    calls = [draw(block("tool_use", id=st.just(i), name=identifiers, input=json_objects)) for i in ids]
    lead = draw(st.lists(st.one_of(thinking_blocks, text_blocks), max_size=2))
    results = []
    for i in ids:
        result = {"type": "tool_result", "tool_use_id": i}
        content = draw(tool_result_content)
        if content is not None:
            result["content"] = content
        if draw(st.booleans()):
            result["is_error"] = draw(st.booleans())
        results.append(result)
    return [{"role": "assistant", "content": lead + calls},
            {"role": "user", "content": results + draw(st.lists(text_blocks, max_size=1))}]


@st.composite
def conversations(draw) -> list[dict]:
    messages = [{"role": "user", "content": draw(user_content)}]
    for _ in range(draw(st.integers(0, 3))):
        if draw(st.booleans()):
            messages += draw(tool_rounds())
        else:
            messages += [{"role": "assistant", "content": draw(assistant_content)},
                         {"role": "user", "content": draw(user_content)}]
    if draw(st.integers(0, 9)) == 0:
        messages.append({"role": "assistant", "content": draw(text)})  # a prefill
    return messages


input_schemas = st.fixed_dictionaries(
    {"type": st.just("object"),
     "properties": st.dictionaries(identifiers, st.fixed_dictionaries(
         {"type": st.sampled_from(["string", "integer", "number", "boolean", "array", "object"])},
         optional={"description": text}), max_size=4)},
    optional={"required": st.lists(identifiers, max_size=2), "additionalProperties": st.booleans()})
tools = st.lists(st.fixed_dictionaries({"name": identifiers, "input_schema": input_schemas},
                                       optional={"description": text, "cache_control": st.just(EPHEMERAL)}),
                 min_size=1, max_size=3)
tool_choices = st.one_of(st.fixed_dictionaries({"type": st.sampled_from(["auto", "any", "none"])},
                                               optional={"disable_parallel_tool_use": st.booleans()}),
                         st.fixed_dictionaries({"type": st.just("tool"), "name": identifiers}))
systems = st.one_of(text, st.lists(text_blocks, min_size=1, max_size=3))
thinking = st.one_of(st.fixed_dictionaries({"type": st.just("enabled"), "budget_tokens": st.integers(1024, 32000)}),
                     st.just({"type": "disabled"}))
unit = st.floats(0, 1)

valid_requests = st.fixed_dictionaries(
    {"model": model_names, "max_tokens": st.integers(1, 8192), "messages": conversations()},
    optional={"system": systems, "tools": tools, "tool_choice": tool_choices, "thinking": thinking,
              "stop_sequences": st.lists(text, max_size=4), "stream": st.booleans(), "temperature": unit,
              "top_p": unit, "top_k": st.integers(1, 500),
              "metadata": st.fixed_dictionaries({}, optional={"user_id": text})})

# ------------------------------------------------------------------------------ almost valid

MISSING = object()  # the mutation that deletes the node
Fragment = orjson.Fragment  # bytes put in the JSON document as they are, valid or not

OUT_OF_RANGE = (0, -1, -2**31, 2**31, 2**63 - 1, -2**63, 2**64 - 1, 1e308, -1e308, 5e-324, -0.0, 0.5,
                "", [], {}, Fragment(b"1e400"), Fragment(b"-1e400"), Fragment(b"1.5e-400"),
                Fragment(b"1" + b"0" * 400), Fragment(b"-" + b"9" * 5000))
BAD_UTF8 = (b"\xff", b"\xc3", b"\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80")
INVALID_TOKENS = (b"NaN", b"Infinity", b"-Infinity", b"undefined", b"'single'", b"01", b"[1,]", b"{,}",
                  b'{"a"}', b"", b"tru", b'"\\x41"', b'"\\u12"', b'"\\ud800"', b'"\\udfff x"', b"\xef\xbb\xbf1")
# Around orjson's limits: it encodes at most 254 levels and decodes at most 1,024.
DEPTHS = (32, 64, 128, 250, 253, 254, 255, 256, 300, 512, 1000, 1023, 1024, 1025, 10_000, 100_000)


def nested(depth: int, kind: str) -> Fragment:
    if kind == "list":
        return Fragment(b"[" * depth + b"]" * depth)
    if kind == "object":
        return Fragment(b'{"a":' * depth + b"1" + b"}" * depth)
    return Fragment(b'[{"a":' * (depth // 2) + b"0" + b"}]" * (depth // 2))


deep_values = st.builds(nested, st.sampled_from(DEPTHS), st.sampled_from(["list", "object", "mixed"]))
huge_values = st.one_of(
    st.integers(10_000, 1_000_000).map(lambda n: "x" * n),
    st.builds(str.__mul__, st.text(min_size=1, max_size=4), st.integers(1_000, 50_000)),
    st.integers(1_000, 20_000).map(lambda n: [0] * n),
    st.integers(1_000, 10_000).map(lambda n: {f"k{i}": i for i in range(n)}),
    st.integers(1_000, 5_000).map(lambda n: [{"type": "text", "text": "a"}] * n))
bad_strings = st.one_of(
    st.builds(lambda pre, bad: Fragment(b'"' + pre.encode() + bad + b'"'), text, st.sampled_from(BAD_UTF8)),
    st.builds(lambda pre, c: Fragment(b'"' + pre.encode() + bytes([c]) + b'"'), text,
              st.sampled_from([*range(32), 127])))
replacements = st.one_of(
    st.just(MISSING), json_values, st.sampled_from(OUT_OF_RANGE), huge_values, deep_values, deep_values,
    bad_strings, st.sampled_from(INVALID_TOKENS).map(Fragment))


@st.composite
def almost_valid_requests(draw):
    """A valid request with one node broken (or the whole body, when the root is picked)."""
    body = copy.deepcopy(draw(valid_requests))  # st.just values are shared between examples
    paths = list(node_paths(body, ()))  # every node's path, the root's first
    shallow = [p for p in paths if len(p) <= 3]  # top-level fields, messages, blocks: half the picks
    path = draw(st.sampled_from(shallow) | st.sampled_from(paths))
    parent, node = None, body
    for step in path:
        parent, node = node, node[step]
    if isinstance(node, dict) and draw(st.integers(0, 4)) == 0:
        node[draw(text)] = draw(json_values)  # an unknown key
        return body
    new = draw(replacements)
    if parent is None:
        return new
    if new is MISSING:
        del parent[path[-1]]
    else:
        parent[path[-1]] = new
    return body


def encode(body) -> bytes:
    """The JSON bytes of a (possibly broken) request; MISSING at the root is an empty body."""
    return b"" if body is MISSING else orjson.dumps(body)


# ------------------------------------------------------------------------------ garbage


@st.composite
def flipped_bytes(draw):
    raw = bytearray(encode(draw(valid_requests)))
    for _ in range(draw(st.integers(1, 3))):
        raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
    return bytes(raw)


garbage_bodies = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda raw, n: raw[:n], valid_requests.map(encode), st.integers(0, 400)),  # truncated
    flipped_bytes(),
    json_values.map(orjson.dumps),  # JSON, but not an object
    st.builds(bytes.__add__, valid_requests.map(encode), st.binary(min_size=1, max_size=20)),  # trailing junk
    valid_requests.map(lambda b: b"\xef\xbb\xbf" + encode(b)),  # a byte order mark
    valid_requests.map(lambda b: json.dumps(b).encode("utf-16")),
    st.sampled_from([b"", b"{}", b"null", b"[]", b'{"model":null}', b" " * 1000, b"\x00" * 64]))

message_bodies = st.one_of(valid_requests.map(encode), almost_valid_requests().map(encode),
                           almost_valid_requests().map(encode), garbage_bodies)

# ------------------------------------------------------------------------------ HTTP around it

FRAMING = (b"content-length", b"transfer-encoding", b"connection", b"host", b"expect", b"upgrade", b"te",
           b"trailer", b"keep-alive", b"proxy-connection")
VERSIONS = (b"2023-06-01", b"2023-01-01", b"", b"latest", b"2023-06-01\x00", b"2023-06-01\x7f", b"\t2023-06-01 ")
BETAS = (b"prompt-caching-2024-07-31", b"interleaved-thinking-2025-05-14", b"context-1m-2025-08-07",
         b"fine-grained-tool-streaming-2025-05-14,token-efficient-tools-2025-02-19", b",,,", b"x" * 4000,
         b"a\x00b", b"\x1b[31m")
CONTENT_TYPES = (b"application/json", b"application/json; charset=utf-8", b"text/plain", b"",
                 b"application/x-www-form-urlencoded", b"multipart/form-data; boundary=x", b"application/json\x00")


def single_line(raw: bytes) -> bytes:
    """``raw`` without CR and LF: it stays within its header line or request line."""
    return raw.replace(b"\r", b"").replace(b"\n", b"")


line_bytes = st.binary(max_size=40).map(single_line)
header_values = st.one_of(line_bytes, text.map(lambda t: single_line(t.encode())))
token_names = st.from_regex(rb"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,24}", fullmatch=True).filter(
    lambda name: name.lower() not in FRAMING)


def header(name: bytes, values) -> st.SearchStrategy[tuple[bytes, bytes]]:
    return st.tuples(st.just(name), values)


well_formed_headers = st.one_of(
    header(b"content-type", st.sampled_from(CONTENT_TYPES)),
    header(b"anthropic-version", st.sampled_from(VERSIONS) | header_values),
    header(b"anthropic-beta", st.sampled_from(BETAS) | header_values),
    header(b"x-api-key", header_values),
    header(b"authorization", header_values.map(lambda v: b"Bearer " + v)),
    st.tuples(token_names, header_values))
# For requests with a small body only: a name that is not a token can make the request unparseable,
# and the server may close the connection before it has read a large body.
any_headers = st.one_of(well_formed_headers, st.tuples(line_bytes.map(lambda n: n.replace(b":", b"")).filter(
    lambda n: n.strip().lower() not in FRAMING), header_values))

KNOWN_PATHS = (b"/v1/messages", b"/v1/messages/count_tokens", b"/v1/models", b"/v1/aliases", b"/health")
PATH_SUFFIXES = (b"/", b"?", b"?beta=true", b"#frag", b"//", b"/..", b"%2F", b";x", b"/x", b"?a=%ff&b=\xff",
                 b"%00", b"\x00", b"\x7f", b" x", b"\t")
ODD_PATHS = (b"*", b"", b"http://127.0.0.1/v1/messages", b"//v1/messages", b"/V1/MESSAGES",
             b"/v1/messages/../models", b"/" + b"a" * 9000, b"/%", b"/%zz", b"/\xc3\x28", b"/v1/%6Dessages")
targets = st.one_of(
    st.sampled_from(KNOWN_PATHS),
    st.builds(bytes.__add__, st.sampled_from(KNOWN_PATHS), st.sampled_from(PATH_SUFFIXES) | line_bytes),
    text.map(lambda t: b"/" + quote(t).encode()),
    line_bytes.map(lambda b: b"/" + b),
    st.sampled_from(ODD_PATHS))
METHODS = (b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"HEAD", b"TRACE", b"PROPFIND", b"post",
           b"FOO", b"\x80", b"G\xc3\xa9T")

methods = st.one_of(st.sampled_from(METHODS), st.from_regex(rb"[A-Z]{1,12}", fullmatch=True),
                    st.binary(min_size=1, max_size=8).map(lambda b: single_line(b).replace(b" ", b"") or b"X"))


@dataclass(frozen=True)
class HttpCase:
    method: bytes
    target: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes

    def wire(self) -> bytes:
        head = [b"%s %s HTTP/1.1" % (self.method, self.target), b"host: 127.0.0.1"]
        head += [name + b": " + value for name, value in self.headers]
        head += [b"content-length: %d" % len(self.body), b"connection: close", b"", b""]
        return b"\r\n".join(head) + self.body

    def __repr__(self) -> str:  # what hypothesis prints for a failing case: the body cut short
        body = self.body if len(self.body) <= 600 else self.body[:600] + b"...(%d bytes)" % len(self.body)
        return f"HttpCase(method={self.method!r}, target={self.target[:300]!r}, headers={self.headers!r}, body={body!r})"


api_cases = st.builds(HttpCase, st.just(b"POST"),
                      st.sampled_from([b"/v1/messages", b"/v1/messages", b"/v1/messages/count_tokens"]),
                      st.lists(well_formed_headers, max_size=5).map(tuple), message_bodies)
other_cases = st.builds(HttpCase, methods, targets, st.lists(any_headers, max_size=5).map(tuple),
                        st.one_of(st.just(b""), valid_requests.map(encode), st.binary(max_size=100)))
http_cases = st.one_of(api_cases, api_cases, api_cases, other_cases)
