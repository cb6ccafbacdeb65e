"""A tiny fake hub for SDK tests: real ZeroMQ sockets, scripted hub logic.

ROUTER for requests and XPUB (a PUB that also reports subscriptions, so tests can
wait until a subscriber is really listening instead of sleeping). Replies follow
``ibhub.protocol``; knobs let a test drop, delay or refuse requests, forget leases
(as a restarted hub does) and publish events with chosen sequence numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import defaultdict
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec
import zmq
import zmq.asyncio

from ibhub import wire
from ibhub.protocol import (
    TOPIC_STATUS,
    BarData,
    ClientIdLeased,
    ContractDetailsReply,
    ContractInfo,
    Error,
    ErrorCode,
    Event,
    GetContractDetails,
    GetHistoricalBars,
    GetSnapshot,
    GetStatus,
    Goodbye,
    Heartbeat,
    Hello,
    HistoricalBarsReply,
    HubStatus,
    LeaseClientId,
    Ok,
    ReleaseClientId,
    Reply,
    Request,
    Snapshot,
    StatusReply,
    Subscribe,
    Subscribed,
    Tick,
    Unsubscribe,
    UpstreamState,
    Welcome,
)


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    """Poll ``predicate`` on the loop until true; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        await asyncio.sleep(0.005)


def contract_info(symbol: str, con_id: int) -> ContractInfo:
    return ContractInfo(
        con_id=con_id, symbol=symbol, sec_type="STK", exchange="SMART",
        primary_exchange="NASDAQ", currency="USD", local_symbol=symbol, trading_class="NMS",
        expiry="", strike=0.0, right="", multiplier="", min_tick=0.01, long_name=f"{symbol} INC",
    )


class FakeHub:
    """Scripted hub on ``ipc://`` (or any) endpoints; ``await start()`` / ``await stop()``."""

    def __init__(self, rpc: str, pub: str, *, heartbeat_interval: float = 0.2) -> None:
        self.rpc = rpc
        self.pub = pub
        self.heartbeat_interval = heartbeat_interval
        self.ctx = zmq.asyncio.Context()
        self.requests: list[Request] = []
        self.replies: list[Reply] = []
        self.leases: dict[str, str] = {}  # lease -> name
        self.goodbyes: list[str] = []
        self.seqs: dict[str, int] = defaultdict(int)
        self.last: dict[str, bytes] = {}
        self.subscriptions: set[str] = set()  # topics some SUB socket subscribed to (XPUB)
        self.subscribe_counts: dict[str, int] = defaultdict(int)  # per topic, all sockets
        self.drop: set[str] = set()  # request tags never answered
        self.delay: dict[str, float] = {}  # request tag -> seconds before the reply
        self.delay_once: dict[str, float] = {}
        self.refuse: dict[str, Error] = {}  # request tag -> error reply
        self.refuse_symbols: dict[str, Error] = {}  # subscribe of this symbol -> error reply
        self.state = UpstreamState.CONNECTED
        self._next_lease = 0
        self._next_raw = 100
        self._tasks: set[asyncio.Task[None]] = set()
        self._router: zmq.asyncio.Socket | None = None
        self._xpub: zmq.asyncio.Socket | None = None

    async def start(self) -> FakeHub:
        self._router = self.ctx.socket(zmq.ROUTER)
        self._router.setsockopt(zmq.LINGER, 0)
        self._router.bind(self.rpc)
        self._xpub = self.ctx.socket(zmq.XPUB)
        self._xpub.setsockopt(zmq.LINGER, 0)
        self._xpub.setsockopt(zmq.XPUB_VERBOSE, 1)
        self._xpub.setsockopt(zmq.SNDHWM, 0)  # never drop: tests drop explicitly (send=False)
        self._xpub.bind(self.pub)
        self._spawn(self._serve(self._router))
        self._spawn(self._watch_subscriptions(self._xpub))
        return self

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sock in (self._router, self._xpub):
            if sock is not None:
                sock.close(linger=0)
        self.ctx.term()

    async def __aenter__(self) -> FakeHub:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ publishing

    async def wait_subscribed(self, topic: str, timeout: float = 5.0, sockets: int = 1) -> None:
        """Until ``sockets`` SUB sockets subscribed to ``topic`` (XPUB_VERBOSE reports each)."""
        await wait_until(lambda: self.subscribe_counts[topic] >= sockets, timeout,
                         f"{sockets} SUB socket(s) on {topic}")

    def publish(self, topic: str, make: Callable[[int, int], Event], *, send: bool = True) -> Event:
        """Next event on ``topic`` (seq assigned here); ``send=False`` models a PUB drop."""
        self.seqs[topic] += 1
        event = make(self.seqs[topic], time.time_ns())
        payload = wire.encode(event)
        self.last[topic] = payload
        if send:
            assert self._xpub is not None
            self._xpub.send_multipart([topic.encode(), payload])
        return event

    def send_raw(self, frames: list[bytes]) -> None:
        assert self._xpub is not None
        self._xpub.send_multipart(frames)

    def tick(self, symbol: str, price: float, *, send: bool = True, topic: str = "") -> Event:
        return self.publish(
            topic or f"tick.{symbol}",
            lambda seq, ts: Tick(
                seq=seq, ts=ts, con_id=1000 + len(symbol), symbol=symbol, bid=price - 0.01,
                ask=price + 0.01, last=price, bid_size=1.0, ask_size=2.0, last_size=3.0,
                volume=math.nan,
            ),
            send=send,
        )

    def status_event(self, state: str, kind: str = "state", code: int = 0) -> Event:
        self.state = state
        return self.publish(
            TOPIC_STATUS,
            lambda seq, ts: HubStatus(
                seq=seq, ts=ts, state=state, kind=kind, code=code, message=f"{kind} {code}",
                reconnect_count=0,
            ),
        )

    def forget_leases(self) -> None:
        self.leases.clear()

    def of_type(self, kind: type[Request]) -> list[Request]:
        return [r for r in self.requests if isinstance(r, kind)]

    # ------------------------------------------------------------------ serving

    async def _watch_subscriptions(self, xpub: zmq.asyncio.Socket) -> None:
        while True:
            frame = await xpub.recv()
            topic = frame[1:].decode()
            if frame[:1] == b"\x01":
                self.subscriptions.add(topic)
                self.subscribe_counts[topic] += 1
            else:
                self.subscriptions.discard(topic)

    async def _serve(self, router: zmq.asyncio.Socket) -> None:
        while True:
            frames = await router.recv_multipart()
            envelope, payload = wire.split_envelope(frames)
            try:
                request = wire.decode_request(payload)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                reply: Reply = Error(id=wire.request_id_of(payload), code="bad_request",
                                     message=str(exc))
                await router.send_multipart([*envelope, wire.encode(reply)])
                continue
            self.requests.append(request)
            tag = str(type(request).__struct_config__.tag)
            if tag in self.drop:
                continue
            self._spawn(self._answer(router, envelope, request, tag))

    async def _answer(
        self, router: zmq.asyncio.Socket, envelope: list[bytes], request: Request, tag: str
    ) -> None:
        delay = self.delay_once.pop(tag, None) or self.delay.get(tag, 0.0)
        if delay:
            await asyncio.sleep(delay)  # models a slow hub, not synchronisation
        refusal = self.refuse.get(tag)
        if isinstance(request, Subscribe):
            refusal = self.refuse_symbols.get(request.contract.symbol, refusal)
        reply: Reply
        if refusal is not None:
            reply = msgspec.structs.replace(refusal, id=request.id)
        else:
            reply = self._reply(request)
        self.replies.append(reply)
        await router.send_multipart([*envelope, wire.encode(reply)])

    def _reply(self, request: Request) -> Reply:
        rid = request.id
        match request:
            case Hello(name=name):
                self._next_lease += 1
                lease = f"L{self._next_lease}"
                self.leases[lease] = name
                return Welcome(id=rid, lease=lease, client_id=self._next_lease,
                               heartbeat_interval=self.heartbeat_interval, hub_version="fake")
            case Heartbeat(lease=lease) | Subscribe(lease=lease) | Unsubscribe(lease=lease) if (
                lease not in self.leases
            ):
                return Error(id=rid, code=ErrorCode.UNKNOWN_LEASE, message=f"no lease {lease}")
            case Heartbeat():
                return Ok(id=rid)
            case Goodbye(lease=lease):
                self.goodbyes.append(lease)
                self.leases.pop(lease, None)
                return Ok(id=rid)
            case Subscribe(contract=spec):
                return Subscribed(id=rid, topic=f"tick.{spec.symbol}",
                                  contract=contract_info(spec.symbol, 1000 + len(spec.symbol)),
                                  subscribers=1)
            case Unsubscribe():
                return Ok(id=rid)
            case GetSnapshot(topic=topic):
                names = sorted(t for t in self.last if t.startswith(topic))
                return Snapshot(
                    id=rid, topics=names, seqs=[self.seqs[t] for t in names],
                    events=[msgspec.Raw(self.last[t]) for t in names],
                )
            case GetStatus():
                return StatusReply(
                    id=rid, connected=self.state == UpstreamState.CONNECTED, state=self.state,
                    host="127.0.0.1", port=4002, client_id=0, server_version=176,
                    accounts=["DU1"], uptime_seconds=1.0, reconnect_count=0, connected_at=None,
                    last_tick_at=None, leases=[], subscriptions=[], lines_used=0, lines_max=100,
                )
            case GetContractDetails(contract=spec):
                return ContractDetailsReply(id=rid, contracts=[contract_info(spec.symbol, 7)])
            case GetHistoricalBars(contract=spec):
                bars = [BarData(time=t, open=1, high=2, low=0.5, close=1.5, volume=10, wap=1.2,
                                count=3) for t in (0, 3600)]
                info = contract_info(spec.symbol, 7)
                return HistoricalBarsReply(id=rid, contract=info, bars=bars)
            case LeaseClientId():
                self._next_raw += 1
                return ClientIdLeased(id=rid, client_id=self._next_raw)
            case ReleaseClientId():
                return Ok(id=rid)
        return Error(id=rid, code=ErrorCode.BAD_REQUEST, message="the fake does not do that")
