"""The HTTP/1.1 connection protocol the gateway serves with: Sanic's, plus

* deadlines for slow clients: a request's head must arrive within ``REQUEST_TIMEOUT`` seconds of
  its first byte, its body within max(``BODY_TIMEOUT``, size / ``BODY_MIN_RATE``) seconds of that
  first byte (size: the declared Content-Length, or the chunks received so far). Sanic measures its
  timeouts from the last byte received, so a client trickling one byte a second never hit them.
  A late client gets a 408 and the connection is closed;
* a 400 for a request line Sanic cannot even echo back (a NUL in the URL closed the connection
  unanswered, with a traceback in the log);
* shutdown: a connection busy when the server begins to stop closes after its request instead of
  waiting for another, so that the process can exit as soon as the last request ends.

The limits are Sanic config values (``app.config``), set by ``vandamme.engine.server.create_app``.
"""
from __future__ import annotations

from time import monotonic

from sanic.exceptions import BadRequest, RequestTimeout
from sanic.http import Http, Stage
from sanic.server.protocols.http_protocol import HttpProtocol


class GatewayHttp(Http):
    """Sanic's HTTP/1.1 request cycle, answering every malformed request line."""

    __slots__ = ()

    def create_empty_request(self) -> None:
        """Sanic answers a malformed request through a stand-in request built from its URL, with
        only non-ASCII bytes escaped: a control byte made that fail again. Use "*" then."""
        try:
            super().create_empty_request()
        except BadRequest:  # the URL could not be parsed (Sanic's BadURL)
            self.url = None
            super().create_empty_request()


class GatewayProtocol(HttpProtocol):
    """Sanic's connection protocol with the deadlines and shutdown behaviour above."""

    __slots__ = ("body_timeout", "body_min_rate")
    HTTP_CLASS = GatewayHttp

    def _setup(self):
        super()._setup()
        self.body_timeout = self.app.config.BODY_TIMEOUT
        self.body_min_rate = self.app.config.BODY_MIN_RATE

    @staticmethod
    def _receiving(http) -> bool:
        """The request's head or body is still arriving (a body can outlive an early answer, such
        as a 404: Sanic reads the rest of it before the next request). ``request_body`` is unset
        until the connection's first request begins."""
        return http.stage is Stage.REQUEST or bool(getattr(http, "request_body", None))

    def data_received(self, data: bytes):
        """Sanic restarts its clock on every byte received; while a request arrives, keep it at the
        request's first byte."""
        http = self.http
        if http is not None and self._receiving(http):
            started = self._time
            super().data_received(data)
            self._time = started
        else:
            super().data_received(data)

    def check_timeouts(self):
        """Cut a request whose head or body is late (408 when an answer is still possible); the
        rest is Sanic's (keep-alive and response timeouts, rescheduling)."""
        http = self.http
        if self._task and http is not None and self._receiving(http):
            if http.stage is Stage.REQUEST:
                what, allowed = "request head", self.request_timeout
            else:
                what = "request body"
                allowed = max(self.body_timeout, http.request_bytes / self.body_min_rate)
            if monotonic() - self._time > allowed:
                http.exception = RequestTimeout(f"{what} not received within {allowed:g} s")
                http.request_body = None  # never wait for the rest of it
                http.keep_alive = False
                self._task.cancel()
                return
        super().check_timeouts()

    def close_if_idle(self) -> bool:
        """Sanic calls this on every connection when it begins to shut down: a busy connection
        closes after its current request."""
        if super().close_if_idle():
            return True
        if self.http is not None:
            self.http.keep_alive = False
        return False
