"""A small aiohttp server on 127.0.0.1 (an ephemeral port) for fakes: subclass, add routes."""
from __future__ import annotations

from aiohttp import web


class LoopbackServer:
    """``async with Sub() as s: s.base_url``. A subclass adds its handlers in ``routes(app)``."""

    def __init__(self):
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def __aenter__(self):
        app = web.Application()
        self.routes(app)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc):
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
