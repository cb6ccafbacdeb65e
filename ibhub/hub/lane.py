"""The lane: a local plain-socket fast path between the SDK and the hub, beside ZeroMQ.

Why: on this machine a cold ZeroMQ DEALER->ROUTER hop costs ~550 us and its reply
~300 us (three thread wake-ups: the sender's I/O thread, the receiver's I/O thread,
the receiver's loop), a plain socket ~110/100 us (one wake-up). An order crosses two
such hops (the request in, its fill event out) that a direct ib_insync script does
not have, so the hub cannot come within 0.5 ms of direct over ZeroMQ alone
(docs/performance.md, section 8.2, "The lane"). ZeroMQ stays the transport of record:
every script still says hello over it, and its SUB socket still gets every event.

What the lane carries (framing in :mod:`ibhub.wire`, docs/protocol.md "The lane"):

* requests, exactly the ROUTER's payloads, served by
  :meth:`~ibhub.hub.requests.RpcServer.serve_payload` (leases, roles, ownership,
  idempotency and risk are one code for ZeroMQ, NATS and the lane);
* pushed events of the attached lease's own topics (``order.<lease>``,
  ``error.<lease>``): the same payloads and sequence numbers as on PUB, taken from the
  fan-out's listener hook (:meth:`~ibhub.hub.fanout.Fanout.add_listener`). The SDK
  feeds both copies to one sequencer; whichever arrives first wins.
* "Ticks on the lane": a connection attached with ``LaneAttach(ticks=True)`` gets
  every ``bundle.tick`` payload (:attr:`~ibhub.hub.fanout.Fanout.bundle_sink`, one
  frame built per read, written to each tick connection) and nothing else pushed. A
  cold PUB->SUB hop costs three thread wake-ups (the hub's ZeroMQ I/O thread, the
  subscriber's, then its loop), a plain socket one, and the hub's write to a Unix
  socket is cheaper than its I/O thread's to loopback TCP (docs/performance.md,
  section 9). It is a connection of its own so that a burst of ticks never queues
  in front of an order's reply or fill event. The SDK, once attached, unsubscribes
  ``bundle.tick`` on its SUB socket and subscribes it again if the connection breaks;
  the per-topic sequence numbers inside the bundle are the same on both routes, so
  its sequencers bridge a switch (a gap recovers from a snapshot as on PUB).
  A reader past ``TICK_PUSH_LIMIT`` unsent bytes loses whole bundles (counted,
  logged), as a PUB subscriber at its high-water mark does.

Identity: a lease token works only from the connection that said hello
(:meth:`~ibhub.hub.leases.LeaseTable.resolve`). A lane connection becomes one of the
lease's connections only by attaching: its first frame is a :class:`LaneAttach` with a
ticket the lease asked for over ZeroMQ (:class:`LaneTicket`: 256 random bits, single
use, ``TICKET_TTL`` seconds) and the lease's token. The connection then gets a random
route of its own, added to the lease's ``lanes``; the CURVE key (if any) is the
lease's. Anything else (no attach within ``ATTACH_TIMEOUT``, a used, expired or unknown
ticket, a ticket of another lease, an oversize or malformed frame) is answered with an
Error naming it where a frame can still be answered, then the connection is closed;
every refusal is counted (:attr:`LaneServer.counters`) and the hub keeps running.

Bounds: at most ``lane_max_connections`` connections (more are refused at accept and
counted). A reader that stops reading never blocks the hub (asyncio writes never
block): past ``PUSH_LIMIT`` bytes unsent, pushed events are dropped for that
connection (the SUB socket still carries them; logged, counted); past ``REPLY_LIMIT``
the connection is closed (its client falls back to ZeroMQ and retries there).

Where: ``lane = "unix"`` (default) listens on ``<data_dir>/lane.sock``, mode 0600
(the hub's user only; removed at stop); ``tcp://127.0.0.1:PORT`` on a loopback port
(the settings refuse any other host: the lane carries lease secrets in the clear);
``off``: none, and the Welcome names no lane.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from ibhub import wire
from ibhub.acceptor import Acceptor
from ibhub.hub.leases import LeaseTable, Peer
from ibhub.hub.registry import Context, Registry
from ibhub.protocol import (
    TOPIC_BUNDLE,
    TOPIC_ERROR,
    TOPIC_ORDER,
    Error,
    ErrorCode,
    Event,
    LaneAttach,
    LaneAttached,
    LaneTicket,
    LaneTicketIssued,
    Reply,
)

if TYPE_CHECKING:
    from ibhub.hub.fanout import Fanout
    from ibhub.hub.requests import RpcServer

log = logging.getLogger(__name__)

TICKET_TTL = 10.0  # seconds a lane ticket may wait for its attach
ATTACH_TIMEOUT = 3.0  # seconds a new lane connection has to send its attach
PUSH_LIMIT = 1 << 20  # unsent bytes past which pushed events are dropped (SUB has them)
TICK_PUSH_LIMIT = 8 << 20  # unsent bytes past which a tick connection loses bundles
REPLY_LIMIT = 8 << 20  # unsent bytes past which the connection is closed
UNIX_PATH_MAX = 107  # sun_path holds 108 bytes with the NUL
BUNDLE_KEY = TOPIC_BUNDLE.encode()
LANE_ROUTE = b"lane\0"  # prefix of an attached lane connection's route (Peer.route)
# LaneConnection.push's log line for a slow reader: (what, dropped items, where it
# still is), by whether the connection carries ticks
_DROPPED = {False: ("lane too slowly", "pushed event(s)", "its SUB socket still has them"),
            True: ("ticks too slowly", "bundle(s)",
                   "its sequence checks recover from snapshots")}


def _live(path: Path) -> bool:
    """Whether something accepts connections at the Unix socket ``path``."""
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.2)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


class LaneConnection(asyncio.Protocol):
    """One lane connection: frames in, replies and pushed events out."""

    def __init__(self, server: LaneServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.frames = wire.LaneFrames(server.max_frame)
        self.lease_id = ""  # the attached lease's handle ("" before the attach)
        self.peer: Peer | None = None
        self.ticks = False  # attached for bundle.tick (LaneAttach.ticks)
        self.dropped = 0  # pushed events dropped for a slow reader
        self._deadline: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ asyncio

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one
        self.transport = cast(asyncio.Transport, transport)
        server = self.server
        if len(server.connections) >= server.max_connections:
            server.count("refused_full")
            if server.counters["refused_full"] & (server.counters["refused_full"] - 1) == 0:
                log.warning("lane: refused a connection: %d connections open "
                            "(lane_max_connections); %d refused so far",
                            len(server.connections), server.counters["refused_full"])
            self.reply(Error(id=0, code=ErrorCode.BUSY,
                             message=f"the hub's lane is full ({server.max_connections} "
                                     "connections, lane_max_connections); use ZeroMQ"))
            transport.close()
            return
        server.connections.add(self)
        server.count("connections")
        self._deadline = asyncio.get_running_loop().call_later(
            ATTACH_TIMEOUT, self._attach_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self.server.forget(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.frames.feed(data)
        except wire.LaneFrameError as exc:
            self.server.count("bad_frames")
            log.warning("lane: closing a connection (lease %s): %s",
                        self.lease_id or "not attached", exc)
            self.refuse(Error(id=0, code=ErrorCode.TOO_LARGE,
                              message=f"lane frame refused: {exc} (max_request_bytes); "
                                      "closing the lane"))
            return
        for payload in frames:
            if self.transport is None or self.transport.is_closing():
                return  # refused: frames pipelined behind the refusal are not read
            if self.peer is None:
                self._attach(payload)
            else:
                self.server.serve(payload, self.peer, self.reply)

    # ------------------------------------------------------------------ attach

    def _attach_timeout(self) -> None:
        self._deadline = None
        if self.peer is None and self.transport is not None:
            self.server.count("attach_timeouts")
            self.refuse(Error(id=0, code=ErrorCode.BAD_REQUEST,
                              message=f"no lane_attach within {ATTACH_TIMEOUT:.0f}s of "
                                      "connecting; closing the lane"))

    def _attach(self, payload: bytes) -> None:
        result = self.server.attach(payload)
        if isinstance(result, Error):
            self.server.count("attach_refused")
            self.refuse(result)
            return
        self.peer, self.lease_id, rid, self.ticks = result
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self.server.count("attached")
        if self.ticks:
            self.server.add_ticks(self)
        else:
            self.server.bind(self)
        self.reply(LaneAttached(id=rid, lease=self.lease_id))

    # ------------------------------------------------------------------ out

    def reply(self, reply: Reply) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            self.server.count("replies_lost")
            log.warning("lane: reply to request %d lost: its lane closed (the client "
                        "retries it over ZeroMQ)", reply.id)
            return
        transport.write(wire.lane_reply_frame(wire.encode(reply)))
        if transport.get_write_buffer_size() > REPLY_LIMIT:
            self.server.count("closed_slow")
            log.warning("lane: closing lease %s's lane: %d bytes unread (it does not read "
                        "its replies)", self.lease_id, transport.get_write_buffer_size())
            transport.abort()

    def push(self, frame: bytes) -> None:
        """A pushed frame: the lease's order or error event, or, on a tick connection, a
        read's bundle. Past ``PUSH_LIMIT`` unsent (``TICK_PUSH_LIMIT`` for ticks) it is
        dropped whole, counted and logged: the SUB socket still has the event; a
        bundle's gaps recover from snapshots."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        ticks = self.ticks
        if transport.get_write_buffer_size() > (TICK_PUSH_LIMIT if ticks else PUSH_LIMIT):
            self.dropped += 1
            self.server.count("bundles_dropped" if ticks else "events_dropped")
            if self.dropped & (self.dropped - 1) == 0:  # 1, 2, 4, ...: no log flood
                what, items, still = _DROPPED[ticks]
                log.warning("lane: lease %s reads its %s: %d %s dropped (%s)",
                            self.lease_id, what, self.dropped, items, still)
            return
        transport.write(frame)

    def refuse(self, error: Error) -> None:
        """Answer ``error`` (it names the problem) and close."""
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(wire.lane_reply_frame(wire.encode(error)))
            transport.close()


class LaneServer:
    """The hub's lane listener; a hub service (``on_lease_gone``, ``stop``)."""

    def __init__(self, setting: str, data_dir: Path, rpc: RpcServer, leases: LeaseTable,
                 fanout: Fanout, *, max_connections: int, max_frame: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.setting = setting
        self.data_dir = Path(data_dir)
        self.rpc = rpc
        self.leases = leases
        self.fanout = fanout
        self.max_connections = max_connections
        self.max_frame = max_frame
        self.address = ""  # what the Welcome names: unix:///path or tcp://127.0.0.1:PORT
        self.path: Path | None = None
        self.connections: set[LaneConnection] = set()
        self.by_lease: dict[str, list[LaneConnection]] = {}
        self.tick_connections: list[LaneConnection] = []  # attached with ticks=True
        self.counters: dict[str, int] = dict.fromkeys(
            ("connections", "attached", "refused_full", "attach_refused", "attach_timeouts",
             "bad_frames", "requests", "events_pushed", "events_dropped", "replies_lost",
             "closed_slow", "tickets", "tick_attached", "bundles_pushed",
             "bundles_dropped"), 0)
        self._tickets: dict[str, tuple[str, float]] = {}  # ticket -> (lease handle, expiry)
        self._clock = clock
        self._server: Acceptor | None = None
        self._unlisten: Callable[[], None] | None = None
        self._inode = 0

    def count(self, name: str) -> None:
        self.counters[name] += 1

    # ------------------------------------------------------------------ life

    async def start(self) -> None:
        """Listen (a path too long for a Unix socket: warned, no lane)."""
        if self.setting == "unix":
            path = self.data_dir / wire.LANE_UNIX_SOCKET
            if len(os.fsencode(path)) > UNIX_PATH_MAX:
                log.warning("lane off: the socket path %s is longer than a Unix socket "
                            "allows (%d bytes); set lane = tcp://127.0.0.1:PORT or a "
                            "shorter data_dir", path, UNIX_PATH_MAX)
                return
            self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            if _live(path):
                log.warning("lane off: another hub serves a lane at %s (two hubs on one "
                            "data_dir?)", path)
                return
            try:
                if stat.S_ISSOCK(path.lstat().st_mode):
                    path.unlink()  # a previous hub's, left by a crash
            except FileNotFoundError:
                pass
            # bound with umask 077: never a moment when another user could connect
            old = os.umask(0o077)
            try:
                self._server = Acceptor.unix(path, lambda: LaneConnection(self))
            finally:
                os.umask(old)
            os.chmod(path, 0o600)
            self.path = path
            self._inode = path.stat().st_ino
            self.address = f"unix://{path}"
        else:
            host, _, port = self.setting[len("tcp://"):].rpartition(":")
            host = host.strip("[]")
            if host == "localhost":  # one address: a port 0 would differ per address
                host = "127.0.0.1"
            self._server = Acceptor.tcp(host, int(port), lambda: LaneConnection(self))
            self.address = f"tcp://{host}:{self._server.port}"
        self._unlisten = self.fanout.add_listener((TOPIC_ORDER, TOPIC_ERROR), self._on_event)
        log.info("lane listening on %s", self.address)

    async def stop(self) -> None:
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
        self.fanout.bundle_sink = None
        server, self._server = self._server, None
        if server is not None:
            await server.close()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                if self.path.stat().st_ino == self._inode:  # ours, not a later hub's
                    self.path.unlink()
            self.path = None
        self.address = ""

    # ------------------------------------------------------------------ tickets

    def register(self, registry: Registry) -> None:
        registry.add(LaneTicket, self.ticket, lease=True)

    def ticket(self, req: LaneTicket, ctx: Context) -> Reply:
        """A single-use ticket for the requesting lease (the registry resolved it)."""
        if not self.address:
            return Error(id=req.id, code=ErrorCode.BAD_REQUEST,
                         message="this hub has no lane (lane = off); use ZeroMQ")
        assert ctx.lease is not None
        now = self._clock()
        for old in [t for t, (_, exp) in self._tickets.items() if exp <= now]:
            del self._tickets[old]  # expired, never used
        ticket = secrets.token_urlsafe(32)
        self._tickets[ticket] = (ctx.lease.lease_id, now + TICKET_TTL)
        self.count("tickets")
        return LaneTicketIssued(id=req.id, ticket=ticket, expires_in=TICKET_TTL)

    def attach(self, payload: bytes) -> tuple[Peer, str, int, bool] | Error:
        """The peer, lease, request id and tick flag a first frame attaches with, or
        the Error refusing it."""
        try:
            req = wire.decode_request(payload)
        except Exception as exc:  # msgspec's DecodeError / ValidationError, named
            return Error(id=0, code=ErrorCode.BAD_REQUEST,
                         message=f"the first lane frame must be a lane_attach: {exc}")
        if not isinstance(req, LaneAttach):
            return Error(id=req.id, code=ErrorCode.BAD_REQUEST,
                         message=f"the first lane frame must be a lane_attach, got "
                                 f"{type(req).__struct_config__.tag!r}")
        entry = self._tickets.pop(req.ticket, None)  # single use, whatever follows
        if entry is None:
            return Error(id=req.id, code=ErrorCode.FORBIDDEN,
                         message="lane ticket unknown or already used; ask for a new one "
                                 "(lane_ticket over ZeroMQ)")
        lease_id, expires = entry
        if self._clock() >= expires:
            return Error(id=req.id, code=ErrorCode.FORBIDDEN,
                         message=f"lane ticket expired (valid {TICKET_TTL:.0f}s); ask for "
                                 "a new one")
        lease = self.leases.get(lease_id)
        if lease is None:
            return Error(id=req.id, code=ErrorCode.UNKNOWN_LEASE,
                         message="the lease this lane ticket was issued to has ended")
        if not secrets.compare_digest(lease.token.encode(), req.lease.encode()):
            return Error(id=req.id, code=ErrorCode.FORBIDDEN,
                         message="this lane ticket was issued to another lease")
        route = LANE_ROUTE + secrets.token_bytes(16)
        lease.lanes.add(route)
        return Peer(route, lease.peer.key), lease_id, req.id, req.ticks

    def bind(self, conn: LaneConnection) -> None:
        self.by_lease.setdefault(conn.lease_id, []).append(conn)

    def add_ticks(self, conn: LaneConnection) -> None:
        """``conn`` gets every bundle from now on (the first one starts the sink)."""
        self.tick_connections.append(conn)
        self.count("tick_attached")
        self.fanout.bundle_sink = self._push_bundle

    def forget(self, conn: LaneConnection) -> None:
        self.connections.discard(conn)
        if conn in self.tick_connections:
            self.tick_connections.remove(conn)
            if not self.tick_connections:
                self.fanout.bundle_sink = None
        if not conn.lease_id:
            return
        conns = self.by_lease.get(conn.lease_id)
        if conns is not None and conn in conns:
            conns.remove(conn)
            if not conns:
                del self.by_lease[conn.lease_id]
        lease = self.leases.get(conn.lease_id)
        if lease is not None and conn.peer is not None:
            lease.lanes.discard(conn.peer.route)

    # ------------------------------------------------------------------ traffic

    def serve(self, payload: bytes, peer: Peer, send: Callable[[Reply], None]) -> None:
        self.counters["requests"] += 1
        try:
            self.rpc.serve_payload(payload, peer, send)
        except Exception:  # a bug must cost one request, never the lane (as the ROUTER's)
            log.exception("lane: unexpected error serving a request")
            send(Error(id=0, code=ErrorCode.INTERNAL,
                       message="internal error serving a lane request; see hub log"))

    def _push_bundle(self, payload: bytes) -> None:
        """A read's bundle (Fanout.flush): one frame, written to every tick connection."""
        frame = wire.lane_event_frame(BUNDLE_KEY, payload)
        for conn in self.tick_connections:
            conn.push(frame)
        self.counters["bundles_pushed"] += 1

    def _on_event(self, topic: str, event: Event) -> None:
        """An order or error event was published: push it to its lease's lanes."""
        conns = self.by_lease.get(topic.partition(".")[2])
        if not conns:
            return
        payload = self.fanout.topic(topic).last  # the bytes PUB just sent
        if payload is None:
            return
        frame = wire.lane_event_frame(topic.encode(), payload)
        for conn in conns:
            conn.push(frame)
        self.counters["events_pushed"] += 1

    # ------------------------------------------------------------------ hub service

    def on_lease_gone(self, lease_id: str) -> None:
        """The lease ended: its lanes close (the client re-attaches after its re-hello)."""
        conns = self.by_lease.pop(lease_id, [])
        conns += [c for c in self.tick_connections if c.lease_id == lease_id]
        if conns:  # after this turn: a goodbye's own reply goes out first
            asyncio.get_running_loop().call_soon(self._close_all, conns)

    @staticmethod
    def _close_all(conns: list[LaneConnection]) -> None:
        for conn in conns:
            if conn.transport is not None:
                conn.transport.close()

    def stats(self) -> dict[str, Any]:
        return {"address": self.address, "open": len(self.connections),
                "tick_connections": len(self.tick_connections), **self.counters}
