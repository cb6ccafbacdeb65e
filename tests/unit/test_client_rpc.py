"""RpcChannel driven by ``loop.add_reader`` on its DEALER (no zmq.asyncio send/receive).

The peer is a plain ROUTER on a thread of its own that answers every request with
``Ok``: concurrent requests (sends taking the FD's edge while replies arrive) must
all be answered, and a request sent before the hub is up waits for it.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import pytest
import zmq
import zmq.asyncio

from ibhub import wire
from ibhub.client.errors import HubTimeout
from ibhub.client.rpc import RpcChannel
from ibhub.protocol import GetStatus, Ok


def free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


class EchoHub:
    """A ROUTER answering ``Ok`` with the request's id, until stopped."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        router = self.ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.bind(self.endpoint)
        try:
            while not self._stop.is_set():
                if not router.poll(20):
                    continue
                *envelope, payload = router.recv_multipart()
                req = wire.decode_request(payload)
                router.send_multipart([*envelope, wire.encode(Ok(id=req.id))])
        finally:
            router.close(0)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self.ctx.term()


@pytest.fixture
def endpoint() -> Iterator[str]:
    yield free_endpoint()


async def test_concurrent_requests_are_all_answered(endpoint: str) -> None:
    hub = EchoHub(endpoint)
    hub.start()
    ctx = zmq.asyncio.Context()
    chan = RpcChannel(ctx, endpoint, timeout=5.0)
    chan.open()
    try:
        for _ in range(3):
            replies = await asyncio.gather(*(chan.request(GetStatus(id=0)) for _ in range(300)))
            assert all(isinstance(r, Ok) for r in replies)
            assert len({r.id for r in replies}) == 300
        for _ in range(100):  # one at a time: each reply arrives after its send
            assert isinstance(await chan.request(GetStatus(id=0)), Ok)
    finally:
        await chan.close()
        ctx.term()
        hub.stop()


async def test_a_request_sent_before_the_hub_is_up_waits_for_it(endpoint: str) -> None:
    ctx = zmq.asyncio.Context()
    chan = RpcChannel(ctx, endpoint, timeout=5.0)
    chan.open()
    hub = EchoHub(endpoint)
    try:
        with pytest.raises(HubTimeout):  # nobody there: IMMEDIATE keeps it unsent
            await chan.request(GetStatus(id=0), timeout=0.2)
        waiting = asyncio.ensure_future(chan.request(GetStatus(id=0)))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        hub.start()
        assert isinstance(await asyncio.wait_for(waiting, 5.0), Ok)
    finally:
        await chan.close()
        ctx.term()
        hub.stop()
