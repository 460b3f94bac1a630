"""The `upstream` stage: one HTTP exchange with the provider, with retries and key failover.

* Connection errors, timeouts, 5xx and 529 are retried ``max_retries`` times with exponential
  backoff and full jitter, on the same key. Only the status line and headers have been read when
  this decides, so nothing has reached the client yet.
* 401/403/429 move the same request to the provider's next key (each key at most once); a key that
  got 429 cools down for ``retry-after`` seconds (or the provider's ``key_cooldown``).
* Any other upstream error is returned at once. When every key and retry fails, the client gets
  the last upstream error, Anthropic-shaped.
Each attempt is a CLIENT span ``upstream.attempt`` with its outcome when the request is traced.
"""
from __future__ import annotations

import asyncio
import random
from urllib.parse import urlsplit

import aiohttp

from vandamme.kernel import BufferedResponse, StreamingResponse
from vandamme.tracing import ATTEMPT_INFO, current as current_trace, perf

from .anthropic_answer import AnswerFacts, check_count, check_events, check_message
from .errors import GatewayError, error_event
from .headers import set_auth
from .upstream_errors import connection_error, timeout_error, upstream_error

RETRY_STATUSES = frozenset({500, 502, 503, 504, 529})
KEY_FAILOVER_STATUSES = frozenset({401, 403, 429})


def backoff_delay(retry: int, base: float, rand=random.uniform) -> float:
    """Seconds to wait before retry number ``retry`` (1, 2, ...): exponential with full jitter,
    uniform in [0, base * 2**(retry-1)]."""
    return rand(0.0, base * (2 ** (retry - 1)))


def retry_after_seconds(headers) -> float | None:
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


DEFAULT_MAX_RESPONSE_BYTES = 32 * 1024 * 1024
_JSON_TYPES = ("application/json", "application/problem+json")


class BadAnswer(GatewayError):
    """An upstream answer that is not what was asked for: 502, whatever its status said. Not
    retried on the same provider (it would answer the same); a route's fallback may still help."""

    def __init__(self, message: str):
        super().__init__(502, f"malformed upstream answer: {message}", "api_error")




async def read_capped(resp, limit: int) -> bytes:
    """The whole body, or a 502 GatewayError once it passes ``limit`` bytes (the declared
    Content-Length is checked before anything is read)."""
    declared = resp.content_length
    if declared is not None:
        if declared > limit:
            raise BadAnswer(f"{declared} bytes is more than server.max_response_bytes ({limit})")
        return await resp.read()  # aiohttp reads exactly the declared length
    parts: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise BadAnswer(f"more than server.max_response_bytes ({limit}) bytes")
        parts.append(chunk)
    return b"".join(parts)


def _looks_like_json_object(body: bytes) -> bool:
    """A cheap check that a 200 answer is a JSON object, without parsing it."""
    head = body[:64].lstrip()
    tail = body[-64:].rstrip()
    return head[:1] == b"{" and tail[-1:] == b"}"


class Upstream:
    name = "upstream"
    # Per-provider counters (vandamme.engine.metrics attaches them when a server serves the gateway):
    # ``attempt()`` per HTTP exchange, ``retry()`` per retry on the same key, ``failover()`` per
    # move to the next key. None: not counted.
    counts = None

    def __init__(self, provider, ring, max_retries: int, backoff: float, tracer=None,
                 passthrough_stream: bool = False, max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES):
        self.provider = provider
        self.ring = ring
        self.max_retries = max_retries
        self.backoff = backoff
        self.tracer = tracer
        self.passthrough_stream = passthrough_stream
        self.max_response_bytes = max_response_bytes

    @property
    def detail(self) -> str:
        return f"retries={self.max_retries} with backoff, key failover on 401/403/429"

    async def run(self, ctx) -> None:
        provider = self.provider
        url = provider.base_url + ctx.upstream_path
        order = ctx.key_order
        keys = [self.ring.keys[i] for i in order] if order else [ctx.api_key]
        last: GatewayError | None = None
        attempt_no = 0
        counts = self.counts
        for n, key in enumerate(keys):
            if n:
                ctx.api_key = key
                set_auth(ctx.upstream_headers, provider.auth, key)
                if counts is not None:
                    counts.failover()
            for retry in range(self.max_retries + 1):
                if retry:
                    if counts is not None:
                        counts.retry()
                    await asyncio.sleep(backoff_delay(retry, self.backoff))
                attempt_no += 1
                if counts is not None:
                    counts.attempt()
                trace = current_trace() if self.tracer is not None else None
                if trace is None:
                    outcome = await self._attempt(ctx, url)
                else:
                    outcome = await self._traced_attempt(ctx, url, trace, attempt_no, order[n] if order else 0)
                if outcome == "ok":
                    ctx.upstream_attempts = attempt_no
                    return
                last = outcome
                if outcome.status in KEY_FAILOVER_STATUSES:
                    if outcome.status == 429 and order:
                        self.ring.cool_down(order[n], retry_after_seconds(outcome.headers))
                    break  # next key
                if outcome.status not in RETRY_STATUSES or isinstance(outcome, BadAnswer):
                    raise outcome
            else:
                # retries on this key exhausted by a retryable failure: other keys won't help
                raise last
        raise last

    async def _attempt(self, ctx, url: str):
        """One exchange. Returns "ok" (ctx.response set) or the GatewayError it ended with."""
        provider = self.provider
        try:
            resp = await provider.session.post(url, data=ctx.upstream_body, headers=ctx.upstream_headers,
                                               params=provider.query or None)
        except asyncio.TimeoutError:
            return timeout_error()
        except aiohttp.ClientError:
            return connection_error(provider.name)
        try:
            return await self._answer(ctx, resp)
        except GatewayError as exc:
            resp.close()
            return exc
        except asyncio.TimeoutError:
            resp.close()
            return timeout_error()
        except aiohttp.ClientError:
            resp.close()
            return connection_error(provider.name)

    _span_base: tuple | None = None  # the attempt span's constant values (built at first use)

    async def _traced_attempt(self, ctx, url: str, trace, attempt_no: int, key_index: int):
        """``_attempt`` as a CLIENT span record of the request's trace (vandamme.tracing), with
        the values of the HTTP and GenAI client conventions (vandamme.engine.span_export names them):
        server.address/port, the attempt number (``vandamme.attempt``; ``http.request.resend_count``
        from the second on), the answer's ``http.response.status_code`` and, when it failed,
        ``error.type`` (the status code, or ``timeout``, ``connection_error``, ``malformed_answer``)."""
        base = self._span_base
        if base is None:
            base = self._span_base = _attempt_span_base(self.provider)
        rec = ["upstream.attempt", trace.parent_ref(), perf(), 0.0, ATTEMPT_INFO, None, None, None]
        trace.spans.append(rec)
        ctx.upstream_status = 0
        try:
            outcome = await self._attempt(ctx, url)
        except BaseException as exc:  # cancelled (the client went away)
            rec[3] = perf()
            rec[5] = (base, attempt_no, key_index, 0, None, ctx.model, ctx.endpoint)
            rec[6] = exc
            trace.failed = True
            raise
        rec[3] = perf()
        status = ctx.upstream_status
        etype = None
        if outcome != "ok":
            etype = (str(status) if status >= 400 else "malformed_answer" if isinstance(outcome, BadAnswer)
                     else "timeout" if outcome.error_type == "timeout_error" else "connection_error")
            rec[6] = (etype, None, None)
        rec[5] = (base, attempt_no, key_index, status, etype, ctx.model, ctx.endpoint)
        return outcome

    async def _answer(self, ctx, resp):
        """The answer's status line and headers decide what it is; a body is only read (capped)
        when the answer is not a stream."""
        status = ctx.upstream_status = resp.status
        limit = self.max_response_bytes
        if status >= 400:
            try:
                body = await read_capped(resp, limit)
            except (aiohttp.ClientError, asyncio.TimeoutError):
                body = b""
            resp.release()
            return upstream_error(status, body, resp.headers)
        ctype = resp.headers.get("content-type", "")
        if ctype.startswith("text/event-stream"):
            if not ctx.stream:
                raise BadAnswer("a stream (text/event-stream) for a request that did not ask for one")
            keep = {}
            rid = resp.headers.get("request-id")
            if rid:
                keep["upstream-request-id"] = rid
            ctx.response = StreamingResponse(
                status=status,
                chunks=self._passthrough_chunks(resp, self._facts(ctx)) if self.passthrough_stream
                else resp.content.iter_any(),
                headers=keep,
                close=lambda: _close(resp),
            )
            return "ok"
        if ctx.stream:
            raise BadAnswer(f"{ctype or 'no content type'} (HTTP {status}) for a streaming request")
        if ctype and not ctype.startswith(_JSON_TYPES):
            raise BadAnswer(f"{ctype} (HTTP {status}) where JSON was expected")
        body = await read_capped(resp, limit)
        if status == 200:
            if self.passthrough_stream:  # an Anthropic answer, forwarded as it came: check it
                check = check_count if ctx.endpoint == "count_tokens" else check_message
                wrong = check(body, self._facts(ctx))
                if wrong:
                    raise BadAnswer(wrong)
            elif not _looks_like_json_object(body):  # the conversion parses and checks it
                raise BadAnswer("the body is not a JSON object")
        ctx.response = BufferedResponse(status=status, body=body, content_type=ctype)
        return "ok"

    @staticmethod
    def _facts(ctx) -> AnswerFacts:
        """What the answer checks note of this request's answer (usage, stop reason), in the
        Context for telemetry."""
        facts = ctx.answer_facts = AnswerFacts()
        return facts

    async def _passthrough_chunks(self, resp, facts: AnswerFacts | None = None):
        """Upstream bytes as they arrive, in whole SSE events: the start of an event waits for
        its end (up to max_response_bytes), so an error event never lands inside one. An
        Anthropic stream ends with ``message_stop`` (or an ``error`` event of the upstream's
        own); until one has passed, a failure, or the end of the body (a truncated answer must
        not look complete), ends the stream with an Anthropic error event, and so does an event
        whose data is not Anthropic-shaped JSON (anthropic_answer.check_events). After it, bytes
        pass as they come and nothing more is sent."""
        ended = False
        held = bytearray()  # the start of an event whose end has not arrived
        limit = self.max_response_bytes
        try:
            async for chunk in resp.content.iter_any():
                if ended:
                    yield chunk
                    continue
                if held:  # only the new bytes are searched: a long event costs linear time
                    searched = max(0, len(held) - 2)
                    held += chunk
                    cut = _whole_events_end(held, searched)
                    chunk = bytes(held[:cut])
                    del held[:cut]
                elif not chunk.endswith(_EVENT_ENDS):  # (the usual read is whole events)
                    cut = _whole_events_end(chunk)
                    held += chunk[cut:]
                    chunk = chunk[:cut]
                if len(held) > limit:
                    yield error_event("api_error", "malformed upstream answer: an SSE event of more than "
                                                   f"server.max_response_bytes ({limit}) bytes")
                    return
                if chunk:
                    wrong = check_events(chunk, facts)
                    if wrong:
                        yield error_event("api_error", f"malformed upstream answer: {wrong}")
                        return
                    yield chunk
                    ended = _ends_stream(chunk)
        except asyncio.TimeoutError:
            if not ended:
                yield error_event("timeout_error", "upstream stopped sending (read timeout)")
        except aiohttp.ClientError as exc:
            if not ended:
                yield error_event("api_error", f"upstream connection failed mid-stream: {type(exc).__name__}")
        else:
            if held and _ends_stream(held):  # the last event, without its blank line
                wrong = check_events(bytes(held), facts)
                yield error_event("api_error", f"malformed upstream answer: {wrong}") if wrong else bytes(held)
            elif not ended:
                yield error_event("api_error", "upstream stream ended before message_stop")


_EVENT_ENDS = (b"\n\n", b"\n\r\n")  # the blank line after an SSE event (LF or CRLF lines)
_ENDING_EVENTS = (b"event: message_stop", b"event:message_stop", b"event: error", b"event:error")
_ENDING_LINES = tuple(b"\n" + name for name in _ENDING_EVENTS)


def _whole_events_end(data, start: int = 0) -> int:
    """Where the last whole SSE event in ``data`` ends, looking from ``start`` (0: none does)."""
    lf, crlf = data.rfind(b"\n\n", start), data.rfind(b"\n\r\n", start)
    return max(lf + 2 if lf >= 0 else 0, crlf + 3 if crlf >= 0 else 0)


def _ends_stream(events: bytes) -> bool:
    """Whether whole SSE ``events`` hold one that ends an Anthropic stream (message_stop, error)."""
    return events.startswith(_ENDING_EVENTS) or any(line in events for line in _ENDING_LINES)


def _attempt_span_base(provider) -> tuple:
    """What every upstream attempt span of ``provider`` carries: (provider name, server address,
    server port)."""
    url = urlsplit(provider.base_url)
    return provider.name, url.hostname or "", url.port or (443 if url.scheme == "https" else 80)


def _close(resp) -> None:
    """Done with the upstream: return the connection when the body was read, else close it (which
    also cancels an upstream still generating for a client that went away)."""
    if resp.content.at_eof():
        resp.release()
    else:
        resp.close()
