"""The SSE codec (vandamme/transforms/sse.py): decoding bytes cut anywhere, and encoding frames."""
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vandamme.transforms.sse import FRAME_END, SSEDecoder, SSEEvent, encode, frame_head


def decode(raw: bytes, cuts=()) -> list[SSEEvent]:
    """Feed ``raw`` cut at ``cuts``, then flush."""
    decoder = SSEDecoder()
    events = []
    prev = 0
    for cut in sorted(cuts) + [len(raw)]:
        events += decoder.feed(raw[prev:cut])
        prev = cut
    return events + decoder.flush()


STREAMS = {
    "openai": (b'data: {"a":1}\n\ndata: {"b":2}\n\ndata: [DONE]\n\n',
               [SSEEvent(None, b'{"a":1}'), SSEEvent(None, b'{"b":2}'),
                SSEEvent(None, b"[DONE]")]),
    "crlf": (b'data: {"a":1}\r\n\r\nevent: x\r\ndata: y\r\n\r\n',
             [SSEEvent(None, b'{"a":1}'), SSEEvent("x", b"y")]),
    "mixed line ends": (b"data: a\r\n\ndata: b\n\r\n",
                        [SSEEvent(None, b"a"), SSEEvent(None, b"b")]),
    "anthropic": (b'event: message_start\ndata: {"type":"message_start"}\n\n'
                  b'event: ping\ndata: {"type": "ping"}\n\n',
                  [SSEEvent("message_start", b'{"type":"message_start"}'),
                   SSEEvent("ping", b'{"type": "ping"}')]),
    "multi-line data": (b"data: {\"a\":\ndata:  1}\ndata\n\n",
                        [SSEEvent(None, b'{"a":\n 1}\n')]),
    "noise": (b": keep-alive\n\nid: 7\nretry: 100\nfoo: bar\ndata:x\n\n\n\n",
              [SSEEvent(None, b"x")]),
    "empty data": (b"data:\n\ndata: \n\n", [SSEEvent(None, b""), SSEEvent(None, b"")]),
    "unicode": ("data: {\"t\":\"é😀日本\"}\n\n".encode(),
                [SSEEvent(None, "{\"t\":\"é😀日本\"}".encode())]),
}


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_every_cut_gives_the_same_events(name):
    raw, expected = STREAMS[name]
    assert decode(raw) == expected
    for size in range(1, len(raw) + 1):
        assert decode(raw, range(size, len(raw), size)) == expected, size
    for cut in range(len(raw) + 1):
        assert decode(raw, [cut]) == expected, cut


def test_cr_and_lf_in_different_chunks():
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\n\r") == []
    assert decoder.feed(b"\n") == [SSEEvent(None, b"a")]


def test_event_needs_data_and_the_name_ends_with_the_event():
    # an event without data lines is not reported, and its name does not leak into the next
    assert decode(b"event: lonely\n\ndata: x\n\n") == [SSEEvent(None, b"x")]
    assert decode(b"event: a\ndata: 1\n\ndata: 2\n\n") == [SSEEvent("a", b"1"),
                                                           SSEEvent(None, b"2")]


def test_flush_reports_an_unterminated_last_event():
    assert decode(b"data: a\n\ndata: b") == [SSEEvent(None, b"a"), SSEEvent(None, b"b")]
    assert decode(b"data: b\n") == [SSEEvent(None, b"b")]
    assert decode(b"data: b\r") == [SSEEvent(None, b"b")]
    assert decode(b": only a comment") == []
    assert decode(b"") == []
    decoder = SSEDecoder()
    decoder.feed(b"data: x")
    assert decoder.flush() == [SSEEvent(None, b"x")]
    assert decoder.flush() == []


def test_long_line_in_one_byte_pieces():
    payload = orjson.dumps({"text": "x" * 50_000})
    raw = b"data: " + payload + b"\n\n"
    decoder = SSEDecoder()
    events = []
    for i in range(len(raw)):
        events += decoder.feed(raw[i:i + 1])
    assert events == [SSEEvent(None, payload)]


def test_encode():
    assert encode("ping", {"type": "ping"}) == b'event: ping\ndata: {"type":"ping"}\n\n'
    assert encode(None, b"[DONE]") == b"data: [DONE]\n\n"
    assert encode("x", b"a\nb\r\nc") == b"event: x\ndata: a\ndata: b\ndata: c\n\n"
    assert frame_head("x") + b"{}" + FRAME_END == encode("x", {})
    assert frame_head(None) + b"1" + FRAME_END == encode(None, 1)


names = st.none() | st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12)
datas = st.binary(max_size=40).filter(lambda b: b"\r" not in b)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(names, datas), max_size=6),
       st.lists(st.integers(0, 400), max_size=12), st.booleans())
def test_encode_then_decode_at_any_cuts(events, cuts, crlf):
    raw = b"".join(encode(name, data) for name, data in events)
    if crlf:
        raw = raw.replace(b"\n", b"\r\n")
    expected = [SSEEvent(name, data) for name, data in events]
    assert decode(raw, [c for c in cuts if c <= len(raw)]) == expected
