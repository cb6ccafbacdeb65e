"""The hub's TWS-protocol front door: existing TWS API scripts connect to the hub.

``FrontDoor`` listens on a loopback TCP port and looks like an IB Gateway at server
version 176 to every TWS API client (ib_insync, ib_async, ibapi). Each connection
is a :class:`~ibhub.frontdoor.session.DownstreamSession`; the front door owns what
they share:

* **client ids** — the hub's to manage: any id is accepted, a second live
  connection with the same id gets 326 and is closed, as from a real Gateway;
  there is no 32-client limit (the hub holds the one upstream connection);
* **the handler table** (message id -> handler), assembled from
  :mod:`.market` (market data on the hub's shared lines), :mod:`.orders` (the
  hub's order path), :mod:`.accounts` (the hub's account cache) and
  :mod:`.passthrough` (contract details, historical data ... with remapped ids);
  anything else gets an error naming the request, never silence;
* **hub events** — order, account, error and status events arrive on the hub's
  own PUB socket (:mod:`.events`), so the front door needs no private hook into
  the order manager: ``order.tws:N`` becomes openOrder/orderStatus/execDetails/
  commissionReport, ``hub.status`` becomes 1100/1101/1102.

It plugs into the hub only through public pieces: ``hub.market`` (contracts and
lines, :mod:`ibhub.hub.market_data`), ``hub.upstream`` (pass-through),
``hub.services`` (the order service, if attached), ``Upstream.add_tap`` and
``TickStream.taps``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ibhub.acceptor import Acceptor
from ibhub.config import ConfigError
from ibhub.frontdoor import accounts, market, orders
from ibhub.frontdoor.account_streams import AccountStreams
from ibhub.frontdoor.idless import IdlessRequests
from ibhub.frontdoor.ids import ClientBooks
from ibhub.frontdoor.passthrough import Passthrough
from ibhub.frontdoor.requests import UNSUPPORTED, unsupported_text
from ibhub.frontdoor.session import DownstreamSession, Handler
from ibhub.hub.limits import TWS_HANDSHAKE_TIMEOUT, Limits, limits_of, open_fds
from ibhub.protocol import (
    TOPIC_ACCOUNT,
    TOPIC_ERROR,
    TOPIC_NEWS_BULLETIN,
    TOPIC_ORDER,
    TOPIC_POSITION,
    TOPIC_STATUS,
    ContractInfo,
    HubStatus,
    NewsBulletin,
    UpstreamState,
)
from ibhub.tws.server_session import FARM_OK, req_id_of

log = logging.getLogger(__name__)

#: the hub events the front door follows in-process (Fanout.add_listener); "tws:" is
#: the owner/lease prefix of its downstream connections. Ticks arrive through taps.
EVENT_PREFIXES = (
    TOPIC_ORDER + "tws:",
    TOPIC_ERROR + "tws:",
    TOPIC_STATUS,
    TOPIC_ACCOUNT,
    TOPIC_POSITION,
    TOPIC_NEWS_BULLETIN,
)

CONNECTIVITY_LOST = (1100, "Connectivity between IB and Trader Workstation has been lost.")
RESTORED_LOST = (
    1101,
    "Connectivity between IB and Trader Workstation has been restored - data lost. "
    "ibhub has re-requested this connection's market data on the same request ids.",
)
RESTORED_KEPT = (
    1102,
    "Connectivity between IB and Trader Workstation has been restored - data maintained.",
)
ACCOUNTS_WAIT = 30.0  # START_API waits this long for the upstream's account list
REFUSE_GRACE = 2.0  # a refused connection has this long to take its 502
REFUSING_MAX = 16  # refusals explained at once; beyond, refused connections just close


class FrontDoor:
    """See the module docstring. ``await FrontDoor.start_for(hub, port)``."""

    def __init__(self, hub: Any, port: int = 0, host: str = "127.0.0.1") -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"the TWS front door binds loopback only, not {host!r}")
        self.hub = hub
        self.host = host
        self.port = port
        self.tws_port = 0  # the bound port once started
        self.sessions: set[DownstreamSession] = set()
        self._refusing: set[DownstreamSession] = set()  # refused, saying why, then closing
        self.clients: dict[int, DownstreamSession] = {}  # live client id -> session
        self.books = ClientBooks()
        self.contracts: dict[int, ContractInfo] = {}  # con_id -> what the hub resolved
        self.passthrough = Passthrough(self)
        self.idless = IdlessRequests(self)
        self.market = market.MarketData(self)
        self.orders = orders.OrderRelay(self)
        self.accounts_known: list[str] = []
        self.outage = False
        # Distinguishes this hub run's client order ids from the journal's older ones.
        self.run_tag = format(time.time_ns() // 1_000_000, "x")
        self.handlers: dict[int, Handler] = {
            71: self._start_api,
            8: self._req_ids,
            49: self._req_current_time,
            17: self._req_managed_accounts,
            15: _ignore,  # reqAutoOpenOrders: nothing to bind, orders are per client id
        }
        self.handlers.update(self.market.handlers())
        self.handlers.update(orders.handlers(self.orders))
        self.handlers.update(accounts.handlers(self))
        self.handlers.update(self.passthrough.handlers())
        self.handlers.update(self.idless.handlers())
        self.handlers[14] = _ignore  # setServerLogLevel: the Gateway's log is the operator's
        # account summary and PnL from the hub's shared subscriptions (after the
        # pass-through table, which would otherwise send reqPnL upstream per script)
        self.account_streams = AccountStreams(self)
        self.handlers.update(self.account_streams.handlers())
        self._server: Acceptor | None = None
        self._numbers = itertools.count(1)
        self._unlisten: Callable[[], None] | None = None
        self._accounts_ready = asyncio.Event()

    # ------------------------------------------------------------------ life cycle

    @classmethod
    async def start_for(cls, hub: Any, port: int = 0) -> FrontDoor:
        """Build, start and return a front door for a started ``HubServer``."""
        door = cls(hub, port)
        await door.start()
        return door

    async def start(self) -> None:
        try:
            self._server = Acceptor.tcp(
                self.host, self.port, lambda: DownstreamSession(self, next(self._numbers))
            )
        except OSError as exc:
            raise ConfigError(f"cannot listen for TWS API clients on {self.host}:{self.port}: "
                              f"{exc.strerror or exc}; choose another --tws-port") from exc
        self.tws_port = self._server.port
        self.passthrough.install()
        self.idless.install()
        self._unlisten = self.hub.fanout.add_listener(EVENT_PREFIXES, self.on_event)
        up = self.hub.upstream
        if up is not None and up.connected:
            self.on_connected(up.port, up.accounts)
        log.info("TWS front door listening on %s:%d (server version 176)", self.host,
                 self.tws_port)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.close()
        for s in list(self.sessions):
            s.abort()
            s.cancel_work()
            self.session_closed(s)
        for s in list(self._refusing):
            s.abort()
        self._refusing.clear()
        self.market.stop()
        self.account_streams.stop()
        self.passthrough.uninstall()
        self.idless.uninstall()
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None

    # ------------------------------------------------------------------ hub service hooks

    def on_connected(self, port: int, accounts_: list[str]) -> None:
        if accounts_:
            self.accounts_known = list(accounts_)
            self._accounts_ready.set()

    def order_service(self) -> Any:
        """The hub's order service (``attach_orders``), or None if trading is not wired."""
        own = getattr(self.hub, "orders", None)
        if own is not None:
            return own
        for service in getattr(self.hub, "services", ()):
            if hasattr(service, "book") and hasattr(service, "account"):
                return service
        return None

    @property
    def account(self) -> str:
        return self.accounts_known[0] if self.accounts_known else ""

    # ------------------------------------------------------------------ sessions

    def session_opened(self, s: DownstreamSession) -> None:
        limits = limits_of(self.hub)
        stats = limits.stats("tws")
        stats.accepted += 1
        if len(self.sessions) >= stats.cap or limits.fds_low():
            self._refuse(s, limits)
            return
        self.sessions.add(s)
        stats.open = len(self.sessions)
        s.expect_start(TWS_HANDSHAKE_TIMEOUT)

    def _refuse(self, s: DownstreamSession, limits: Limits) -> None:
        """Over the cap: a Gateway-like refusal (502 with the reason), or at the descriptor
        reserve, or with many refusals already pending, a plain close."""
        stats = limits.stats("tws")
        stats.refused += 1
        if stats.refused == 1 or stats.refused % 100 == 0:
            log.warning("tws front door refuses %s: %d connections open (max_tws_connections "
                        "%d), %d open files of %d; %d refused so far", s.peer,
                        len(self.sessions), stats.cap, open_fds() or 0, limits.soft,
                        stats.refused)
        if limits.fds_low() or len(self._refusing) >= REFUSING_MAX:
            s.abort()
            return
        self._refusing.add(s)
        s.refuse(f"ibhub front door: connection refused: {len(self.sessions)} TWS API "
                 f"connections are open (max_tws_connections {stats.cap}); close idle "
                 f"connections or raise the cap (docs/operations.md)", REFUSE_GRACE)

    def session_closed(self, s: DownstreamSession) -> None:
        if s not in self.sessions:
            self._refusing.discard(s)
            return
        self.sessions.discard(s)
        limits_of(self.hub).stats("tws").open = len(self.sessions)
        if s.started and self.clients.get(s.client_id) is s:
            del self.clients[s.client_id]
            log.info("tws client %d (%s) disconnected; its working orders stay",
                     s.client_id, s.peer)
        self.market.release_all(s)
        self.passthrough.release_all(s)
        self.idless.release_all(s)
        self.orders.session_gone(s)
        self.account_streams.session_gone(s)

    def unsupported(self, s: DownstreamSession, msg_id: int, fields: list[str]) -> None:
        log.info("tws client %d: %s", s.client_id, unsupported_text(msg_id))
        s.send_error(req_id_of(msg_id, fields), UNSUPPORTED, unsupported_text(msg_id))

    # ------------------------------------------------------------------ connection requests

    def _start_api(self, s: DownstreamSession, f: list[str]) -> Awaitable[None] | None:
        if s.started:
            return None  # a second START_API is ignored, as by the Gateway
        client_id = int(f[2])
        if client_id in self.clients:
            log.info("tws client %s: client id %d already in use; 326 and close", s.peer,
                     client_id)
            s.refuse_client_id()
            return None
        s.client_id = client_id
        s.started = True
        s.book = self.books.get(client_id)
        s.owner = f"tws-client-{client_id}"
        self.clients[client_id] = s
        return self._welcome(s)

    async def _welcome(self, s: DownstreamSession) -> None:
        if not self.accounts_known:
            # nextValidId/managedAccounts must name an account; wait for the upstream
            # (the client's own connect timeout bounds how long it waits for us)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(ACCOUNTS_WAIT):
                    await self._accounts_ready.wait()
        if s.closed:
            return
        assert s.book is not None
        self.orders.session_started(s)  # may adopt journaled orders: before nextValidId
        up = self.hub.upstream
        farms_ok = up is not None and up.connected and not self.outage
        s.welcome(s.book.next_id, self.accounts_known or ["DU0000000"],
                  FARM_OK if farms_ok else (CONNECTIVITY_LOST,))
        log.info("tws client %d connected from %s (%d connections)", s.client_id, s.peer,
                 len(self.clients))

    def _req_ids(self, s: DownstreamSession, f: list[str]) -> None:
        assert s.book is not None
        s.send(9, 1, s.book.next_id)

    def _req_current_time(self, s: DownstreamSession, f: list[str]) -> None:
        s.send(49, 1, int(time.time()))

    def _req_managed_accounts(self, s: DownstreamSession, f: list[str]) -> None:
        s.send(15, 1, ",".join(self.accounts_known or ["DU0000000"]))

    # ------------------------------------------------------------------ hub events

    def on_event(self, topic: str, event: Any) -> None:
        if isinstance(event, HubStatus):
            self._on_status(event)
        elif topic.startswith("order."):
            self.orders.on_event(event)
        elif topic.startswith("error."):
            self.market.on_line_error(topic, event)
        elif isinstance(event, NewsBulletin):
            self.idless.on_bulletin(event)
        else:
            accounts.on_event(self, event)
            self.account_streams.on_event(event)

    def _on_status(self, ev: HubStatus) -> None:
        if ev.kind != "state":
            return
        self.passthrough.drop_stale()
        if ev.state != UpstreamState.CONNECTED:
            self.idless.fail_all()
        if ev.state == UpstreamState.CONNECTED:
            up = self.hub.upstream
            if up is not None:
                self.on_connected(up.port, up.accounts)
            if not self.outage:
                return
            self.outage = False
            kept = ev.code == RESTORED_KEPT[0]
            for s in list(self.clients.values()):
                code, text = RESTORED_KEPT if kept or not s.held_lines else RESTORED_LOST
                s.send_error(-1, code, text)
                s.held_lines = False
            log.info("front door: upstream back (%s); told %d clients",
                     "data kept" if kept else "data re-requested", len(self.clients))
        elif ev.state in (UpstreamState.RECONNECTING, UpstreamState.FAILED) and not self.outage:
            self.outage = True
            for s in list(self.clients.values()):
                s.held_lines = bool(s.lines)
                s.send_error(-1, *CONNECTIVITY_LOST)
            log.info("front door: upstream lost; told %d clients (they stay connected)",
                     len(self.clients))


def _ignore(s: DownstreamSession, f: list[str]) -> None:
    return None
