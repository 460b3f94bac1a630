"""The `upstream` stage: one HTTP exchange with the provider, with retries and key failover.

* Connection errors, timeouts, 5xx and 529 are retried ``max_retries`` times with exponential
  backoff and full jitter, on the same key. Only the status line and headers have been read when
  this decides, so nothing has reached the client yet.
* 401/403/429 move the same request to the provider's next key (each key at most once); a key that
  got 429 cools down for ``retry-after`` seconds (or the provider's ``key_cooldown``).
* Any other upstream error is returned at once. When every key and retry fails, the client gets
  the last upstream error, Anthropic-shaped.
Each attempt is a span ``upstream.attempt`` with its outcome when tracing is on.
"""
from __future__ import annotations

import asyncio
import random

import aiohttp

from vandamme.kernel import BufferedResponse, StreamingResponse, recording

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


class Upstream:
    name = "upstream"

    def __init__(self, provider, ring, max_retries: int, backoff: float, tracer=None,
                 passthrough_stream: bool = False):
        self.provider = provider
        self.ring = ring
        self.max_retries = max_retries
        self.backoff = backoff
        self.tracer = tracer
        self.passthrough_stream = passthrough_stream

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
        for n, key in enumerate(keys):
            if n:
                ctx.api_key = key
                set_auth(ctx.upstream_headers, provider.auth, key)
            for retry in range(self.max_retries + 1):
                if retry:
                    await asyncio.sleep(backoff_delay(retry, self.backoff))
                attempt_no += 1
                if self.tracer is None or not recording():
                    outcome = await self._attempt(ctx, url)
                else:
                    with self.tracer.start_as_current_span("upstream.attempt") as span:
                        outcome = await self._attempt(ctx, url)
                        span.set_attributes({
                            "vandamme.attempt": attempt_no,
                            "vandamme.key_index": (order[n] if order else 0),
                            "vandamme.outcome": outcome if isinstance(outcome, str) else "error",
                            "http.response.status_code": getattr(outcome, "status", 200)
                            if not isinstance(outcome, str) else 200,
                        })
                if outcome == "ok":
                    ctx.upstream_attempts = attempt_no
                    return
                last = outcome
                if outcome.status in KEY_FAILOVER_STATUSES:
                    if outcome.status == 429 and order:
                        self.ring.cool_down(order[n], retry_after_seconds(outcome.headers))
                    break  # next key
                if outcome.status not in RETRY_STATUSES:
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
        status = resp.status
        if status >= 400:
            try:
                body = await resp.read()
            except (aiohttp.ClientError, asyncio.TimeoutError):
                body = b""
            resp.release()
            return upstream_error(status, body, resp.headers)
        ctype = resp.headers.get("content-type", "")
        if ctx.stream and ctype.startswith("text/event-stream"):
            keep = {}
            rid = resp.headers.get("request-id")
            if rid:
                keep["upstream-request-id"] = rid
            ctx.response = StreamingResponse(
                status=status,
                chunks=self._passthrough_chunks(resp) if self.passthrough_stream else resp.content.iter_any(),
                headers=keep,
                close=lambda: _close(resp),
            )
            return "ok"
        try:
            body = await resp.read()
        except asyncio.TimeoutError:
            resp.close()
            return timeout_error()
        except aiohttp.ClientError:
            resp.close()
            return connection_error(provider.name)
        ctx.response = BufferedResponse(status=status, body=body, content_type=ctype or "application/json")
        return "ok"

    @staticmethod
    async def _passthrough_chunks(resp):
        """Upstream bytes as they arrive; a failure mid-stream ends with an Anthropic error event."""
        try:
            async for chunk in resp.content.iter_any():
                yield chunk
        except asyncio.TimeoutError:
            yield error_event("timeout_error", "upstream stopped sending (read timeout)")
        except aiohttp.ClientError as exc:
            yield error_event("api_error", f"upstream connection failed mid-stream: {type(exc).__name__}")


def _close(resp) -> None:
    """Done with the upstream: return the connection when the body was read, else close it (which
    also cancels an upstream still generating for a client that went away)."""
    if resp.content.at_eof():
        resp.release()
    else:
        resp.close()
