"""The order manager's state: every order and fill, who owns them, and how changes
are journaled and published.

Shared by :mod:`ibhub.orders.manager` (requests from scripts) and :mod:`ibhub.orders.updates`
(what the Gateway reports). Owners are script *names* (``Hello.name``): a script that
reconnects, or a hub that restarts, keeps its orders; events go to ``order.<lease>`` of
the name's current lease. Orders the hub did not place belong to ``"external"``
(``order.external``) and are keyed by ``-permId``, because their order ids live in
other clients' id spaces.

Every change is journaled before its event is published (:meth:`OrderStore.persist`):
the event is built when the change happens and published, in order, once the commit
lands. If a journal write fails for an order that already exists at IB, the event is
still published (its owner must learn of its fills) and the failure is logged loudly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Final

import msgspec

from ibhub.orders.journal import FillRecord, Journal, OrderRecord
from ibhub.orders.journal_writer import JournalWriter
from ibhub.orders.order_types import decode_params
from ibhub.orders.port import UpstreamCommission, decode_algo_params
from ibhub.protocol import (
    ORDER_OWNER_EXTERNAL,
    TOPIC_ORDER,
    Event,
    ExecutionInfo,
    OrderEvent,
    OrderInfo,
)

log = logging.getLogger(__name__)

EXTERNAL: Final = ORDER_OWNER_EXTERNAL
TERMINAL: Final = frozenset({"Filled", "Cancelled", "ApiCancelled", "Inactive"})
NAN: Final = float("nan")
EPS: Final = 1e-9
# What a modify changes (and what a refused modify restores).
MODIFY_FIELDS: Final = (
    "quantity", "limit_price", "stop_price", "tif", "outside_rth", "remaining", "updated_ns",
)  # fmt: skip
BACKLOG_MAX: Final = 10_000  # held events per owner without a live lease (oldest dropped)

EventSink = Callable[[str, Event], None]


# --------------------------------------------------------------------------- journal ops
# Compound operations run by the journal writer (on the loop) inside one SAVEPOINT each.


def op_insert(j: Journal, recs: list[OrderRecord]) -> None:
    for rec in recs:
        j.insert_order(rec)


def op_update(j: Journal, order_id: int, kind: str, changes: dict[str, Any]) -> None:
    j.update_order(order_id, kind, changes)


def op_fill(j: Journal, fill: FillRecord, changes: dict[str, Any]) -> bool:
    if not j.insert_fill(fill):
        return False
    j.update_order(fill.order_id, "fill_state", changes)
    return True


def op_commission(
    j: Journal, c: UpstreamCommission, order_id: int, changes: dict[str, Any]
) -> None:
    j.set_commission(c.exec_id, c.commission, c.currency, c.realized_pnl)
    j.update_order(order_id, "commission_state", changes)


def op_note(j: Journal, order_id: int, kind: str, data: dict[str, Any]) -> None:
    j.note(order_id, kind, data)


def snapshot(rec: OrderRecord, names: Sequence[str]) -> dict[str, Any]:
    return {n: getattr(rec, n) for n in names}


class OrderStore:
    def __init__(
        self,
        writer: JournalWriter,
        publish: EventSink,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.writer = writer
        self.publish = publish
        self.now = clock_ns
        self.by_id: dict[int, OrderRecord] = {}  # key: order id (-permId for external)
        self.by_key: dict[tuple[str, str], OrderRecord] = {}
        self.by_perm: dict[int, OrderRecord] = {}
        self.children: dict[int, list[int]] = {}
        self.fills: dict[str, FillRecord] = {}
        self.fills_by_order: dict[int, list[FillRecord]] = {}
        self.lease_of_owner: dict[str, str] = {}
        self.backlog: dict[str, deque[Event]] = {}  # events for owners with no live lease
        self.modifying: dict[int, dict[str, Any]] = {}  # order id -> fields before a modify
        self.max_id = 0
        # Events due after the current step (``deliver_soon``): (record, row, kind)
        self._due: list[tuple[OrderRecord, OrderRecord, str]] = []

    def restore(self, orders: Sequence[OrderRecord], fills: Sequence[FillRecord]) -> None:
        """Load the journal's orders and fills (start-up, before serving)."""
        for rec in orders:
            self.register(rec)
        for fill in fills:
            self.fills[fill.exec_id] = fill
            self.fills_by_order.setdefault(fill.order_id, []).append(fill)
        log.info("orders restored from the journal: %d orders, %d fills", len(orders), len(fills))

    def register(self, rec: OrderRecord) -> None:
        self.by_id[rec.order_id] = rec
        if rec.client_order_id is not None:
            self.by_key[(rec.owner, rec.client_order_id)] = rec
        if rec.perm_id:
            self.by_perm[rec.perm_id] = rec
        if rec.parent_id:
            kids = self.children.setdefault(rec.parent_id, [])
            if rec.order_id not in kids:
                kids.append(rec.order_id)
                kids.sort()
        if rec.order_id > 0:
            self.max_id = max(self.max_id, rec.order_id)

    def unregister(self, rec: OrderRecord) -> None:
        self.by_id.pop(rec.order_id, None)
        if rec.client_order_id is not None:
            self.by_key.pop((rec.owner, rec.client_order_id), None)
        if rec.parent_id in self.children:
            self.children[rec.parent_id].remove(rec.order_id)

    def get(self, order_id: int) -> OrderRecord | None:
        return self.by_id.get(order_id)

    def find(self, owner: str, client_order_id: str) -> OrderRecord | None:
        return self.by_key.get((owner, client_order_id))

    def bind_owner(self, owner: str, lease: str, *, release: bool = True) -> None:
        """Route the events of ``owner``'s orders to ``order.<lease>`` (call on Hello).

        Events held while the owner had no live lease are published now, or with
        ``release=False`` when :meth:`release_held` is called (the hub waits a moment:
        a script subscribes to its new lease's topic only after the Welcome reply).
        """
        if self._due:  # routed as they were when their order was acknowledged
            self.deliver_due()
        self.lease_of_owner[owner] = lease
        if release:
            self.release_held(owner)

    def release_held(self, owner: str) -> None:
        lease = self.lease_of_owner.get(owner)
        if lease is None:
            return
        held = self.backlog.pop(owner, None)
        if held:
            log.info("delivering %d held order event(s) to %s (%s)", len(held), owner, lease)
            for ev in held:
                self.publish(TOPIC_ORDER + lease, ev)

    def lease_gone(self, lease: str) -> None:
        if self._due:
            self.deliver_due()
        for owner, held in list(self.lease_of_owner.items()):
            if held == lease:
                del self.lease_of_owner[owner]

    def owner_lease(self, order_id: int) -> str | None:
        """The live lease that owns ``order_id`` (for routing IB errors), else None."""
        rec = self.by_id.get(order_id)
        return None if rec is None else self.lease_of_owner.get(rec.owner)

    def deliver_soon(self, items: list[tuple[OrderRecord, OrderRecord, str]]) -> None:
        """Deliver ``kind`` events of ``(record, row)`` pairs (``row``: the record as
        journaled) once the current step is done (after the order's reply: the
        ``acknowledged`` events), and in any case before any other event: :meth:`deliver`,
        :meth:`bind_owner` and :meth:`lease_gone` publish what is due first."""
        if not self._due:
            asyncio.get_running_loop().call_soon(self.deliver_due)
        self._due.extend(items)

    def deliver_due(self) -> None:
        """Publish the events :meth:`deliver_soon` queued (the RPC server calls it right
        after each order reply; a loop callback does otherwise)."""
        if not self._due:
            return
        due, self._due = self._due, []
        for rec, row, kind in due:
            self.deliver(rec, self.event(row, kind))

    def deliver(self, rec: OrderRecord, ev: Event) -> None:
        """Publish ``ev`` on the owner's ``order.<lease>``; hold it while the owner has no
        live lease (e.g. fills reconciled after a hub restart, before the script is back)."""
        if self._due:  # events due after a reply go first (deliver_soon)
            self.deliver_due()
        if rec.owner == EXTERNAL:
            self.publish(TOPIC_ORDER + EXTERNAL, ev)
            return
        lease = self.lease_of_owner.get(rec.owner)
        if lease is None:
            held = self.backlog.get(rec.owner)
            if held is None:
                held = self.backlog[rec.owner] = deque(maxlen=BACKLOG_MAX)
            held.append(ev)
        else:
            self.publish(TOPIC_ORDER + lease, ev)

    @property
    def working(self) -> list[OrderRecord]:
        return [r for r in self.by_id.values() if r.status not in TERMINAL]

    # ------------------------------------------------------------------ events

    def event(
        self, rec: OrderRecord, kind: str, fill: FillRecord | None = None, message: str = ""
    ) -> OrderEvent:
        fills = self.fills_by_order.get(rec.order_id, ())
        has_commission = any(f.commission is not None for f in fills)
        return OrderEvent(
            0,
            0,
            kind,
            rec.order_id,
            rec.client_order_id or "",
            rec.owner,
            rec.con_id,
            rec.symbol,
            rec.action,
            rec.status,
            rec.filled,
            rec.remaining,
            rec.avg_fill_price,
            fill.shares if fill else 0.0,
            fill.price if fill else 0.0,
            fill.exec_id if fill else "",
            rec.commission if has_commission else NAN,
            message or rec.message,
        )

    def persist(
        self, op: Callable[..., Any], args: tuple[Any, ...], rec: OrderRecord, ev: Event | None
    ) -> None:
        """Journal ``op``; deliver ``ev`` (if any) once it is committed, in order."""

        def done(result: Any) -> None:
            if isinstance(result, BaseException):
                log.error(
                    "journal write for order %d failed (%s); publishing its event anyway",
                    rec.order_id,
                    result,
                )
            if ev is not None:
                self.deliver(rec, ev)

        self.writer.write_then(op, args, done)

    def info(self, rec: OrderRecord) -> OrderInfo:
        """The wire view of ``rec``: msgspec copies (and type-checks) every field of the
        same name; the record's internal fields (lease, exchange, sent, fingerprint) are
        left out. Two fields are mapped here, not renamed or retyped in the record, because
        the record is the journal row and keeps its column types: ``client_order_id`` is
        NULL for orders the hub did not place ("" on the wire), ``algo_params`` is JSON
        text (a dict on the wire)."""
        fields = msgspec.to_builtins(rec)
        fields["client_order_id"] = rec.client_order_id or ""
        fields["algo_params"] = decode_algo_params(rec.algo_params)
        fields.update(decode_params(fields.pop("order_params")))
        return msgspec.convert(fields, OrderInfo)

    def orders(self, owner: str | None, *, working: bool) -> list[OrderInfo]:
        """Working (or completed) orders of ``owner`` (None: everyone's), by order id."""
        return [
            self.info(r)
            for r in sorted(self.by_id.values(), key=lambda r: r.order_id)
            if (owner is None or r.owner == owner) and (r.status not in TERMINAL) == working
        ]

    def executions(self, owner: str | None) -> list[ExecutionInfo]:
        out = []
        for fill in sorted(self.fills.values(), key=lambda f: (f.time_ns, f.exec_id)):
            rec = self.by_id.get(fill.order_id)
            if rec is None or (owner is not None and rec.owner != owner):
                continue
            # The fill's fields by name (msgspec copies and type-checks them); the
            # order's identity comes from its record.
            fields = msgspec.to_builtins(fill)
            fields["client_order_id"] = rec.client_order_id or ""
            fields["owner"] = rec.owner
            fields["order_ref"] = rec.order_ref
            out.append(msgspec.convert(fields, ExecutionInfo))
        return out


def fanout_sink(fanout: Any) -> EventSink:
    """An :data:`EventSink` publishing through ``ibhub.hub.fanout.Fanout.emit`` (per-topic seq,
    hub timestamp, last-value cache, in-process listeners such as the TWS front door)."""
    publish: EventSink = fanout.emit
    return publish
