"""Pipeline stages around the upstream call of an OpenAI-format provider.

``AnthropicToOpenAI`` runs before the ``upstream`` stage (request conversion);
``OpenAIToAnthropic`` runs after it (response / stream conversion).
"""
from __future__ import annotations

import asyncio
import inspect
from typing import Any, AsyncIterator

import orjson
from loguru import logger

from vandamme.kernel import BufferedResponse, Context, StreamingResponse
from vandamme.transforms.anthropic_answer import AnswerFacts
from vandamme.transforms.anthropic_to_openai import RequestConverter
from vandamme.transforms.errors import GatewayError
from vandamme.transforms.openai_stream import StreamConverter
from vandamme.transforms.openai_to_anthropic import convert_response

log = logger  # loguru, configured by vandamme.engine.logs

CHAT_COMPLETIONS_PATH = "/chat/completions"

# upstream headers that describe the upstream body, not the converted one
_BODY_HEADERS = frozenset({"content-length", "content-encoding", "transfer-encoding",
                           "content-type", "connection", "keep-alive"})


def _kept_headers(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in _BODY_HEADERS}


class AnthropicToOpenAI:
    """ctx.body (this attempt's Anthropic request) -> the OpenAI chat request: JSON bytes in
    ``ctx.upstream_body``, or, when OpenAI-side stages follow that change it (``keep_json``), the
    dict in ``ctx.upstream_json`` for them (``encode_upstream`` serialises it after the last)."""

    name = "anthropic_to_openai"
    __slots__ = ("converter", "keep_json", "_tools_json")

    def __init__(self, converter: RequestConverter, keep_json: bool = False):
        self.converter = converter
        self.keep_json = keep_json
        # id(tools list) -> (the list, its converted JSON): a tools list that decode_body reuses
        # across requests is serialised once (orjson.Fragment), not on every turn.
        self._tools_json: dict[int, tuple[Any, orjson.Fragment]] = {}

    async def run(self, ctx: Context) -> None:
        body = ctx.body
        out = self.converter.convert(body, ctx.model)
        if not ctx.upstream_path:
            ctx.upstream_path = CHAT_COMPLETIONS_PATH
        stops = body.get("stop_sequences")
        ctx.stop_sequences = stops if isinstance(stops, list) and stops else None
        if self.keep_json:
            ctx.upstream_json = out
            return
        tools = body.get("tools")
        if tools and "tools" in out:
            hit = self._tools_json.get(id(tools))
            if hit is None or hit[0] is not tools:
                if len(self._tools_json) >= 64:
                    self._tools_json.clear()
                hit = self._tools_json[id(tools)] = (tools, orjson.Fragment(orjson.dumps(out["tools"])))
            out["tools"] = hit[1]
        ctx.upstream_body = orjson.dumps(out)


class EncodeUpstream:
    """ctx.upstream_json -> ctx.upstream_body, after the OpenAI-side stages that change it."""

    name = "encode_upstream"
    __slots__ = ()

    async def run(self, ctx: Context) -> None:
        ctx.upstream_body = orjson.dumps(ctx.upstream_json)


class OpenAIToAnthropic:
    """ctx.response (OpenAI answer) -> Anthropic answer; streams are converted as they flow."""

    name = "openai_to_anthropic"
    __slots__ = ("ping_interval",)

    def __init__(self, ping_interval: float = 10.0):
        self.ping_interval = ping_interval

    async def run(self, ctx: Context) -> None:
        resp = ctx.response
        stops = ctx.stop_sequences
        model = ctx.requested_model or ctx.model
        if isinstance(resp, BufferedResponse):
            if resp.status != 200:
                return  # already an error answer
            try:
                oa = orjson.loads(resp.body)
            except orjson.JSONDecodeError:
                raise GatewayError(502, "upstream returned a body that is not JSON") from None
            message = convert_response(oa, requested_model=model, stop_sequences=stops)
            ctx.answer_facts = _message_facts(message, oa.get("model"))
            ctx.response = BufferedResponse(200, orjson.dumps(message),
                                            _kept_headers(resp.headers), "application/json")
        elif isinstance(resp, StreamingResponse):
            if resp.status != 200:
                return
            converter = StreamConverter(model, stops)
            ctx.answer_facts = StreamFacts(converter)
            close = CloseOnce(resp.close)
            ctx.response = StreamingResponse(
                status=200,
                chunks=convert_stream(resp.chunks, converter, self.ping_interval, close),
                headers=_kept_headers(resp.headers),
                content_type="text/event-stream",
                close=close,
            )


def _message_facts(message: dict, upstream_model: Any) -> AnswerFacts:
    """What telemetry wants of a converted answer: usage, stop reason, the upstream's model."""
    facts = AnswerFacts()
    usage = message["usage"]
    facts.input_tokens = usage["input_tokens"]
    facts.output_tokens = usage["output_tokens"]
    facts.stop_reason = message["stop_reason"]
    facts.model = upstream_model if type(upstream_model) is str else None
    return facts


class StreamFacts:
    """The AnswerFacts of a converted stream, read from its converter when asked (once, when the
    request finishes): nothing is copied per chunk."""

    __slots__ = ("converter", "_final")

    def __init__(self, converter: StreamConverter):
        self.converter = converter
        self._final: tuple | None = None  # the outcome once the stream is over (it no longer changes)

    def _outcome(self) -> tuple:
        out = self._final
        if out is None:
            out = self.converter.outcome()
            if self.converter.done:
                self._final = out
        return out

    @property
    def input_tokens(self) -> int | None:
        usage = self._outcome()[0]
        return None if usage is None else usage["input_tokens"]

    @property
    def output_tokens(self) -> int | None:
        usage = self._outcome()[0]
        return None if usage is None else usage["output_tokens"]

    @property
    def stop_reason(self) -> str | None:
        return self._outcome()[1]

    @property
    def model(self) -> str | None:
        return self.converter.upstream_model


class CloseOnce:
    """Wraps the upstream ``close`` so the stream's ``finally`` and the server may both call it."""

    __slots__ = ("_close", "_called")

    def __init__(self, close: Any):
        self._close = close
        self._called = False

    def __call__(self) -> Any:
        if self._called or self._close is None:
            return None
        self._called = True
        return self._close()


async def _call_close(close: Any) -> None:
    if close is None:
        return
    try:
        result = close()
        if inspect.isawaitable(result):
            await result
    except Exception:  # noqa: BLE001 - releasing the upstream must never fail the stream
        log.opt(exception=True).debug("closing the upstream stream failed")


async def convert_stream(chunks: AsyncIterator[bytes], converter: StreamConverter,
                         ping_interval: float | None, close: Any = None) -> AsyncIterator[bytes]:
    """Feed upstream chunks through ``converter``; yield Anthropic SSE bytes as they come.

    While the upstream is silent for ``ping_interval`` seconds a ping frame is sent. The pending
    read is kept in one task across pings (never cancelled by the timeout), so no upstream bytes
    are lost. An upstream exception ends the stream with an ``event: error`` frame."""
    it = chunks.__aiter__()
    task: asyncio.Task | None = None
    try:
        while True:
            if task is None:
                task = asyncio.ensure_future(it.__anext__())
            if ping_interval:
                done, _ = await asyncio.wait((task,), timeout=ping_interval)
                if not done:
                    frame = converter.keepalive()
                    if frame:
                        yield frame
                    continue
            else:
                await asyncio.wait((task,))
            t, task = task, None
            try:
                data = t.result()
            except StopAsyncIteration:
                break
            except asyncio.CancelledError:
                raise
            except asyncio.TimeoutError:
                yield converter.error_frame("timeout_error", "upstream stream timed out")
                return
            except GatewayError as exc:
                yield converter.error_frame(exc.error_type, exc.message)
                return
            except Exception as exc:  # noqa: BLE001
                log.warning("upstream stream failed: {}", type(exc).__name__)
                yield converter.error_frame(
                    "api_error", f"upstream connection failed mid-stream ({type(exc).__name__})")
                return
            out = converter.feed(data)
            if out:
                yield out
            if converter.done:
                break
        tail = converter.finish()
        if tail:
            yield tail
    finally:
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except BaseException:  # noqa: BLE001
                pass
        await _call_close(close)
