"""Anthropic-shaped errors: what every failure leaves the gateway as."""
from __future__ import annotations

import orjson

from vandamme.secrets import scrub

# HTTP status -> Anthropic error type (https://docs.anthropic.com/en/api/errors)
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_type_for(status: int) -> str:
    if status in ERROR_TYPES:
        return ERROR_TYPES[status]
    if 400 <= status < 500:
        return "invalid_request_error"
    return "api_error"


class GatewayError(Exception):
    """Raised by any stage; the server turns it into an Anthropic error response.

    ``headers`` are extra response headers to keep (e.g. ``retry-after``).
    """

    def __init__(self, status: int, message: str, error_type: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type or error_type_for(status)
        self.headers = headers or {}

    def body(self) -> bytes:
        return error_body(self.error_type, self.message)


def invalid_request(message: str) -> GatewayError:
    return GatewayError(400, message, "invalid_request_error")


def error_body(error_type: str, message: str) -> bytes:
    """The Anthropic error JSON; known secrets in ``message`` are scrubbed (vandamme.secrets)."""
    message = scrub(message)
    try:
        return orjson.dumps({"type": "error", "error": {"type": error_type, "message": message}})
    except orjson.JSONEncodeError:  # text that is not valid Unicode (a client's undecodable bytes)
        message = message.encode("utf-8", "backslashreplace").decode("utf-8")
        return orjson.dumps({"type": "error", "error": {"type": error_type, "message": message}})


def error_event(error_type: str, message: str) -> bytes:
    """An SSE ``event: error`` frame, for failures after the stream has started."""
    return b"event: error\ndata: " + error_body(error_type, message) + b"\n\n"
