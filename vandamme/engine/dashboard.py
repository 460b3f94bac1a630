"""The operator dashboard at ``/dashboard/``: static HTML, JS and CSS shipped in
``vandamme/engine/dashboard_static/`` (no build step; uPlot vendored from the npm registry for the charts)
and one JSON endpoint, ``GET /dashboard/state.json``, with what the compiled spec says: providers
(active or not and why, format, base URL, key count and keys in cooldown, never a key), aliases,
routes, the compiled graph, the serving generation, its load time and the version. The page polls
that and the metrics endpoints (``/metrics/running-totals``, ``/metrics/recent``) every 2 s.

Auth: the static files hold no data and are always served. ``state.json`` tells what
``/v1/aliases`` tells and more, so with gateway auth on (``server.auth.keys``) it needs a gateway
key like ``/v1/aliases`` does; the page then asks for one and sends it in ``x-vandamme-key``
(kept in the tab's sessionStorage only). Nothing here runs on the request hot path.
"""
from __future__ import annotations

import itertools
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import orjson
from sanic import Request
from sanic.response import HTTPResponse, raw, redirect

from vandamme.transforms.errors import GatewayError, error_body
from vandamme.kernel import Context
from vandamme.secrets import scrub

from .graph import graph_json
from .version import VERSION

STATIC_DIR = Path(__file__).resolve().parent / "dashboard_static"
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8"}
# The page loads only its own files and talks only to this gateway.
_SECURITY = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}
_JSON = "application/json"
_ids = itertools.count(1)


def static_files(folder: Path = STATIC_DIR) -> dict[str, tuple[bytes, str]]:
    """``{name: (bytes, content type)}`` for every servable file of the folder (read once, at
    start: the set of names is fixed, so no request path ever reaches the file system)."""
    out = {}
    for path in sorted(folder.iterdir()):
        ctype = _TYPES.get(path.suffix)
        if ctype and path.is_file():
            out[path.name] = (path.read_bytes(), ctype)
    return out


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _key_ring(provider):
    """The provider's key ring (shared by its pipelines' select_key and upstream stages)."""
    for pipe in (provider.pipeline, provider.count_pipeline, *provider.route_pipelines.values()):
        if pipe is None:
            continue
        for stage in pipe.stages:
            ring = getattr(stage, "ring", None)
            if ring is not None and hasattr(ring, "cooling"):
                return ring
    return None


def provider_state(provider) -> dict:
    """What the dashboard shows of a provider: counts only, never a key."""
    ring = _key_ring(provider)
    return {
        "name": provider.name,
        "format": provider.format,
        "base_url": provider.base_url,
        "active": provider.active,
        "inactive_reason": provider.inactive_reason,
        "keys": "passthrough" if provider.passthrough else provider.key_count,
        "keys_cooling": ring.cooling() if ring is not None else 0,
        "middleware": [m.declared.name for m in provider.middleware],
    }


def state(live, started_at: float) -> dict:
    """The JSON of ``GET /dashboard/state.json`` for the generation serving now."""
    gen = live.current
    gw = gen.gateway
    graph = graph_json(gw)
    aliases = [{**e.as_dict(), "active": e.active} for e in gw.alias_index.records(include_inactive=True)]
    routes = [{**route, "match": r.match_spec} for route, r in zip(graph["routes"], gw.router.routes)]
    return {
        "version": VERSION,
        "pid": os.getpid(),
        "started_at": _iso(started_at),
        "generation": gen.number,
        "loaded_at": _iso(getattr(gen, "loaded_at", None)),
        "now": _iso(time.time()),
        "auth": gen.authenticate is not None,
        "default_provider": gw.default_provider,
        "providers": [provider_state(p) for p in gw.providers.values()],
        "aliases": aliases,
        "routes": routes,
        "graph": graph,
    }


def state_body(live, started_at: float) -> bytes:
    """``state`` as JSON bytes, with any known secret replaced (a key never leaves, even one
    someone wrote into a base URL or a route's match)."""
    return scrub(orjson.dumps(state(live, started_at), default=str).decode()).encode()


def register_routes(app, live) -> None:
    """``/dashboard`` (redirect), ``/dashboard/`` (the page), ``/dashboard/<file>`` (its static
    files) and ``/dashboard/state.json``."""
    files = static_files()
    index = files["index.html"]
    started_at = time.time()

    def _file(name: str) -> HTTPResponse:
        body, ctype = files[name]
        return raw(body, content_type=ctype, headers=dict(_SECURITY))

    async def _refused(request: Request) -> HTTPResponse | None:
        """The gateway-key check of the front pipeline (None when the request may go on)."""
        authenticate = live.current.authenticate
        if authenticate is None:
            return None
        try:
            await authenticate.run(Context(f"dash_{next(_ids)}", b"", request.headers))
        except GatewayError as exc:
            return raw(exc.body(), status=exc.status, headers=dict(exc.headers), content_type=_JSON)
        return None

    @app.get("/dashboard", name="dashboard_redirect", strict_slashes=True)
    async def dashboard_redirect(request: Request):
        return redirect("/dashboard/", status=308)

    @app.get("/dashboard/", name="dashboard_index", strict_slashes=True)
    async def dashboard_index(request: Request):
        body, ctype = index
        return raw(body, content_type=ctype, headers=dict(_SECURITY))

    @app.get("/dashboard/state.json", name="dashboard_state", strict_slashes=True)
    async def dashboard_state(request: Request):
        refused = await _refused(request)
        if refused is not None:
            return refused
        return raw(state_body(live, started_at), content_type=_JSON, headers={"cache-control": "no-store"})

    @app.get("/dashboard/<name:str>", name="dashboard_static", strict_slashes=True)
    async def dashboard_static(request: Request, name: str):
        if name not in files:
            return raw(error_body("not_found_error", f"not found: GET {request.path}"), status=404,
                       content_type=_JSON)
        return _file(name)
