"""Helpers for the simulator core tests: ib_insync clients and a raw TWS socket client."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ibhub.sim import SimGateway
from ibhub.sim.codec import FrameReader, frame
from tests.ibclient import IB


@asynccontextmanager
async def connected(sim: SimGateway, client_id: int = 1, timeout: float = 3.0,
                    **kwargs: object) -> AsyncIterator[IB]:
    """An unmodified ib_insync client connected to ``sim``; always disconnected after."""
    ib = IB()
    try:
        await ib.connectAsync("127.0.0.1", sim.port, clientId=client_id, timeout=timeout,
                              **kwargs)
        yield ib
    finally:
        ib.disconnect()


class RawClient:
    """A hand-driven TWS API socket: sends exactly the bytes a test wants."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.frames = FrameReader()
        self.inbox: list[list[str]] = []

    @classmethod
    async def open(cls, port: int, client_id: int | None = 7,
                   version: bytes = b"v157..176") -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        raw = cls(reader, writer)
        writer.write(b"API\0" + struct.pack(">I", len(version)) + version)
        if client_id is not None:
            hello = await raw.recv()
            assert hello[0] == "176" and len(hello) == 2, hello
            raw.send(71, 2, client_id, "")
        return raw

    async def startup(self) -> tuple[int, list[str]]:
        """Read the START_API answers: nextValidId, managedAccounts and the three
        farm-status notices (2104, 2106, 2158) that follow them, like at a Gateway.
        Returns (next valid id, accounts); the next recv() is an answer to you."""
        next_id, accounts = -1, [""]
        farms: set[str] = set()
        while next_id < 0 or accounts == [""] or len(farms) < 3:
            msg = await self.recv()
            if msg[0] == "9":
                next_id = int(msg[2])
            elif msg[0] == "15":
                accounts = msg[2].split(",")
            elif msg[0] == "4" and msg[3] in ("2104", "2106", "2158"):
                farms.add(msg[3])
            else:
                raise AssertionError(f"unexpected message during startup: {msg}")
        return next_id, accounts

    def send(self, *fields: object) -> None:
        self.writer.write(frame(fields))

    def send_bytes(self, data: bytes) -> None:
        self.writer.write(data)

    async def recv(self, timeout: float = 3.0) -> list[str]:
        """The next message; raises EOFError when the server closed the socket."""
        while not self.inbox:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not data:
                raise EOFError("server closed the connection")
            self.inbox.extend(self.frames.feed(data))
        return self.inbox.pop(0)

    async def recv_until(self, pred, timeout: float = 3.0) -> list[str]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            msg = await self.recv(max(0.01, deadline - loop.time()))
            if pred(msg):
                return msg

    async def closed_by_server(self, timeout: float = 3.0) -> bool:
        try:
            while True:
                await self.recv(timeout)
        except EOFError:
            return True
        except (ConnectionResetError, BrokenPipeError):
            return True

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionResetError, BrokenPipeError):
            pass
