"""Listening sockets that accept without ``asyncio.Server``.

On CPython 3.13.0 an ``asyncio.Server`` can accept a connection just before
``Server.close()`` and build its transport after the close: ``Server._attach`` then
fails an assertion inside asyncio, the error is swallowed, and the socket is left open
for the garbage collector (a ResourceWarning; CI saw it on the simulated Gateway when a
client reconnected the moment the Gateway restarted). Every server of the project (the
simulated Gateway, the hub's lane, the TWS front door, the health endpoint) therefore
listens through an :class:`Acceptor`: it accepts in a reader callback of its own and hands
each socket to ``loop.connect_accepted_socket``, so every accepted socket is owned at
once. A socket accepted after :meth:`Acceptor.close` is closed; a connection whose
transport is made after it is aborted (its protocol sees ``connection_lost``), and
``close`` waits until no connection is half made. The server then drops the connections
it knows. TCP connections get ``TCP_NODELAY``, as ``asyncio.Server``'s do.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

BACKLOG = 128
ACCEPT_RETRY = 1.0  # seconds before accepting again after accept() failed (out of fds)

ProtocolFactory = Callable[[], asyncio.BaseProtocol]


class Acceptor:
    """Accepts on ``listener`` (bound and listening) for as long as it is open; each
    connection gets a protocol from ``factory``. Make one inside the running loop."""

    def __init__(self, listener: socket.socket, factory: ProtocolFactory) -> None:
        listener.setblocking(False)
        self._listener: socket.socket | None = listener
        self._factory = factory
        self._nodelay = listener.family in (socket.AF_INET, socket.AF_INET6)
        self._connecting: set[asyncio.Task[Any]] = set()
        self._loop = asyncio.get_running_loop()
        self.address: Any = listener.getsockname()
        self._loop.add_reader(listener.fileno(), self._accept, listener)

    @classmethod
    def tcp(cls, host: str, port: int, factory: ProtocolFactory) -> Acceptor:
        """Listen on ``host``:``port`` (0: a free port). A host name listens on its first
        address only (``asyncio`` would take all): name an address to be exact.
        OSError if it cannot be bound."""
        family, _, _, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        listener = socket.create_server(address, family=family, backlog=BACKLOG)
        return cls(listener, factory)

    @classmethod
    def unix(cls, path: str | os.PathLike[str], factory: ProtocolFactory) -> Acceptor:
        """Listen on a Unix socket at ``path`` (the caller sets the umask and removes
        a stale file first). OSError if it cannot be bound."""
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(os.fspath(path))
            listener.listen(BACKLOG)
        except OSError:
            listener.close()
            raise
        return cls(listener, factory)

    @property
    def port(self) -> int:
        """The TCP port listened on."""
        return int(self.address[1])

    @property
    def listening(self) -> bool:
        return self._listener is not None

    async def close(self) -> None:
        """Stop listening; return once every connection accepted before is made (then
        the server's to drop) or aborted."""
        listener, self._listener = self._listener, None
        if listener is not None:
            self._loop.remove_reader(listener.fileno())
            listener.close()
        if self._connecting:
            await asyncio.gather(*self._connecting, return_exceptions=True)

    def _accept(self, listener: socket.socket) -> None:
        """The listener is readable: take every connection waiting in its queue."""
        if self._listener is not listener:  # closed since the loop saw it readable
            return
        for _ in range(BACKLOG):
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of fds: try again in a second, not in a busy loop
                log.warning("accept on %s failed (%s); accepting again in %g s",
                            self.address, exc, ACCEPT_RETRY)  # fmt: skip
                self._loop.remove_reader(listener.fileno())
                self._loop.call_later(ACCEPT_RETRY, self._resume, listener)
                return
            conn.setblocking(False)
            if self._nodelay:  # else the peer's delayed ACK holds small writes back
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = self._loop.create_task(
                self._loop.connect_accepted_socket(self._factory, conn)
            )
            self._connecting.add(task)
            task.add_done_callback(functools.partial(self._connected, conn))

    def _resume(self, listener: socket.socket) -> None:
        if self._listener is listener:
            self._loop.add_reader(listener.fileno(), self._accept, listener)

    def _connected(self, conn: socket.socket, task: asyncio.Task[Any]) -> None:
        """An accepted socket's transport is made, or failed to be (then the socket is
        closed here, also when the task was cancelled before it ran, at a loop's end)."""
        self._connecting.discard(task)
        if task.cancelled() or task.exception() is not None:
            if not task.cancelled():
                log.info("connection dropped while accepted: %s", task.exception())
            conn.close()
        elif self._listener is None:  # made after close(): the server no longer drops it
            transport, _ = task.result()
            transport.abort()
