"""SIGINT / SIGTERM in the main process of a multi-worker server, handled off the main thread.

Sanic's worker manager stops the workers from its signal handler, which runs on the main thread
between two bytecodes — possibly in the middle of the main thread's own call to the shared worker
state (a ``multiprocessing`` manager proxy: send a request, read the reply). The handler's calls
then read that reply as their own, the interrupted call waits for one that never comes, and the
server hangs with its workers gone (seen with a SIGTERM in the first ~100 ms after the listening
line: "Worker complete" logged, then nothing, until the process was killed).

Here the handler only writes the signal number to a pipe (async-signal-safe). A thread reads it
and does what Sanic's handler does, with proxy calls of its own (a manager proxy keeps one
connection per thread): once Sanic has seen every worker start (its ack wait, which a stopped
worker would hold up to its 30 s threshold), it terminates the workers and tells the monitor loop
to stop. A second signal kills the process group, as Sanic's does.
"""
from __future__ import annotations

import os
import signal
import threading

from loguru import logger

ACK_WAIT = 35.0  # Sanic's own ack threshold is 30 s; after that it kills the workers itself


class MainProcessSignals:
    """Install from the main thread once Sanic's worker manager exists (``main_process_ready``)."""

    def __init__(self, manager):
        self.manager = manager
        self.acked = threading.Event()
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self.thread = threading.Thread(target=self._run, name="vandamme-shutdown", daemon=True)
        wait_for_ack = manager.wait_for_ack

        def wait_then_say_so():
            try:
                wait_for_ack()
            finally:
                self.acked.set()

        manager.wait_for_ack = wait_then_say_so  # the instance's, called by manager.monitor()

    def install(self) -> None:
        self.thread.start()
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        try:
            os.write(self._write, bytes([signum]))
        except BlockingIOError:
            pass

    def _run(self) -> None:
        asked = False
        while True:
            try:
                data = os.read(self._read, 16)
            except OSError:
                return
            if not data:
                return
            for signum in data:
                if asked:
                    logger.info("Shutdown interrupted. Killing.")
                    self.manager.kill()
                    return
                asked = True
                logger.info("Received signal {}. Shutting down.", signal.Signals(signum).name)
                self.acked.wait(ACK_WAIT)
                try:
                    self.manager.shutdown()  # SIGINT to each worker, state TERMINATED
                finally:
                    self.manager.monitor_publisher.send(None)  # the monitor loop ends, then joins
