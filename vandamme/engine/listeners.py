"""One listening socket per worker process, so that the kernel shares connections out evenly.

Sanic's multi-worker server binds one listening socket in the main process and every worker
accepts from it. Under load the worker that wakes first takes every pending connection (asyncio
accepts up to the backlog at once), so a burst of connections — a load balancer's pool, wrk's 64 —
can settle 27% on one worker and 58% on another for as long as the connections live. With
``SO_REUSEPORT`` each worker listens on a socket of its own bound to the same address and Linux
spreads new connections across them by a hash of the connection's addresses (nginx's
``reuseport``, Envoy's per-worker listeners).

How it is put in place:

* the main process binds the address with ``SO_REUSEPORT`` and does not listen on it
  (:func:`reserve`): the port is taken — a second server on it fails at start — but the socket
  is in no accept group, so no connection waits on it;
* each worker, while its app is built, puts a listening socket of its own on the same address
  under the file descriptor number of the inherited one (:func:`listen_here`, ``dup2``): Sanic
  then serves that descriptor, unaware. A worker the manager restarts does the same.

Where ``SO_REUSEPORT`` is missing (not Linux/BSD), :func:`reserve` returns None and Sanic's shared
socket is used as before.
"""
from __future__ import annotations

import os
import socket

BACKLOG = 100  # Sanic's default; asyncio's create_server listens again with the same figure


def reserve(host: str, port: int) -> socket.socket | None:
    """The main process's hold on host:port: bound with SO_REUSEPORT, not listening. None when
    the platform has no SO_REUSEPORT. Raises OSError as ``bind`` does (port in use...)."""
    if not hasattr(socket, "SO_REUSEPORT"):
        return None
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def listen_here(reserved: socket.socket, backlog: int = BACKLOG) -> None:
    """In a worker process: a listening socket of this process's own on the reserved address, put
    under the reserved socket's descriptor number (the main process and the other workers keep
    theirs). Called once per process, before the server starts."""
    own = socket.socket(reserved.family, socket.SOCK_STREAM, reserved.proto)
    try:
        own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        own.bind(reserved.getsockname())
        own.listen(backlog)
        os.dup2(own.fileno(), reserved.fileno(), inheritable=False)
    finally:
        own.close()
