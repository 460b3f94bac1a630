"""The Sanic app, built from a compiled Gateway. Handlers only move bytes between the client and
the Gateway's pipelines; everything else is a stage."""
from __future__ import annotations

import asyncio
import gc
import itertools
import os
import signal
import threading
import time
from dataclasses import dataclass, fields

import orjson
from loguru import logger
from sanic import Request, Sanic
from sanic.exceptions import SanicException
from sanic.response import HTTPResponse, raw

from vandamme.transforms.errors import GatewayError, error_body, error_event, error_type_for
from vandamme.kernel import BufferedResponse, Context
from vandamme.secrets import bind_request, unbind_request
from vandamme.sources import SpecErrors

from . import dashboard, metrics
from .compiler import Gateway
from .watch import held_hups as _held_hups
from .http_protocol import GatewayProtocol
from .logs import for_request, route_stdlib
from .metrics import CLIENT_CLOSED, stream_error_type
from .models import ModelCatalog
from .version import VERSION

_app_numbers = itertools.count(1)
_JSON = "application/json"
SHUTTING_DOWN = "server shutting down"


def _request_ids():
    prefix = os.urandom(4).hex()
    for n in itertools.count(1):
        yield f"req_{prefix}{n:08x}"


def health_problems(gateway: Gateway) -> list[str]:
    """Why the gateway cannot serve what it is asked by default: no provider active, or the default
    provider (the one bare model names go to) inactive. Empty when healthy."""
    providers = gateway.providers
    out = []
    if not any(p.active for p in providers.values()):
        out.append("no provider is active" if providers else "no provider is declared")
    default = gateway.alias_index.default_provider
    p = providers.get(default) if default else None
    if p is not None and not p.active:
        out.append(f"default provider '{default}' is inactive: {p.inactive_reason or 'no key'}")
    return out


def error_response(exc: GatewayError, request_id: str | None = None) -> HTTPResponse:
    headers = dict(exc.headers)
    if request_id:
        headers["request-id"] = request_id
    return raw(exc.body(), status=exc.status, headers=headers, content_type=_JSON)


class Generation:
    """One compiled Gateway in service, with the count of requests running on it. A reload puts
    a new generation in front; the old one closes its pools when its last request finishes."""

    __slots__ = ("gateway", "front", "catalog", "inflight", "retired", "number", "authenticate", "loaded_at")

    def __init__(self, gateway: Gateway, number: int):
        self.gateway = gateway
        self.front = gateway.front
        self.authenticate = next((s for s in gateway.front.stages if s.name == "authenticate"), None)
        self.catalog = ModelCatalog(gateway)
        self.inflight = 0
        self.retired = False
        self.number = number
        self.loaded_at = time.time()  # wall clock: when this generation started serving (dashboard)


@dataclass(frozen=True)
class ConnectionLimits:
    """The ``server.*`` settings for client connections (a restart applies a change)."""

    header_timeout: float = 10.0  # a request's head must arrive within this, from its first byte
    body_timeout: float = 30.0  # its body within max(body_timeout, size / body_min_rate)
    body_min_rate: float = 65536.0  # bytes per second
    drain_timeout: float = 30.0  # on shutdown, requests in flight may go on for this long

    @classmethod
    def from_spec(cls, data: dict) -> "ConnectionLimits":
        server = data.get("server") or {}
        return cls(**{f.name: float(server[f.name]) for f in fields(cls) if f.name in server})


class Drain:
    """Shutdown drain: requests in flight may go on for ``timeout`` seconds after shutdown begins
    (``begin``); then every ``window`` still open is cancelled and marked ``cut``, and its caller
    answers "server shutting down". Until shutdown a window costs a set insertion, no timer."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self.deadline: float | None = None  # event-loop time, once shutdown has begun
        self.open: set[DrainWindow] = set()

    def begin(self) -> None:
        loop = asyncio.get_running_loop()
        self.deadline = loop.time() + self.timeout
        loop.call_at(self.deadline, self._cut_open)

    def _cut_open(self) -> None:
        for window in list(self.open):
            window.cut_now()

    def window(self) -> "DrainWindow":
        return DrainWindow(self)


class DrainWindow:
    """``async with drain.window() as w:`` runs its block until the drain deadline, if there is one
    by then; ``w.cut`` tells whether the deadline stopped it (the cancellation is swallowed, as
    ``asyncio.timeout`` does)."""

    __slots__ = ("drain", "task", "cut")

    def __init__(self, drain: Drain):
        self.drain = drain
        self.task: asyncio.Task | None = None
        self.cut = False

    def cut_now(self) -> None:
        if not self.cut and self.task is not None:
            self.cut = True
            self.task.cancel()

    async def __aenter__(self) -> "DrainWindow":
        self.task = asyncio.current_task()
        self.drain.open.add(self)
        deadline = self.drain.deadline
        if deadline is not None and asyncio.get_running_loop().time() >= deadline:
            self.cut_now()  # opened after the deadline: stopped at its first await
        return self

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        self.drain.open.discard(self)
        if self.cut and exc_type is asyncio.CancelledError and self.task.uncancel() == 0:
            return True
        return False


class GatewaySanic(Sanic):
    """Sanic serving with the gateway's connection protocol (vandamme.engine.http_protocol) by default, and
    a ``request-id`` on every response: the pipeline handlers set their own (``own_request_id``);
    every other route (``/health``, ``/metrics``, ``/dashboard/``, ...) gets it from a response
    middleware attached by name to those routes only (``ctx.stamp_request_id``, set by create_app),
    so the pipeline routes run no middleware; an answer without a route (404, 405, protocol errors)
    gets it from the error handler."""

    def finalize_middleware(self):
        stamp = getattr(self.ctx, "stamp_request_id", None)
        if stamp is not None:
            own = getattr(self.ctx, "own_request_id", ())  # handlers that set request-id themselves
            done = getattr(self.ctx, "stamped_routes", frozenset())
            names = {r.name for r in self.router.routes if r.handler not in own} - done
            if names:
                self.register_named_middleware(stamp, sorted(names), "response")
                self.ctx.stamped_routes = done | names
        return super().finalize_middleware()

    def prepare(self, *args, protocol=None, **kwargs):
        return super().prepare(*args, protocol=protocol or GatewayProtocol, **kwargs)

    async def create_server(self, *args, protocol=None, **kwargs):
        return await super().create_server(*args, protocol=protocol or GatewayProtocol, **kwargs)


class Serving:
    """The generation requests start on; ``reload`` swaps it atomically, only if the new spec
    compiles. The compiler is given as ``reloader`` (a callable returning a new Gateway)."""

    def __init__(self, gateway: Gateway, reloader=None):
        self.current = Generation(gateway, 1)
        self.reloader = reloader
        self._lock = asyncio.Lock()
        self._pending: set[asyncio.Task] = set()

    def schedule_reload(self) -> None:
        """Start ``reload`` from a signal handler (keeping the task until it ends)."""
        task = asyncio.ensure_future(self.reload())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def reload(self) -> bool:
        """Load and compile in a worker thread (a big spec takes seconds; requests go on being
        served meanwhile), then swap on the event loop."""
        if self.reloader is None:
            logger.warning("reload asked, but this server was not started from a spec folder")
            return False
        async with self._lock:
            try:
                gateway = await asyncio.to_thread(self.reloader)
            except SpecErrors as exc:
                for err in exc.errors:
                    logger.error("reload rejected: {}", err)
                logger.error("reload rejected: {} error(s); still serving generation {}",
                             len(exc.errors), self.current.number)
                return False
            except Exception as exc:  # a bug, not a spec error: keep serving, show where
                logger.opt(exception=exc).error("reload failed ({}); still serving generation {}",
                                                type(exc).__name__, self.current.number)
                return False
            await gateway.start()
            old = self.current
            self.current = Generation(gateway, old.number + 1)
            old.retired = True
            logger.info("reloaded: generation {} serving ({} providers, {} active)", self.current.number,
                        len(gateway.providers), sum(1 for p in gateway.providers.values() if p.active))
            for problem in health_problems(gateway):
                logger.warning("degraded: {}", problem)
            if old.inflight == 0:
                await old.gateway.close()
            return True


def create_app(gateway: Gateway, name: str | None = None, reloader=None) -> Sanic:
    """A Sanic app serving ``gateway``. Provider sessions open when the server starts and close
    when it stops. With ``reloader`` (a callable compiling a fresh Gateway), SIGHUP reloads."""
    app = GatewaySanic(name or f"vandamme_{os.getpid()}_{next(_app_numbers)}")
    route_stdlib()  # Sanic's constructor has just configured its loggers: route them into loguru again
    s = gateway.settings
    limits = ConnectionLimits.from_spec(gateway.spec.data)
    app.config.REQUEST_MAX_SIZE = 32 * 1024 * 1024  # Anthropic's own request limit
    app.config.RESPONSE_TIMEOUT = max(3600, int(s.request_timeout * (s.max_retries + 2)))
    app.config.REQUEST_TIMEOUT = limits.header_timeout  # these three: see vandamme/engine/http_protocol.py
    app.config.BODY_TIMEOUT = limits.body_timeout
    app.config.BODY_MIN_RATE = limits.body_min_rate
    app.config.KEEP_ALIVE_TIMEOUT = 75
    # Sanic aborts what is still open after this; the drain answers everything before it.
    app.config.GRACEFUL_SHUTDOWN_TIMEOUT = limits.drain_timeout + app.config.GRACEFUL_TCP_CLOSE_TIMEOUT
    app.config.ACCESS_LOG = False  # our own access line (loguru) names provider and model
    app.config.FALLBACK_ERROR_FORMAT = "json"
    app.config.MOTD = False
    live = Serving(gateway, reloader)
    app.ctx.live = live
    drain = Drain(limits.drain_timeout)
    app.ctx.gateway = gateway  # the first generation (settings for `vandamme run`)
    ids = _request_ids()
    access_log = s.access_log

    @app.before_server_start
    async def _open(app_):
        await live.current.gateway.start()

    @app.after_server_start
    async def _freeze(app_):
        """Served by `vandamme run`: what exists now (modules, the compiled gateway) lives as long
        as the process, so the cyclic garbage collector stops scanning it (gc.freeze): about 8%
        less CPU per small request (measured with bench/tracing_ab.py). A reload's new generation
        is not frozen: what it leaves when replaced is collected as usual; the first generation's
        cyclic garbage, once replaced, is not (once per process, a few hundred KB at most)."""
        if reloader is not None:
            gc.collect()
            gc.freeze()

    @app.after_server_start
    async def _signals(app_):
        if reloader is not None and threading.current_thread() is threading.main_thread():
            try:
                asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, live.schedule_reload)
            except (NotImplementedError, RuntimeError, ValueError):
                logger.warning("SIGHUP reload is not available here")
                return
            if _held_hups:  # asked while starting: the spec read at start may be older
                _held_hups.clear()
                live.schedule_reload()

    @app.before_server_stop
    async def _drain(app_):
        drain.begin()

    @app.after_server_stop
    async def _close(app_):
        await live.current.gateway.close()

    async def run_pipeline(request: Request, endpoint: str):
        gen = live.current
        gen.inflight += 1
        secrets = bind_request(request.headers)  # the client's keys are scrubbed like ours
        try:
            return await _run(gen, request, endpoint)
        finally:
            unbind_request(secrets)
            gen.inflight -= 1
            if gen.retired and gen.inflight == 0:  # the last request of a replaced generation
                await gen.gateway.close()

    async def _run(gen: Generation, request: Request, endpoint: str):
        """The request in its trace when it is sampled (vandamme.tracing): the decision is taken
        here, once; the server span ends when ``_serve`` returns, which for a stream is after its
        last byte, and the finished trace goes to the tracer's sink (built off the event loop)."""
        tracer = gen.gateway.tracer
        if tracer is None:
            return await _serve(gen, request, endpoint)
        parent = request.headers.get("traceparent")
        trace = tracer.begin(parent, request.headers.get("tracestate") if parent else None)
        if trace is None:
            return await _serve(gen, request, endpoint)
        token = tracer.enter(trace)
        try:
            out = await _serve(gen, request, endpoint)
        except BaseException as exc:
            tracer.finish(trace, request, endpoint, None, exc)
            raise
        finally:
            tracer.leave(token)
        tracer.finish(trace, request, endpoint, out)
        return out

    async def _serve(gen: Generation, request: Request, endpoint: str):
        rid = next(ids)
        ctx = Context(rid, request.body, request.headers, endpoint)
        window = drain.window()
        try:
            async with window:
                await gen.front.run(ctx)
            if window.cut:
                raise GatewayError(503, SHUTTING_DOWN, "overloaded_error")
        except GatewayError as exc:
            if exc.status >= 500 or access_log:
                for_request(ctx, exc.status, (time.perf_counter() - ctx.started) * 1e3).warning(
                    "{} {} -> {} {}: {}", rid, ctx.requested_model or "-", exc.status, exc.error_type, exc.message)
            ctx.finish(exc.status, exc.error_type)  # the request's outcome (metrics: on_finish)
            return error_response(exc, rid)
        except BaseException as exc:  # the client went away (499), or a bug that on_error answers (500)
            gone = isinstance(exc, asyncio.CancelledError)
            ctx.finish(499 if gone else 500, CLIENT_CLOSED if gone else "api_error")
            raise
        resp = ctx.response
        if access_log:
            ms = (time.perf_counter() - ctx.started) * 1e3
            for_request(ctx, resp.status, ms).info(
                "{} {} -> {}:{} {} in {:.1f} ms{}", rid, ctx.requested_model, ctx.provider.name, ctx.model,
                resp.status, ms, f" (client {ctx.client_name})" if ctx.client_name else "")
        if isinstance(resp, BufferedResponse):
            headers = resp.headers
            headers["request-id"] = rid
            ctx.finish(resp.status, None if resp.status < 400 else error_type_for(resp.status))
            return raw(resp.body, status=resp.status, headers=headers, content_type=resp.content_type)
        return await stream_out(request, resp, rid, ctx)

    async def stream_out(request: Request, resp, rid: str, ctx: Context):
        headers = resp.headers
        headers["request-id"] = rid
        headers["cache-control"] = "no-cache"
        error = None  # the stream's outcome, for ctx.finish
        last = b""
        try:
            out = await request.respond(status=resp.status, headers=headers, content_type=resp.content_type)
            window = drain.window()
            async with window:
                async for last in resp.chunks:
                    if ctx.first_token_at is None:
                        ctx.first_token_at = time.perf_counter()
                    await out.send(last)
            if window.cut:
                error = "overloaded_error"
                logger.bind(request_id=rid).warning("{} stream cut at the drain deadline: {}", rid, SHUTTING_DOWN)
                await out.send(error_event("overloaded_error", SHUTTING_DOWN))
            else:  # a stream that failed ends with an error event: only its last chunk is looked at
                error = stream_error_type(last)
            await out.eof()
        except asyncio.CancelledError:
            error = CLIENT_CLOSED
            logger.bind(request_id=rid).debug("{} client went away; upstream request cancelled", rid)
            raise
        except Exception as exc:  # an unexpected failure mid-stream: tell the client, log the cause
            error = "api_error"
            logger.bind(request_id=rid).opt(exception=exc).error("{} stream failed: {}", rid, type(exc).__name__)
            try:
                await out.send(error_event("api_error", "internal error while streaming"))
                await out.eof()
            except Exception:
                pass
        finally:
            if resp.close is not None:
                resp.close()
            ctx.finish(resp.status, error)
        return None

    @app.post("/v1/messages")
    async def messages(request: Request):
        return await run_pipeline(request, "messages")

    @app.post("/v1/messages/count_tokens")
    async def count_tokens(request: Request):
        return await run_pipeline(request, "count_tokens")

    @app.get("/health")
    async def health(request: Request):
        """Always 200 while the process serves (an orchestrator restarting it would not bring a
        missing key back); ``status`` is ``degraded`` with ``reasons`` when the default provider
        or every provider is inactive."""
        gen = live.current
        gw = gen.gateway
        problems = health_problems(gw)
        return raw(orjson.dumps({
            "status": "degraded" if problems else "ok",
            **({"reasons": problems} if problems else {}),
            "version": VERSION,
            "generation": gen.number,
            "pid": os.getpid(),
            "default_provider": gw.default_provider,
            "providers": [p.summary() for p in gw.providers.values()],
        }), content_type=_JSON)

    async def authorized(request: Request, gen: Generation) -> tuple[HTTPResponse | None, object]:
        """The gateway-key check of the front pipeline, for the endpoints that have no pipeline:
        (None, the headers an upstream call may use) when the request may go on, else (the 401,
        None). A gateway key presented as the client's key is not a provider key: it is kept
        from any upstream call (a !PASSTHRU provider's model list)."""
        if gen.authenticate is None:
            return None, request.headers
        ctx = Context(next(ids), b"", request.headers)
        try:
            await gen.authenticate.run(ctx)
        except GatewayError as exc:
            return error_response(exc, ctx.request_id), None
        return None, ({} if ctx.gateway_key_in_client_key else request.headers)

    @app.get("/v1/models")
    async def models(request: Request):
        gen = live.current
        refused, headers = await authorized(request, gen)
        return refused or raw(await gen.catalog.listing(headers), content_type=_JSON)

    @app.get("/v1/aliases")
    async def aliases(request: Request):
        gen = live.current
        refused, _ = await authorized(request, gen)
        return refused or raw(orjson.dumps({"data": gen.gateway.alias_index.entries()}), content_type=_JSON)

    metrics.register_routes(app, live)  # /metrics, /metrics/running-totals, /metrics/recent (vandamme/engine/metrics.py)
    dashboard.register_routes(app, live)  # /dashboard/ (vandamme/engine/dashboard.py)

    @app.exception(Exception)
    async def on_error(request: Request, exc: Exception):
        rid = next(ids)
        if isinstance(exc, GatewayError):
            return error_response(exc, rid)
        if isinstance(exc, SanicException):
            status = exc.status_code or 500
            message = str(exc) or "request failed"
            if status == 404:
                message = f"not found: {request.method} {request.path}"
            elif status == 405:
                message = f"method {request.method} not allowed on {request.path}"
            elif status == 413:
                message = "request body is too large (limit 32 MB)"
            return raw(error_body(error_type_for(status), message), status=status, content_type=_JSON,
                       headers={"request-id": rid})
        logger.bind(request_id=rid, status=500).opt(exception=exc).error(
            "unhandled {} on {} {}", type(exc).__name__, request.method, request.path)
        return raw(error_body("api_error", "internal gateway error"), status=500, content_type=_JSON,
                   headers={"request-id": rid})

    def stamp_request_id(request: Request, response) -> None:
        """Response middleware of the routes that do not set a request-id themselves."""
        if "request-id" not in response.headers:
            response.headers["request-id"] = next(ids)

    app.ctx.own_request_id = (messages, count_tokens)
    app.ctx.stamp_request_id = stamp_request_id

    return app
