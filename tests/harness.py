"""Real parts for end-to-end tests: the real Sanic gateway and real upstream servers, on
127.0.0.1, in one event loop on a background thread, so that synchronous clients (the official
`anthropic` SDK, subprocesses such as the Claude Code CLI) can talk to them from the test."""
from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx

from vandamme.engine.compiler import compile_gateway
from vandamme.engine.loader import load_spec
from vandamme.engine.server import create_app


ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args, env=None, cwd=ROOT, pythonpath=(), timeout=60) -> subprocess.CompletedProcess:
    """`vandamme ARGS` as a real subprocess (``python -m vandamme.engine.cli``), without the environment's
    *_API_KEY variables; ``pythonpath`` puts folders (an installed plugin, test stages) first."""
    e = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    e.update(env or {})
    if pythonpath:
        e["PYTHONPATH"] = os.pathsep.join([*map(str, pythonpath), str(ROOT)])
    return subprocess.run([sys.executable, "-m", "vandamme.engine.cli", *args], capture_output=True, text=True,
                          env=e, cwd=cwd, timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mid_stream(base_url: str, model: str, messages: list):
    """A streamed ``POST /v1/messages`` read up to its first text delta and held open while the
    block runs; leaving the block closes the client's connection mid-stream."""
    body = {"model": model, "max_tokens": 900, "stream": True, "messages": messages}
    with httpx.stream("POST", base_url + "/v1/messages", timeout=10, headers={"x-api-key": "k"}, json=body) as r:
        lines = r.iter_lines()  # kept: a dropped iterator would close the response
        for line in lines:
            if line.startswith("event: content_block_delta"):
                break
        yield r


def close_loop(loop: asyncio.AbstractEventLoop, thread: threading.Thread, timeout: float = 5.0) -> None:
    """Stop a loop served on ``thread`` and close it, its leftover tasks cancelled first (bounded).
    Left pending, they would be destroyed by some later garbage collection, in whatever another
    test is doing then: asyncio logs "Task was destroyed but it is pending!", and a traceback
    formatted then (Python 3.11's traceback carets call ``ast.parse``) inside a running
    ``ast.parse`` (Sanic's start-up) resets the outer call's AST depth counter, which CPython 3.11
    keeps per interpreter: "SystemError: AST constructor recursion depth mismatch"."""
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout)
    if thread.is_alive():  # still busy: leave it (a daemon thread), as before
        return
    pending = asyncio.all_tasks(loop)
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.wait(pending, timeout=timeout))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


class Background:
    """Async fakes (``async with``) served from an event loop on a thread, for subprocess tests."""

    def __init__(self, *fakes):
        self.fakes = fakes
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        for f in self.fakes:
            asyncio.run_coroutine_threadsafe(f.__aenter__(), self.loop).result(10)
        return self

    def __exit__(self, *exc):
        try:
            for f in self.fakes:
                asyncio.run_coroutine_threadsafe(f.__aexit__(None, None, None), self.loop).result(10)
        finally:
            close_loop(self.loop, self.thread)


class LiveGateway:
    """``with LiveGateway(spec_text_fn, upstreams={...}) as gw:`` → ``gw.base_url``.

    ``upstreams`` maps a name to an async-context-manager fake (FakeOpenAI, FakeAnthropic...);
    ``spec`` is a function taking ``{name: base_url}`` and returning the YAML text of one spec
    file, so a test can point providers at the fakes' ephemeral ports.
    """

    def __init__(self, spec, upstreams: dict | None = None, tmp_path: Path | None = None,
                 environ: dict | None = None, tracer_provider=None, timeout: float = 20.0):
        self.spec = spec
        self.upstreams = upstreams or {}
        self.tmp_path = tmp_path
        self.environ = environ or {}
        self.tracer_provider = tracer_provider
        self.timeout = timeout
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.base_url = ""
        self.gateway = None
        self._server = None

    def call(self, coro):
        """Run a coroutine in the servers' loop and wait for it (bounded)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(self.timeout)

    async def _start(self):
        urls = {}
        for name, fake in self.upstreams.items():
            await fake.__aenter__()
            urls[name] = fake.base_url
        spec_dir = self.tmp_path / "specs"
        spec_dir.mkdir(parents=True, exist_ok=True)
        (spec_dir / "gateway.yaml").write_text(self.spec(urls))
        loaded = load_spec(spec_dir, self.environ)
        self.gateway = compile_gateway(loaded, tracer_provider=self.tracer_provider)
        app = self.app = create_app(self.gateway)
        port = free_port()
        self._server = await app.create_server(host="127.0.0.1", port=port, return_asyncio_server=True,
                                               access_log=False)
        await self._server.startup()
        await self._server.before_start()
        await self._server.after_start()
        self.base_url = f"http://127.0.0.1:{port}"

    async def _stop(self):
        if self._server is not None:
            await self._server.before_stop()
            self._server.close()
            await self._server.wait_closed()
            await self._server.after_stop()
        for fake in self.upstreams.values():
            await fake.__aexit__(None, None, None)

    def __enter__(self):
        self.thread.start()
        try:
            self.call(self._start())
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        try:
            self.call(self._stop())
        finally:
            close_loop(self.loop, self.thread)
