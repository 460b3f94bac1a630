"""Reload plumbing of `vandamme run`: ``--watch`` (reload when a spec file of the folder changes)
and, with ``--workers N``, SIGHUP to the main process reaching every worker process.

A reload is always the same one: each serving process loads, validates and compiles the folder
beside its running graph and swaps only if it is valid (``vandamme.engine.server.Serving.reload``). So
both pieces only *ask* for it: the watcher sends SIGHUP to its own process, and in the main
process of a multi-worker server the :class:`WorkerReloads` forwarder passes a SIGHUP on to every
worker process. Requests in flight finish on the graph they started with; nothing restarts.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from loguru import logger

held_hups: list[int] = []  # SIGHUPs received while starting (hold_sighup)


def hold_sighup() -> None:
    """Until the server is up, remember a SIGHUP instead of dying of it (its default action); the
    server reloads once it is up (engine.server ``_signals``). Main thread only. Here, not in the
    server module, so that `vandamme run` can call it before anything heavy is imported."""
    signal.signal(signal.SIGHUP, lambda signum, frame: held_hups.append(signum))


SPEC_SUFFIXES = (".yaml", ".yml")  # what vandamme.engine.loader reads


class SpecWatcher(threading.Thread):
    """Polls the spec folder's ``*.yaml``/``*.yml`` files (name, mtime, size) every ``interval``
    seconds; on a change (a file added, removed or modified) it waits until the folder has been
    still for ``settle`` seconds (an editor or ``cp`` writes in steps), then calls ``on_change``
    once. Polling needs no dependency and sees every filesystem, network mounts and bind-mounted
    ConfigMaps included; one stat per file per second costs nothing measurable."""

    def __init__(self, directory: str | os.PathLike, on_change, interval: float = 1.0, settle: float = 0.5):
        super().__init__(name="vandamme-spec-watcher", daemon=True)
        self.directory = Path(directory)
        self.on_change = on_change
        self.interval = interval
        self.settle = settle
        self._stopped = threading.Event()
        self.last = self.snapshot()

    def snapshot(self) -> dict[str, tuple[int, int]]:
        out = {}
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return out
        for entry in entries:
            if entry.name.endswith(SPEC_SUFFIXES):
                try:
                    if entry.is_file():
                        st = entry.stat()
                        out[entry.name] = (st.st_mtime_ns, st.st_size)
                except OSError:  # removed meanwhile
                    continue
        return out

    @staticmethod
    def describe(old: dict, new: dict) -> str:
        added = sorted(new.keys() - old.keys())
        removed = sorted(old.keys() - new.keys())
        changed = sorted(k for k in new.keys() & old.keys() if new[k] != old[k])
        parts = [f"{what} {', '.join(names)}" for what, names in
                 (("added", added), ("removed", removed), ("modified", changed)) if names]
        return "; ".join(parts)

    def run(self) -> None:
        while not self._stopped.wait(self.interval):
            now = self.snapshot()
            if now == self.last:
                continue
            while True:  # debounce: until the folder stops changing
                if self._stopped.wait(self.settle):
                    return
                again = self.snapshot()
                if again == now:
                    break
                now = again
            if now == self.last:  # changed and changed back
                continue
            logger.info("spec folder {} changed ({}): reloading", self.directory, self.describe(self.last, now))
            self.last = now
            try:
                self.on_change()
            except Exception as exc:  # keep watching
                logger.opt(exception=exc).error("could not ask for a reload: {}", type(exc).__name__)

    def stop(self) -> None:
        self._stopped.set()


def reload_self() -> None:
    """Ask this process for a reload, as an operator's ``kill -HUP`` would."""
    os.kill(os.getpid(), signal.SIGHUP)


class WorkerReloads:
    """In the main process of a multi-worker server: SIGHUP makes every worker process reload.

    The signal handler only writes a byte to a pipe (async-signal-safe; the main thread is busy in
    Sanic's process monitor); a thread reads it and sends SIGHUP to each server process of Sanic's
    worker manager (``app._manager``) once that process is serving, i.e. has installed its own
    SIGHUP handler (a process still starting would die of the signal; it waits, bounded). A
    process restarted meanwhile (another pid) is skipped: it reads the spec folder as it is now.
    """

    WAIT_FOR_SERVING = 60.0

    def __init__(self, app):
        self.app = app
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self.thread = threading.Thread(target=self._run, name="vandamme-reload-forwarder", daemon=True)

    def install(self) -> None:
        """Main thread only."""
        signal.signal(signal.SIGHUP, self._on_signal)
        self.thread.start()

    def _on_signal(self, signum, frame) -> None:
        try:
            os.write(self._write, b"h")
        except BlockingIOError:  # a reload is already asked for and not yet taken
            pass

    def _run(self) -> None:
        while True:
            try:
                data = os.read(self._read, 64)  # every SIGHUP received so far: one round
            except OSError:
                return
            if not data:
                return
            try:
                self.forward()
            except Exception as exc:
                logger.opt(exception=exc).error("SIGHUP not forwarded to the workers: {}", type(exc).__name__)

    @staticmethod
    def servers(manager) -> list[tuple[str, int]]:
        """(name, pid) of each server process of Sanic's worker manager."""
        for _ in range(3):
            try:
                return [(p.name, p.pid) for w in list(manager.transient.values()) for p in list(w.processes)
                        if p.pid and "Server" in p.name]
            except RuntimeError:  # the manager changed its dict meanwhile
                time.sleep(0.05)
        return []

    def forward(self) -> None:
        manager = getattr(self.app, "_manager", None)
        if manager is None:  # no worker yet: each will read the folder as it is when it starts
            return
        pending = self.servers(manager)
        logger.info("SIGHUP: reloading {} worker process{}", len(pending), "es" if len(pending) != 1 else "")
        state = manager.worker_state
        deadline = time.monotonic() + self.WAIT_FOR_SERVING
        while pending:
            waiting = []
            for name, pid in pending:
                try:
                    info = dict(state.get(name) or {})
                except (EOFError, OSError):  # the manager is shutting down
                    return
                if not info or info.get("pid", pid) != pid:
                    continue  # gone, or restarted: starts on the current folder
                if info.get("serving"):
                    try:
                        os.kill(pid, signal.SIGHUP)
                    except ProcessLookupError:
                        pass
                else:
                    waiting.append((name, pid))
            pending = waiting
            if pending:
                if time.monotonic() > deadline:
                    logger.warning("SIGHUP not delivered to {}: not serving after {:g} s",
                                   ", ".join(n for n, _ in pending), self.WAIT_FOR_SERVING)
                    return
                time.sleep(0.1)


def when_workers_serve(app, then, bound: float = WorkerReloads.WAIT_FOR_SERVING) -> None:
    """In the main process of a multi-worker server (from ``main_process_ready``, before the
    workers start): ``then(app)`` on a thread once every server process of Sanic's worker manager
    says it is serving — each listens on a socket of its own (engine/listeners.py), so the port
    answers only from then on — or after ``bound`` seconds, whichever comes first."""

    def wait() -> None:
        manager = getattr(app, "_manager", None)
        deadline = time.monotonic() + bound
        while manager is not None and time.monotonic() < deadline:
            try:
                states = [dict(manager.worker_state.get(name) or {})
                          for name, _ in WorkerReloads.servers(manager)]
            except (EOFError, OSError):  # shutting down
                return
            if len(states) >= app.state.workers and all(s.get("serving") for s in states):
                break
            time.sleep(0.05)
        then(app)

    threading.Thread(target=wait, name="vandamme-serving-line", daemon=True).start()
