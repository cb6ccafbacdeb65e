"""RpcServer on a real ROUTER socket driven by ``loop.add_reader`` (no zmq.asyncio).

The ZMQ FD is edge-triggered and a send can consume its edge: these tests send
requests while replies go out from tasks and inline, with no other traffic that
could wake the loop, and require every request to be answered.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
import zmq
import zmq.asyncio

from ibhub import wire
from ibhub.hub.registry import Context
from ibhub.hub.requests import BadRequest, RpcServer
from ibhub.protocol import (
    ContractSpec,
    Error,
    ErrorCode,
    GetStatus,
    Ok,
    PlaceOrder,
    Reply,
)


class Handler:
    """Serves ``status`` (inline); tests register what else they need."""

    def __init__(self) -> None:
        self.statuses = 0

    def status(self, req: GetStatus, ctx: Context) -> Reply:
        self.statuses += 1
        return Ok(id=req.id)


def server_for(router: zmq.Socket[Any], handler: Handler) -> RpcServer:
    server = RpcServer(router)
    server.register(GetStatus, handler.status, slow=False)
    return server


def place(rid: int, coid: str = "c") -> PlaceOrder:
    return PlaceOrder(id=rid, lease="l", client_order_id=coid,
                      contract=ContractSpec(symbol="AAPL"), action="BUY", quantity=1.0)


@pytest.fixture
async def served() -> AsyncIterator[tuple[RpcServer, Handler, zmq.Socket[bytes]]]:
    ctx = zmq.asyncio.Context()
    router = ctx.socket(zmq.ROUTER)  # what the hub creates
    router.setsockopt(zmq.LINGER, 0)
    router.setsockopt(zmq.ROUTER_MANDATORY, 1)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    handler = Handler()
    server = server_for(router, handler)
    task = asyncio.create_task(server.serve())
    dealer = zmq.Socket(ctx, zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(f"tcp://127.0.0.1:{port}")
    try:
        yield server, handler, dealer
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await server.close()
        dealer.close(0)
        router.close(0)
        ctx.term()


async def replies(dealer: zmq.Socket[bytes], n: int, timeout: float = 5.0) -> list[Reply]:
    """Receive ``n`` replies without blocking the loop (the server runs on it)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    got: list[Reply] = []
    while len(got) < n:
        try:
            got.append(wire.decode_reply(dealer.recv_multipart(zmq.NOBLOCK)[-1]))
        except zmq.Again:
            if loop.time() > deadline:
                raise AssertionError(f"{len(got)} of {n} replies within {timeout}s") from None
            await asyncio.sleep(0.001)
    return got


def send(dealer: zmq.Socket[bytes], req: Any) -> None:
    dealer.send_multipart([b"", wire.encode(req)])


async def test_inline_and_task_replies_interleaved_are_all_answered(served) -> None:
    server, handler, dealer = served
    rng = random.Random(7)
    print("seed 7")

    async def slow(req: PlaceOrder, ctx: Context) -> Reply:
        for _ in range(rng.randrange(4)):
            await asyncio.sleep(0)
        return Ok(id=req.id)

    server.register(PlaceOrder, slow, slow=True)
    n = 600
    for i in range(1, n + 1):
        send(dealer, GetStatus(id=i) if i % 3 else place(i))
        if i % 50 == 0:
            await asyncio.sleep(0)  # let some task replies go out between requests
    got = await replies(dealer, n)
    assert sorted(r.id for r in got) == list(range(1, n + 1))
    assert handler.statuses == n - n // 3
    assert server.requests == n and server.errors == 0 and server.dropped == 0


async def test_request_arriving_after_a_task_reply_is_served(served) -> None:
    """One request at a time, each answered from a task: the next request arrives while
    the socket is idle, after a send outside any drain."""
    server, _handler, dealer = served
    gate = asyncio.Event()

    async def slow(req: PlaceOrder, ctx: Context) -> Reply:
        await gate.wait()
        return Ok(id=req.id)

    server.register(PlaceOrder, slow, slow=True)
    for i in range(1, 21):
        gate.clear()
        send(dealer, place(i))
        await asyncio.sleep(0.002)
        send(dealer, GetStatus(id=1000 + i))  # queued behind nothing, answered inline
        status = await replies(dealer, 1)
        assert status[0].id == 1000 + i
        gate.set()
        assert [r.id for r in await replies(dealer, 1)] == [i]


async def test_errors_and_observers(served) -> None:
    server, _handler, dealer = served
    seen: list[tuple[str, str]] = []
    server.observers.append(lambda tag, reply, _s: seen.append((tag, type(reply).__name__)))

    def refuse(req: PlaceOrder, ctx: Context) -> Reply:
        raise BadRequest("no orders here")

    server.register(PlaceOrder, refuse, slow=False)
    send(dealer, place(1))
    dealer.send_multipart([b"", b"\xc1"])  # not msgpack
    dealer.send_multipart([b"", b"a", b"b", b"c", b"d", b"e", b"f", b"g", b"h"])  # too many
    got = {r.id: r for r in await replies(dealer, 3)}
    assert isinstance(got[1], Error) and got[1].code == ErrorCode.BAD_REQUEST
    assert "no orders here" in got[1].message
    assert all(isinstance(r, Error) for r in got.values())
    assert server.errors == 2
    assert seen == [("place_order", "Error")]


async def test_reply_to_a_gone_peer_is_counted(served) -> None:
    server, _handler, dealer = served
    gate = asyncio.Event()

    async def slow(req: PlaceOrder, ctx: Context) -> Reply:
        await gate.wait()
        return Ok(id=req.id)

    server.register(PlaceOrder, slow, slow=True)
    send(dealer, place(1))
    while server.requests < 1:
        await asyncio.sleep(0.001)
    dealer.close(0)
    await asyncio.sleep(0.05)  # the ROUTER learns that the peer is gone
    gate.set()
    while server._tasks:
        await asyncio.sleep(0.001)
    assert server.dropped == 1


async def test_loop_without_add_reader_falls_back_to_polling(monkeypatch) -> None:
    """Windows' proactor loop has no add_reader (pyzmq's own poller then runs a
    selector thread, which this test cannot have): requests are still served."""
    loop = asyncio.get_running_loop()
    add_reader = loop.add_reader
    refused: list[object] = []

    def no_add_reader_for_rpc(fd: Any, callback: Any, *args: Any) -> None:
        if not refused:  # the first call is RpcServer.serve's; then pyzmq's poller
            refused.append(fd)
            raise NotImplementedError
        add_reader(fd, callback, *args)

    monkeypatch.setattr(loop, "add_reader", no_add_reader_for_rpc)
    ctx = zmq.asyncio.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    server = server_for(router, Handler())

    async def slow(req: PlaceOrder, ctx: Context) -> Reply:
        await asyncio.sleep(0)
        return Ok(id=req.id)

    server.register(PlaceOrder, slow, slow=True)
    task = asyncio.create_task(server.serve())
    dealer = zmq.Socket(ctx, zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(f"tcp://127.0.0.1:{port}")
    try:
        for i in range(1, 101):
            send(dealer, GetStatus(id=i) if i % 2 else place(i))
        assert sorted(r.id for r in await replies(dealer, 100)) == list(range(1, 101))
        assert refused
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await server.close()
        dealer.close(0)
        router.close(0)
        ctx.term()
