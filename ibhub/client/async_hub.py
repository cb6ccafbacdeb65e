"""``AsyncHub``: the asyncio core of the SDK.

One object per script connection, on the caller's event loop, composed of one
DEALER for requests (``rpc.RpcChannel``), one SUB for events (``stream.EventStream``),
the topics it listens to (``topics.TopicTable``: per-topic sequence checking with
snapshot recovery), the lease (``lease.LeaseKeeper``: hello, heartbeats, re-hello and
resubscribe after ``unknown_lease``), the upstream state (``upstream_watch``:
connect/disconnect handlers) and this script's orders (``orders.OrderTracker`` on
``order.<lease>``, live ``Order`` objects). Nothing here blocks the loop.

It imports only the protocol, the frame layout, pyzmq and msgspec: a script that
talks to the hub never pays for ``ib_insync``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, Literal, TypeVar, cast, overload

import zmq.asyncio

from ibhub import wire
from ibhub.client.batch import Batch, BatchSubscription, Tap
from ibhub.client.contracts import contract_spec, default_name
from ibhub.client.curve import client_curve
from ibhub.client.errors import HubError, HubTimeout, NotConnected
from ibhub.client.lane import Lane, LaneRpc
from ibhub.client.lease import LeaseKeeper, expect
from ibhub.client.names import load_name_secret, new_secret
from ibhub.client.nats_link import NatsEventStream, NatsLink, NatsRpcChannel
from ibhub.client.orders import (
    Order,
    OrderTopicTable,
    OrderTracker,
    new_client_order_id,
    rejected_or,
)
from ibhub.client.rpc import RpcChannel
from ibhub.client.stream import EventStream, count_events
from ibhub.client.subscription import Subscription
from ibhub.client.topics import TopicTable
from ibhub.client.upstream_watch import Handler, UpstreamWatch
from ibhub.keys import read_operator_token
from ibhub.protocol import (
    AccountSummaryReply,
    AccountValue,
    AccountValuesReply,
    Bar,
    BarData,
    CalculateImpliedVolatility,
    CalculateOptionPrice,
    CancelAllOrders,
    CancelOrder,
    CancelRequested,
    ClientIdLeased,
    ContractDetailsReply,
    ContractInfo,
    ContractSpec,
    DepthBook,
    ErrorCode,
    ErrorEvent,
    Event,
    ExecutionInfo,
    ExecutionsReply,
    ForgetName,
    GetAccountSummary,
    GetAccountValues,
    GetCompletedOrders,
    GetContractDetails,
    GetExecutions,
    GetHistoricalBars,
    GetHistoricalTicks,
    GetMatchingSymbols,
    GetOpenOrders,
    GetOptionChain,
    GetPnL,
    GetPortfolio,
    GetPositions,
    GetSnapshot,
    GetStatus,
    GlobalCancel,
    HistoricalBarsReply,
    HistoricalTick,
    HistoricalTicksReply,
    LeaseClientId,
    ListNames,
    MatchingSymbolsReply,
    ModifyOrder,
    NameInfo,
    NamesReply,
    NewsBulletin,
    OptionChain,
    OptionChainReply,
    OptionComputation,
    OptionComputationReply,
    OrderInfo,
    OrdersReply,
    PlaceOrder,
    PnLInfo,
    PnLReply,
    PortfolioItem,
    PortfolioReply,
    PositionInfo,
    PositionsReply,
    ReleaseClientId,
    Reply,
    Request,
    Snapshot,
    StatusReply,
    Subscribe,
    Subscribed,
    SymbolMatch,
    Tick,
    TickByTick,
    Unsubscribe,
    WhatIfOrder,
    WhatIfReply,
)
from ibhub.tasks import TaskSet

log = logging.getLogger(__name__)

_E = TypeVar("_E", bound=Event)
#: what ``subscribe`` accepts as a contract: a symbol, a conId or a full spec
ContractArg = str | int | ContractSpec
#: a subscription callback for events of type ``_E`` (or None: read the queue)
OnEvent = Callable[[_E], Any] | None
#: the tick-by-tick kinds (hub/tbt.py): each yields TickByTick events
TbtKind = Literal["tbt.Last", "tbt.AllLast", "tbt.BidAsk", "tbt.MidPoint"]


class AsyncHub:
    """The SDK's asyncio client. ``async with AsyncHub() as hub: ...``

    Endpoints: the arguments, else ``$IBHUB_PUB`` / ``$IBHUB_RPC``, else the wire
    defaults. ``connect_retries`` hellos of ``connect_timeout`` seconds each are tried
    before ``connect()`` gives up with ``HubTimeout``; every other request gives up
    after ``request_timeout`` seconds.

    CURVE (a hub that requires it, docs/operations.md "Security / remote clients"):
    ``server_key`` is the hub's public key (Z85 text or a key file) and
    ``client_key_file`` this client's ``.key_secret`` file; else ``$IBHUB_SERVER_KEY``
    / ``$IBHUB_CLIENT_KEY_FILE``; neither means a plain connection. A bad key raises
    ``KeyFileError`` (a ``ValueError``) here, not at connect time.

    Script names (docs/security.md, "Script names"): orders belong to ``name``, and
    the hub binds a name to the first secret that says hello with it. The SDK keeps
    one secret per name in a file only this user can read (``names_dir``, else
    ``$IBHUB_NAMES_DIR``, else ``~/.local/state/ibhub/names``), created on first use,
    so the same script restarted by the same user keeps its name and its orders;
    ``name_secret`` gives it explicitly instead. Without ``name`` the default
    ``prog[pid-tag]`` is never reused, and its secret stays in memory. A name bound to
    someone else's secret is refused at connect with ``name_taken``.

    ``tick_bundle``: where ticks come from. ``True``: the hub's ``bundle.tick`` topic
    (every instrument's ticks of one Gateway read in one message); ``False``: one
    topic per instrument. Each tick reaches only this script's own subscriptions, in
    order, with the same gap recovery either way. The bundle costs one wake-up, one
    receive and one envelope decode per Gateway read instead of one per instrument
    per read, and its inner messages are decoded only for the instruments this script
    holds (client/bundle.py), so it is the cheaper route at the rates measured
    (docs/performance.md, section 8.5, "Tick path"). ``None`` (the default): the bundle
    over ZeroMQ when the hub's ``Welcome`` says it publishes one, else per-instrument
    topics (always over NATS, which does not mirror the bundle).
    ``False`` still suits a script that holds a few instruments of a hub streaming
    very many at high rates: the bundle's bytes reach every script that reads it.

    ``lane`` / ``lane_ticks``: on the hub's machine, requests and this lease's order
    and error events go over the hub's lane (a local plain socket, client/lane.py),
    and with ``lane_ticks`` the tick bundle too, on a lane connection of its own
    (one thread wake-up per hop instead of ZeroMQ's three; docs/performance.md,
    section 9). Either falls back to ZeroMQ at once when its connection breaks and
    attaches again later. ``lane=False``: everything over ZeroMQ; ``lane_ticks=False``:
    the bundle over the SUB socket.
    """

    def __init__(
        self,
        pub: str | None = None,
        rpc: str | None = None,
        *,
        name: str | None = None,
        role: str = "trader",
        connect_timeout: float = 3.0,
        connect_retries: int = 3,
        request_timeout: float = 10.0,
        queue_size: int = 10_000,
        server_key: str | bytes | None = None,
        client_key_file: str | None = None,
        tick_bundle: bool | None = None,
        operator_token: str | None = None,
        name_secret: str | None = None,
        names_dir: str | None = None,
        nats: str | list[str] | None = None,
        hub_name: str = "hub",
        nats_user: str = "",
        nats_options: dict[str, Any] | None = None,
        lane: bool = True,
        lane_ticks: bool = True,
    ) -> None:
        # NATS (docs/scale-out.md): the hub ``hub_name`` through a NATS cluster instead of
        # the ZeroMQ endpoints; ``nats_user`` (or an nkey seed in ``nats_options``) is the
        # identity the NATS server authenticates and the hub maps to a role.
        if nats is not None and tick_bundle:
            raise ValueError("tick_bundle is a ZeroMQ topic; over NATS subscribe per "
                             "instrument (bundle.tick is not mirrored, docs/scale-out.md)")
        self._nats = NatsLink(nats, hub_name, nats_user, nats_options) if nats else None
        # The lane (client/lane.py): requests and this lease's order/error events over
        # the hub's local plain socket when it names one we can reach; ZeroMQ otherwise.
        self.use_lane = lane and nats is None
        # ...and the tick bundle over a lane connection of its own, when the SDK reads
        # the bundle and the hub offers it (Welcome.lane_ticks); False: over SUB
        self.lane_ticks = lane_ticks
        self._lane_tick_events = 0
        self._lane: Lane | None = None
        self.pub_endpoint = wire.pub_endpoint(pub)
        # None: decided at hello (the bundle if the hub publishes one, over ZeroMQ)
        self._bundle_auto = tick_bundle is None and nats is None
        self.tick_bundle = bool(tick_bundle)
        self.curve = client_curve(server_key, client_key_file)
        self.rpc_endpoint = wire.rpc_endpoint(rpc)
        self.name = name or default_name()
        # Read (or made) at connect: a file only this user reads, or memory for the
        # default prog[pid-tag] name that no later run reuses.
        self._name_secret = name_secret
        self._names_dir = names_dir
        self._named = name is not None
        self.role = role
        # role="operator" needs proof on a loopback hub: the hub's operator token, read
        # from its file when not given (docs/security.md; readable by the hub's user only).
        self._credential = operator_token or (
            read_operator_token() or "" if role == "operator" else "")
        self._raw_tokens: dict[int, str] = {}  # raw client ids this script leased
        self.connect_timeout = connect_timeout
        self.connect_retries = max(1, connect_retries)
        self.request_timeout = request_timeout
        self.queue_size = queue_size
        self.upstream = UpstreamWatch(self._spawn)
        self._error_handlers: list[Callable[[ErrorEvent], Any]] = []
        self._bulletin_handlers: list[Callable[[NewsBulletin], Any]] = []
        self._context: zmq.asyncio.Context | None = None
        self._rpc: RpcChannel | None = None
        self._stream: EventStream | None = None
        self._table: TopicTable | None = None
        self._keeper: LeaseKeeper | None = None
        self._tasks = TaskSet(log)
        self._orders: OrderTracker | None = None
        self._taps: list[Tap] = []  # listen(): prefix taps, batches with gaps reported
        self._lag = 0.0  # seconds behind the hub, as report_lag() was last told

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> AsyncHub:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the sockets, get a lease and start heartbeating."""
        if self._keeper is not None:
            return
        if self._name_secret is None:  # NameSecretError (a ValueError) before any socket
            self._name_secret = (load_name_secret(self.name, self._names_dir) if self._named
                                 else new_secret())
        if self._nats is not None:
            # The NATS stand-ins have the ZeroMQ classes' methods (client/nats_link.py):
            # the lease keeper, topic table and order tracker are the same code.
            await self._nats.connect(self.connect_timeout)
            self._rpc = cast(RpcChannel, NatsRpcChannel(self._nats, timeout=self.request_timeout))
            self._stream = cast(EventStream, NatsEventStream(
                self._nats, self._on_event, self._on_pub_reconnect))
        else:
            self._context = zmq.asyncio.Context()
            self._rpc = RpcChannel(
                self._context, self.rpc_endpoint, timeout=self.request_timeout,
                curve=self.curve,
            )
            if self.use_lane:
                lane_rpc = LaneRpc(self._rpc)
                self._rpc = cast(RpcChannel, lane_rpc)
                self._lane = Lane(lane_rpc, lambda: self._keeper_token(),
                                  self._on_lane_event, self._spawn,
                                  on_tick_event=self._on_lane_ticks,
                                  on_ticks=self._move_bundle)
                self._lane.want_ticks = lambda: self.lane_ticks and self.tick_bundle
            self._stream = EventStream(
                self._context, self.pub_endpoint, self._on_event, self._on_pub_reconnect,
                curve=self.curve,
            )
        try:
            self._rpc.open()
            self._stream.open()
            self._table = OrderTopicTable(
                self._stream, self._last_value, self._spawn, self.upstream.on_event,
                self._on_error_event, bundle=self.tick_bundle,
                on_bulletin=self._on_bulletin_event,
            )
            self._table.orders = self._orders = OrderTracker(
                self._stream.subscribe, self._stream.unsubscribe, self._last_value,
                self._order_book, self._spawn,
            )
            keeper = LeaseKeeper(
                self._rpc, self._table, self._spawn, name=self.name, role=self.role,
                credential=self._credential, name_secret=self._name_secret,
            )
            keeper.report = self._keeping_up
            if self._lane is not None:
                keeper.on_welcome = self._lane.on_welcome
            await keeper.hello(self.connect_timeout, self.connect_retries)
            if self._bundle_auto and keeper.tick_bundle and not self.tick_bundle:
                self.tick_bundle = True
                self._table.use_bundle()  # before any subscription exists
            self._keeper = keeper
            await self._table.baseline_status()
            if self._lane is not None:
                await self._lane.attach()
            if self.upstream.up is None:  # the hub has published no status at all yet
                status = await self._rpc.request(GetStatus(id=0))
                if isinstance(status, StatusReply):
                    self.upstream.on_status_reply(status)
        except BaseException:
            await self.close()
            raise
        log.info(
            "connected to the hub at %s as %s: lease %s, client id %s, upstream %s",
            self._nats.endpoint if self._nats is not None else self.rpc_endpoint, self.name,
            self.lease, self.client_id, self.upstream.state,
        )

    async def close(self) -> None:
        """Say goodbye (best effort), end every subscription and close the sockets."""
        if self._lane is not None:
            self._lane.close()  # no re-attach when the goodbye closes the lane
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            await keeper.goodbye(timeout=min(1.0, self.request_timeout))
        if self._table is not None:
            self._table.end_all()
            self._table = None
        for tap in self._taps:
            tap._end()
        self._taps = []
        await self._tasks.close()
        if self._stream is not None:
            await self._stream.close()
            self._stream = None
        if self._rpc is not None:
            await self._rpc.close()
            self._rpc = None
        if self._context is not None:
            self._context.term()
            self._context = None
        if self._nats is not None:
            await self._nats.close()
        self._lane = None

    # ------------------------------------------------------------------ lease

    @property
    def lease(self) -> str | None:
        """The lease's public handle (status, order.<lease> topics; None when not
        connected). Requests carry its secret token, which only the SDK holds."""
        return self._keeper.lease if self._keeper is not None else None

    @property
    def client_id(self) -> int | None:
        """The TWS client id the hub allocated to this lease."""
        return self._keeper.client_id if self._keeper is not None else None

    @property
    def heartbeat_interval(self) -> float:
        return self._keeper.heartbeat_interval if self._keeper is not None else 0.0

    @property
    def hub_version(self) -> str:
        return self._keeper.hub_version if self._keeper is not None else ""

    @property
    def hub_reachable(self) -> bool:
        """False after a heartbeat went unanswered, until one is answered again."""
        return self._keeper is not None and self._keeper.hub_reachable

    @property
    def rehellos(self) -> int:
        """How often the lease was renewed after ``unknown_lease``."""
        return self._keeper.rehellos if self._keeper is not None else 0

    # ------------------------------------------------------------------ state

    def is_connected(self) -> bool:
        """True when the SDK holds a live lease, the hub answers, and its upstream is up."""
        return self.lease is not None and self.hub_reachable and bool(self.upstream.up)

    @property
    def upstream_state(self) -> str:
        return self.upstream.state

    @property
    def stats(self) -> dict[str, int]:
        """Counters: events received, gaps recovered, stale events dropped, re-hellos."""
        seqs = self._table.sequencers() if self._table is not None else []
        entries = self._table.entries.values() if self._table is not None else ()
        lane_rpc = self._lane.rpc if self._lane is not None else None
        return {
            "events": (self._stream.received if self._stream else 0) + self._lane_tick_events,
            "undecodable": self._stream.undecodable if self._stream else 0,
            "gaps": sum(s.gaps for s in seqs),
            "stale": sum(s.stale for s in seqs),
            "rehellos": self.rehellos,
            "disconnects": self.upstream.disconnects,
            "connects": self.upstream.connects,
            "subscriptions": sum(len(entry.subs) for entry in entries),
            # the lane: requests answered there, requests sent again over ZeroMQ after
            # it broke, and second copies of events (lane or SUB, whichever came later)
            "lane_requests": lane_rpc.requests if lane_rpc is not None else 0,
            "lane_fallbacks": lane_rpc.fallbacks if lane_rpc is not None else 0,
            "duplicates": sum(s.duplicates for s in seqs),
            # tick messages (one per instrument per read, as "events" counts a bundle's)
            # that came over the lane's tick connection (in "events" too)
            "lane_tick_events": self._lane_tick_events,
        }

    async def wait_connected(self, timeout: float | None = None) -> bool:
        """Wait until the hub's upstream is connected; False if ``timeout`` passes first."""
        if self.lease is None:
            raise NotConnected()
        return await self.upstream.wait_up(timeout)

    def add_disconnect_handler(self, fn: Handler) -> None:
        """``fn(status: HubStatus)`` once each time the upstream goes down (may be async)."""
        self.upstream.disconnect_handlers.append(fn)

    def add_connect_handler(self, fn: Handler) -> None:
        """``fn(status: HubStatus)`` once each time the upstream comes back (may be async)."""
        self.upstream.connect_handlers.append(fn)

    def add_status_handler(self, fn: Handler) -> None:
        """``fn(status: HubStatus)`` for every ``hub.status`` event."""
        self.upstream.status_handlers.append(fn)

    def add_error_handler(self, fn: Callable[[ErrorEvent], Any]) -> None:
        """``fn(error: ErrorEvent)`` for IB errors the hub routes to this lease."""
        self._error_handlers.append(fn)

    def add_bulletin_handler(self, fn: Callable[[NewsBulletin], Any]) -> None:
        """``fn(bulletin: NewsBulletin)`` for IB's news bulletins (exchange notices; the
        hub subscribes to them once for everyone, ``news.bulletin``). A coroutine
        function's result runs as a task."""
        self._bulletin_handlers.append(fn)

    # ------------------------------------------------------------------ requests

    async def status(self) -> StatusReply:
        return expect(await self._channel().request(GetStatus(id=0)), StatusReply)

    # Typed subscriptions: one overload per kind tells a type checker what
    # the kind yields (``Subscription[Tick]`` for "ticks"). A new kind adds its own
    # overload line here (and in ``sync_hub.Hub.subscribe``); the last one is the
    # untyped fallback for a kind given as a plain ``str``.
    @overload
    async def subscribe(self, contract: ContractArg, *, kind: Literal["ticks"] = ..., callback: OnEvent[Tick] = ..., queue_size: int | None = ..., **fields: Any) -> Subscription[Tick]: ...  # noqa: E501
    @overload
    async def subscribe(self, contract: ContractArg, *, kind: Literal["bars"], callback: OnEvent[Bar] = ..., queue_size: int | None = ..., **fields: Any) -> Subscription[Bar]: ...  # noqa: E501
    @overload
    async def subscribe(self, contract: ContractArg, *, kind: Literal["depth"], callback: OnEvent[DepthBook] = ..., queue_size: int | None = ..., **fields: Any) -> Subscription[DepthBook]: ...  # noqa: E501
    @overload
    async def subscribe(self, contract: ContractArg, *, kind: TbtKind, callback: OnEvent[TickByTick] = ..., queue_size: int | None = ..., **fields: Any) -> Subscription[TickByTick]: ...  # noqa: E501
    @overload
    async def subscribe(self, contract: ContractArg, *, kind: str, callback: OnEvent[Event] = ..., queue_size: int | None = ..., **fields: Any) -> Subscription[Event]: ...  # noqa: E501

    async def subscribe(
        self,
        contract: str | int | ContractSpec,
        *,
        kind: str = "ticks",
        callback: Callable[[Any], Any] | None = None,
        queue_size: int | None = None,
        **fields: Any,
    ) -> Subscription[Any]:
        """Stream ticks (``kind="ticks"``), 5-second bars (``"bars"``) or the SMART depth
        book (``"depth"``: :class:`~ibhub.protocol.DepthBook`, the whole book per update)
        for a contract.

        Events go to ``callback`` if given (on this loop), else to the returned
        subscription's queue (``async for tick in sub``). The topic's last value, if
        the hub has one, is the first event (a late joiner starts from the snapshot).
        """
        return await self._subscribe(Subscription, contract, kind, callback, queue_size, fields)

    async def subscribe_batches(
        self,
        contract: str | int | ContractSpec,
        *,
        kind: str = "ticks",
        callback: Callable[[Batch], Any] | None = None,
        queue_size: int | None = None,
        **fields: Any,
    ) -> BatchSubscription:
        """Like ``subscribe``, but ``callback`` (or ``async for``) receives a ``Batch``
        per hub message: all its ticks, in order, with their sequence numbers
        (client/batch.py). One Python call per message instead of one per tick."""
        return await self._subscribe(BatchSubscription, contract, kind, callback, queue_size,
                                     fields)

    async def _subscribe(
        self, factory: Callable[..., Any], contract: str | int | ContractSpec, kind: str,
        callback: Callable[..., Any] | None, queue_size: int | None, fields: dict[str, Any],
    ) -> Any:
        spec = contract_spec(contract, **fields)
        def build(lease: str) -> Subscribe:
            return Subscribe(id=0, lease=lease, contract=spec, kind=kind)

        keeper = self._lease_keeper()
        reply = expect(await self._upstream_call(lambda: keeper.request(build)), Subscribed)
        sub: Subscription[Any] = factory(
            reply.topic, reply.contract, spec, kind, callback,
            self.queue_size if queue_size is None else queue_size,
            spawn=self._spawn, gaps=self._gaps_of, unsubscribe=self.unsubscribe,
        )
        table = self._topic_table()
        entry = table.get(reply.topic)
        if entry is None:
            entry = table.add(reply.topic, spec, kind)
            entry.subs.append(sub)
            entry.sequencer.sync()
        else:
            entry.subs.append(sub)
            if entry.latest is not None:
                sub._deliver(entry.latest)
        return sub

    async def listen(
        self,
        prefix: str,
        callback: Callable[[Batch], Any] | None = None,
        *,
        queue_size: int | None = None,
        since: Mapping[str, int] | None = None,
    ) -> Tap:
        """Receive every event on topics starting with ``prefix`` (``"tick."``,
        ``"bar."``, ``"order."``, ``"hub.status"``) as ``Batch``es, whoever subscribed
        them: a passive tap for recorders and monitors (client/batch.py). It opens no
        line at the hub and recovers nothing: a sequence jump is reported in the
        batch's ``missed``. ``since`` seeds each topic's last sequence number seen
        (what a restarted recorder had on disk), so a loss across a restart is
        reported too. Close it with ``tap.close()``. From the blocking ``Hub``, give a
        ``callback`` (it runs on the SDK thread)."""
        if not prefix:
            raise ValueError("listen() needs a topic prefix (e.g. 'tick.'); '' would be "
                             "every topic the hub publishes")
        stream = self._stream
        if stream is None or self._table is None:
            raise NotConnected()
        tap = Tap(prefix, callback, self.queue_size if queue_size is None else queue_size,
                  spawn=self._spawn, since=since, close=self._close_tap)
        self._taps.append(tap)
        stream.subscribe(prefix)
        return tap

    def report_lag(self, seconds: float) -> None:
        """Tell the hub (with each heartbeat) how far behind its timestamps this script
        is; the hub shows it in status and in ``ibhub_subscriber_lag_seconds``. The
        SDK measures nothing per event itself: a consumer that knows (``ibhub record``)
        reports it. Sequence gaps are always reported."""
        self._lag = max(0.0, float(seconds))

    def _keeping_up(self) -> dict[str, Any]:
        table = self._table
        gaps = sum(s.gaps for s in table.sequencers()) if table is not None else 0
        gaps += sum(tap.gaps for tap in self._taps)
        return {"gaps": gaps, "lag_ms": round(self._lag * 1000, 3)}

    def _close_tap(self, tap: Tap) -> None:
        if tap in self._taps:
            self._taps.remove(tap)
            if self._stream is not None:
                self._stream.unsubscribe(tap.prefix)
        tap._end()

    async def unsubscribe(self, sub: Subscription) -> None:
        """End ``sub``; the last local subscription on a topic unsubscribes at the hub."""
        if sub.closed:
            return
        sub._end()
        entry = self._table.get(sub.topic) if self._table is not None else None
        if entry is None or sub not in entry.subs:
            return
        entry.subs.remove(sub)
        if entry.subs:
            return
        self._topic_table().remove(entry)
        token = self._keeper.token if self._keeper is not None else None
        if token is None or self._rpc is None:
            return
        try:
            await self._rpc.request(Unsubscribe(id=0, lease=token, topic=sub.topic))
        except HubError as exc:
            benign = exc.code in (ErrorCode.UNKNOWN_LEASE, ErrorCode.NOT_SUBSCRIBED)
            level = logging.DEBUG if benign else logging.WARNING
            log.log(level, "unsubscribe %s: %s", sub.topic, exc)

    async def _last_value(self, topic: str) -> Event | None:
        """The hub's last event on exactly ``topic`` (None if it has none yet). Over NATS,
        from the hub's JetStream stream first (any replica answers; the hub is not
        asked), else from the hub."""
        if self._nats is not None:
            try:
                epoch = self._keeper.nats_epoch if self._keeper is not None else ""
                event = await self._nats.last_value(topic, epoch)
            except Exception as exc:  # no JetStream (yet), permissions: ask the hub
                log.debug("last value of %s from JetStream failed: %s", topic, exc)
            else:
                if event is not None:
                    return event
        reply = expect(
            await self._channel().request(GetSnapshot(id=0, topic=topic)), Snapshot
        )
        for name, raw in zip(reply.topics, reply.events, strict=False):
            if name == topic:
                return wire.decode_event(raw)
        return None

    async def replay(self, topic: str, since: float) -> list[tuple[str, Event]]:
        """Over NATS: every event on ``topic`` (or under it, ending in ``.``) from unix
        time ``since`` to now, from the hub's JetStream window, as (topic, event)."""
        return await self._nats_link().replay(topic, since)

    async def last_values(self, topic: str = "tick.") -> dict[str, Event]:
        """Over NATS: the last event of every topic under ``topic`` still in the hub's
        JetStream window (a late consumer's starting state), by topic."""
        return await self._nats_link().last_values(topic)

    def _nats_link(self) -> NatsLink:
        if self._nats is None:
            raise ValueError("replay and last_values read JetStream: AsyncHub(nats=...)")
        if self._nats.nc is None:
            raise NotConnected()
        return self._nats

    async def snapshot(self, topic: str) -> dict[str, Event]:
        """The last event of ``topic`` (or of every topic starting with it)."""
        reply = await self._channel().request(GetSnapshot(id=0, topic=topic))
        snap = expect(reply, Snapshot)
        return {
            name: wire.decode_event(raw)
            for name, raw in zip(snap.topics, snap.events, strict=False)
        }

    async def contract_details(
        self, contract: str | int | ContractSpec, **fields: Any
    ) -> list[ContractInfo]:
        spec = contract_spec(contract, **fields)
        reply = await self._upstream_call(
            lambda: self._channel().request(GetContractDetails(id=0, contract=spec))
        )
        return expect(reply, ContractDetailsReply).contracts

    async def historical_bars(
        self,
        contract: str | int | ContractSpec,
        *,
        duration: str = "1 D",
        bar_size: str = "1 hour",
        what_to_show: str = "TRADES",
        use_rth: bool = True,
        end: str = "",
        timeout: float | None = None,
        **fields: Any,
    ) -> list[BarData]:
        """Historical bars (IB duration and bar-size strings, e.g. "5 D", "1 hour")."""
        request = GetHistoricalBars(
            id=0, contract=contract_spec(contract, **fields), duration=duration,
            bar_size=bar_size, what_to_show=what_to_show, use_rth=use_rth, end=end,
        )
        reply = await self._upstream_call(lambda: self._channel().request(request, timeout))
        return expect(reply, HistoricalBarsReply).bars

    async def historical_ticks(
        self,
        contract: str | int | ContractSpec,
        *,
        what_to_show: str = "TRADES",
        count: int = 1000,
        start: str = "",
        end: str = "",
        use_rth: bool = False,
        timeout: float | None = None,
        **fields: Any,
    ) -> list[HistoricalTick]:
        """IB's historical ticks (TRADES, BID_ASK or MIDPOINT): ``count`` (<= 1000) from
        ``start`` forward or back from ``end`` (exactly one; "YYYYMMDD-HH:MM:SS" is UTC,
        "YYYYMMDD HH:MM:SS US/Eastern" names its zone; without a zone TWS implies one)."""
        request = GetHistoricalTicks(
            id=0, contract=contract_spec(contract, **fields), what_to_show=what_to_show,
            count=count, start=start, end=end, use_rth=use_rth,
        )
        reply = await self._upstream_call(lambda: self._channel().request(request, timeout))
        return expect(reply, HistoricalTicksReply).ticks

    # -- options and instrument data --------------------------------------

    async def option_chain(
        self, underlying: str | int | ContractSpec, *, exchange: str = "", **fields: Any
    ) -> list[OptionChain]:
        """The expirations and strikes of ``underlying``'s options, one chain per exchange
        and trading class (``exchange="SMART"`` for one). IB's reqSecDefOptParams."""
        request = GetOptionChain(id=0, underlying=contract_spec(underlying, **fields),
                                 exchange=exchange)
        reply = await self._upstream_call(lambda: self._channel().request(request))
        return expect(reply, OptionChainReply).chains

    async def calculate_implied_volatility(
        self, option: str | int | ContractSpec, option_price: float,
        underlying_price: float, **fields: Any,
    ) -> OptionComputation:
        """IB's model: implied volatility and greeks of ``option`` at ``option_price``
        with the underlying at ``underlying_price``."""
        request = CalculateImpliedVolatility(
            id=0, contract=contract_spec(option, **fields), option_price=option_price,
            underlying_price=underlying_price)
        reply = await self._upstream_call(lambda: self._channel().request(request))
        return expect(reply, OptionComputationReply).computation

    async def calculate_option_price(
        self, option: str | int | ContractSpec, volatility: float,
        underlying_price: float, **fields: Any,
    ) -> OptionComputation:
        """IB's model: price and greeks of ``option`` at ``volatility`` (0.2 = 20%)
        with the underlying at ``underlying_price``."""
        request = CalculateOptionPrice(
            id=0, contract=contract_spec(option, **fields), volatility=volatility,
            underlying_price=underlying_price)
        reply = await self._upstream_call(lambda: self._channel().request(request))
        return expect(reply, OptionComputationReply).computation

    async def matching_symbols(self, pattern: str) -> list[SymbolMatch]:
        """Underlyings whose symbol starts with (or name contains) ``pattern``, at most
        16 (IB reqMatchingSymbols)."""
        request = GetMatchingSymbols(id=0, pattern=pattern)
        reply = await self._upstream_call(lambda: self._channel().request(request))
        return expect(reply, MatchingSymbolsReply).matches

    async def lease_client_id(
        self, name: str | None = None, ttl: float = 0.0, *, tied: bool = False
    ) -> int:
        """A raw TWS client id for a direct Gateway connection; free it with
        ``release_client_id``. ``tied=True`` releases it when this lease ends;
        ``ttl`` > 0 releases it after that many seconds, 0 after the hub's
        ``raw_lease_ttl`` (24 h by default; call again with the same id to renew)."""
        token = self._keeper.token if tied and self._keeper is not None else None
        request = LeaseClientId(id=0, name=name or self.name, ttl=ttl, lease=token or "")
        leased = expect(await self._channel().request(request), ClientIdLeased)
        self._raw_tokens[leased.client_id] = leased.token
        return leased.client_id

    async def renew_client_id(self, client_id: int, ttl: float = 0.0) -> float:
        """Extend a raw id this script leased; returns the seconds it now has left."""
        request = LeaseClientId(id=0, name=self.name, ttl=ttl,
                                token=self._raw_tokens.get(client_id, ""))
        if not request.token:
            raise HubError(ErrorCode.UNKNOWN_LEASE,
                           f"client id {client_id} was not leased by this script")
        return expect(await self._channel().request(request), ClientIdLeased).expires_in

    async def release_client_id(self, client_id: int) -> None:
        """Release a raw id this script leased (an operator may release any)."""
        await self._channel().request(ReleaseClientId(
            id=0, client_id=client_id, token=self._raw_tokens.pop(client_id, ""),
            credential=self._credential))

    async def names(self) -> list[NameInfo]:
        """Operator: the bound script names (``role="operator"``)."""
        reply = await self._lease_keeper().request(lambda lease: ListNames(id=0, lease=lease))
        return expect(reply, NamesReply).names

    async def forget_name(self, name: str) -> None:
        """Operator: drop ``name``'s binding; the next hello with it binds it anew."""
        await self._lease_keeper().request(lambda lease: ForgetName(id=0, lease=lease,
                                                                    name=name))

    # ------------------------------------------------------------------ orders and account
    # The order logic lives in ``client/orders.py``; these methods build a request and hand the
    # reply over. A refusal raises ``OrderRejectedError`` (docs/orders.md, "Orders from
    # the SDK").

    async def place_order(
        self,
        contract: str | int | ContractSpec,
        action: str,
        quantity: float,
        order_type: str = "MKT",
        limit_price: float | None = None,
        stop_price: float | None = None,
        tif: str = "DAY",
        outside_rth: bool = False,
        client_order_id: str | None = None,
        account: str = "",
        take_profit: float | None = None,
        stop_loss: float | None = None,
        *,
        oca_group: str = "",
        oca_type: int = 0,
        order_ref: str = "",
        algo_strategy: str = "",
        algo_params: dict[str, str] | None = None,
        algo_id: str = "",
        trailing_amount: float | None = None,
        trailing_percent: float | None = None,
        trail_stop_price: float | None = None,
        limit_price_offset: float | None = None,
        peg_offset: float | None = None,
        good_till_date: str = "",
        stop_loss_limit: float | None = None,
        **fields: Any,
    ) -> Order:
        """Place an order; returns its live ``Order`` (``await order.wait_done()``).

        ``client_order_id`` (default: a fresh unique one) makes the call idempotent:
        the same id again returns the same order, never a second one; a request that
        timed out is retried once with it. ``take_profit`` / ``stop_loss`` make a
        bracket (``order.children``). ``oca_group`` / ``oca_type`` put the order in a
        One-Cancels-All group of this script (1: a fill cancels the others; 2 / 3: a
        fill reduces them); ``order_ref`` is a label of yours, shown back on the
        ``Order`` and in ``executions()``; ``algo_strategy`` / ``algo_params`` /
        ``algo_id`` ask for an IB algo (e.g. ``"Adaptive"``,
        ``{"adaptivePriority": "Normal"}``). Order types beyond MKT/LMT/STP/STP LMT:
        ``"TRAIL"`` / ``"TRAIL LIMIT"`` (``trailing_amount`` or ``trailing_percent``, an
        optional initial ``trail_stop_price``, a TRAIL LIMIT's ``limit_price_offset``),
        ``"MIT"`` / ``"LIT"`` (``stop_price`` is the trigger), ``"MOC"`` / ``"LOC"``,
        ``"REL"`` (``peg_offset``, optional cap ``limit_price``), ``"MIDPRICE"``;
        ``tif="GTD"`` with ``good_till_date`` ("YYYYMMDD HH:MM:SS US/Eastern");
        ``stop_loss_limit`` makes a bracket's stop-loss leg a STP LMT.
        Raises ``OrderRejectedError`` with the reason.
        """
        coid = client_order_id or new_client_order_id(self.name)
        spec = contract_spec(contract, **fields)
        def build(lease: str) -> PlaceOrder:
            return PlaceOrder(
                id=0, lease=lease, client_order_id=coid, contract=spec, action=action,
                quantity=quantity, order_type=order_type, limit_price=limit_price,
                stop_price=stop_price, tif=tif, outside_rth=outside_rth, account=account,
                take_profit=take_profit, stop_loss=stop_loss, oca_group=oca_group,
                oca_type=oca_type, order_ref=order_ref, algo_strategy=algo_strategy,
                algo_params=dict(algo_params or {}), algo_id=algo_id,
                trailing_amount=trailing_amount, trailing_percent=trailing_percent,
                trail_stop_price=trail_stop_price, limit_price_offset=limit_price_offset,
                peg_offset=peg_offset, good_till_date=good_till_date,
                stop_loss_limit=stop_loss_limit,
            )

        reply = await self._order_request(build, retry=f"client_order_id={coid!r}")
        return self._order_tracker().placed(build(""), reply)

    async def what_if_order(
        self,
        contract: str | int | ContractSpec,
        action: str,
        quantity: float,
        order_type: str = "MKT",
        limit_price: float | None = None,
        stop_price: float | None = None,
        tif: str = "DAY",
        account: str = "",
        *,
        outside_rth: bool = False,
        algo_strategy: str = "",
        algo_params: dict[str, str] | None = None,
        trailing_amount: float | None = None,
        trailing_percent: float | None = None,
        trail_stop_price: float | None = None,
        limit_price_offset: float | None = None,
        peg_offset: float | None = None,
        good_till_date: str = "",
        **fields: Any,
    ) -> WhatIfReply:
        """IB's margin and commission estimate for this order (``init_margin_change``,
        ``commission``, ...); nothing is placed. The fields are ``place_order``'s, and
        the same checks apply; a refusal raises ``OrderRejectedError`` (IB's own as
        ``ib_rejected`` with its ``ib_code``)."""
        spec = contract_spec(contract, **fields)

        def build(lease: str) -> WhatIfOrder:
            return WhatIfOrder(
                id=0, lease=lease, contract=spec, action=action, quantity=quantity,
                order_type=order_type, limit_price=limit_price, stop_price=stop_price,
                tif=tif, outside_rth=outside_rth, account=account,
                algo_strategy=algo_strategy, algo_params=dict(algo_params or {}),
                trailing_amount=trailing_amount, trailing_percent=trailing_percent,
                trail_stop_price=trail_stop_price, limit_price_offset=limit_price_offset,
                peg_offset=peg_offset, good_till_date=good_till_date,
            )

        return rejected_or(await self._order_request(build), WhatIfReply)

    async def modify_order(
        self,
        order: Order | int,
        quantity: float | None = None,
        limit_price: float | None = None,
        stop_price: float | None = None,
    ) -> Order:
        """Change a working order; ``None`` keeps a value. IB refusing it later shows as a
        ``modify_rejected`` event that restores the old values on the ``Order``."""
        target = self._order_of(order)
        changes = {name: value for name, value in (("quantity", quantity), (
            "limit_price", limit_price), ("stop_price", stop_price)) if value is not None}
        def build(lease: str) -> ModifyOrder:
            return ModifyOrder(id=0, lease=lease, order_id=target.order_id, quantity=quantity,
                               limit_price=limit_price, stop_price=stop_price)

        reply = await self._order_request(build)
        return self._order_tracker().modified(target, changes, reply)

    async def cancel_order(self, order: Order | int) -> Order:
        """Ask for a cancel; ``await order.wait_done()`` for the outcome (it may fill first)."""
        target = self._order_of(order)
        reply = await self._order_request(
            lambda lease: CancelOrder(id=0, lease=lease, order_id=target.order_id)
        )
        rejected_or(reply, CancelRequested)
        return target

    async def cancel_all_orders(self) -> list[int]:
        """Cancel every working order of this script (name); the order ids cancelled."""
        reply = await self._order_request(lambda lease: CancelAllOrders(id=0, lease=lease))
        return rejected_or(reply, CancelRequested).order_ids

    async def global_cancel(self) -> list[int]:
        """Cancel every working order of the account, external ones too (operator role)."""
        reply = await self._order_request(lambda lease: GlobalCancel(id=0, lease=lease))
        return rejected_or(reply, CancelRequested).order_ids

    def orders(self) -> list[Order]:
        """Every order this client has seen (placed here, or announced on its topic)."""
        return list(self._order_tracker().orders.values())

    async def open_orders(self, scope: str = "mine") -> list[OrderInfo]:
        """Working orders as the hub knows them (``scope="all"``: operators)."""
        reply = await self._order_request(
            lambda lease: GetOpenOrders(id=0, lease=lease, scope=scope)
        )
        return rejected_or(reply, OrdersReply).orders

    async def completed_orders(self, scope: str = "mine") -> list[OrderInfo]:
        reply = await self._order_request(
            lambda lease: GetCompletedOrders(id=0, lease=lease, scope=scope)
        )
        return rejected_or(reply, OrdersReply).orders

    async def executions(self, scope: str = "mine") -> list[ExecutionInfo]:
        """Fills with their commissions."""
        reply = await self._order_request(
            lambda lease: GetExecutions(id=0, lease=lease, scope=scope)
        )
        return rejected_or(reply, ExecutionsReply).executions

    async def positions(self, account: str = "") -> list[PositionInfo]:
        reply = await self._channel().request(GetPositions(id=0, account=account))
        return rejected_or(reply, PositionsReply).positions

    async def portfolio(self, account: str = "") -> list[PortfolioItem]:
        reply = await self._channel().request(GetPortfolio(id=0, account=account))
        return rejected_or(reply, PortfolioReply).items

    async def account_values(self, account: str = "") -> list[AccountValue]:
        reply = await self._channel().request(GetAccountValues(id=0, account=account))
        return rejected_or(reply, AccountValuesReply).values

    async def account_summary(
        self, tags: list[str] | None = None, account: str = ""
    ) -> dict[str, AccountValue]:
        """Account summary values by tag (``NetLiquidation``, ``BuyingPower``, ...), from
        IB's account summary. With several accounts (or currencies) a tag has several
        rows and this keeps one of them: use ``account_summary_rows`` then."""
        return {value.key: value for value in await self.account_summary_rows(tags, account)}

    async def account_summary_rows(
        self, tags: list[str] | None = None, account: str = ""
    ) -> list[AccountValue]:
        """Every account-summary row, as IB's reqAccountSummary gives them: plain tags,
        ``"$LEDGER"`` (base currency), ``"$LEDGER:ALL"``, ``"$LEDGER:EUR"``; ``account``
        "" = every account."""
        request = GetAccountSummary(id=0, account=account, tags=list(tags or []))
        return list(rejected_or(await self._channel().request(request),
                                AccountSummaryReply).values)

    async def pnl(self, account: str = "") -> list[PnLInfo]:
        """IB's PnL per account (``con_id`` 0) and per position (``position``,
        ``value``), from the hub's shared subscriptions; ``account`` "" = every one."""
        reply = await self._channel().request(GetPnL(id=0, account=account))
        return list(rejected_or(reply, PnLReply).items)

    async def _order_request(
        self, build: Callable[[str], Request], retry: str | None = None
    ) -> Reply:
        """A lease request (renewed on ``unknown_lease``). With ``retry`` (an idempotent
        request), a timeout is retried once; the second one names what to retry with."""
        keeper = self._lease_keeper()
        try:
            return await keeper.request(build)
        except HubTimeout:
            if retry is None:
                raise
            log.warning("order request timed out; retrying with the same %s", retry)
        try:
            return await keeper.request(build)
        except HubTimeout as exc:
            raise HubTimeout(f"{exc.message}; call again with {retry}: the hub returns the "
                             "same order if it has it") from exc

    async def _order_book(self) -> tuple[list[OrderInfo], list[ExecutionInfo]]:
        """This script's orders and fills at the hub (order-topic gap recovery)."""
        return [*await self.open_orders(), *await self.completed_orders()], \
            await self.executions()

    def _order_tracker(self) -> OrderTracker:
        if self._orders is None:
            raise NotConnected()
        return self._orders

    def _order_of(self, order: Order | int) -> Order:
        if isinstance(order, Order):
            return order
        return self._order_tracker().orders.get(order) or Order(order, "")

    # ------------------------------------------------------------------ internals

    async def _upstream_call(self, send: Callable[[], Awaitable[Reply]]) -> Reply:
        """Send a request that needs the Gateway; while the hub answers
        ``upstream_down`` (e.g. it is still connecting), wait for the upstream to come
        up and try again, for at most ``request_timeout`` seconds in all."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.request_timeout
        while True:
            try:
                return await send()
            except HubError as exc:
                if exc.code != ErrorCode.UPSTREAM_DOWN:
                    raise
                left = deadline - loop.time()
                if left <= 0:
                    raise
                if self.upstream.up:  # our view lags the hub's: do not spin
                    await asyncio.sleep(min(0.1, left))
                elif not await self.upstream.wait_up(left):
                    raise
                log.debug("retrying a request now that the upstream is up: %s", exc)

    def _channel(self) -> RpcChannel:
        if self._rpc is None:
            raise NotConnected()
        return self._rpc

    def _topic_table(self) -> TopicTable:
        if self._table is None:
            raise NotConnected()
        return self._table

    def _lease_keeper(self) -> LeaseKeeper:
        if self._keeper is None:
            raise NotConnected()
        return self._keeper

    def _gaps_of(self, topic: str) -> int:
        return self._table.gaps_of(topic) if self._table is not None else 0

    def _on_event(self, topic: str, event: Event) -> None:
        if self._taps:
            for tap in self._taps:
                tap.on_message(topic, event)
        if self._table is not None:
            self._table.on_event(topic, event)

    def _keeper_token(self) -> str | None:
        keeper = self._keeper
        return keeper.token if keeper is not None else None

    def _on_lane_event(self, topic: str, event: Event) -> None:
        """An event the hub pushed on the lane: the same one comes over SUB; the topic's
        sequencer delivers whichever copy arrives first (``TopicSequencer.offer``)."""
        orders, table = self._orders, self._table
        if orders is not None and orders.sequencer is not None \
                and topic == orders.sequencer.topic:
            orders.sequencer.offer(event)
        elif table is not None and table.errors is not None and topic == table.errors.topic:
            table.errors.offer(event)

    def _on_lane_ticks(self, topic: str, event: Event) -> None:
        """A bundle from the lane's tick connection: the SUB socket's path from here on."""
        self._lane_tick_events += count_events(event)
        self._on_event(topic, event)

    def _move_bundle(self, on_lane: bool) -> None:
        if self._table is not None:
            self._table.move_bundle(on_lane)

    @property
    def lane_ticks_attached(self) -> bool:
        """True while the tick bundle comes over the hub's lane (not the SUB socket)."""
        return self._lane is not None and self._lane.ticks_attached

    @property
    def lane_attached(self) -> bool:
        """True while requests and this lease's events use the hub's lane."""
        return self._lane is not None and self._lane.attached

    def _on_error_event(self, event: ErrorEvent) -> None:
        log.warning("IB error %d for this lease: %s", event.ib_code, event.message)
        for fn in list(self._error_handlers):
            try:
                result = fn(event)
                if asyncio.iscoroutine(result):
                    self._spawn(result, "error handler")
            except Exception:
                log.exception("error handler %r raised; continuing", fn)

    def _on_bulletin_event(self, event: NewsBulletin) -> None:
        for fn in list(self._bulletin_handlers):
            try:
                result = fn(event)
                if asyncio.iscoroutine(result):
                    self._spawn(result, "bulletin handler")
            except Exception:
                log.exception("bulletin handler %r raised; continuing", fn)

    def _on_pub_reconnect(self) -> None:
        """New PUB connection: sequence numbers restart from what the hub has now."""
        if self._table is not None:
            self._table.resync_all()
        if self._keeper is not None:
            self._keeper.wake()  # heartbeat now: a restarted hub has forgotten our lease

    def _spawn(self, coro: Coroutine[Any, Any, Any], what: str) -> None:
        self._tasks.spawn(coro, name=f"ibhub {what}")
