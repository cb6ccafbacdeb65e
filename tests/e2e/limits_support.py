"""Idle TCP connections for the connection-limit tests (tests/e2e/test_limits*.py)."""

from __future__ import annotations

import contextlib
import errno
import select
import socket
import time
from collections.abc import Iterator


@contextlib.contextmanager
def idle_flood(port: int, n: int, wait: float = 2.0) -> Iterator[list[socket.socket]]:
    """``n`` TCP connections to 127.0.0.1:``port`` that never send a byte.

    Connects are started all at once and given ``wait`` seconds in all to complete
    (the kernel completes them from the listen backlog, whether or not the server
    accepts); the ones refused or still pending then are left out.
    """
    socks: list[socket.socket] = []
    pending: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.setblocking(False)
            if s.connect_ex(("127.0.0.1", port)) in (0, errno.EINPROGRESS):
                pending.append(s)
            else:
                s.close()
        deadline = time.monotonic() + wait
        while pending and time.monotonic() < deadline:
            _, ready, _ = select.select([], pending, [], max(0.0, deadline - time.monotonic()))
            for s in ready:
                pending.remove(s)
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    socks.append(s)
                else:
                    s.close()
        for s in pending:
            s.close()
        pending.clear()
        yield socks
    finally:
        for s in socks + pending:
            s.close()


def closed_by_peer(s: socket.socket) -> bool:
    """True once the hub has closed this connection (EOF or reset)."""
    s.setblocking(False)
    try:
        return s.recv(1 << 16) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
