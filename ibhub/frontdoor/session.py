"""One downstream TWS API connection to the hub's front door.

:class:`DownstreamSession` is an ``asyncio.Protocol`` (like the simulator's
``ClientSession``, whose framing it reuses): it answers the ``API\\0`` hello and the
version range with server version 176, takes START_API, and then hands every
request to the front door's handler table (message id -> handler).

Requests are served **in the order they arrive**, as a Gateway does: a handler may
be a coroutine (a contract lookup, an order going through the journal), and
while one runs, later requests of the same connection wait in a queue, so a
``cancelMktData`` can never overtake its ``reqMktData``. Other connections are not
affected. Ticks are written straight to the transport by the market-data taps;
while the client does not read (``pause_writing``) its ticks are skipped, never
queued, so a stuck script cannot grow the hub's memory.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from ibhub.sim.codec import FrameReader, ProtocolError, frame, parse_version_range
from ibhub.sim.session import REQ_ID_INDEX

if TYPE_CHECKING:
    from ibhub.frontdoor.ids import ClientBook
    from ibhub.frontdoor.server import FrontDoor

log = logging.getLogger(__name__)

SERVER_VERSION = 176
_HELLO = b"API\0"
MAX_FRAME = 1 << 20

Handler = Callable[["DownstreamSession", list[str]], "Awaitable[None] | None"]


def req_id_of(msg_id: int, fields: list[str]) -> int:
    """The request (or order) id a request carries, -1 if none (errors go there)."""
    idx = REQ_ID_INDEX.get(msg_id)
    if idx is None or idx >= len(fields):
        return -1
    try:
        return int(fields[idx])
    except ValueError:
        return -1


class DownstreamSession(asyncio.Protocol):
    """State of one downstream connection (see module docstring)."""

    def __init__(self, door: FrontDoor, number: int) -> None:
        self.door = door
        self.number = number  # unique per front door; names this connection's holders
        self.client_id = -1
        self.book: ClientBook | None = None
        self.started = False
        self.closed = False
        self.paused = False
        self.peer = "?"
        self.transport: asyncio.Transport | None = None
        self.lease = f"tws:{number}"  # the order book's lease / the line holders' prefix
        self.owner = ""  # order owner name, set by START_API
        # per-connection state owned by the handler modules
        self.lines: dict[int, Any] = {}  # reqId -> market-data or bar line
        self.routes: dict[int, int] = {}  # reqId -> upstream id (pass-through)
        self.positions_live = False
        self.account_live = ""  # account whose updates stream (reqAccountUpdates)
        self.held_lines = False  # had market data when the upstream went away
        self._hello_done = False
        self._version_done = False
        self._pending = bytearray()
        self._reader = FrameReader(MAX_FRAME)
        self._queue: collections.deque[list[str]] = collections.deque()
        self._worker: asyncio.Task[None] | None = None
        self.connected_at = time.time()

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport: no isinstance check
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.door.session_opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        # A request already being served finishes (an order that reached the hub's
        # order path is placed, as by a Gateway that read it); queued ones are dropped.
        self.closed = True
        self._queue.clear()
        self.door.session_closed(self)

    def cancel_work(self) -> None:
        """Hub shutdown: stop the request being served, if any."""
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            if not self._hello_done:
                self._pending += data
                if len(self._pending) < len(_HELLO):
                    return
                if bytes(self._pending[:4]) != _HELLO:
                    got = bytes(self._pending[:4])
                    raise ProtocolError(f"expected 'API\\0' hello, got {got!r}")
                self._hello_done = True
                data = bytes(self._pending[4:])
                self._pending.clear()
            messages = self._reader.feed(data)
        except ProtocolError as exc:
            log.warning("tws client %s: %s; closing the socket", self.peer, exc)
            self.abort()
            return
        self._queue.extend(messages)
        if self._worker is None:
            self._drain()

    # ------------------------------------------------------------------ dispatch

    def _drain(self) -> None:
        """Serve queued requests in order; hand over to a task at the first coroutine."""
        queue = self._queue
        while queue and not self.closed:
            pending = self._dispatch(queue.popleft())
            if pending is not None:
                self._worker = asyncio.ensure_future(self._finish(pending))
                return

    async def _finish(self, first: Awaitable[None]) -> None:
        pending: Awaitable[None] | None = first
        try:
            while pending is not None:
                await self._guard(pending)
                pending = None
                while self._queue and not self.closed and pending is None:
                    pending = self._dispatch(self._queue.popleft())
        finally:
            self._worker = None

    async def _guard(self, pending: Awaitable[None]) -> None:
        try:
            await pending
        except Exception:  # _checked answered it already; never stop the queue
            log.exception("tws client %s (clientId %s): request failed", self.peer,
                          self.client_id)

    def _dispatch(self, fields: list[str]) -> Awaitable[None] | None:
        if not self._version_done:
            self._on_version(fields)
            return None
        try:
            msg_id = int(fields[0]) if fields else -1
        except ValueError:
            msg_id = -1
        if msg_id < 0:
            self.send_error(-1, 320, f"Error reading request. Message id {fields[:1]!r} is "
                                     "not a number")
            return None
        if msg_id != 71 and not self.started:
            self.send_error(req_id_of(msg_id, fields), 321,
                            f"Error validating request.-'{msg_id}' : cause - API client not "
                            "started: send START_API (71) first")
            return None
        handler = self.door.handlers.get(msg_id)
        if handler is None:
            self.door.unsupported(self, msg_id, fields)
            return None
        try:
            result = handler(self, fields)
        except (ValueError, IndexError) as exc:
            log.info("tws client %d: bad message %d %r: %s", self.client_id, msg_id,
                     fields[:6], exc)
            self.send_error(req_id_of(msg_id, fields), 321,
                            f"Error validating request.-'{msg_id}' : cause - {exc}")
            return None
        except Exception:
            log.exception("tws client %d: handler for message %d failed on %r",
                          self.client_id, msg_id, fields[:6])
            self.send_error(req_id_of(msg_id, fields), 320,
                            f"Error reading request.-'{msg_id}' : cause - internal ibhub "
                            "error (see the hub's log)")
            return None
        if result is None:
            return None
        return self._checked(msg_id, fields, result)

    async def _checked(self, msg_id: int, fields: list[str], result: Awaitable[None]) -> None:
        try:
            await result
        except (ValueError, IndexError) as exc:
            self.send_error(req_id_of(msg_id, fields), 321,
                            f"Error validating request.-'{msg_id}' : cause - {exc}")
        except Exception:  # a bug costs this request an error reply, never the hub
            log.exception("tws client %d: handler for message %d failed on %r",
                          self.client_id, msg_id, fields[:6])
            self.send_error(req_id_of(msg_id, fields), 320,
                            f"Error reading request.-'{msg_id}' : cause - internal ibhub "
                            "error (see the hub's log)")

    def _on_version(self, fields: list[str]) -> None:
        text = fields[0] if fields else ""
        versions = parse_version_range(text)
        if versions is None or not versions[0] <= SERVER_VERSION <= versions[1]:
            log.warning("tws client %s: version %r does not allow %d; closing", self.peer,
                        text, SERVER_VERSION)
            self.abort()
            return
        self._version_done = True
        now = time.strftime("%Y%m%d %H:%M:%S", time.gmtime())
        self.send(SERVER_VERSION, f"{now} Greenwich Mean Time")

    # ------------------------------------------------------------------ sending

    def send(self, *fields: object) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(frame(fields))

    def send_fields(self, fields: list[object]) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(frame(fields))

    def write(self, data: bytes) -> None:
        """Pre-framed bytes (ticks, pass-through replies)."""
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def send_error(self, req_id: int, code: int, message: str) -> None:
        """error (4) at sv 176: six fields, the last is advancedOrderRejectJson."""
        self.send(4, 2, req_id, code, message, "")

    def close(self) -> None:
        """Close after flushing what is queued (e.g. the 326 error)."""
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.closed = True
            self.transport.abort()
