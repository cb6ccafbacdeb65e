"""SimGateway: the simulated IB Gateway's composition root and public API.

It owns the listening socket, the client sessions (by client id), the universe,
the market, the streaming engine and the broker, and exposes the fault switches
(restart, port close/open, stalled handshakes, connectivity loss, farm blips,
freezes, held client ids) that tests and operators use. Fault timing lives in
:mod:`ibhub.sim.faults`; this module only holds the state they flip.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ibhub.acceptor import Acceptor
from ibhub.sim import faults, hist_ticks
from ibhub.sim.config import SimConfig
from ibhub.sim.contracts import Universe, build_universe
from ibhub.sim.depth import DepthEngine
from ibhub.sim.handlers import core_handlers
from ibhub.sim.market import Market
from ibhub.sim.option_requests import option_handlers
from ibhub.sim.reference import NewsDesk, reference_handlers
from ibhub.sim.session import ClientSession, Handler
from ibhub.sim.streaming import SimSubscription, StreamEngine
from ibhub.tasks import TaskSet
from ibhub.tws.server_session import FARM_OK

if TYPE_CHECKING:
    from ibhub.sim.threaded import ThreadedSim

__all__ = ["SimGateway"]

log = logging.getLogger(__name__)

FARM_BROKEN = (2103, "Market data farm connection is broken:usfarm")


def _default_broker(gateway: SimGateway) -> Any:
    from ibhub.sim.broker import Broker

    return Broker(gateway)


class SimGateway:
    """A simulated IB Gateway on 127.0.0.1 (see docs/simulator.md)."""

    def __init__(self, config: SimConfig | None = None, *, universe: Universe | None = None,
                 broker_factory: Callable[[SimGateway], Any] | None = None) -> None:
        self.config = config or SimConfig()
        self.universe = universe or build_universe()
        self.request_counts: collections.Counter[int] = collections.Counter()
        replay = None
        if self.config.replay is not None:  # a recording's ticks (sim/replay.py)
            from ibhub.sim.replay import ReplayClock, load_tapes

            tapes = load_tapes(self.config.replay, self.universe)
            replay = (tapes, ReplayClock(tapes, self.config.replay.speed))
        self.market = Market(self.config.seed, self.universe, replay)
        self.streams = StreamEngine(self)
        self.depth = DepthEngine(self)
        self.broker = (broker_factory or _default_broker)(self)
        self.news = NewsDesk(self)
        self.handlers: dict[int, Handler] = core_handlers()
        self.handlers.update(reference_handlers(self))
        self.handlers.update(self.streams.handlers())
        self.handlers.update(self.depth.handlers())
        self.handlers.update(hist_ticks.handlers(self))
        self.handlers.update(option_handlers())
        for msg_id in getattr(self.broker, "HANDLED", ()):
            self.handlers[msg_id] = self.broker.handle
        self.port: int = self.config.port
        self.handshakes_stalled = False
        self.farm_ok = True
        self.ib_connected = True  # False between 1100 and 1101/1102
        self._acceptor: Acceptor | None = None
        self._sessions: set[ClientSession] = set()
        self._refusing: set[ClientSession] = set()  # over max_clients, being told so
        self._by_client_id: dict[int, ClientSession] = {}
        self._held_ids: dict[int, float] = {}
        self._tasks = TaskSet(log, "background fault")
        self._started = False

    # -- lifecycle ---------------------------------------------------------
    async def start(self) -> SimGateway:
        if self._started:
            return self
        self._started = True
        await self._listen()
        self.streams.start()
        log.info("simulated Gateway listening on %s:%d (seed %d, server version %d)",
                 self.config.host, self.port, self.config.seed, self.config.server_version)
        return self

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        await self._tasks.close()
        await self.streams.stop()
        self.depth.drop_all()
        await self._unlisten()
        for _ in range(3):  # let the aborted transports' connection_lost callbacks run
            await asyncio.sleep(0)
        log.info("simulated Gateway on port %d stopped", self.port)

    async def __aenter__(self) -> SimGateway:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @classmethod
    def in_thread(cls, config: SimConfig | None = None, **kwargs: Any) -> ThreadedSim:
        """Run a SimGateway on its own loop in a daemon thread (``with`` it)."""
        from ibhub.sim.threaded import ThreadedSim

        return ThreadedSim(cls, config, **kwargs)

    async def _listen(self) -> None:
        """Listen (``ibhub.acceptor``: a connection accepted as the port closes is
        dropped, never left open)."""
        self._acceptor = Acceptor.tcp(self.config.host, self.port, lambda: ClientSession(self))
        self.port = self._acceptor.port

    async def _unlisten(self) -> None:
        """Stop listening and drop every connection (a Gateway going away does both)."""
        acceptor, self._acceptor = self._acceptor, None
        if acceptor is not None:
            await acceptor.close()
        for s in [*self._sessions, *self._refusing]:
            s.abort()

    @property
    def listening(self) -> bool:
        return self._acceptor is not None

    # -- sessions ----------------------------------------------------------
    def _session_opened(self, session: ClientSession) -> None:
        if len(self._sessions) >= self.config.max_clients:
            log.warning("refusing connection from %s: %d clients already connected (max %d)",
                        session.peer, len(self._sessions), self.config.max_clients)
            # answered after its handshake so the client's connect fails at once
            # (TwsServerSession.refuse_connection); it never counts as a client
            session.refusal = (f"Couldn't connect to TWS: {len(self._sessions)} API clients "
                               f"are connected (max {self.config.max_clients})")
            self._refusing.add(session)
            return
        self._sessions.add(session)

    def _session_started(self, session: ClientSession) -> None:
        self._by_client_id[session.client_id] = session
        log.info("client %d connected from %s", session.client_id, session.peer)
        self.broker.session_opened(session)

    def _session_closed(self, session: ClientSession) -> None:
        self._sessions.discard(session)
        self._refusing.discard(session)
        if session.started and self._by_client_id.get(session.client_id) is session:
            del self._by_client_id[session.client_id]
            self.streams.drop_session(session)
            self.news.subscribers.discard(session)
            self.depth.drop_session(session)
            log.info("client %d disconnected", session.client_id)
            self.broker.session_closed(session)

    def client_id_in_use(self, client_id: int) -> bool:
        held = self._held_ids.get(client_id)
        if held is not None:
            if held > time.monotonic():
                return True
            del self._held_ids[client_id]
        return client_id in self._by_client_id

    def connected_client_ids(self) -> list[int]:
        return sorted(self._by_client_id)

    def sessions_by_client_id(self) -> dict[int, ClientSession]:
        return dict(self._by_client_id)

    def started_sessions(self) -> list[ClientSession]:
        return [s for s in self._by_client_id.values() if not s.closed]

    def broadcast_error(self, code: int, message: str) -> None:
        for s in self.started_sessions():
            s.send_error(-1, code, message)

    def farm_status_messages(self) -> tuple[tuple[int, str], ...]:
        """What a newly started client is told about the data farms (and IB)."""
        if not self.ib_connected:
            return ((1100, faults.LOST),)
        if self.farm_ok:
            return FARM_OK
        return (FARM_BROKEN, *FARM_OK[1:])

    # -- market data -------------------------------------------------------
    def market_data_subscriptions(self) -> list[SimSubscription]:
        return self.streams.subscriptions()

    def set_tick_rate(self, hz: float) -> None:
        self.streams.set_tick_rate(hz)

    # -- faults (see ibhub.sim.faults for what each one models) -------------
    async def restart(self, down_seconds: float) -> None:
        await faults.restart(self, down_seconds)

    async def close_port(self) -> None:
        await faults.close_port(self)

    async def open_port(self) -> None:
        await faults.open_port(self)

    def stall_handshakes(self, on: bool) -> None:
        self.handshakes_stalled = bool(on)
        log.warning("handshakes %s", "stalled" if on else "answered again")

    async def connectivity_lost(self, restored: str = "data_lost", after: float = 0.5) -> None:
        await faults.connectivity_lost(self, restored, after)

    async def farm_blip(self, seconds: float) -> None:
        await faults.farm_blip(self, seconds)

    async def freeze(self, seconds: float) -> None:
        await faults.freeze(self, seconds)

    def hold_client_id(self, client_id: int, seconds: float) -> None:
        self._held_ids[client_id] = time.monotonic() + seconds
        log.warning("client id %d held by a half-open socket for %.1f s", client_id, seconds)

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        """Run a fault in the background; it is cancelled on stop()."""
        return self._tasks.spawn(coro)
