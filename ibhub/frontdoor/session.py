"""One downstream TWS API connection to the hub's front door.

:class:`DownstreamSession` is a :class:`~ibhub.tws.server_session.TwsServerSession`
(hello, version handshake with server version 176, framing, sending: shared with
the simulator's ``ClientSession``) that hands every request, START_API included,
to the front door's handler table (message id -> handler).

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
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar

from ibhub.frontdoor.requests import field_problem
from ibhub.tws.server_session import TwsServerSession, req_id_of

if TYPE_CHECKING:
    from ibhub.frontdoor.ids import ClientBook
    from ibhub.frontdoor.server import FrontDoor

__all__ = ["MAX_FRAME", "SERVER_VERSION", "DownstreamSession", "Handler", "req_id_of"]

log = logging.getLogger(__name__)

SERVER_VERSION = 176
MAX_FRAME = 1 << 20

Handler = Callable[["DownstreamSession", list[str]], "Awaitable[None] | None"]


class DownstreamSession(TwsServerSession):
    """State of one downstream connection (see module docstring)."""

    _log = log
    _label = "tws client"
    _bad_request_level = logging.INFO
    _internal_error: ClassVar[tuple[int, str]] = (
        320, "Error reading request.-'{msg_id}' : cause - internal ibhub error "
             "(see the hub's log)")

    def __init__(self, door: FrontDoor, number: int) -> None:
        super().__init__(SERVER_VERSION, MAX_FRAME)
        self.door = door
        self.number = number  # unique per front door; names this connection's holders
        self.book: ClientBook | None = None
        self.lease = f"tws:{number}"  # the order manager's lease / the line holders' prefix
        self.owner = ""  # order owner name, set by START_API
        # per-connection state owned by the handler modules
        self.lines: dict[int, Any] = {}  # reqId -> market-data or bar line
        self.market_data_type = 1  # reqMarketDataType: 3/4 get delayed tick types
        self.routes: dict[int, int] = {}  # reqId -> upstream id (pass-through)
        self.positions_live = False
        self.account_live = ""  # account whose updates stream (reqAccountUpdates)
        self.held_lines = False  # had market data when the upstream went away
        self._queue: collections.deque[list[str]] = collections.deque()
        self._worker: asyncio.Task[None] | None = None
        self._refusal = ""  # why this connection is refused (set by the front door)
        self._deadline: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ admission

    def expect_start(self, seconds: float) -> None:
        """Close the connection unless START_API arrives within ``seconds``."""
        self._deadline = asyncio.get_running_loop().call_later(seconds, self._start_overdue,
                                                               seconds)

    def _start_overdue(self, seconds: float) -> None:
        self._deadline = None
        if not self.started and not self.closed:
            log.info("tws client %s sent no START_API within %gs; closing", self.peer,
                     seconds)
            self.abort()

    def refuse(self, message: str, grace: float) -> None:
        """Answer the version handshake, then ``error(-1, 502, message)`` and close
        (:meth:`refuse_connection`: the client's connect fails at once, with the reason
        in its log). Closed without a word if the handshake does not come within
        ``grace`` seconds."""
        self._refusal = message
        self.expect_start(grace)

    # ------------------------------------------------------------------ TwsServerSession hooks

    def _opened(self) -> None:
        self.door.session_opened(self)

    def _gone(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        # A request already being served finishes (an order that reached the hub's
        # order path is placed, as by a Gateway that read it); queued ones are dropped.
        self._queue.clear()
        self.door.session_closed(self)

    def _on_messages(self, messages: list[list[str]]) -> None:
        if self._refusal:
            if messages:
                self._message_id(messages[0])  # the version handshake (or a close)
                if not self.closed:
                    self.refuse_connection(502, self._refusal,
                                           self.door.accounts_known or ["DU0000000"])
            return
        self._queue.extend(messages)
        if self._worker is None:
            self._drain()

    def cancel_work(self) -> None:
        """Hub shutdown: stop the request being served, if any."""
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()

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
        msg_id = self._message_id(fields)
        if msg_id is None or not self._check_started(msg_id, fields):
            return None
        problem = field_problem(fields)
        if problem is not None:  # refused here: nothing of it reaches the hub or IB
            log.info("tws client %s: refused message %d: %s", self.client_id, msg_id, problem)
            self.reject(msg_id, fields, problem)
            return None
        handler = self.door.handlers.get(msg_id)
        if handler is None:
            self.door.unsupported(self, msg_id, fields)
            return None
        try:
            result = handler(self, fields)
        except Exception as exc:
            self._answer_failure(msg_id, fields, exc)
            return None
        if result is None:
            return None
        return self._checked(msg_id, fields, result)

    async def _checked(self, msg_id: int, fields: list[str], result: Awaitable[None]) -> None:
        try:
            await result
        except Exception as exc:  # a bug costs this request an error reply, never the hub
            self._answer_failure(msg_id, fields, exc)
