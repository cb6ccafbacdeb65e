"""Orders and account data inside the hub: builds the parts and serves their requests.

The hub (:mod:`ibhub.hub.server`) owns leases, fan-out, contract resolution and the
Gateway session; this module adds what trading needs, so that wiring it into the hub
is a handful of calls (``ibhub.hub.server.attach_orders`` makes them):

    service = OrderService(OrderSettings.from_settings(settings), fanout=..., resolve=...,
                           last_price=...)
    gateway = IbOrderGateway(ib, client_id=..., connected=..., cache_grace=...)
    await service.start(gateway, port=...)  # after upstream.start()
    service.register(hub.registry)         # every order / account request type
    service.on_hello(lease_id, name)       # route that script's order events to its lease
    service.on_lease_gone(lease_id)        # expiry / goodbye
    service.on_connected(accounts)         # every (re)connect: reconcile with the Gateway
    await service.stop()

It owns the journal writer, the pacer, the risk gate, the order manager, the account cache
and the ib_insync adapter. Start-up restores the book from the journal *before* the
hub serves requests, so idempotency holds across restarts from the first request.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ibhub.orders.account import AccountBook
from ibhub.orders.journal import Journal, default_data_dir
from ibhub.orders.journal_writer import JournalWriter
from ibhub.orders.manager import Caller, OrderHandler, OrderManager, UnknownContract
from ibhub.orders.risk import DEFAULT_MAX_BY_SEC_TYPE, RiskGate, RiskLimits
from ibhub.orders.store import fanout_sink
from ibhub.orders.updates import Correction
from ibhub.orders.what_if import WhatIfService
from ibhub.protocol import (
    ContractInfo,
    ContractSpec,
    Error,
    ErrorCode,
    RejectReason,
    Reply,
    WhatIfOrder,
)
from ibhub.tasks import TaskSet
from ibhub.tws.ib_codes import explain
from ibhub.tws.pacing import Pacer, Priority

log = logging.getLogger(__name__)

ResolveFn = Callable[[ContractSpec], Awaitable["ContractInfo | Error"]]


@dataclass(frozen=True)
class OrderSettings:
    """The trading part of the hub's settings (see ``HubSettings``)."""

    data_dir: Path
    allow_live: bool = False
    read_only: bool = False
    max_order_quantity: float = 10_000.0
    max_order_quantity_by_sec_type: Mapping[str, float] = dataclasses.field(
        default_factory=lambda: dict(DEFAULT_MAX_BY_SEC_TYPE)
    )
    fractional_shares: bool = False
    min_fx_quantity: float = 1.0
    price_band_pct: float = 10.0
    require_reference_price: bool = False
    order_rate: float = 20.0  # per lease, orders/s
    order_burst: float = 50.0
    pacer_rate: float = 40.0  # all upstream messages/s (IB allows 50)
    pacer_burst: float = 5.0
    max_order_delay: float = 2.0  # seconds a place/modify may expect to wait, else "busy"
    pacer_queue_max: int = 1000  # requests waiting for the pacer, overall (own pacer)
    pacer_queue_per_lease: int = 50  # orders of one lease waiting for the pacer (own pacer)
    journal_sync: str = "FULL"
    journal_sync_updates: str = "NORMAL"  # commits no reply waits on (journal module doc)
    order_send_at_commit: bool = False  # send at the insert's commit, before its fsync
    held_grace: float = 1.0  # seconds before events held for an absent script are sent
    # seconds an ended order waits in ib_insync's caches for missing executions or
    # commissions before it is pruned anyway (ibhub.ib.trade_cache); None: never prune
    ib_cache_grace: float | None = 60.0
    what_if_timeout: float = 10.0  # seconds a what-if order waits for the Gateway

    @classmethod
    def from_settings(cls, settings: Any) -> OrderSettings:
        """From a ``HubSettings`` (fields it lacks keep their defaults here)."""
        names = cls.__dataclass_fields__
        given = {n: getattr(settings, n) for n in names if hasattr(settings, n)}
        given.setdefault("data_dir", default_data_dir())
        return cls(**given)

    def limits(self) -> RiskLimits:
        return RiskLimits(
            max_quantity=self.max_order_quantity,
            price_band_pct=self.price_band_pct,
            allow_live=self.allow_live,
            read_only=self.read_only,
            order_rate=self.order_rate,
            order_burst=self.order_burst,
            require_reference_price=self.require_reference_price,
            max_quantity_by_sec_type=dict(self.max_order_quantity_by_sec_type),
            fractional_shares=self.fractional_shares,
            min_fx_quantity=self.min_fx_quantity,
        )


class _Resolver:
    """The book's ContractResolver on top of the hub's cached contract lookup."""

    def __init__(self, resolve: ResolveFn, last_price: Callable[[int], float | None]) -> None:
        self._resolve = resolve
        self.last_price = last_price

    async def qualify(self, spec: ContractSpec) -> ContractInfo:
        found = await self._resolve(spec)
        if isinstance(found, Error):
            if found.code in (ErrorCode.UPSTREAM_DOWN, ErrorCode.TIMEOUT):
                reason = RejectReason.UPSTREAM_DOWN
            elif found.code == ErrorCode.BUSY:
                reason = RejectReason.BUSY
            else:
                reason = RejectReason.UNKNOWN_CONTRACT
            raise UnknownContract(found.message, reason)
        return found


def _without_context(fn: Callable[[Any], Reply]) -> Callable[[Any, Any], Reply]:
    """A handler that needs only the request, as a registry handler ``(req, ctx)``."""
    return lambda req, _ctx: fn(req)


def _retrieved(fut: asyncio.Future[Any]) -> None:
    """A paced send nobody awaits: its failure (session lost, pacer stopped) is logged by
    the pacer already; retrieve it so asyncio does not report it again."""
    if not fut.cancelled():
        fut.exception()


def stream_price(stream: Any) -> float | None:
    """A last price from a hub TickStream: the last trade, else the mid, else None."""
    last = getattr(stream, "last", math.nan)
    if math.isfinite(last) and last > 0:
        return float(last)
    bid, ask = getattr(stream, "bid", math.nan), getattr(stream, "ask", math.nan)
    if math.isfinite(bid) and math.isfinite(ask) and bid > 0 and ask > 0:
        return (bid + ask) / 2.0
    return None


class OrderService:
    def __init__(
        self,
        settings: OrderSettings,
        *,
        fanout: Any,
        resolve: ResolveFn,
        last_price: Callable[[int], float | None],
        pacer: Pacer | None = None,
    ) -> None:
        """``pacer``: the hub's shared upstream budget, if it has one (else our own)."""
        self.settings = settings
        self._resolver = _Resolver(resolve, last_price)
        self._fanout = fanout
        self._publish = fanout_sink(fanout)
        self._own_pacer = pacer is None
        self.pacer = pacer or Pacer(
            rate=settings.pacer_rate,
            burst=settings.pacer_burst,
            max_queue=settings.pacer_queue_max,
            max_queue_per_owner=settings.pacer_queue_per_lease,
        )
        self.risk = RiskGate(settings.limits())
        self.account = AccountBook(self._publish)
        self.writer: JournalWriter | None = None
        self.book: OrderManager | None = None
        self.what_if: WhatIfService | None = None
        self.gateway: Any = None  # IbOrderGateway once started
        self._tasks = TaskSet(log)
        self.reconciled = asyncio.Event()
        # reconciliation's corrections (ibhub.orders.updates.Correction): the recent ones,
        # those made while nobody listened (replayed to the first listener), listeners
        self.corrections: collections.deque[Correction] = collections.deque(maxlen=100)
        self._unreported: collections.deque[Correction] = collections.deque(maxlen=1000)
        self._correction_listeners: list[Callable[[Correction], None]] = []

    @property
    def journal_path(self) -> Path:
        return Path(self.settings.data_dir) / "orders.sqlite3"

    async def start(self, gateway: Any, *, port: int) -> None:
        """Open and restore the journal, start the writer and the pacer, attach to the
        upstream order ``gateway`` (an ``ibhub.ib.orders.IbOrderGateway``, built by the
        composition root: ``ibhub.hub.server.attach_orders``)."""
        s = self.settings
        data_dir = Path(s.data_dir)
        journal = await asyncio.to_thread(Journal.in_dir, data_dir, synchronous=s.journal_sync)
        try:
            orders, fills = journal.orders(), journal.fills()
        finally:
            journal.close()
        self.writer = JournalWriter(lambda: Journal.in_dir(
            data_dir, synchronous=s.journal_sync, updates_synchronous=s.journal_sync_updates))
        await self.writer.start()
        if self._own_pacer:
            self.pacer.start()
        self.risk.set_upstream(port, ())
        self.gateway = gateway
        self.gateway.on_order_error_unrouted = self._order_error
        self.book = OrderManager(
            upstream=self.gateway,
            writer=self.writer,
            risk=self.risk,
            pacer=self.pacer,
            resolver=self._resolver,
            publish=self._publish,
            max_order_delay=s.max_order_delay,
            send_at_commit=s.order_send_at_commit,
        )
        self.what_if = WhatIfService(
            risk=self.risk, resolver=self._resolver, pacer=self.pacer,
            ask=lambda: self.gateway.start_what_if if self.gateway is not None else None,
            allocate_id=self.book.allocate_id, id_line=self.book.id_line,
            timeout=s.what_if_timeout,
        )
        self.book.store.restore(orders, fills)
        self.book.updates.on_correction = self._corrected
        self.gateway.attach(self.book, self.account)
        risky = self.risk.trading_blocked or self.risk.live  # refused, or real money
        log.log(
            logging.WARNING if risky else logging.INFO,
            "orders: journal %s (%d orders restored); %s",
            self.journal_path, len(orders), self.risk.trading_mode,
        )  # fmt: skip

    async def stop(self) -> None:
        await self._tasks.close()
        if self.gateway is not None:
            self.gateway.detach()
        if self._own_pacer:
            await self.pacer.stop()
        if self.writer is not None:
            await self.writer.stop()

    # ------------------------------------------------------------------ hub hooks

    def register(self, registry: Any) -> None:
        """Register every order and account request type in the hub's request registry
        (``ibhub.hub.registry.Registry``). Orders need a lease (the registry checks it and
        hands the live lease in) and run as tasks; account reads are answered inline."""
        assert self.book is not None, "OrderService.start() was not called"
        for order_type, fn in self.book.handlers().items():
            # eager: a place whose contract is known and whose insert commits and fsyncs
            # at once (the first of its loop turn) replies inside the receive call
            registry.add(order_type, self._as_owner(fn), slow=True, lease=True, eager=True)
        assert self.what_if is not None
        registry.add(WhatIfOrder, self._as_owner(self.what_if.check), slow=True, lease=True,
                     eager=True)
        # a placement's "acknowledged" events right behind its reply (OrderStore.deliver_soon)
        registry.after_reply.append(self.book.store.deliver_due)
        for account_type, read in self.account.handlers().items():
            registry.add(account_type, _without_context(read))

    def on_hello(self, lease_id: str, name: str) -> None:
        """Bind the script's orders to its new lease. Events held while it was away
        (fills reconciled after a restart) follow after ``held_grace`` seconds or with
        its first order request, whichever is first: the script subscribes to
        ``order.<lease>`` only once it has the Welcome, and PUB drops what nobody
        subscribed to yet."""
        if self.book is None:
            return
        book = self.book
        book.bind_owner(name, lease_id, release=False)
        if book.store.backlog.get(name):
            loop = asyncio.get_running_loop()
            loop.call_later(self.settings.held_grace, book.store.release_held, name)

    def on_lease_gone(self, lease_id: str) -> None:
        if self.book is not None:
            self.book.lease_gone(lease_id)

    def on_connected(self, port: int, accounts: list[str]) -> None:
        """Every (re)connect: learn the accounts (live guard), then reconcile."""
        self.risk.set_upstream(port, accounts)
        if self.risk.trading_blocked or self.risk.live:
            log.warning("orders: %s", self.risk.trading_mode)
        subscribe = getattr(self.gateway, "subscribe_account_data", None)
        if subscribe is not None:
            subscribe(accounts, self._pace_subscription)
        self._tasks.spawn(self._reconcile(), name="ibhub-reconcile")

    def _pace_subscription(self, send: Callable[[], Any], label: str) -> None:
        """An account subscription (summary, PnL) upstream, in the hub's budget."""
        fut = self.pacer.submit(Priority.SUBSCRIPTION, send, label=label)
        fut.add_done_callback(_retrieved)

    async def _reconcile(self) -> None:
        if self.gateway is None:
            return
        try:
            await self.gateway.reconcile()
        except (ConnectionError, TimeoutError, OSError) as exc:
            log.warning("orders: reconciliation after connect failed: %s", exc)
            return
        self.reconciled.set()

    def _as_owner(self, fn: OrderHandler) -> Callable[[Any, Any], Awaitable[Reply]]:
        """``fn(caller, req)`` as a registry handler ``(req, ctx)``: the caller is the
        request's live lease (``ctx.lease``), now the owner of its name's orders, whose
        held events are released before the request is served."""
        book = self.book
        assert book is not None

        async def handle(req: Any, ctx: Any) -> Reply:
            lease = ctx.lease
            if book.store.lease_of_owner.get(lease.name) != lease.lease_id:
                book.bind_owner(lease.name, lease.lease_id, release=False)
            book.store.release_held(lease.name)
            return await fn(Caller(lease.lease_id, lease.name, lease.role), req)

        return handle

    def add_correction_listener(self, fn: Callable[[Correction], None]) -> None:
        """Call ``fn`` for every correction from now on, and now for those nobody heard."""
        self._correction_listeners.append(fn)
        unreported = list(self._unreported)
        self._unreported.clear()
        for c in unreported:
            fn(c)

    def _corrected(self, c: Correction) -> None:
        self.corrections.append(c)
        if not self._correction_listeners:
            self._unreported.append(c)
        for fn in list(self._correction_listeners):
            fn(c)

    def _order_error(self, order_id: int, code: int, message: str) -> None:
        """An IB error about an order that did not end it (a refused modify or cancel):
        tell the owner on ``error.<lease>`` like any other error of theirs."""
        lease = self.book.store.owner_lease(order_id) if self.book else None
        if lease is None or not hasattr(self._fanout, "error"):
            return
        why = explain(code)
        self._fanout.error(lease, code, message, f"{why.meaning} {why.action}", f"order.{lease}")

    def status(self) -> dict[str, Any]:
        """Trading state for status/diagnostics: queue depth, live guard, counts."""
        book = self.book
        cache = self.gateway.cache if self.gateway is not None else None
        return {
            "trading": self.risk.trading_blocked or "allowed",
            "queue": self.pacer.depth(),
            "sent": self.pacer.sent,
            "working_orders": len(book.store.working) if book else 0,
            "corrections": len(self.corrections),
            "ib_cache": cache.sizes() if cache is not None else {},
            # back-pressure: what a new order would wait now, and the limit it is held to
            "expected_order_delay": self.pacer.expected_delay(Priority.ORDER),
            "max_order_delay": self.settings.max_order_delay,
            "unsent_orders": len(book.unsent) if book else 0,
        }
