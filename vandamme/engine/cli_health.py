"""`vandamme health server [URL]` and `vandamme health upstream [DIR]`.

``server`` asks a running gateway's ``GET /health``. ``upstream`` compiles a spec folder and asks
every active provider, concurrently and with a short timeout, the cheapest authenticated question
it has — its model list — with the key the gateway would use first:

* OpenAI format: ``GET {base_url}/models`` (``Authorization: Bearer``, or the provider's ``auth``);
  Azure style: ``GET {base_url}/openai/models?api-version=…`` with ``api-key`` (Azure OpenAI's
  "Models - List");
* Anthropic format: ``GET {base_url}/v1/models`` with ``x-api-key`` and ``anthropic-version``.

A ``!PASSTHRU`` provider holds no key (each client sends its own): it is asked without one and
counts as healthy when it answers at all. Keys never appear in the output: upstream error text is
scrubbed of every key the spec holds (vandamme.secrets) before it is shown.
"""
from __future__ import annotations

import asyncio
import socket
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from .cli_output import Progress, emit_json, paint, table, use_colour

DEFAULT_URL = "http://127.0.0.1:8082"
ANTHROPIC_VERSION = "2023-06-01"


# ---------------------------------------------------------------------------- health server

def normalise_url(url: str) -> str:
    """``host:port`` or a full URL, with or without ``/health``, as the gateway's base URL."""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    url = url.rstrip("/")
    if url.endswith("/health"):
        url = url[: -len("/health")]
    return url


def url_for(host: str, port: int) -> str:
    """The URL a client on this machine reaches a gateway listening on host:port with."""
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def spec_server_url(spec_dir: str | None, environ: dict | None = None) -> str:
    """The gateway URL a spec folder declares (``server.host``/``port`` after env overlays, so
    ``PORT``/``HOST`` count), or http://127.0.0.1:8082 when the folder cannot be read."""
    from vandamme.sources import SpecErrors

    from .compiler import settings_from
    from .loader import load_spec

    if not spec_dir:
        return DEFAULT_URL
    try:
        settings = settings_from(load_spec(spec_dir, environ).data)
    except (SpecErrors, OSError):
        return DEFAULT_URL
    return url_for(settings.host, settings.port)


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback never via a proxy


def is_vandamme(body: Any) -> bool:
    """Whether a /health answer is a Vandamme gateway's."""
    return (isinstance(body, dict) and body.get("status") in ("ok", "degraded")
            and "generation" in body and isinstance(body.get("providers"), list))


def fetch_health(base_url: str, timeout: float = 5.0) -> dict:
    """``GET base_url/health``: ``{"url", "reachable", "ok", "status", "version", "generation",
    "pid", "reasons", "default_provider", "providers_active", "providers_total", "latency_ms",
    "error"}``. ``ok`` is true only for a Vandamme gateway answering status ``ok``."""
    out: dict[str, Any] = {"url": base_url, "reachable": False, "ok": False, "status": None,
                           "version": None, "generation": None, "pid": None, "reasons": [],
                           "default_provider": None, "providers_active": None,
                           "providers_total": None, "latency_ms": None, "error": None}
    started = time.perf_counter()
    try:
        req = urllib.request.Request(base_url + "/health", headers={"accept": "application/json",
                                                                   "user-agent": "vandamme-cli"})
        with _OPENER.open(req, timeout=timeout) as r:
            status, raw = r.status, r.read(1 << 20)
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read(1 << 16) if exc.fp else b""
    except (urllib.error.URLError, OSError, ValueError) as exc:
        out["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
        out["error"] = _network_reason(exc)
        return out
    out["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
    out["reachable"] = True
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if not is_vandamme(body):
        out["error"] = f"HTTP {status}: not a Vandamme /health answer"
        return out
    providers = body["providers"]
    out.update(status=body["status"], version=body.get("version"), generation=body.get("generation"),
               pid=body.get("pid"), reasons=list(body.get("reasons") or []),
               default_provider=body.get("default_provider"),
               providers_active=sum(1 for p in providers if isinstance(p, dict) and p.get("active")),
               providers_total=len(providers))
    out["ok"] = status == 200 and body["status"] == "ok"
    if status != 200:
        out["error"] = f"HTTP {status}"
    return out


def _network_reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, socket.gaierror):
        return f"unknown host ({reason.strerror})"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    return str(reason) or type(reason).__name__


def print_server(result: dict) -> None:
    colour = use_colour()
    url = result["url"]
    if not result["reachable"]:
        print(f"{url}: {paint('unreachable', 'red', colour)}: {result['error']}")
        return
    if result["status"] is None:
        print(f"{url}: {paint('not ok', 'red', colour)}: {result['error']}")
        return
    state = paint(result["status"], "green" if result["ok"] else "yellow", colour)
    print(f"{url}: {state} (version {result['version']}, generation {result['generation']}, "
          f"pid {result['pid']}, {result['latency_ms']:.0f} ms)")
    print(f"providers: {result['providers_active']} active of {result['providers_total']}; "
          f"default: {result['default_provider'] or '-'}")
    for reason in result["reasons"]:
        print(f"degraded: {reason}")
    if result["error"]:
        print(f"error: {result['error']}")


def health_server(url: str, timeout: float, as_json: bool) -> int:
    with Progress(f"asking {url}/health"):
        result = fetch_health(url, timeout)
    if as_json:
        emit_json(result)
    else:
        print_server(result)
    return 0 if result["ok"] else 1


# ---------------------------------------------------------------------------- health upstream

def probe_request(provider) -> tuple[str, dict[str, str], dict[str, str], str | None, str]:
    """(url, query, headers, key used, what the auth column says) for one provider."""
    from vandamme.transforms.headers import set_auth

    from .models import models_path

    url, query = provider.base_url + models_path(provider), dict(provider.query)
    headers = {"accept": "application/json", "user-agent": "vandamme-cli"}
    if provider.format == "anthropic":
        headers["anthropic-version"] = ANTHROPIC_VERSION
    static = [k for k in provider.spec.get("api_keys") or [] if k != "!PASSTHRU"]
    if provider.passthrough:
        key, auth = None, "client key"
    elif static:
        key = static[0]
        auth = f"key 1 of {len(static)}" if len(static) > 1 else "key"
    else:
        key, auth = None, "none"
    set_auth(headers, provider.auth, key)
    return url, query, headers, key, auth


def _short_error(raw: bytes) -> str:
    """The message of an upstream error body (OpenAI / Anthropic / Google shapes), or its start."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    msg = None
    if isinstance(body, list) and body and isinstance(body[0], dict):
        body = body[0]
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            msg = err.get("message") or err.get("type")
        elif isinstance(err, str):
            msg = err
        msg = msg or body.get("message") or body.get("detail")
    if not isinstance(msg, str):
        msg = raw[:200].decode("utf-8", "replace")
    msg = " ".join(msg.split())
    return msg[:160] + ("…" if len(msg) > 160 else "")


def _clean(text: str, key: str | None) -> str:
    from vandamme.secrets import scrub

    text = scrub(text)
    if key and len(key) >= 4:
        text = text.replace(key, "[REDACTED]")
    return text


def _shown_url(url: str) -> str:
    """The URL without credentials a base URL may carry (user:password@) or a query."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=netloc, query="", fragment=""))


async def probe(session, provider, timeout: float) -> dict:
    """One provider's row: ``result`` is ``ok``, ``unreachable``, ``auth_rejected``, ``error`` or
    ``client_key`` (a !PASSTHRU provider that answered: reachable, its auth is each client's)."""
    import aiohttp

    url, query, headers, key, auth = probe_request(provider)
    shown = _shown_url(url)
    row: dict[str, Any] = {"provider": provider.name, "format": provider.format, "url": shown,
                           "auth": auth, "result": None, "ok": False, "http_status": None,
                           "latency_ms": None, "detail": ""}
    started = time.perf_counter()
    try:
        async with session.get(url, params=query or None, headers=headers, allow_redirects=False,
                               timeout=aiohttp.ClientTimeout(total=timeout)) as r:
            status = r.status
            raw = await r.content.read(1 << 16) if status >= 400 else b""
    except asyncio.TimeoutError:
        row.update(result="unreachable", detail=f"timed out after {timeout:g} s")
    except aiohttp.ClientSSLError as exc:
        row.update(result="unreachable", detail=f"TLS: {type(exc).__name__}")
    except aiohttp.ClientConnectorError as exc:
        row.update(result="unreachable", detail=_network_reason(exc.os_error) if exc.os_error else str(exc))
    except aiohttp.ClientError as exc:
        row.update(result="unreachable", detail=str(exc) or type(exc).__name__)
    else:
        row["http_status"] = status
        if provider.passthrough:
            row.update(result="client_key", ok=True,
                       detail=f"reachable (HTTP {status}); auth not checked: each client sends its own key")
        elif 200 <= status < 300:
            row.update(result="ok", ok=True, detail="")
        elif status in (401, 403):
            why = _short_error(raw)
            hint = f"; the upstream wants a key: set {provider.name.upper()}_API_KEY" if key is None else ""
            row.update(result="auth_rejected", detail=f"HTTP {status}: {why}{hint}")
        else:
            row.update(result="error", detail=f"HTTP {status}: {_short_error(raw)}")
    row["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
    row["detail"] = _clean(row["detail"], key)
    return row


async def probe_all(providers, timeout: float, progress: Progress | None = None) -> list[dict]:
    import aiohttp

    done = 0

    async def one(p):
        nonlocal done
        row = await probe(session, p, timeout)
        done += 1
        if progress is not None:
            progress.update(f"{done}/{len(providers)} answered")
        return row

    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=60)
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
        return list(await asyncio.gather(*(one(p) for p in providers)))


RESULT_TEXT = {"ok": "ok", "unreachable": "unreachable", "auth_rejected": "auth rejected",
               "error": "error", "client_key": "client key"}
RESULT_COLOUR = {"ok": "green", "client_key": "green", "unreachable": "red", "auth_rejected": "red",
                 "error": "red"}


def health_upstream(gw, timeout: float, as_json: bool) -> int:
    active = [p for p in gw.providers.values() if p.active]
    inactive = [{"provider": p.name, "reason": p.inactive_reason}
                for p in gw.providers.values() if not p.active]
    with Progress(f"checking {len(active)} provider{'s' if len(active) != 1 else ''}") as progress:
        rows = asyncio.run(probe_all(active, timeout, progress)) if active else []
    failed = [r for r in rows if not r["ok"]]
    code = 1 if failed or not rows else 0
    if as_json:
        emit_json({"ok": code == 0, "providers": rows, "inactive": inactive})
        return code
    if rows:
        table([[r["provider"], RESULT_TEXT[r["result"]] + (f" {r['http_status']}" if r["result"] == "error" else ""),
                f"{r['latency_ms']:.0f} ms", r["auth"], r["url"], r["detail"]] for r in rows],
              ["PROVIDER", "RESULT", "LATENCY", "AUTH", "CHECKED", "DETAIL"],
              colours=[RESULT_COLOUR[r["result"]] for r in rows], colour_column=1)
        print(f"{len(rows)} checked: {len(rows) - len(failed)} healthy, {len(failed)} failing")
    else:
        print("no active provider: set a provider's key (e.g. OPENAI_API_KEY) or its base URL")
    if inactive:
        print(f"{len(inactive)} inactive, not checked: " + ", ".join(i["provider"] for i in inactive))
    return code
