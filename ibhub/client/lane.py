"""The SDK's side of the lane: requests and the lease's own events over a plain socket.

The hub's lane (ibhub.hub.lane, docs/protocol.md "The lane") is a local Unix socket
(or loopback TCP port) beside ZeroMQ: a request and its reply there cost one thread
wake-up each way where a ZeroMQ hop costs three (~0.1 ms against ~0.3-0.55 ms on the
measured machine). ZeroMQ stays the channel of record:

* :class:`LaneRpc` stands in for the :class:`~ibhub.client.rpc.RpcChannel` (the lease
  keeper, the order tracker and every request method use it unchanged). Hello and the
  ticket request always go over ZeroMQ (the lease is bound to that connection); other
  requests go over the lane while one is attached. If the lane breaks, the requests in
  flight on it are sent again over ZeroMQ at once, the same request (``place_order``
  is idempotent by its ``client_order_id``), and later ones go there too until a
  re-attach succeeds.
* :class:`Lane` attaches after each Welcome that names a lane this process can reach
  (the socket file exists; a TCP lane only when the hub's request endpoint is local
  too), and re-attaches after a break (backoff ``REATTACH_MIN``..``REATTACH_MAX``).
* The hub pushes ``order.<lease>`` and ``error.<lease>`` events on the lane as well as
  on PUB; both copies feed the same sequencer (``TopicSequencer.offer``): whichever
  arrives first is delivered, the other is counted as a duplicate.
* Ticks: when the SDK reads the tick bundle and the hub offers it on the lane
  (``Welcome.lane_ticks``), :class:`Lane` attaches a second connection with
  ``LaneAttach(ticks=True)`` that carries only ``bundle.tick`` (a connection of its own:
  ticks never queue in front of a reply). While it is attached the SUB socket does not
  subscribe ``bundle.tick``; when it breaks, the SUB socket subscribes again at once
  and the per-topic sequencers recover any gap from snapshots, as on PUB.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import Callable, Coroutine
from typing import Any, cast

import msgspec

from ibhub import wire
from ibhub.client.bundle import decode_bundle
from ibhub.client.errors import HubError, HubTimeout
from ibhub.client.rpc import RpcChannel
from ibhub.protocol import (
    TOPIC_BUNDLE,
    Error,
    Event,
    Hello,
    LaneAttach,
    LaneAttached,
    LaneTicket,
    LaneTicketIssued,
    Reply,
    Request,
    Welcome,
)

log = logging.getLogger(__name__)

ATTACH_TIMEOUT = 2.0  # seconds for the ticket and the attach together
REATTACH_MIN = 0.5  # seconds before the first re-attach after a break
REATTACH_MAX = 30.0
MAX_INBOUND_FRAME = 1 << 30  # the hub's replies (historical bars) may be large
ZMQ_ONLY = (Hello, LaneTicket)  # bound to the ZeroMQ connection: never on the lane


class LaneBroken(Exception):
    """The lane connection closed with a request in flight (it is retried over ZeroMQ)."""


def reachable(address: str, rpc_endpoint: str) -> bool:
    """Whether this process can use the lane the Welcome names."""
    if address.startswith("unix://"):
        return os.path.exists(address[len("unix://"):])
    if address.startswith("tcp://"):
        # the hub's loopback is ours only when we reach its requests locally too
        host = rpc_endpoint.partition("://")[2].rpartition(":")[0].strip("[]")
        local = rpc_endpoint.startswith("ipc://") or host in ("localhost", "::1") \
            or host.startswith("127.")
        return local
    return False


class LaneLink(asyncio.Protocol):
    """One lane connection: requests out, replies matched by id, events handed on."""

    def __init__(self, on_event: Callable[[str, Event], None],
                 on_lost: Callable[[LaneLink], None],
                 on_unmatched: Callable[[Reply], None] | None = None) -> None:
        self.on_event = on_event
        self.on_lost = on_lost
        self.on_unmatched = on_unmatched
        self.transport: asyncio.Transport | None = None
        self.frames = wire.LaneFrames(MAX_INBOUND_FRAME)
        self.pending: dict[int, asyncio.Future[Reply]] = {}
        self.ids = itertools.count(1)
        self.closed = False
        self.events = 0  # pushed events received

    @classmethod
    async def connect(cls, address: str, on_event: Callable[[str, Event], None],
                      on_lost: Callable[[LaneLink], None],
                      on_unmatched: Callable[[Reply], None] | None = None) -> LaneLink:
        loop = asyncio.get_running_loop()
        link = cls(on_event, on_lost, on_unmatched)
        if address.startswith("unix://"):
            await loop.create_unix_connection(lambda: link, address[len("unix://"):])
        else:
            host, _, port = address[len("tcp://"):].rpartition(":")
            await loop.create_connection(lambda: link, host.strip("[]"), int(port))
        return link

    # ------------------------------------------------------------------ asyncio

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        pending, self.pending = self.pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(LaneBroken(str(exc or "the hub closed the lane")))
        try:
            self.on_lost(self)
        except Exception:
            log.exception("lane: on_lost failed")

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.frames.feed(data)
        except wire.LaneFrameError as exc:
            log.warning("lane: the hub sent a bad frame (%s); closing the lane", exc)
            self.close()
            return
        for frame in frames:
            try:
                self._frame(frame)
            except (msgspec.DecodeError, msgspec.ValidationError, IndexError,
                    UnicodeDecodeError) as exc:
                log.warning("lane: ignoring an undecodable frame from the hub: %s", exc)
            except Exception:  # a bug downstream must cost one frame, never the lane
                log.exception("lane: handling a frame from the hub failed")

    def _frame(self, frame: bytes) -> None:
        kind = frame[0]
        if kind == wire.LANE_REPLY:
            reply = wire.decode_reply(frame[1:])
            future = self.pending.pop(reply.id, None)
            if future is not None and not future.done():
                future.set_result(reply)
            elif self.on_unmatched is not None:
                self.on_unmatched(reply)
        elif kind == wire.LANE_EVENT:
            n = frame[1]
            topic = frame[2:2 + n].decode()
            self.events += 1
            body = frame[2 + n:]
            # the tick bundle lazily, as the SUB socket reads it (client/bundle.py)
            self.on_event(topic, decode_bundle(body) if topic == TOPIC_BUNDLE
                          else wire.decode_event(body))
        else:
            log.warning("lane: ignoring a frame of unknown kind 0x%02x", kind)

    # ------------------------------------------------------------------ requests

    async def request(self, request: Request, timeout: float) -> Reply:
        """Send ``request`` with a fresh id; its reply (an ``Error`` too, unraised).
        Raises :class:`LaneBroken` if the lane closes first, ``TimeoutError`` after
        ``timeout`` seconds."""
        transport = self.transport
        if transport is None or transport.is_closing():
            raise LaneBroken("the lane is closed")
        rid = next(self.ids)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self.pending[rid] = future
        try:
            transport.write(wire.lane_frame(wire.encode(msgspec.structs.replace(request,
                                                                                id=rid))))
            async with asyncio.timeout(timeout):
                return await future
        finally:
            self.pending.pop(rid, None)

    def close(self) -> None:
        transport = self.transport
        if transport is not None:
            transport.close()


class LaneRpc:
    """The request channel the SDK uses: the lane when attached, else ZeroMQ."""

    def __init__(self, zmq: RpcChannel) -> None:
        self.zmq = zmq
        self.link: LaneLink | None = None
        self.requests = 0  # requests answered over the lane
        self.fallbacks = 0  # requests in flight on a lane that broke, sent again over ZeroMQ

    # the RpcChannel interface the SDK's parts use
    @property
    def endpoint(self) -> str:
        return self.zmq.endpoint

    @property
    def timeout(self) -> float:
        return self.zmq.timeout

    @timeout.setter
    def timeout(self, value: float) -> None:
        self.zmq.timeout = value

    @property
    def auth_failure(self) -> str | None:
        return self.zmq.auth_failure

    @property
    def on_unmatched(self) -> Callable[[Reply], None] | None:
        return self.zmq.on_unmatched

    @on_unmatched.setter
    def on_unmatched(self, fn: Callable[[Reply], None] | None) -> None:
        self.zmq.on_unmatched = fn

    def open(self) -> None:
        self.zmq.open()

    async def close(self) -> None:
        link, self.link = self.link, None
        if link is not None:
            link.close()
        await self.zmq.close()

    async def request(self, request: Request, timeout: float | None = None) -> Reply:
        link = self.link
        if link is None or isinstance(request, ZMQ_ONLY):
            return await self.zmq.request(request, timeout)
        limit = self.zmq.timeout if timeout is None else timeout
        try:
            reply = await link.request(request, limit)
        except LaneBroken as exc:
            if self.link is link:
                self.link = None
            self.fallbacks += 1
            log.info("lane broke with a %s request in flight (%s); sending it again over "
                     "ZeroMQ", type(request).__struct_config__.tag, exc)
            return await self.zmq.request(request, timeout)
        except TimeoutError:
            tag = type(request).__struct_config__.tag
            raise HubTimeout(f"no reply to {tag!r} request from the hub's lane within "
                             f"{limit:.1f}s") from None
        self.requests += 1
        if isinstance(reply, Error):
            raise HubError(reply.code, reply.message, reply.ib_code)
        return reply


class Lane:
    """Attaches the SDK's lease to the hub's lane and keeps it attached: the request
    connection always, the tick connection while ``want_ticks()`` and the hub offers it."""

    def __init__(self, rpc: LaneRpc, token: Callable[[], str | None],
                 on_event: Callable[[str, Event], None],
                 spawn: Callable[[Coroutine[Any, Any, Any], str], None],
                 on_tick_event: Callable[[str, Event], None] | None = None,
                 on_ticks: Callable[[bool], None] | None = None) -> None:
        self.rpc = rpc
        self._token = token
        self._on_event = on_event
        self._spawn = spawn
        self._on_tick_event = on_tick_event or on_event
        # told True when bundles start coming over the lane, False when they stop
        self._on_ticks = on_ticks or _ignore_flag
        self.want_ticks: Callable[[], bool] = _no  # the owner reads the bundle
        self.address = ""
        self.lease: str | None = None
        self.ticks_offered = False  # Welcome.lane_ticks
        self.tick_link: LaneLink | None = None
        self.attaches = 0
        self.breaks = 0
        self.tick_breaks = 0
        self.closed = False
        self._backoff = REATTACH_MIN
        self._retry: asyncio.TimerHandle | None = None
        self._attaching = False

    @property
    def attached(self) -> bool:
        return self.rpc.link is not None

    @property
    def ticks_attached(self) -> bool:
        return self.tick_link is not None

    def _ticks_missing(self) -> bool:
        return self.ticks_offered and self.tick_link is None and self.want_ticks()

    def on_welcome(self, welcome: Welcome) -> None:
        """A Welcome (first hello or a re-hello): a new lease needs a new attach."""
        if welcome.lease != self.lease and self.lease is not None:
            self._drop()
            self._schedule(0.0)
        self.lease = welcome.lease
        self.address = welcome.lane
        self.ticks_offered = welcome.lane_ticks

    async def attach(self) -> bool:
        """Attach what is missing now (requests, then ticks) if the hub names a lane we
        can reach; whether requests go over the lane (False is logged)."""
        if self.closed or self._attaching or not self.address:
            return self.attached
        if self.attached and not self._ticks_missing():
            return True
        if not reachable(self.address, self.rpc.endpoint):
            log.debug("lane %s not reachable from here; requests go over ZeroMQ",
                      self.address)
            return False
        token = self._token()
        if token is None:
            return False
        self._attaching = True
        try:
            if not self.attached:
                link = await self._open(token, ticks=False)
                if link is None:
                    return False
                self.rpc.link = link
                self.attaches += 1
                self._backoff = REATTACH_MIN
            if self._ticks_missing():
                tick_link = await self._open(token, ticks=True)
                if tick_link is not None:
                    self.tick_link = tick_link
                    self._on_ticks(True)
        finally:
            self._attaching = False
        return self.attached

    async def _open(self, token: str, *, ticks: bool) -> LaneLink | None:
        """A new attached lane connection (a ticket over ZeroMQ, then the attach), or
        None (logged) when that fails or the SDK closed or renewed its lease meanwhile."""
        link: LaneLink | None = None
        what = "tick connection" if ticks else "lane"
        on_event = self._on_tick_event if ticks else self._on_event
        try:
            async with asyncio.timeout(ATTACH_TIMEOUT):
                ticket = await self.rpc.zmq.request(LaneTicket(id=0, lease=token))
                if not isinstance(ticket, LaneTicketIssued):
                    raise HubError("internal", f"expected a lane ticket, got {ticket!r}")
                link = await LaneLink.connect(self.address, on_event, self._lost,
                                              self.rpc.zmq.on_unmatched)
                reply = await link.request(
                    LaneAttach(id=0, ticket=ticket.ticket, lease=token, ticks=ticks),
                    ATTACH_TIMEOUT)
            if not isinstance(reply, LaneAttached):
                raise HubError(getattr(reply, "code", "internal"),
                               getattr(reply, "message", repr(reply)))
        except (HubError, OSError, LaneBroken, TimeoutError) as exc:
            if link is not None:
                link.on_lost = _ignore
                link.close()
            log.info("%s %s not attached (%s); %s go over ZeroMQ", what, self.address,
                     exc or type(exc).__name__, "ticks" if ticks else "requests")
            return None
        except BaseException:  # cancelled (the SDK is closing): the socket must not leak
            if link is not None:
                link.on_lost = _ignore
                link.close()
            raise
        if self.closed or self._token() != token:  # closed or renewed meanwhile
            link.on_lost = _ignore
            link.close()
            return None
        log.debug("%s %s attached for lease %s", what, self.address, reply.lease)
        return link

    def close(self) -> None:
        """Stop attaching (the SDK is closing); the request connection closes with the
        channel, the tick connection here."""
        self.closed = True
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        tick_link, self.tick_link = self.tick_link, None
        if tick_link is not None:
            tick_link.on_lost = _ignore
            tick_link.close()

    def _drop(self) -> None:
        link, self.rpc.link = self.rpc.link, None
        tick_link, self.tick_link = self.tick_link, None
        for old in (link, tick_link):
            if old is not None:
                old.on_lost = _ignore
                old.close()
        if tick_link is not None:
            self._on_ticks(False)

    def _lost(self, link: LaneLink) -> None:
        ticks = link is self.tick_link
        if ticks:
            self.tick_link = None
            self.tick_breaks += 1
            self._on_ticks(False)  # the SUB socket carries the bundle again
        else:
            if self.rpc.link is link:
                self.rpc.link = None
            self.breaks += 1
        if self.closed:
            return
        log.warning("the hub's lane closed (%s connection); %s go over ZeroMQ, "
                    "re-attaching in %.1fs", "tick" if ticks else "request",
                    "ticks" if ticks else "requests", self._backoff)
        if self._retry is None:  # both connections break together when the hub stops
            self._schedule(self._backoff)
            self._backoff = min(self._backoff * 2, REATTACH_MAX)

    def _schedule(self, delay: float) -> None:
        if self.closed or self._retry is not None:
            return

        def fire() -> None:
            self._retry = None
            self._spawn(self._reattach(), "lane attach")

        self._retry = asyncio.get_running_loop().call_later(delay, fire)

    async def _reattach(self) -> None:
        attached = await self.attach()
        if (attached and not self._ticks_missing()) or self.closed or not self.address:
            return
        if reachable(self.address, self.rpc.endpoint):  # the hub may be restarting
            self._schedule(self._backoff)
            self._backoff = min(self._backoff * 2, REATTACH_MAX)


def _no() -> bool:
    return False


def _ignore_flag(flag: bool) -> None:
    """``on_ticks`` of a Lane whose owner does not care where ticks come from."""


def _ignore(link: LaneLink) -> None:
    """``on_lost`` of a link closed on purpose: nothing to do."""
