"""Property tests: any valid OpenAI chunk sequence, cut at any byte boundaries, converts to a
valid Anthropic event sequence whose assembled message equals the non-stream conversion."""
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_conversion_stream import check_grammar
from vandamme.transforms.openai_stream import StreamConverter, assemble, parse_sse
from vandamme.transforms.openai_to_anthropic import convert_response

SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

chars = st.characters(blacklist_categories=("Cs",))  # any Unicode except lone surrogates
fragment = st.text(chars, max_size=8)
json_scalar = st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.text(chars, max_size=10)
json_value = st.recursive(
    json_scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(chars, max_size=5),
                                                                inner, max_size=3),
    max_leaves=8)
tool_args = st.dictionaries(st.text(chars, max_size=6), json_value, max_size=4)
tool_name = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12)
STOPS = ["END", "###"]


def chunk(delta, finish=None, extra=None, cid="chatcmpl-prop"):
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    if extra:
        choice.update(extra)
    return {"id": cid, "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [choice]}


def split_at(s: str, points: list[int]) -> list[str]:
    cuts = [0] + sorted({p for p in points if 0 < p < len(s)}) + [len(s)]
    return [s[a:b] for a, b in zip(cuts, cuts[1:])]


@st.composite
def scenario(draw):
    reasoning = draw(st.lists(fragment, max_size=4))
    reasoning_field = draw(st.sampled_from(["reasoning_content", "reasoning"]))
    text = draw(st.lists(fragment, max_size=5))
    refusal = draw(st.lists(fragment, max_size=3))
    calls = []
    for i in range(draw(st.integers(0, 3))):
        args = orjson.dumps(draw(tool_args)).decode()
        points = draw(st.lists(st.integers(1, max(1, len(args) - 1)), max_size=5))
        frags = split_at(args, points)
        calls.append({"id": f"call_{i}_{draw(st.integers(0, 999))}", "name": draw(tool_name),
                      "args": args, "frags": frags})
    finish = draw(st.sampled_from(["stop", "length", "tool_calls", "content_filter", None]))
    matched = draw(st.sampled_from([None, "END", "###", "other"])) if finish == "stop" else None
    usage = draw(st.none() | st.fixed_dictionaries({
        "prompt_tokens": st.integers(0, 10**6), "completion_tokens": st.integers(0, 10**5),
        "cached": st.integers(0, 1000)}))
    usage_on_finish_chunk = draw(st.booleans())
    done = draw(st.booleans())
    crlf = draw(st.booleans())

    chunks = [chunk({"role": "assistant", "content": ""})]
    chunks += [chunk({reasoning_field: r}) for r in reasoning]
    chunks += [chunk({"content": t}) for t in text]
    chunks += [chunk({"refusal": r}) for r in refusal]
    # tool call events: per call a header (id, name, maybe a first fragment), then fragments;
    # calls interleave at random, but headers appear in index order (as OpenAI assigns indexes)
    queues = []
    for i, c in enumerate(calls):
        first = c["frags"][0] if draw(st.booleans()) else ""
        rest = c["frags"][1:] if first else c["frags"]
        events = [{"index": i, "id": c["id"], "type": "function",
                   "function": {"name": c["name"], "arguments": first}}]
        events += [{"index": i, "function": {"arguments": f}} for f in rest]
        queues.append(events)
    started = 0
    while any(queues):
        available = [i for i, q in enumerate(queues) if q and i <= started]
        i = draw(st.sampled_from(available))
        if i == started:
            started += 1
        chunks.append(chunk({"tool_calls": [queues[i].pop(0)]}))
    extra = {"stop_reason": matched} if matched is not None else None
    usage_obj = None
    if usage is not None:
        usage_obj = {"prompt_tokens": usage["prompt_tokens"] + usage["cached"],
                     "completion_tokens": usage["completion_tokens"],
                     "total_tokens": 0,
                     "prompt_tokens_details": {"cached_tokens": usage["cached"]}}
    if finish is not None:
        chunks.append(chunk({}, finish, extra))
        if usage_obj is not None and usage_on_finish_chunk:
            chunks[-1]["usage"] = usage_obj
    if usage_obj is not None and not (finish is not None and usage_on_finish_chunk):
        chunks.append({"id": "chatcmpl-prop", "object": "chat.completion.chunk", "created": 1,
                       "model": "m", "choices": [], "usage": usage_obj})
    sep = b"\r\n\r\n" if crlf else b"\n\n"
    raw = b"".join(b"data: " + orjson.dumps(c) + sep for c in chunks)
    if done or finish is None:  # without finish_reason only [DONE] says the answer is whole
        raw += b"data: [DONE]" + sep

    # the equivalent non-streamed answer
    message = {"role": "assistant", "content": "".join(text) or None,
               "refusal": "".join(refusal) or None}
    if "".join(reasoning):
        message[reasoning_field] = "".join(reasoning)
    if calls:
        message["tool_calls"] = [{"id": c["id"], "type": "function",
                                  "function": {"name": c["name"], "arguments": c["args"]}}
                                 for c in calls]
    choice = {"index": 0, "message": message, "finish_reason": finish}
    if extra:
        choice.update(extra)
    completion = {"id": "chatcmpl-prop", "object": "chat.completion", "choices": [choice]}
    if usage_obj is not None:
        completion["usage"] = usage_obj

    cuts = draw(st.lists(st.integers(0, len(raw)), max_size=40))
    return raw, completion, sorted(set(cuts))


@SETTINGS
@given(scenario())
def test_stream_matches_non_stream(case):
    raw, completion, cuts = case
    sc = StreamConverter("claude-model", stop_sequences=STOPS)
    out = []
    prev = 0
    for cut in cuts + [len(raw)]:
        out.append(sc.feed(raw[prev:cut]))
        prev = cut
    out.append(sc.finish())
    data = b"".join(out)

    events = parse_sse(data)
    check_grammar(events)
    streamed = assemble(data)
    expected = convert_response(completion, requested_model="claude-model",
                                stop_sequences=STOPS)
    assert streamed == expected  # the whole message: id, model, content, stop, usage
    # the same bytes fed at once give the same output
    whole = StreamConverter("claude-model", stop_sequences=STOPS)
    assert whole.feed(raw) + whole.finish() == data


@SETTINGS
@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=20))
def test_garbage_never_breaks_the_grammar(blob, cuts):
    """Arbitrary bytes (not a valid stream) never raise and still give a well-formed stream."""
    sc = StreamConverter("m")
    out = []
    prev = 0
    for cut in sorted(c for c in cuts if c <= len(blob)) + [len(blob)]:
        out.append(sc.feed(blob[prev:cut]))
        prev = cut
    out.append(sc.finish())
    events = parse_sse(b"".join(out))
    if events and events[0][0] == "error":
        return
    check_grammar(events)


json_any = st.recursive(
    json_scalar | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["choices", "delta", "index", "content", "tool_calls", "function",
                         "arguments", "name", "id", "usage", "finish_reason", "reasoning",
                         "error", "message", "type", "x"]), inner, max_size=4),
    max_leaves=12)


@SETTINGS
@given(st.lists(json_any, max_size=8))
def test_malformed_chunks_never_crash(objs):
    """Any JSON values as events (wrong types anywhere) never raise; output stays well-formed."""
    raw = b"".join(b"data: " + orjson.dumps(o) + b"\n\n" for o in objs)
    sc = StreamConverter("m")
    data = sc.feed(raw) + sc.finish()
    events = parse_sse(data)
    if any(name == "error" for name, _ in events):
        assert events[-1][0] == "error"
        return
    check_grammar(events)
