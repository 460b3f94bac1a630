"""The ``authenticate`` stage: gateway keys (off unless the spec declares some).

With ``server.auth.keys`` (or ``VDM_API_KEYS``) set, every request to the API must present one of
them — in ``x-vandamme-key``, or as the client's API key (``x-api-key``, ``Authorization: Bearer``)
— or it is refused with 401. Keys are compared in constant time, every one of them, so the time
taken says nothing about which key was close. The matching key's name labels the request
(``ctx.client_name``: logs, spans).

A provider with ``!PASSTHRU`` keys takes the client's own provider key from ``x-api-key`` /
``Authorization``; with gateway auth on, those requests must carry the gateway key in
``x-vandamme-key`` so the two keys never mix (a gateway key is never sent upstream).
"""
from __future__ import annotations

import hmac

from .errors import GatewayError
from .keys import client_key

GATEWAY_KEY_HEADER = "x-vandamme-key"


def _unauthorized(message: str) -> GatewayError:
    return GatewayError(401, message, "authentication_error")


class Authenticate:
    name = "authenticate"
    __slots__ = ("keys",)

    def __init__(self, keys: tuple[tuple[str, str], ...]):
        self.keys = tuple((name, key.encode()) for name, key in keys)

    @property
    def detail(self) -> str:
        return f"{len(self.keys)} gateway key{'s' if len(self.keys) != 1 else ''}"

    def _match(self, presented: str) -> str | None:
        """The name of the key ``presented`` is; every key compared (constant time)."""
        given = presented.encode()
        found = None
        for name, key in self.keys:
            if hmac.compare_digest(given, key) and found is None:
                found = name
        return found

    async def run(self, ctx) -> None:
        headers = ctx.headers
        presented = headers.get(GATEWAY_KEY_HEADER)
        client = client_key(headers)
        if presented is None:
            presented = client
        if not presented:
            raise _unauthorized(f"this gateway needs a key: send it in {GATEWAY_KEY_HEADER}, "
                                "x-api-key or Authorization: Bearer")
        found = self._match(presented)
        if found is None:
            raise _unauthorized("invalid gateway key")
        ctx.client_name = found
        # a gateway key among the client's own key headers is never a provider key (!PASSTHRU)
        ctx.gateway_key_in_client_key = bool(client) and (client is presented or self._match(client) is not None)


def authenticate_stage(keys) -> Authenticate | None:
    """The stage for the spec's ``server.auth.keys``, or None when gateway auth is off."""
    pairs = tuple((k["name"], k["key"]) for k in keys or ())
    return Authenticate(pairs) if pairs else None
