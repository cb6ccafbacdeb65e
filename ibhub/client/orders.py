"""Orders in the SDK: the ``Order`` object a script holds, and the tracker that keeps
it up to date from the lease's ``order.<lease>`` topic (in the spirit of ib_insync's
``Trade``).

Why it works this way:

* **One topic per hub, subscribed at hello.** The tracker listens on ``order.<lease>``
  from the moment the lease exists (and follows it when the SDK says hello again), so
  no event of an order can be published before the SDK listens for it: the first order
  request comes later over the other socket.
* **Applied by order id, in sequence order.** Events run through a ``TopicSequencer``
  like ticks do. A brand-new lease's topic starts at seq 1, so after an empty snapshot
  the baseline is 0 and a lost first event is a gap too.
* **Gap recovery from the hub's book, not only the snapshot.** A tick is a complete
  state, so the topic's last value repairs a tick gap; the last event of an order topic
  may concern another order. After a gap the tracker also asks for this script's open
  and completed orders and executions and merges them (monotonically: a finished order
  stays finished, ``filled`` never goes down, fills are keyed by ``exec_id``).
* **Events may beat the reply.** The hub publishes ``acknowledged`` when the journal
  commit lands, which can reach the SUB socket before ``order_accepted`` reaches the
  DEALER. An event for an unknown order id creates the ``Order``; the reply then finds
  it and fills in what only the request knew (prices, tif).
* **Refusals raise.** A request the hub or IB refuses synchronously raises
  ``OrderRejectedError`` (a ``HubError`` with the stable ``reason``); an order IB
  rejects *later* ends as an ``Order`` with ``rejected`` true, because there is no call
  left to raise from. ``wait_done`` returns for filled, cancelled and rejected alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from ibhub.client.errors import HubError, HubTimeout
from ibhub.client.sequencer import TopicSequencer
from ibhub.client.topics import TopicTable, last_value
from ibhub.protocol import (
    TOPIC_ORDER,
    ContractSpec,
    Event,
    ExecutionInfo,
    OrderAccepted,
    OrderEvent,
    OrderInfo,
    OrderRejected,
    PlaceOrder,
    Reply,
)

log = logging.getLogger(__name__)

TERMINAL = frozenset({"Filled", "Cancelled", "ApiCancelled", "Inactive"})
EVENTS_KEPT = 1_000  # per order: the log of a pathological order stays bounded
REFRESH_RETRY_FIRST = 0.2  # s before the first retry of a refused order refresh, doubling
REFRESH_RETRY_MAX = 5.0  # s between retries at most


class OrderRejectedError(HubError):
    """The hub (or IB, synchronously) refused an order request; the Gateway never saw it
    unless ``reason`` is ``ib_rejected``. ``reason`` is one of ``protocol.RejectReason``."""

    def __init__(
        self, reason: str, message: str, client_order_id: str = "", order_id: int = 0,
        ib_code: int = 0,
    ) -> None:  # fmt: skip
        super().__init__(reason, message, ib_code)
        self.reason = reason
        self.client_order_id = client_order_id
        self.order_id = order_id

    @classmethod
    def from_reply(cls, reply: OrderRejected) -> OrderRejectedError:
        return cls(reply.reason, reply.message, reply.client_order_id, reply.order_id,
                   reply.ib_code)  # fmt: skip


@dataclass
class Fill:
    """One execution of an order; ``commission`` is None until IB's report arrives."""

    exec_id: str
    shares: float
    price: float
    time_ns: int
    commission: float | None = None


class Order:
    """A live view of one order of this script. Updated on the SDK's loop as events
    arrive; readable from any thread. ``status`` is IB's spelling (PendingSubmit,
    PreSubmitted, Submitted, Filled, Cancelled, Inactive)."""

    def __init__(self, order_id: int, client_order_id: str) -> None:
        self.order_id = order_id
        self.client_order_id = client_order_id
        self.contract: ContractSpec | None = None  # as requested (None: learnt from events)
        self.con_id = 0
        self.symbol = ""
        self.action = ""
        self.quantity = 0.0
        self.order_type = ""
        self.limit_price: float | None = None
        self.stop_price: float | None = None
        self.tif = ""
        self.order_ref = ""  # the script's own label (place_order(order_ref=...))
        self.oca_group = ""
        self.oca_type = 0
        self.algo_strategy = ""
        self.algo_params: dict[str, str] = {}
        self.algo_id = ""
        # the order type's own fields as placed (trailing_amount, trailing_percent,
        # trail_stop_price, limit_price_offset, peg_offset, good_till_date), when set
        self.order_params: dict[str, Any] = {}
        self.status = "PendingSubmit"
        self.filled = 0.0
        self.remaining = 0.0
        self.avg_fill_price = 0.0
        self.commission = 0.0  # total over fills, as reported so far
        self.message = ""  # IB's or the hub's last word on it (rejections, refused modifies)
        self.rejected = False
        self.fills: list[Fill] = []
        self.events: list[OrderEvent] = []
        self.children: list[Order] = []  # bracket: take-profit, stop-loss
        self.callbacks: list[Callable[[Order, OrderEvent | None], Any]] = []
        self._cond = threading.Condition()  # blocking waiters (the Hub facade)
        self._changed: asyncio.Event | None = None  # asyncio waiters, on the SDK loop
        self._before_modify: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return (f"Order({self.order_id}, {self.client_order_id!r}, {self.action} "
                f"{self.quantity:g} {self.symbol} {self.order_type}, {self.status}, "
                f"filled {self.filled:g} @ {self.avg_fill_price:g})")  # fmt: skip

    @property
    def done(self) -> bool:
        """Filled, cancelled or rejected: no more fills can come."""
        return self.status in TERMINAL or self.rejected

    @property
    def commissions_reported(self) -> bool:
        """Every fill so far has IB's commission report (it follows the fill, so an
        order can be ``done`` a moment before its commission is known)."""
        return all(f.commission is not None for f in self.fills)

    @property
    def cancelled(self) -> bool:
        return self.status in ("Cancelled", "ApiCancelled") and not self.rejected

    async def wait_until(
        self, predicate: Callable[[Order], object], timeout: float | None = None
    ) -> Order:
        """Wait (on the SDK loop) until ``predicate(self)``; ``HubTimeout`` after ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not predicate(self):
            if self._changed is None:
                self._changed = asyncio.Event()
            changed = self._changed
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                raise HubTimeout(f"order {self.order_id} ({self.client_order_id}) still "
                                 f"{self.status} after {timeout:g}s")  # fmt: skip
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await changed.wait()
        return self

    async def wait_done(self, timeout: float | None = None) -> Order:
        """Wait until filled, cancelled or rejected (check ``status`` / ``rejected``)."""
        return await self.wait_until(lambda o: o.done, timeout)

    def wait_done_blocking(self, timeout: float | None = None) -> Order:
        """``wait_done`` for a plain thread (the blocking ``Hub``)."""
        return self.wait_until_blocking(lambda o: o.done, timeout)

    def wait_until_blocking(
        self, predicate: Callable[[Order], object], timeout: float | None = None
    ) -> Order:
        """``wait_until`` for a plain thread (never the SDK's own thread)."""
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self), timeout):
                raise HubTimeout(f"order {self.order_id} ({self.client_order_id}) still "
                                 f"{self.status} after {timeout:g}s")  # fmt: skip
        return self

    # ------------------------------------------------------------------ updates (SDK loop)

    def _changed_now(self, event: OrderEvent | None) -> None:
        with self._cond:
            self._cond.notify_all()
        if self._changed is not None:
            self._changed.set()
            self._changed = None
        for fn in list(self.callbacks):
            try:
                fn(self, event)
            except Exception:
                log.exception("order callback %r raised; continuing", fn)

    def apply_event(self, ev: OrderEvent) -> None:
        """One event of this order, in the topic's sequence order."""
        with self._cond:
            self.events.append(ev)
            if len(self.events) > EVENTS_KEPT:
                del self.events[0]
            self.con_id = ev.con_id or self.con_id
            self.symbol = ev.symbol or self.symbol
            self.action = ev.action or self.action
            if not self.client_order_id:
                self.client_order_id = ev.client_order_id
            if ev.kind == "corrected":
                # the hub reconciled the order with the Gateway, which wins even over
                # an end the hub reported before
                self.status = ev.status or self.status
                self.rejected = ev.status == "Inactive"
            elif not (self.done and ev.status not in TERMINAL):  # a finished order stays so
                self.status = ev.status or self.status
            if ev.filled >= self.filled:
                self.filled, self.remaining = ev.filled, ev.remaining
                self.avg_fill_price = ev.avg_fill_price or self.avg_fill_price
            if self.quantity == 0.0:
                self.quantity = ev.filled + ev.remaining
            if ev.kind in ("filled", "partially_filled") and ev.exec_id:
                if all(f.exec_id != ev.exec_id for f in self.fills):
                    self.fills.append(Fill(ev.exec_id, ev.last_fill_qty, ev.last_fill_price, ev.ts))
            if ev.kind == "commission" and not math.isnan(ev.commission):
                fill = next((f for f in self.fills if f.exec_id == ev.exec_id), None)
                if fill is not None and fill.commission is None:
                    fill.commission = ev.commission - self.commission
            if not math.isnan(ev.commission):
                self.commission = ev.commission
            if ev.kind == "rejected":
                self.rejected = True
            if ev.kind in ("rejected", "modify_rejected", "cancel_rejected") or ev.message:
                self.message = ev.message or self.message
            if ev.kind == "modified":
                self._before_modify = None
            elif ev.kind == "modify_rejected" and self._before_modify is not None:
                for name, value in self._before_modify.items():
                    setattr(self, name, value)
                self._before_modify = None
        self._changed_now(ev)

    def apply_info(self, info: OrderInfo) -> None:
        """The hub's record of this order (a reply, or gap recovery): merged so that it
        never takes the order back (a reply can be older than an applied event)."""
        with self._cond:
            self.con_id, self.symbol = info.con_id or self.con_id, info.symbol or self.symbol
            self.action, self.order_type = info.action, info.order_type
            self.limit_price, self.stop_price = info.limit_price, info.stop_price
            self.tif = info.tif
            self.order_ref, self.oca_group, self.oca_type = (
                info.order_ref, info.oca_group, info.oca_type)  # fmt: skip
            self.algo_strategy, self.algo_params, self.algo_id = (
                info.algo_strategy, dict(info.algo_params), info.algo_id)  # fmt: skip
            self.order_params = _order_params(info)
            if not (self.done and info.status not in TERMINAL):
                self.status = info.status
            if info.filled >= self.filled:
                self.quantity, self.filled = info.quantity, info.filled
                self.remaining = info.remaining
                self.avg_fill_price = info.avg_fill_price or self.avg_fill_price
            self.commission = max(self.commission, info.commission)
            if info.status == "Inactive":
                self.rejected = True
            self.message = info.message or self.message
        self._changed_now(None)

    def apply_execution(self, ex: ExecutionInfo) -> None:
        """A fill from the executions list (gap recovery): added if missing."""
        with self._cond:
            fill = next((f for f in self.fills if f.exec_id == ex.exec_id), None)
            if fill is None:
                fill = Fill(ex.exec_id, ex.shares, ex.price, ex.time_ns)
                self.fills.append(fill)
                self.fills.sort(key=lambda f: f.time_ns)
            if fill.commission is None and ex.commission is not None:
                fill.commission = ex.commission
        self._changed_now(None)

    def apply_accepted(self, reply: OrderAccepted) -> None:
        """The hub accepted a place or modify request: take its status unless an event
        already moved the order on."""
        with self._cond:
            if not self.events and not self.done:
                self.status = reply.status or self.status
            if reply.filled > self.filled:
                self.filled, self.avg_fill_price = reply.filled, reply.avg_fill_price
            if reply.remaining and not self.events:
                self.remaining = reply.remaining
        self._changed_now(None)

    def set_request(self, req: PlaceOrder) -> None:
        """What only the request knows (the events carry no prices or tif)."""
        with self._cond:
            self.contract = req.contract
            self.symbol = self.symbol or req.contract.symbol
            self.con_id = self.con_id or req.contract.con_id
            self.action, self.quantity, self.order_type = req.action, req.quantity, req.order_type
            self.limit_price, self.stop_price, self.tif = req.limit_price, req.stop_price, req.tif
            self.order_ref, self.oca_group, self.oca_type = (
                req.order_ref, req.oca_group, req.oca_type)  # fmt: skip
            self.algo_strategy, self.algo_params, self.algo_id = (
                req.algo_strategy, dict(req.algo_params), req.algo_id)  # fmt: skip
            self.order_params = _order_params(req)
            if not self.events:
                self.remaining = req.quantity

    def set_leg_request(self, parent: PlaceOrder, suffix: str) -> None:
        """What a bracket child's fields are, from its parent's request: the opposite
        side, a take-profit limit (``tp``) or a stop-loss stop (``sl``)."""
        with self._cond:
            self.contract = parent.contract
            self.symbol = self.symbol or parent.contract.symbol
            self.action = "SELL" if parent.action == "BUY" else "BUY"
            self.quantity, self.tif = parent.quantity, parent.tif
            self.order_ref = parent.order_ref  # the family's label; OCA and algo are the parent's
            if suffix == "tp":
                self.order_type, self.limit_price = "LMT", parent.take_profit
            else:
                self.order_type, self.stop_price = "STP", parent.stop_loss
                if parent.stop_loss_limit is not None:
                    self.order_type, self.limit_price = "STP LMT", parent.stop_loss_limit
            if not self.events:
                self.remaining = parent.quantity

    def set_modified(self, changes: dict[str, Any]) -> None:
        """A modify the hub accepted: show the new values now, keep the old ones in case
        IB refuses it (a ``modify_rejected`` event puts them back)."""
        with self._cond:
            self._before_modify = {name: getattr(self, name) for name in changes}
            for name, value in changes.items():
                setattr(self, name, value)
            if "quantity" in changes:
                self.remaining = max(0.0, changes["quantity"] - self.filled)
        self._changed_now(None)


def new_client_order_id(name: str) -> str:
    """A unique, printable client order id (at most 64 characters, as the hub requires):
    the script's name plus a random part, so the journal shows whose it is."""
    stem = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)[:40].strip("-")
    return f"{stem or 'order'}-{uuid.uuid4().hex[:16]}"


class OrderTracker:
    """Every ``Order`` of this client by order id, fed by ``order.<lease>``."""

    def __init__(
        self,
        subscribe: Callable[[str], None],
        unsubscribe: Callable[[str], None],
        snapshot: Callable[[str], Awaitable[Event | None]],
        refresh: Callable[[], Awaitable[tuple[list[OrderInfo], list[ExecutionInfo]]]],
        spawn: Callable[[Coroutine[Any, Any, Any], str], None],
    ) -> None:
        self._subscribe, self._unsubscribe = subscribe, unsubscribe
        self._snapshot, self._refresh, self._spawn = snapshot, refresh, spawn
        self.orders: dict[int, Order] = {}
        self.sequencer: TopicSequencer | None = None
        self.recoveries = 0

    @property
    def topic(self) -> str | None:
        return self.sequencer.topic if self.sequencer is not None else None

    def set_lease(self, lease: str) -> None:
        """Listen on ``order.<lease>`` (the hub routes this script's order events to its
        current lease, so a renewed lease moves the topic)."""
        topic = f"{TOPIC_ORDER}{lease}"
        if self.sequencer is not None:
            if self.sequencer.topic == topic:
                return
            self._unsubscribe(self.sequencer.topic)
        self.sequencer = TopicSequencer(topic, self._deliver, self._request_recovery)
        self._subscribe(topic)
        self.sequencer.sync(request=False)
        self._spawn(self._recover(topic, refresh=False), f"snapshot {topic}")

    def resync(self) -> None:
        """New PUB connection (hub restart?): new baseline, and catch up from the book."""
        seq = self.sequencer
        if seq is not None:
            seq.reset()
            seq.sync(request=False)
            self._spawn(self._recover(seq.topic, refresh=True), f"snapshot {seq.topic}")

    def on_event(self, event: Event) -> None:
        if self.sequencer is not None:
            self.sequencer.on_event(event)

    def order(self, order_id: int, client_order_id: str = "") -> Order:
        """The tracked order with this id, created if new."""
        order = self.orders.get(order_id)
        if order is None:
            order = self.orders[order_id] = Order(order_id, client_order_id)
        return order

    def placed(self, req: PlaceOrder, reply: Reply) -> Order:
        """The hub's answer to ``req``: the (possibly already known) ``Order``; raises
        ``OrderRejectedError`` on a refusal."""
        accepted = rejected_or(reply, OrderAccepted)
        order = self.order(accepted.order_id, accepted.client_order_id)
        if order.contract is None:  # a retry must not undo a modification made since
            order.set_request(req)
        order.apply_accepted(accepted)
        legs = [s for s, price in (("tp", req.take_profit), ("sl", req.stop_loss))
                if price is not None]
        for order_id, suffix in zip(accepted.child_order_ids, legs, strict=False):
            leg = self.order(order_id, f"{order.client_order_id}.{suffix}")
            leg.set_leg_request(req, suffix)
            if leg not in order.children:
                order.children.append(leg)
        return order

    def modified(self, order: Order, changes: dict[str, Any], reply: Reply) -> Order:
        accepted = rejected_or(reply, OrderAccepted)
        order.set_modified(changes)
        order.apply_accepted(accepted)
        return order

    def _deliver(self, event: Event) -> None:
        if not isinstance(event, OrderEvent):
            log.warning("ignoring an unexpected %s event on %s", type(event).__name__, self.topic)
            return
        self.order(event.order_id, event.client_order_id).apply_event(event)

    def _request_recovery(self, topic: str) -> None:
        self._spawn(self._recover(topic, refresh=True), f"recover {topic}")

    async def _recover(self, topic: str, *, refresh: bool) -> None:
        """Take the topic's baseline from its snapshot, then (after a gap) merge the
        hub's book into every tracked order."""
        seq = self.sequencer
        event = await last_value(self._snapshot, topic)
        if seq is None or seq is not self.sequencer:
            return  # the lease moved on meanwhile
        seq.on_snapshot(event)
        if seq.last is None:
            seq.last = 0  # an empty topic: its first event is seq 1, a later one is a gap
        if (refresh or event is not None) and self.orders:
            await self.refresh()  # a non-empty topic at start: events before ours may be lost

    async def refresh(self) -> None:
        """Merge the hub's view (orders and executions of this script) into tracked orders.

        Retried with back-off until the hub answers (the SDK's close cancels it): a
        refresh follows a gap or a new lease, and events of this script's orders may have
        been missed, so giving up would leave an ``Order`` showing a state it left long
        ago (a fill published while this script was not yet listening). A restarted hub
        refuses it for a moment: it serves ``open_orders`` only once its Gateway session
        is up and its orders reconciled.
        """
        delay = REFRESH_RETRY_FIRST
        while True:
            try:
                infos, executions = await self._refresh()
                break
            except HubError as exc:
                log.warning("could not refresh orders from the hub (%s); again in %.1f s",
                            exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, REFRESH_RETRY_MAX)
        self.recoveries += 1
        for info in infos:
            order = self.orders.get(info.order_id)
            if order is not None:
                order.apply_info(info)
        for ex in executions:
            order = self.orders.get(ex.order_id)
            if order is not None:
                order.apply_execution(ex)


class OrderTopicTable(TopicTable):
    """The SDK's topic table plus ``order.<lease>``: it follows the lease with the error
    topic and restarts from a snapshot on a new PUB connection like every other topic."""

    orders: OrderTracker

    def set_lease(self, lease: str) -> None:
        super().set_lease(lease)
        self.orders.set_lease(lease)

    def on_event(self, topic: str, event: Event) -> None:
        if topic == self.orders.topic:
            self.orders.on_event(event)
        else:
            super().on_event(topic, event)

    def resync_all(self) -> None:
        super().resync_all()
        self.orders.resync()

    def sequencers(self) -> list[TopicSequencer]:
        seqs = super().sequencers()
        if self.orders.sequencer is not None:
            seqs.append(self.orders.sequencer)
        return seqs


_PARAM_FIELDS = ("trailing_amount", "trailing_percent", "trail_stop_price",
                 "limit_price_offset", "peg_offset", "good_till_date")


def _order_params(source: Any) -> dict[str, Any]:
    """The order-type fields that are set, of a PlaceOrder or an OrderInfo."""
    out = {}
    for name in _PARAM_FIELDS:
        value = getattr(source, name, None)
        if value is not None and value != "":
            out[name] = value
    return out


def rejected_or(reply: Reply, kind: type[Any]) -> Any:
    """``reply`` as ``kind``; an ``OrderRejected`` raises ``OrderRejectedError``."""
    if isinstance(reply, OrderRejected):
        raise OrderRejectedError.from_reply(reply)
    if not isinstance(reply, kind):
        raise HubError("internal", f"expected a {kind.__name__} reply, got {type(reply).__name__}")
    return reply
