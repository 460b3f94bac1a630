"""Serve an aiohttp app on 127.0.0.1 until SIGTERM/SIGINT: the run loop shared by the bench's
helper servers (``slow_upstream.py``, ``capture_upstream.py``, ``otlp_sink.py``)."""
from __future__ import annotations

import argparse
import asyncio

from aiohttp import web


def serve(app: web.Application, port: int) -> None:
    """Listen on 127.0.0.1:``port``, print ``ready`` once listening, run until stopped."""

    async def run():
        runner = web.AppRunner(app, access_log=None, handle_signals=True)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
        print("ready", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


def main(make_app) -> None:
    """The whole command line of a helper server that takes only ``--port``."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    serve(make_app(), ap.parse_args().port)
