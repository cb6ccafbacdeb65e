"""The Acceptor: connections raced against close() are all dropped, none left open."""

from __future__ import annotations

import asyncio
import gc
import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from ibhub.acceptor import Acceptor

pytestmark = [pytest.mark.timeout(30), pytest.mark.filterwarnings("error::ResourceWarning")]


class Echo(asyncio.Protocol):
    made: list[Echo] = []

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        Echo.made.append(self)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


async def race(acceptor: Acceptor, connect: Callable[[], object]) -> None:
    """Thirty clients connect while the acceptor closes; the server then drops what it
    knows, as the project's servers do. Every connection made is lost, every client
    sees its connection end or refused, and no socket is left to the collector."""
    Echo.made = []
    clients = [asyncio.ensure_future(connect()) for _ in range(30)]  # type: ignore[call-overload]
    for _ in range(3):  # some accepted, some half made, some still in the backlog
        await asyncio.sleep(0)
    await acceptor.close()
    assert not acceptor.listening
    known = list(Echo.made)
    for proto in known:  # the server's own drop
        assert proto.transport is not None
        proto.transport.abort()
    for result in await asyncio.gather(*clients, return_exceptions=True):
        if isinstance(result, BaseException):
            assert isinstance(result, OSError), result  # refused: the port had closed
            continue
        reader, writer = result
        try:
            assert await asyncio.wait_for(reader.read(), 5.0) == b""
        except ConnectionResetError:
            pass
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionResetError:
            pass
    for _ in range(3):
        await asyncio.sleep(0)
    assert Echo.made and all(p.lost for p in Echo.made)
    gc.collect()


async def test_tcp_connects_racing_close_leave_nothing_open() -> None:
    acceptor = Acceptor.tcp("127.0.0.1", 0, Echo)
    port = acceptor.port
    await race(acceptor, lambda: asyncio.open_connection("127.0.0.1", port))


async def test_unix_connects_racing_close_leave_nothing_open(tmp_path: Path) -> None:
    path = tmp_path / "s"
    acceptor = Acceptor.unix(path, Echo)
    await race(acceptor, lambda: asyncio.open_unix_connection(os.fspath(path)))


async def test_accepted_connections_serve_and_tcp_ones_have_nodelay() -> None:
    acceptor = Acceptor.tcp("127.0.0.1", 0, Echo)
    Echo.made = []
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", acceptor.port)
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        (proto,) = Echo.made
        assert proto.transport is not None
        sock = proto.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        writer.close()
        await writer.wait_closed()
    finally:
        await acceptor.close()


async def test_a_taken_port_is_an_oserror() -> None:
    acceptor = Acceptor.tcp("127.0.0.1", 0, Echo)
    try:
        with pytest.raises(OSError):
            Acceptor.tcp("127.0.0.1", acceptor.port, Echo)
    finally:
        await acceptor.close()
