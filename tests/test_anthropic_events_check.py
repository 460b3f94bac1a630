"""anthropic_answer.check_events: its fast path (every data value decoded at once) must judge
every stream exactly as the line-by-line reading does — same verdict, same message, same facts."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from vandamme.transforms.anthropic_answer import AnswerFacts, _check_events_by_line, check_events

START = b'{"type":"message_start","message":{"model":"m-1","usage":{"input_tokens":7,"output_tokens":1}}}'
BLOCK = b'{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}'
DELTA = b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi"}}'
MDELTA = b'{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":9}}'
STOP = b'{"type":"message_stop"}'


def event(data: bytes, name: bytes = b"x") -> bytes:
    return b"event: " + name + b"\ndata: " + data + b"\n\n"


def facts_of(fn, events: bytes):
    f = AnswerFacts()
    verdict = fn(events, f)
    return verdict, tuple(getattr(f, s) for s in AnswerFacts.__slots__)


CASES = {
    "a whole stream": b"".join(event(d) for d in (START, BLOCK, DELTA, DELTA, MDELTA, STOP)),
    "no data": b"event: ping\n\n: comment\n\n",
    "empty": b"",
    "not JSON": event(b'{"type":"content_block_delta",'),
    "two values in one data line": event(b'{"type":"ping"},{"type":"ping"}'),
    "an array": event(b'[{"type":"ping"}]'),
    "a number": event(b"1"),
    "no type": event(b'{"index":0}'),
    "type not a string": event(b'{"type":5}'),
    "delta null": event(b'{"type":"content_block_delta","delta":null}'),
    "delta missing": event(b'{"type":"content_block_delta","index":0}'),
    "delta a string": event(b'{"type":"content_block_delta","delta":"x"}'),
    "message a list": event(b'{"type":"message_start","message":[]}'),
    "content_block missing": event(b'{"type":"content_block_start","index":0}'),
    "usage not an object": event(b'{"type":"message_delta","delta":{},"usage":3}'),
    "unknown type": event(b'{"type":"future_event","whatever":[1,2]}'),
    "data over two lines": b'event: x\ndata: {"type":\ndata: "ping"}\n\n',
    "two data lines, each JSON": b'event: x\ndata: {"type":"ping"}\ndata: {"type":"ping"}\n\n',
    "data, id, data": b'data: {"type":"ping"}\nid: 1\ndata: {"type":"ping"}\n\n',
    "data then id": b'data: {"type":"ping"}\nid: 1\n\n',
    "CRLF lines": b'event: x\r\ndata: {"type":"ping"}\r\n\r\n',
    "no space after data:": b'data:{"type":"ping"}\n\n',
    "data: inside a text": event(b'{"type":"content_block_delta","delta":{"type":"text_delta","text":"data: 1"}}'),
    "last event without its blank line": event(DELTA) + b'data: {"type":"message_stop"}',
    "bad last event without its blank line": event(DELTA) + b"data: {",
    "a wrong event after good ones": event(START) + event(DELTA) + event(b'{"type":"content_block_delta"}'),
    "big integer": event(b'{"type":"ping","n":1}'),
    "nested depth": event(b'{"type":"ping","a":' + b"[" * 50 + b"]" * 50 + b"}"),
    "invalid UTF-8": event(b'{"type":"ping","t":"\xff"}'),
}


@pytest.mark.parametrize("name", list(CASES))
def test_fast_path_judges_as_the_line_reading_does(name):
    events = CASES[name]
    assert facts_of(check_events, events) == facts_of(_check_events_by_line, events)


def test_a_whole_stream_is_fine_and_noted():
    verdict, facts = facts_of(check_events, CASES["a whole stream"])
    assert verdict is None
    assert facts == (7, 9, "end_turn", "m-1")


PIECES = st.sampled_from([START, BLOCK, DELTA, MDELTA, STOP, b'{"type":"ping"}', b"{", b"[]", b'{"type":1}',
                          b'{"type":"content_block_delta","delta":null}', b'{"type":"message_start"}', b"1,2",
                          b'{"type":"message_delta","delta":{"stop_reason":null},"usage":null}'])
LINES = st.one_of(
    PIECES.map(lambda d: b"data: " + d + b"\n"),
    PIECES.map(lambda d: b"data:" + d + b"\n"),
    st.sampled_from([b"event: content_block_delta\n", b": keep-alive\n", b"id: 3\n", b"\n", b"\n", b"\n"]),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(LINES, max_size=14), st.booleans())
def test_fast_path_agrees_on_generated_streams(lines, crlf):
    events = b"".join(lines)
    if crlf:
        events = events.replace(b"\n", b"\r\n")
    assert facts_of(check_events, events) == facts_of(_check_events_by_line, events)
