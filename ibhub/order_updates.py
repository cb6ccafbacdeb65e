"""What the Gateway reports about orders, applied to the order book's state.

openOrder / orderStatus / execDetails / commissionReport / order errors arrive here
as plain dataclasses (:mod:`ibhub.order_feed`) and become journaled state changes and
:class:`~ibhub.protocol.OrderEvent` s on the owner's topic:

* status changes -> "submitted" / "cancelled" / "rejected"; a late non-terminal echo
  after an order ended changes nothing;
* each execution (deduplicated by ``exec_id``) -> "partially_filled" / "filled" with the
  fill; each commission report -> "commission";
* an order the book does not know is adopted: as its owner's if its ``orderRef`` says
  the hub placed it (the journal was lost), else as "external".

:meth:`OrderUpdates.reconcile` runs after every (re)connect with the Gateway's open
orders, executions and completed orders. It never sends anything: it updates states,
publishes fills that happened while the hub was away, and marks journaled orders that
never reached the Gateway as rejected (they are never re-sent).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

from ibhub.journal import FillRecord, OrderRecord
from ibhub.order_feed import (
    OrderUpstream,
    UpstreamCommission,
    UpstreamExecution,
    UpstreamOrder,
    UpstreamStatus,
    encode_algo_params,
    parse_order_ref,
    script_oca_group,
)
from ibhub.order_store import (
    EPS,
    EXTERNAL,
    TERMINAL,
    OrderStore,
    op_commission,
    op_fill,
    op_insert,
    op_note,
    op_update,
    snapshot,
)

log = logging.getLogger(__name__)

# An upstream status change -> the event kind the owner sees (None: no event).
_KIND_BY_STATUS: Final[dict[str, str]] = {
    "PreSubmitted": "submitted",
    "Submitted": "submitted",
    "Cancelled": "cancelled",
    "ApiCancelled": "cancelled",
    "Inactive": "rejected",
}


@dataclass
class ReconcileReport:
    updated: int = 0
    fills_published: int = 0
    adopted: int = 0
    lost: list[int] = field(default_factory=list)


class OrderUpdates:
    def __init__(self, store: OrderStore, upstream: OrderUpstream) -> None:
        self.store = store
        self._up = upstream
        self._early_commissions: dict[str, UpstreamCommission] = {}

    def _lookup(
        self, order_id: int, client_id: int, perm_id: int, order_ref: str = ""
    ) -> OrderRecord | None:
        """Our record for an upstream order: by (client id, order id), by permId, or by
        the orderRef the hub wrote (completed orders carry neither order nor client id)."""
        store = self.store
        if client_id == self._up.client_id and order_id > 0:
            rec = store.by_id.get(order_id)
            if rec is not None and rec.owner != EXTERNAL:
                return rec
        if perm_id:
            rec = store.by_perm.get(perm_id)
            if rec is not None:
                return rec
        parsed = parse_order_ref(order_ref) if order_ref else None
        if parsed is not None:
            return store.by_key.get(parsed)
        return None

    def find(
        self, order_id: int, client_id: int, perm_id: int, order_ref: str = ""
    ) -> OrderRecord | None:
        """The book's record of an upstream order, or None (never adopts)."""
        return self._lookup(order_id, client_id, perm_id, order_ref)

    def _adopt(self, o: UpstreamOrder) -> OrderRecord | None:
        """An order the book does not know: ours by orderRef (journal lost), else external."""
        parsed = parse_order_ref(o.order_ref) if o.client_id == self._up.client_id else None
        if parsed is not None and o.order_id > 0 and parsed not in self.store.by_key:
            owner, coid = parsed
            key: int = o.order_id
        elif o.perm_id:
            owner, coid, key = EXTERNAL, None, -o.perm_id
        else:
            log.debug("ignoring order %d of client %d without a permId", o.order_id, o.client_id)
            return None
        now = self.store.now()
        rec = OrderRecord(
            order_id=key,
            owner=owner,
            client_order_id=coid,
            lease="",
            con_id=o.con_id,
            symbol=o.symbol,
            sec_type=o.sec_type,
            exchange=o.exchange,
            currency=o.currency,
            action=o.action,
            quantity=o.quantity,
            order_type=o.order_type,
            limit_price=o.limit_price,
            stop_price=o.stop_price,
            tif=o.tif,
            outside_rth=o.outside_rth,
            account=o.account,
            parent_id=o.parent_id if owner != EXTERNAL else 0,
            remaining=o.quantity,
            perm_id=o.perm_id,
            sent=True,
            created_ns=now,
            updated_ns=now,
            # the Gateway's view; a hub order's OCA group back in its script's name (the
            # script's own order ref is only in the journal: lost with it)
            oca_group=script_oca_group(o.oca_group) if owner != EXTERNAL else o.oca_group,
            oca_type=o.oca_type,
            algo_strategy=o.algo_strategy,
            algo_params=encode_algo_params(dict(o.algo_params)),
        )
        self.store.register(rec)
        self.store.persist(op_insert, ([replace(rec)],), rec, None)
        log.info("adopted %s order %d (permId %d) as %s", o.symbol, key, o.perm_id, owner)
        return rec

    def on_open_order(self, o: UpstreamOrder) -> OrderRecord | None:
        rec = self._lookup(o.order_id, o.client_id, o.perm_id, o.order_ref)
        if rec is None:
            rec = self._adopt(o)
            if rec is None:
                return None
        self._set_perm(rec, o.perm_id)
        if rec.order_id not in self.store.modifying:
            self._gateway_resized(rec, o)
        self.store.modifying.pop(rec.order_id, None)  # IB took the modification
        filled = o.filled if o.filled > rec.filled else None
        self.apply_status(rec, o.status, filled, o.remaining if filled else None, o.avg_fill_price)
        return rec

    def _gateway_resized(self, rec: OrderRecord, o: UpstreamOrder) -> None:
        """An OCA group that reduces (ocaType 2 / 3) shrinks its other orders at the
        Gateway when one fills: the openOrder's size is then the order's size."""
        if rec.oca_type not in (2, 3) or not (EPS < o.quantity < rec.quantity - EPS):
            return
        log.info("order %d reduced by its OCA group at the Gateway: %g -> %g",
                 rec.order_id, rec.quantity, o.quantity)  # fmt: skip
        rec.quantity = o.quantity
        rec.remaining = max(0.0, rec.quantity - rec.filled)
        changes = {"quantity": rec.quantity, "remaining": rec.remaining}
        self.store.persist(op_update, (rec.order_id, "oca_reduced", changes), rec, None)

    def _set_perm(self, rec: OrderRecord, perm_id: int) -> None:
        if perm_id and rec.perm_id != perm_id:
            rec.perm_id = perm_id
            self.store.by_perm[perm_id] = rec
            self.store.persist(
                op_update, (rec.order_id, "perm_id", {"perm_id": perm_id}), rec, None
            )

    def on_order_status(self, s: UpstreamStatus) -> None:
        rec = self._lookup(s.order_id, s.client_id, s.perm_id)
        if rec is None:
            log.debug("orderStatus for unknown order %d (client %d)", s.order_id, s.client_id)
            return
        self._set_perm(rec, s.perm_id)
        self.apply_status(rec, s.status, s.filled, s.remaining, s.avg_fill_price)

    def apply_status(
        self,
        rec: OrderRecord,
        status: str,
        filled: float | None,
        remaining: float | None,
        avg: float | None,
        message: str = "",
        kind_override: str | None = None,
    ) -> bool:
        if not status or (rec.status in TERMINAL and status != rec.status):
            return False  # a late echo after the end changes nothing
        changed: list[str] = []
        kind = _KIND_BY_STATUS.get(status) if status != rec.status else None
        if status != rec.status:
            rec.status = status
            changed.append("status")
        if filled is not None and filled > rec.filled + EPS:
            rec.filled = filled
            rec.remaining = max(0.0, rec.quantity - filled)
            if avg:
                rec.avg_fill_price = avg
            changed += ["filled", "avg_fill_price"]
        if remaining is not None and filled is not None and abs(remaining - rec.remaining) > EPS:
            rec.remaining = remaining
            changed.append("remaining")
        if message:
            rec.message = message
            changed.append("message")
        if kind_override is not None:
            kind = kind_override
        if not changed:
            return False
        rec.updated_ns = self.store.now()
        changes = snapshot(rec, [*dict.fromkeys(changed), "remaining", "updated_ns"])
        ev = self.store.event(rec, kind) if kind else None
        self.store.persist(op_update, (rec.order_id, "status", changes), rec, ev)
        return True

    def on_execution(self, e: UpstreamExecution) -> bool:
        """A fill; False if it was already known (``exec_id``)."""
        if e.exec_id in self.store.fills:
            return False
        rec = self._lookup(e.order_id, e.client_id, e.perm_id, e.order_ref)
        if rec is None:
            rec = self._adopt(
                UpstreamOrder(
                    order_id=e.order_id,
                    client_id=e.client_id,
                    perm_id=e.perm_id,
                    con_id=e.con_id,
                    symbol=e.symbol,
                    sec_type="",
                    exchange=e.exchange,
                    currency="",
                    action="BUY" if e.side == "BOT" else "SELL",
                    quantity=e.cum_qty,
                    order_type="",
                    limit_price=None,
                    stop_price=None,
                    tif="",
                    outside_rth=False,
                    account=e.account,
                    order_ref=e.order_ref,
                    parent_id=0,
                    status="Submitted",
                )
            )
            if rec is None:
                return False
        fill = FillRecord(
            exec_id=e.exec_id,
            order_id=rec.order_id,
            con_id=e.con_id,
            symbol=e.symbol,
            side=e.side,
            shares=e.shares,
            price=e.price,
            cum_qty=e.cum_qty,
            avg_price=e.avg_price,
            time_ns=e.time_ns,
            account=e.account,
            exchange=e.exchange,
        )
        self.store.fills[e.exec_id] = fill
        fills = self.store.fills_by_order.setdefault(rec.order_id, [])
        fills.append(fill)
        exec_cum = max(e.cum_qty, sum(f.shares for f in fills))
        if exec_cum > rec.filled:
            rec.filled = exec_cum
            if e.avg_price:
                rec.avg_fill_price = e.avg_price
        if rec.quantity < rec.filled:  # adopted from an execution: total unknown
            rec.quantity = rec.filled
        rec.remaining = max(0.0, rec.quantity - rec.filled)
        done = exec_cum >= rec.quantity - EPS
        if done and rec.status not in TERMINAL:
            rec.status = "Filled"
        rec.updated_ns = self.store.now()
        early = self._early_commissions.pop(e.exec_id, None)
        changes = snapshot(
            rec, ("status", "filled", "remaining", "avg_fill_price", "quantity", "updated_ns")
        )
        ev = self.store.event(rec, "filled" if done else "partially_filled", fill)
        self.store.persist(op_fill, (replace(fill), changes), rec, ev)
        if early is not None:
            self.on_commission(early)
        return True

    def on_commission(self, c: UpstreamCommission) -> None:
        fill = self.store.fills.get(c.exec_id)
        if fill is None:
            self._early_commissions[c.exec_id] = c
            return
        if fill.commission is not None and math.isclose(fill.commission, c.commission):
            return  # a repeat (IB re-sends reports with reqExecutions)
        rec = self.store.by_id.get(fill.order_id)
        if rec is None:
            return
        rec.commission += c.commission - (fill.commission or 0.0)
        fill.commission = c.commission
        fill.commission_currency = c.currency
        fill.realized_pnl = c.realized_pnl
        rec.updated_ns = self.store.now()
        ev = self.store.event(rec, "commission", fill)
        changes = snapshot(rec, ("commission", "updated_ns"))
        self.store.persist(op_commission, (c, rec.order_id, changes), rec, ev)

    def on_order_error(self, order_id: int, code: int, message: str, warning: bool) -> bool:
        """An IB error whose reqId is one of our order ids. True if it ended the order
        (published as a "rejected" event); False if the hub should route it as an
        ordinary error to the owner (``owner_lease``)."""
        rec = self.store.by_id.get(order_id)
        if rec is None or rec.owner == EXTERNAL:
            return False
        text = f"IB {code}: {message}"
        self.store.persist(
            op_note, (order_id, "ib_error", {"code": code, "message": message}), rec, None
        )
        if warning or rec.status in TERMINAL:
            return False
        before = self.store.modifying.pop(order_id, None)
        if before is not None and rec.status not in ("PendingSubmit", "ApiPending"):
            # IB refused a modification: the order keeps working as it was.
            for name, value in before.items():
                setattr(rec, name, value)
            rec.message = text
            changes = snapshot(rec, [*before, "message"])
            ev = self.store.event(rec, "modify_rejected")
            self.store.persist(op_update, (order_id, "modify_rejected", changes), rec, ev)
            return True
        # IB refuses an order with a non-warning error; once IB has accepted the order,
        # an error (e.g. a refused modify or cancel) leaves the order working.
        if code != 201 and rec.status not in ("PendingSubmit", "ApiPending"):
            return False
        return self.apply_status(rec, "Cancelled", None, None, None, text, "rejected")

    # ------------------------------------------------------------------ after a restart

    def reconcile(
        self,
        open_orders: Sequence[UpstreamOrder],
        executions: Sequence[UpstreamExecution],
        commissions: Sequence[UpstreamCommission] = (),
        completed: Sequence[UpstreamOrder] | None = None,
        statuses: Sequence[UpstreamStatus] = (),
        in_flight: Collection[int] = (),
    ) -> ReconcileReport:
        """Bring the book in line with the Gateway after a (re)connect. Never sends orders.

        ``completed`` (reqCompletedOrders) gives the full picture: with it, a working
        order of the journal that the Gateway does not know at all is marked rejected.
        Without it only orders that were never sent are, since a sent order may have
        been cancelled without the hub seeing it. ``in_flight``: order ids queued in the
        hub's pacer (not sent yet, about to be): never judged, whatever the Gateway says.
        """
        report = ReconcileReport()
        known_before = set(self.store.by_id)
        seen: set[int] = set()
        for o in [*open_orders, *(completed or ())]:
            rec = self.on_open_order(o)
            if rec is not None:
                seen.add(rec.order_id)
        for s in statuses:
            self.on_order_status(s)
        for e in executions:
            if self.on_execution(e):
                report.fills_published += 1
            rec = self._lookup(e.order_id, e.client_id, e.perm_id, e.order_ref)
            if rec is not None:
                seen.add(rec.order_id)
        for c in commissions:
            self.on_commission(c)
        report.adopted = len(set(self.store.by_id) - known_before)
        for rec in sorted(self.store.working, key=lambda r: r.order_id):
            if rec.order_id in seen or rec.owner == EXTERNAL or rec.order_id in in_flight:
                continue
            if completed is None and rec.sent:
                log.warning(
                    "order %d was sent but the Gateway reports nothing about it", rec.order_id
                )
                continue
            why = (
                "the hub stopped before this order reached the Gateway; it was not sent "
                "and will not be re-sent (place it again with a new client_order_id)"
                if not rec.sent
                else "the Gateway does not know this order after the hub restarted"
            )
            self.apply_status(rec, "Inactive", None, None, None, why, "rejected")
            report.lost.append(rec.order_id)
        report.updated = len(seen)
        return report
