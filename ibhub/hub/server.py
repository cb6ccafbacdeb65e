"""Composition root: builds the hub's parts, runs them, shuts them down.

``HubServer(settings)`` owns one ZeroMQ context with a plain XPUB socket (the hot
path, see :mod:`ibhub.hub.fanout`; an XPUB so the hub sends only what somebody
subscribes to, :mod:`ibhub.hub.xpub`) and a ``zmq.asyncio`` ROUTER (rare requests, see
:mod:`ibhub.hub.requests`), the lease table, the subscription registry, the
market-data service (:mod:`ibhub.hub.market_data`: contracts and lines, shared with the
front door) and the upstream session (:mod:`ibhub.ib.session`). It fills the request
registry (:mod:`ibhub.hub.registry`) with the modules that serve requests
(:mod:`ibhub.hub.lease_requests`, :mod:`ibhub.hub.market_requests`,
:mod:`ibhub.hub.name_requests`, :mod:`ibhub.hub.status`) and is the upstream listener,
i.e. the policy that ties the parts together: when a lease's lines are released, where
an IB error goes. With
``orders`` on, :func:`attach_orders` builds the order service and the upstream order
gateway it is handed (:mod:`ibhub.orders.service`, :mod:`ibhub.ib.orders`); with
``tws_port``, the front door (:mod:`ibhub.frontdoor`).

Background tasks: the RPC loop, the lease reaper (expires leases that stopped
heartbeating and releases what they held) and the staleness watchdog (reports
on ``hub.status`` when no market data has arrived for ``stale_after`` seconds
while subscriptions exist and the upstream says it is connected: the Gateway's
nightly freeze sends no message at all).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq
import zmq.asyncio

from ibhub import __version__
from ibhub.config import ConfigError, HubSettings
from ibhub.hub.bulletins import NewsBulletins
from ibhub.hub.fanout import PUB_SNDHWM, Fanout
from ibhub.hub.lane import LaneServer
from ibhub.hub.lease_requests import LeaseRequests
from ibhub.hub.leases import LeaseTable
from ibhub.hub.limits import Limits, ZmqListenerGuard, harden_zmq_listener, limits_of
from ibhub.hub.market_data import MarketDataService
from ibhub.hub.market_requests import MarketRequests
from ibhub.hub.name_requests import NameRequests
from ibhub.hub.names import NAMES_FILE, NameBindings
from ibhub.hub.option_requests import OptionRequests
from ibhub.hub.registry import Registry
from ibhub.hub.requests import RpcServer
from ibhub.hub.security import (
    RolePolicy,
    ServerSecurity,
    check_bind,
    stop_authenticator,
)
from ibhub.hub.status import StatusRequests
from ibhub.hub.subscriptions import Subscription, SubscriptionRegistry
from ibhub.hub.xpub import XpubSubscriptions
from ibhub.ib.session import Upstream, explain
from ibhub.protocol import (
    TOPIC_ERROR,
    ContractInfo,
    ContractSpec,
    Error,
    UpstreamState,
)
from ibhub.tasks import TaskSet
from ibhub.tws.pacing import Pacer

if TYPE_CHECKING:
    from ibhub.orders.service import OrderService

log = logging.getLogger(__name__)

PRUNE_NAMES_EVERY = 3600.0  # seconds between sweeps of unused script-name bindings
PACER_BURST = 5.0  # with pacer_rate 40/s: at most 45 messages in any second (IB: 50)
# The pacer's window: at most 40 messages in any second through the pacer (the bucket
# alone would allow 45 in a burst second), 5 below the IB library's own throttle (45 a
# second, which stops every send for up to a second once reached; the library's own
# requests at connect bypass the pacer) and 10 below IB's 50; sustained, still 40/s.
# New market-data lines may use the window's room as a batch (up to 35 a second;
# lookups up to 17; 5 kept for orders and cancels) instead of one per 25 ms: 30 scripts
# starting together get their first ticks in tens of ms (bench/first_tick.py).
PACER_WINDOW_MAX = 40.0
PACER_BATCH_RESERVE = 5.0


def bindable(endpoint: str, curve: bool = False, setting: str = "endpoint") -> str:
    """Check a bind endpoint (loopback/ipc, or anything with CURVE on: see
    :func:`ibhub.hub.security.check_bind`); map ``tcp://HOST:0`` to a random port."""
    check_bind(setting, endpoint, curve)
    if endpoint.startswith("tcp://"):
        host, _, port = endpoint[len("tcp://"):].rpartition(":")
        if port in ("0", "*"):
            return f"tcp://{host}:*"
    return endpoint


class HubServer:
    """The hub. ``async with HubServer(settings) as hub:`` or ``await start()/stop()``."""

    def __init__(self, settings: HubSettings | None = None) -> None:
        self.settings = settings or HubSettings()
        self.sim: Any = None  # the embedded simulator (a ThreadedSim) when settings.sim
        self.sim_control: Any = None  # its fault control (ibhub.sim.control.ControlServer)
        self.upstream: Upstream | None = None
        self.orders: Any = None  # the OrderService when settings.orders (attach_orders)
        self.pacer: Pacer | None = None  # shared by the upstream session and the orders
        self.fanout: Fanout | None = None
        self.pub_subscriptions: XpubSubscriptions | None = None  # what PUB subscribers want
        self.rpc: RpcServer | None = None
        self.leases = LeaseTable(
            id_range=self.settings.raw_client_id_range,
            reserved=(self.settings.client_id,),
            ttl=self.settings.lease_ttl,
            lease_max=self.settings.lease_max,
            raw_max=self.settings.raw_lease_max,
            raw_ttl=self.settings.raw_lease_ttl,
        )
        self.roles = RolePolicy()  # from the settings by start() (docs/security.md)
        self.names: NameBindings | None = None  # script-name bindings, opened by start()
        self.subs = SubscriptionRegistry(self.settings.lines_max)
        # Contracts and lines, shared with the front door (ibhub.hub.market_data).
        self.market = MarketDataService(self.settings, self.subs)
        # One table of request type -> handler and what it needs (ibhub.hub.registry):
        # each module registers its own requests, the order service too (attach_orders).
        self.registry = Registry(self.leases)
        for requests in (LeaseRequests(self), MarketRequests(self), NameRequests(self),
                         StatusRequests(self), OptionRequests(self)):
            requests.register(self.registry)
        self._ctx: zmq.asyncio.Context | None = None
        self._pub: zmq.Socket[bytes] | None = None
        self._router: zmq.asyncio.Socket | None = None
        self._auth: Any = None  # the CURVE ZAP handler (ibhub.hub.security), when configured
        self.security = ServerSecurity()  # set from the settings by start()
        self._tasks = TaskSet(log)  # the reaper, the stale watchdog, the request server
        self._pub_endpoint = ""
        self._rpc_endpoint = ""
        self._started = 0.0
        self._stale = False
        self._services: list[Any] = []
        self.ops: Any = None  # health/metrics/alerts (hub.ops.health.attach_ops), once started
        self.limits: Limits | None = None  # descriptor budget and connection caps
        self.nats: Any = None  # the NATS bridge (ibhub.hub.nats_bridge) when nats_urls is set
        self.lane: LaneServer | None = None  # the local fast path (ibhub.hub.lane) unless off
        self._guards: list[ZmqListenerGuard] = []

    # ------------------------------------------------------------------ extension

    def add_service(self, service: Any) -> None:
        """Attach a sibling service (e.g. orders) to the hub's life and lease events.

        ``service`` may define any of: ``on_hello(lease_id, name)`` (a lease opened),
        ``on_lease_gone(lease_id)`` (goodbye or expiry), ``on_connected(port,
        accounts)`` (every time the upstream becomes CONNECTED),
        ``on_upstream_state(state, code, message)`` (every upstream state change) and
        ``async stop()``
        (awaited first in :meth:`stop`). Its requests are served by registering
        handlers in :attr:`registry`. A hook that raises is logged and never stops the
        hub or the other services.
        """
        self._services.append(service)
        up = self.upstream
        if up is not None and up.connected:
            self.notify("on_connected", up.port, up.accounts)

    @property
    def services(self) -> tuple[Any, ...]:
        """The attached services (the TWS front door finds the order service here)."""
        return tuple(self._services)

    def notify(self, hook: str, *args: Any) -> None:
        for service in self._services:
            fn = getattr(service, hook, None)
            if fn is None:
                continue
            try:
                fn(*args)
            except Exception:
                log.exception("%s.%s failed", type(service).__name__, hook)

    async def resolve_contract(self, spec: ContractSpec) -> ContractInfo | Error:
        """The one contract ``spec`` names (cached), or the Error reply explaining why not."""
        return await self.market.resolve_one(0, spec)

    # ------------------------------------------------------------------ life cycle

    @property
    def started_at(self) -> float:
        """``time.monotonic()`` when the hub started serving (uptime)."""
        return self._started

    @property
    def pub_endpoint(self) -> str:
        return self._pub_endpoint

    @property
    def rpc_endpoint(self) -> str:
        return self._rpc_endpoint

    async def __aenter__(self) -> HubServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            # A start refused half-way (bad endpoint, bind failure ...) leaves no open
            # database behind (Python 3.13 warns about an unclosed sqlite connection).
            if self.names is not None:
                self.names.close()
                self.names = None
            raise

    async def _start(self) -> None:
        s = self.settings
        security = ServerSecurity.from_settings(s)  # ConfigError: bad keys, no allow-list
        self.security = security
        # Roles come from the configuration; creates the operator token file if absent
        # (ConfigError: a token file other users can read).
        self.roles = RolePolicy.from_settings(s, security.enabled)
        try:
            self.names = NameBindings(Path(s.data_dir) / NAMES_FILE, ttl=s.name_binding_ttl)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"cannot open the script-name bindings in {s.data_dir}: "
                              f"{exc}") from exc
        lo, hi = s.raw_client_id_range
        if s.lease_max + s.raw_lease_max > hi - lo + 1:
            log.warning(
                "lease_max %d + raw_lease_max %d exceed the %d ids of raw_client_id_range "
                "%d..%d: raw ids can take ids scripts need", s.lease_max, s.raw_lease_max,
                hi - lo + 1, lo, hi)
        pub_ep = bindable(s.pub, security.enabled, "pub")
        rpc_ep = bindable(s.rpc, security.enabled, "rpc")
        if s.sim:
            await self._start_sim()
        self._started = time.monotonic()
        ctx = self._ctx = zmq.asyncio.Context()
        try:
            self._auth = security.start(ctx)  # before any bind: no unauthenticated window
            # An XPUB: it publishes as a PUB does and hands the hub the subscriptions, so
            # a topic nobody wants is never sent (ibhub.hub.xpub, docs/protocol.md).
            pub = self._pub = zmq.Socket(ctx, zmq.XPUB)
            security.apply(pub)
            pub.setsockopt(zmq.LINGER, 0)
            pub.setsockopt(zmq.SNDHWM, PUB_SNDHWM)
            harden_zmq_listener(pub)
            pub.bind(pub_ep)
            self._pub_endpoint = pub.getsockopt_string(zmq.LAST_ENDPOINT)
            router = self._router = ctx.socket(zmq.ROUTER)
            router.setsockopt(zmq.LINGER, 0)
            # Undeliverable replies raise (and are logged by ibhub.hub.requests) instead of being
            # dropped silently by ZeroMQ.
            router.setsockopt(zmq.ROUTER_MANDATORY, 1)
            # Far above max_request_bytes so an oversized request still gets a reply;
            # beyond this the peer is simply dropped.
            router.setsockopt(zmq.MAXMSGSIZE, 4 * s.max_request_bytes)
            security.apply(router)
            harden_zmq_listener(router)
            router.bind(rpc_ep)
            self._rpc_endpoint = router.getsockopt_string(zmq.LAST_ENDPOINT)
            self._guard_listeners(ctx)
        except zmq.ZMQError as exc:
            self._close_sockets()
            await self._stop_sim()
            raise ConfigError(f"cannot bind hub endpoints ({s.pub}, {s.rpc}): {exc}") from exc
        self.pub_subscriptions = XpubSubscriptions(pub)
        self.fanout = Fanout(pub, self.pub_subscriptions)
        self.pub_subscriptions.start()
        self.rpc = RpcServer(router, self.registry, peer_keys=security.enabled,
                             max_request_bytes=s.max_request_bytes)
        if s.nats_urls:  # the NATS JetStream bridge (docs/scale-out.md): tees the fan-out
            from ibhub.hub.nats_bridge import NatsBridge

            self.nats = NatsBridge(s, self.fanout, self.rpc)
        # One outgoing budget for everything sent upstream (docs/orders.md, "Pacing").
        self.pacer = Pacer(rate=s.pacer_rate, burst=PACER_BURST, max_queue=s.pacer_queue_max,
                           max_queue_per_owner=s.pacer_queue_per_lease,
                           window=min(PACER_BURST + s.pacer_rate, PACER_WINDOW_MAX),
                           batch_reserve=PACER_BATCH_RESERVE)
        self.pacer.start()
        self.upstream = Upstream(self.settings, self, pacer=self.pacer, flush=self.fanout.flush)
        self.market.attach(self.upstream, self.fanout, self.pacer)
        self.fanout.status(UpstreamState.DISCONNECTED, "state", 0, "hub started", 0)
        await self.upstream.start()
        self._tasks.spawn(self._reaper(), name="ibhub-leases")
        if s.stale_after > 0:
            self._tasks.spawn(self._watchdog(), name="ibhub-stale")
        if s.orders:  # journal, risk gate, pacing, order manager (docs/orders.md)
            await attach_orders(self)
        self.add_service(NewsBulletins(self))  # IB news bulletins on news.bulletin
        if s.tws_port is not None:  # the TWS-protocol front door (docs/tws-front-door.md)
            from ibhub.frontdoor import FrontDoor

            self.add_service(await FrontDoor.start_for(self, s.tws_port))
        from ibhub.hub.ops.health import attach_ops  # metrics, alerts, /health on s.http_port

        await attach_ops(self)
        self._prune_names()  # now that the journal's working orders are known
        # Requests are served only now that every service has registered its request
        # types: before, a place_order sent at start-up was answered "not served by this
        # hub" (found by bench/soak.py; tests/reliability/test_order_faults.py).
        if s.lane != "off":  # the lane: a local plain-socket fast path (ibhub.hub.lane)
            await self._start_lane()
        self._tasks.spawn(self.rpc.serve(), name="ibhub-rpc")
        if self.nats is not None:  # connects in the background; stopped as a service
            await self.nats.start()
            self.add_service(self.nats)
        log.info(
            "hub %s serving: pub %s, rpc %s, upstream %s:%s client %s",
            __version__, self._pub_endpoint, self._rpc_endpoint,
            self.settings.gateway_host, self.settings.gateway_port, self.settings.client_id,
        )

    async def _start_lane(self) -> None:
        s = self.settings
        assert self.rpc is not None and self.fanout is not None
        lane = LaneServer(s.lane, Path(s.data_dir), self.rpc, self.leases, self.fanout,
                          max_connections=s.lane_max_connections,
                          max_frame=s.max_request_bytes)
        try:
            await lane.start()
        except OSError as exc:
            raise ConfigError(f"cannot listen on the lane ({s.lane}): {exc}; set lane = off "
                              "or another port") from exc
        if lane.address:
            self.lane = lane
            lane.register(self.registry)
            self.add_service(lane)

    def _guard_listeners(self, ctx: zmq.asyncio.Context) -> None:
        """Count the ZeroMQ listeners' peers; cap them (ibhub.hub.limits)."""
        limits = limits_of(self)
        for name, sock, endpoint in (("rpc", self._router, self._rpc_endpoint),
                                     ("pub", self._pub, self._pub_endpoint)):
            if sock is not None and endpoint.startswith("tcp://"):
                guard = ZmqListenerGuard(ctx, sock, endpoint, limits.stats(name), limits)
                guard.start()
                self._guards.append(guard)

    async def _start_sim(self) -> None:
        """Start the embedded simulator on its own thread and loop.

        Like a real Gateway it is then a separate peer: its CPU does not share the
        hub's loop, and it runs on a stdlib loop whatever loop the hub uses (the
        simulator's server side expects stdlib transports).
        """
        from ibhub.sim import SimConfig, SimGateway

        s = self.settings
        replay = None
        if s.sim_replay:
            from ibhub.sim.replay import ReplaySpec

            replay = ReplaySpec(s.sim_replay, speed=s.sim_replay_speed)
        sim = SimGateway.in_thread(
            SimConfig(host="127.0.0.1", port=0, seed=s.sim_seed, tick_rate=s.sim_tick_rate,
                      accounts=tuple(s.sim_accounts), replay=replay)
        )
        try:
            await asyncio.to_thread(sim.start)
        except RuntimeError as exc:  # a recording that cannot be replayed: configuration
            if replay is not None and isinstance(exc.__cause__, (ValueError, ImportError)):
                raise ConfigError(f"--replay {s.sim_replay}: {exc.__cause__}") from exc
            raise
        self.sim = sim
        if s.sim_control_port >= 0:  # `ibhub sim-fault` works as against `ibhub sim`
            from ibhub.sim.control import ControlServer

            assert sim.gateway is not None  # started above
            control = ControlServer(sim.gateway, "127.0.0.1", s.sim_control_port)
            try:
                await asyncio.to_thread(sim.call, control.start)
            except OSError as exc:
                log.warning("simulator fault control not started on 127.0.0.1:%d: %s (set "
                            "sim_control_port to another port, or -1)", s.sim_control_port,
                            exc)
                await asyncio.to_thread(sim.call, control.stop)
            else:
                self.sim_control = control
        self.settings = s.model_copy(
            update={"gateway_host": "127.0.0.1", "gateway_port": sim.port}
        )

    async def stop(self) -> None:
        services, self._services = self._services, []
        for service in reversed(services):
            stop = getattr(service, "stop", None)
            if stop is not None:
                try:
                    await stop()
                except Exception:
                    log.exception("stopping %s failed", type(service).__name__)
        await self._tasks.close()
        if self.rpc is not None:
            await self.rpc.close()
        guards, self._guards = self._guards, []
        for guard in guards:
            await guard.stop()
        self.market.stop()
        if self.pub_subscriptions is not None:
            await self.pub_subscriptions.stop()
        if self.upstream is not None:
            await self.upstream.stop()
            self.upstream = None
        if self.pacer is not None:
            await self.pacer.stop()
            self.pacer = None
        self._close_sockets()
        await self._stop_sim()
        if self.names is not None:
            self.names.close()
            self.names = None

    async def _stop_sim(self) -> None:
        if self.sim is None:
            return
        if self.sim_control is not None:
            await asyncio.to_thread(self.sim.call, self.sim_control.stop)
            self.sim_control = None
        await asyncio.to_thread(self.sim.stop)
        self.sim = None

    def _close_sockets(self) -> None:
        for sock in (self._router, self._pub):
            if sock is not None:
                sock.close(linger=0)
        self._router = self._pub = None
        stop_authenticator(self._auth)
        self._auth = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    # ------------------------------------------------------------------ background

    async def _reaper(self) -> None:
        period = min(0.5, self.settings.heartbeat_interval / 2)
        pruned_at = time.monotonic()  # start() swept once, after the orders were restored
        while True:
            await asyncio.sleep(period)
            if time.monotonic() - pruned_at >= PRUNE_NAMES_EVERY:
                pruned_at = time.monotonic()
                self._prune_names()
            leases, raws = self.leases.expire()
            for lease in leases:
                log.info("lease %s (%s) expired: no heartbeat for %.1fs",
                         lease.lease_id, lease.name, self.leases.ttl)
                self.release_subscriptions(lease.lease_id)
                self.notify("on_lease_gone", lease.lease_id)
            for raw in raws:
                log.info("raw client id %s (%s) released by expiry", raw.client_id, raw.name)

    async def _watchdog(self) -> None:
        limit = self.settings.stale_after
        period = max(0.05, limit / 4)
        while True:
            await asyncio.sleep(period)
            up = self.upstream
            # top-of-book lines and 5-second bars tick steadily; tick-by-tick (a trade on
            # an illiquid name) and keepUpToDate lines may rightly stay quiet
            subs = [s for s in self.subs.all()
                    if s.kind == "ticks" or s.kind.startswith("bars")]
            if up is None or not up.connected or not subs:
                continue
            newest = max(s.stream.last_ts for s in subs) / 1e9
            since = up.connected_at or 0.0
            quiet = time.time() - max(newest, since)
            if quiet >= limit and not self._stale:
                self._stale = True
                msg = f"no market data for {quiet:.1f}s on {len(subs)} subscriptions"
                log.warning("%s (socket still up)", msg)
                self._status("stale", 0, msg)
            elif quiet < limit and self._stale:
                self._stale = False
                log.info("market data flowing again")
                self._status("fresh", 0, "market data flowing again")

    # ------------------------------------------------------------------ upstream listener

    def _status(self, kind: str, code: int, message: str) -> None:
        up = self.upstream
        if self.fanout is not None and up is not None:
            self.fanout.status(up.state, kind, code, message, up.reconnect_count)

    def on_state(self, state: str, code: int, message: str) -> None:
        up = self.upstream
        if self.fanout is not None and up is not None:
            self.fanout.status(state, "state", code, message, up.reconnect_count)
        self.notify("on_upstream_state", state, code, message)
        if state == UpstreamState.CONNECTED and up is not None:
            self.notify("on_connected", up.port, up.accounts)

    def on_ib_message(self, code: int, message: str) -> None:
        self._status("ib", code, message)

    def on_resubscribed(self, count: int, code: int) -> None:
        log.info("re-established %d subscriptions", count)
        self._status("resubscribed", code, f"re-established {count} subscriptions")

    def on_connect_failed(self, attempt: int, reason: str, retry_in: float | None) -> None:
        tail = f"; retrying in {retry_in:.2f}s" if retry_in is not None else "; giving up"
        self._status("alert", 0, f"connect attempt {attempt} failed: {reason}{tail}")

    def on_line_error(self, sub: Subscription, code: int, message: str) -> None:
        if self.fanout is None:
            return
        why = explain(code)
        for lease in sub.leases:
            self.fanout.error(lease, code, message, why, sub.topic)

    # ------------------------------------------------------------------ leases

    def release_subscriptions(self, lease_id: str) -> None:
        """Everything an ended lease held: its subscriptions and its error topic."""
        self.market.release_holder(lease_id)
        if self.fanout is not None:
            self.fanout.drop(TOPIC_ERROR + lease_id)

    def _names_in_use(self) -> set[str]:
        """Names with a live lease or a working order: never pruned."""
        used = {lease.name for lease in self.leases.leases()}
        book = getattr(self.orders, "book", None)
        if book is not None:
            used.update(rec.owner for rec in book.store.working)
        return used

    def _prune_names(self) -> None:
        if self.names is None:
            return
        try:
            self.names.prune(self._names_in_use())
        except sqlite3.Error as exc:
            log.warning("could not prune unused script-name bindings: %s", exc)


async def attach_orders(hub: HubServer, **overrides: Any) -> OrderService:
    """Build, start and attach an :class:`OrderService` to a started ``HubServer``.

    ``overrides`` replace :class:`OrderSettings` fields (tests; the hub's settings give
    the rest). Uses the hub's extension points only: ``upstream.ib``,
    ``resolve_contract``, ``subs`` (last prices), ``registry`` and ``add_service``.
    """
    from ibhub.ib.orders import IbOrderGateway  # imports the IB library
    from ibhub.orders.service import OrderService, OrderSettings, stream_price

    settings = OrderSettings.from_settings(hub.settings)
    if overrides:
        settings = dataclasses.replace(settings, **overrides)

    def last_price(con_id: int) -> float | None:
        sub = hub.subs.get(con_id, "ticks")
        return stream_price(sub.stream) if sub is not None else None

    up = hub.upstream
    if up is None or up.ib is None or hub.rpc is None:
        raise RuntimeError("attach_orders needs a started hub (upstream session and rpc)")
    service = OrderService(
        settings,
        fanout=hub.fanout,
        resolve=hub.resolve_contract,
        last_price=last_price,
        pacer=getattr(hub, "pacer", None),
    )
    # The composition root builds the upstream order gateway and hands it in: order
    # code never reaches back into the hub or the IB library.
    gateway = IbOrderGateway(up.ib, client_id=up.client_id, connected=lambda: up.connected,
                             cache_grace=settings.ib_cache_grace)
    await service.start(gateway, port=up.port)
    service.register(hub.registry)
    ops = getattr(hub, "ops", None)
    if ops is not None:  # attached after the hub's alerts: their corrections alert too
        ops.alerts.attach_orders(service)
    hub.add_service(service)  # on_connected now if already connected, then on every reconnect
    hub.orders = service
    return service
