"""Fixtures for end-to-end hub tests: a simulated Gateway over TCP, a HubServer on
ipc endpoints in a private temp dir, and raw ZeroMQ clients built on ibhub.wire
only (no SDK), so these tests exercise the hub's wire behaviour directly.

Timings are shrunk (heartbeat 0.2 s, back-off 0.05..0.4 s, connect timeout 1 s)
so expiry and reconnect scenarios finish in a second or two.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import zmq
import zmq.asyncio

from ibhub import wire
from ibhub.config import HubSettings
from ibhub.hub.server import HubServer
from ibhub.protocol import (
    PROTOCOL_VERSION,
    TOPIC_STATUS,
    ContractSpec,
    Event,
    Heartbeat,
    Hello,
    HubStatus,
    Reply,
    Request,
    Subscribe,
    Subscribed,
    UpstreamState,
    Welcome,
)
from ibhub.sim import SimConfig, SimGateway
from tests.helpers import wait_until

SEED = 20240102
FAST = dict(
    heartbeat_interval=0.2,
    lease_timeout=3.0,
    connect_timeout=1.0,
    reconnect_backoff_initial=0.05,
    reconnect_backoff_max=0.4,
    request_timeout=5.0,
    stale_after=0.0,
    http_port=0,  # no /health server unless a test asks for one (tests/e2e/test_health.py)
    orders=False,  # order tests attach the service themselves, with their own settings
)


@pytest.fixture
def ipc_dir() -> Any:
    # A short path of our own: ipc:// paths are limited to ~107 bytes.
    path = tempfile.mkdtemp(prefix="ibhub-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def hub_sim() -> AsyncIterator[SimGateway]:
    print(f"sim seed {SEED}")
    async with SimGateway(SimConfig(host="127.0.0.1", port=0, seed=SEED, tick_rate=40.0)) as gw:
        yield gw


HubFactory = Callable[..., Awaitable[HubServer]]


@pytest.fixture
async def make_hub(hub_sim: SimGateway, ipc_dir: str) -> AsyncIterator[HubFactory]:
    """``await make_hub(**settings)``: a started hub on the simulator; stopped at teardown."""
    hubs: list[HubServer] = []
    counter = itertools.count()

    async def factory(*, wait_connected: bool = True, **overrides: Any) -> HubServer:
        n = next(counter)
        values: dict[str, Any] = dict(
            gateway_host="127.0.0.1",
            gateway_port=hub_sim.port,
            client_id=0,
            pub=f"ipc://{ipc_dir}/pub{n}",
            rpc=f"ipc://{ipc_dir}/rpc{n}",
            data_dir=ipc_dir,
            **FAST,
        )
        values.update(overrides)
        hub = HubServer(HubSettings(**values))
        hubs.append(hub)
        await hub.start()
        if wait_connected:
            await wait_until(lambda: hub.upstream is not None and hub.upstream.connected,
                             5.0, "hub upstream CONNECTED")
        return hub

    yield factory
    for hub in hubs:
        await hub.stop()


@pytest.fixture
async def hub(make_hub: HubFactory) -> HubServer:
    return await make_hub()


@pytest.fixture
async def zctx() -> AsyncIterator[zmq.asyncio.Context]:
    ctx = zmq.asyncio.Context()
    yield ctx
    ctx.destroy(linger=0)


NAME_SECRETS: dict[str, str] = {}  # script name -> the secret the hub made for it


class RawClient:
    """A DEALER (or REQ) speaking ibhub.wire by hand; optional background heartbeats.

    ``lease`` is the lease's secret token (what requests carry), ``handle`` its public
    handle (status, ``order.<handle>`` / ``error.<handle>`` topics). Heartbeats go out on
    the same socket (the hub binds a lease to its connection); their replies are
    skipped by :meth:`recv_reply`.
    """

    def __init__(self, ctx: zmq.asyncio.Context, endpoint: str, kind: int = zmq.DEALER) -> None:
        self.sock = ctx.socket(kind)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.kind = kind
        self._ids = itertools.count(1)
        self.lease = ""
        self.handle = ""
        self._beat: asyncio.Task[None] | None = None
        self._beat_ids: set[int] = set()

    def next_id(self) -> int:
        return next(self._ids)

    async def send_raw(self, *frames: bytes) -> None:
        if self.kind == zmq.DEALER:
            await self.sock.send_multipart([b"", *frames])
        else:
            await self.sock.send_multipart(list(frames))

    async def recv_reply(self, timeout: float = 5.0) -> Reply:
        async with asyncio.timeout(timeout):
            while True:
                frames = await self.sock.recv_multipart()
                reply = wire.decode_reply(frames[-1])
                if reply.id in self._beat_ids:
                    self._beat_ids.discard(reply.id)
                    continue
                return reply

    async def request(self, req: Request, timeout: float = 5.0) -> Reply:
        await self.send_raw(wire.encode(req))
        while True:
            reply = await self.recv_reply(timeout)
            if reply.id == req.id:
                return reply

    async def hello(self, name: str, heartbeat: bool = True, **fields: Any) -> Welcome:
        # A raw client keeps the secret its first welcome gave for a name, and says
        # hello with it from then on (docs/security.md, "Script names"). Kept for the
        # session: the test hubs share one data dir, hence one table of names.
        fields.setdefault("name_secret", NAME_SECRETS.get(name, ""))
        reply = await self.request(Hello(id=self.next_id(), name=name,
                                         protocol=PROTOCOL_VERSION, **fields))
        assert isinstance(reply, Welcome), reply
        if reply.name_secret:
            NAME_SECRETS[name] = reply.name_secret
        self.lease, self.handle = reply.token, reply.lease
        if heartbeat:
            self._beat = asyncio.create_task(self._heartbeat(reply.heartbeat_interval))
        return reply

    async def _heartbeat(self, interval: float) -> None:
        # On the test's own socket (a lease answers only the connection that opened it);
        # recv_reply drops the replies. A REQ socket cannot interleave: no heartbeats.
        if self.kind != zmq.DEALER:
            return
        while True:
            rid = self.next_id()
            self._beat_ids.add(rid)
            await self.sock.send_multipart(
                [b"", wire.encode(Heartbeat(id=rid, lease=self.lease))]
            )
            await asyncio.sleep(interval)

    async def stop_heartbeat(self) -> None:
        task, self._beat = self._beat, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def subscribe(self, symbol: str, **spec: Any) -> Subscribed:
        reply = await self.request(
            Subscribe(id=self.next_id(), lease=self.lease,
                      contract=ContractSpec(symbol=symbol, **spec))
        )
        assert isinstance(reply, Subscribed), reply
        return reply

    async def close(self) -> None:
        await self.stop_heartbeat()
        self.sock.close(0)


class Listener:
    """A SUB socket collecting decoded events per topic in a background task."""

    def __init__(self, ctx: zmq.asyncio.Context, endpoint: str, *prefixes: str) -> None:
        self.sock = ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, 0)
        self.sock.connect(endpoint)
        for p in prefixes or ("",):
            self.sock.subscribe(p.encode())
        self.events: dict[str, list[Event]] = {}
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            topic, payload = await self.sock.recv_multipart()
            self.events.setdefault(topic.decode(), []).extend(
                wire.unbatch(wire.decode_event(payload)))

    def on(self, topic: str) -> list[Any]:
        return self.events.get(topic, [])

    def statuses(self) -> list[HubStatus]:
        return [e for e in self.on(TOPIC_STATUS) if isinstance(e, HubStatus)]

    def states(self) -> list[str]:
        return [e.state for e in self.statuses() if e.kind == "state"]

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.sock.close(0)


@pytest.fixture
async def clients(zctx: zmq.asyncio.Context) -> AsyncIterator[Callable[..., RawClient]]:
    made: list[RawClient] = []

    def factory(endpoint: str, kind: int = zmq.DEALER) -> RawClient:
        c = RawClient(zctx, endpoint, kind)
        made.append(c)
        return c

    yield factory
    for c in made:
        await c.close()


@pytest.fixture
async def listeners(zctx: zmq.asyncio.Context) -> AsyncIterator[Callable[..., Listener]]:
    made: list[Listener] = []

    def factory(endpoint: str, *prefixes: str) -> Listener:
        lst = Listener(zctx, endpoint, *prefixes)
        made.append(lst)
        return lst

    yield factory
    for lst in made:
        await lst.close()


def assert_consecutive(events: list[Any], what: str) -> None:
    seqs = [e.seq for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"{what}: gap in {seqs}"


__all__ = [
    "FAST",
    "HubFactory",
    "Listener",
    "RawClient",
    "UpstreamState",
    "assert_consecutive",
    "wait_until",
]
