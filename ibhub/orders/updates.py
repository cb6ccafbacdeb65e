"""What the Gateway reports about orders, applied to the order manager's state.

openOrder / orderStatus / execDetails / commissionReport / order errors arrive here
as plain dataclasses (:mod:`ibhub.orders.port`) and become journaled state changes and
:class:`~ibhub.protocol.OrderEvent` s on the owner's topic:

* status changes -> "submitted" / "cancelled" / "rejected"; a late non-terminal echo
  after an order ended changes nothing;
* each execution (deduplicated by ``exec_id``) -> "partially_filled" / "filled" with the
  fill; each commission report -> "commission";
* an order the book does not know is adopted: as its owner's if its ``orderRef`` says
  the hub placed it (the journal was lost), else as "external";
* an IB error on a *cancel* (10147 not found, 10148 / 161 not cancellable, ...) never
  ends an order: the owner gets a "cancel_rejected" event with the status unchanged,
  and the Gateway is asked what it really holds (:attr:`OrderUpdates.on_doubt`).

:meth:`OrderUpdates.reconcile` runs after every (re)connect, and whenever the book
doubts its own state, with the Gateway's open orders, executions and completed orders.
It never sends anything. The Gateway is the truth: what it reports wins over the
journal. Catching up (a working order that filled or was cancelled while the hub was
away) is applied as ordinary events; a *correction* (the journal said an order had
ended, the Gateway says otherwise; or the journal says working and the Gateway knows
nothing of it) is also journaled as a ``reconcile_correction`` note, published to the
owner (a "corrected" event, or "rejected" for an order the Gateway does not know) and
reported through :attr:`OrderUpdates.on_correction` (the hub raises an alert).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

from ibhub.orders.journal import FillRecord, OrderRecord
from ibhub.orders.port import (
    OrderUpstream,
    UpstreamCommission,
    UpstreamExecution,
    UpstreamOrder,
    UpstreamStatus,
    encode_algo_params,
    parse_order_ref,
    script_oca_group,
)
from ibhub.orders.store import (
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


# IB's answers to a cancel that say nothing about whether the order works: the order
# was not found (10147: e.g. the cancel reached the Gateway before the order did), is not
# cancellable now (10148, 161: filled, cancelled or already pending cancel), or cannot
# be cancelled (136). ib_insync marks the trade Cancelled on each of them; the hub asks
# the Gateway instead.
CANCEL_ERRORS: Final = frozenset({136, 161, 10147, 10148})
# Ended statuses that say the same thing for a correction: ended without (more) fills.
# IB lists an order it rejected as Inactive or Cancelled; a journal saying the other is
# not wrong in any way that matters, and an alert for it would be noise.
_SAME: Final[dict[str, str]] = {"ApiCancelled": "Cancelled", "Inactive": "Cancelled"}
UNKNOWN_AT_GATEWAY: Final = "unknown"


def _same_status(a: str, b: str) -> bool:
    return _SAME.get(a, a) == _SAME.get(b, b)


@dataclass(frozen=True)
class Correction:
    """The journal disagreed with the Gateway about one order, and was corrected."""

    order_id: int
    owner: str
    client_order_id: str
    journal_status: str
    gateway_status: str  # UNKNOWN_AT_GATEWAY: neither open nor completed at the Gateway
    message: str

    def describe(self) -> str:
        said = (
            "knows nothing of it"
            if self.gateway_status == UNKNOWN_AT_GATEWAY
            else (f"says {self.gateway_status}")
        )
        return (
            f"order {self.order_id} of {self.owner} ({self.client_order_id or '-'}): "
            f"the journal said {self.journal_status}, the Gateway {said}; {self.message}"
        )


@dataclass
class ReconcileReport:
    updated: int = 0
    fills_published: int = 0
    adopted: int = 0
    lost: list[int] = field(default_factory=list)
    corrected: list[Correction] = field(default_factory=list)


class OrderUpdates:
    def __init__(self, store: OrderStore, upstream: OrderUpstream) -> None:
        self.store = store
        self._up = upstream
        self._early_commissions: dict[str, UpstreamCommission] = {}
        # Called when the book has reason to doubt its state of an order (an error on a
        # cancel; the Gateway reporting a working order the book has as ended): the
        # upstream side answers by asking the Gateway (a reconcile).
        self.on_doubt: Callable[[int, str], None] | None = None
        # Called once per correction (the hub raises an alert).
        self.on_correction: Callable[[Correction], None] | None = None
        self._corrections: list[Correction] | None = None  # collecting during reconcile

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
        if not status:
            return False
        if rec.status in TERMINAL and status != rec.status:
            # A late echo after the end changes nothing here. But an order the book has
            # as cancelled or inactive that the Gateway calls working may be working
            # (the book may have ended it on its own word): ask the Gateway. Filled is
            # final (the executions prove it), so nothing there is doubted.
            if status not in TERMINAL and rec.status != "Filled":
                self._doubt(
                    rec.order_id,
                    f"the Gateway reports {status} for an order the journal has as {rec.status}",
                )
            return False
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
        ended_as = rec.status if rec.status in TERMINAL and rec.status != "Filled" else None
        if done and rec.status != "Filled":
            rec.status = "Filled"
        elif ended_as is not None:
            # a fill on an order the journal has as ended: it may still be working
            self._doubt(
                rec.order_id,
                f"the Gateway reports a fill for an order the journal has as {ended_as}",
            )
        rec.updated_ns = self.store.now()
        early = self._early_commissions.pop(e.exec_id, None)
        changes = snapshot(
            rec, ("status", "filled", "remaining", "avg_fill_price", "quantity", "updated_ns")
        )
        ev = self.store.event(rec, "filled" if done else "partially_filled", fill)
        self.store.persist(op_fill, (replace(fill), changes), rec, ev)
        if done and ended_as is not None:
            self._correct(
                rec,
                ended_as,
                "Filled",
                "Filled",
                f"the Gateway reports execution {e.exec_id} completing it",
            )
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
        if code in CANCEL_ERRORS:
            # Never ends the order: the Gateway may work it (a cancel that overtook its
            # order gets 10147 and the order arrives after it). The owner learns of the
            # refusal with the status unchanged; the Gateway is asked what is true.
            rec.message = text
            ev = self.store.event(rec, "cancel_rejected", message=text)
            changes = snapshot(rec, ("message",))
            self.store.persist(op_update, (order_id, "cancel_rejected", changes), rec, ev)
            self._doubt(order_id, f"IB answered a cancel with {code}")
            return False
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

    # ------------------------------------------------------------------ doubts and corrections

    def _doubt(self, order_id: int, why: str) -> None:
        if self._corrections is not None:
            return  # a reconcile is running: it is asking the Gateway already
        log.info("order %d: %s; asking the Gateway", order_id, why)
        if self.on_doubt is not None:
            self.on_doubt(order_id, why)

    def _correct(
        self,
        rec: OrderRecord,
        journal_status: str,
        gateway_status: str,
        new_status: str,
        why: str,
        kind: str = "corrected",
    ) -> Correction:
        """Journal, publish and report one correction of ``rec`` (already updated except
        for its status, which becomes ``new_status``)."""
        c = Correction(
            rec.order_id, rec.owner, rec.client_order_id or "", journal_status,
            gateway_status, why,
        )  # fmt: skip
        text = "reconciled with the Gateway: " + c.describe()
        rec.status = new_status
        rec.message = text
        rec.updated_ns = self.store.now()
        note = {"journal_status": journal_status, "gateway_status": gateway_status,
                "status": new_status, "message": why}  # fmt: skip
        self.store.persist(op_note, (rec.order_id, "reconcile_correction", note), rec, None)
        changes = snapshot(rec, ("status", "filled", "remaining", "avg_fill_price", "message",
                                 "updated_ns"))  # fmt: skip
        ev = self.store.event(rec, kind)
        self.store.persist(op_update, (rec.order_id, "corrected", changes), rec, ev)
        log.warning("order corrected: %s", c.describe())
        if self._corrections is not None:
            self._corrections.append(c)
        if self.on_correction is not None:
            try:
                self.on_correction(c)
            except Exception:
                log.exception("reporting the correction of order %d failed", rec.order_id)
        return c

    def _gateway_order(self, o: UpstreamOrder) -> OrderRecord | None:
        """An open or completed order the Gateway reports, applied; the Gateway wins over
        an ended journal state (a correction)."""
        rec = self._lookup(o.order_id, o.client_id, o.perm_id, o.order_ref)
        if rec is None or rec.status not in TERMINAL or not o.status:
            return self.on_open_order(o)
        if _same_status(rec.status, o.status) or rec.status == "Filled":
            # Filled is final: its executions are in the journal (a different word from
            # the Gateway is logged, never applied).
            if rec.status == "Filled" and not _same_status(rec.status, o.status):
                log.warning(
                    "order %d: the Gateway says %s, the journal's executions say "
                    "Filled; keeping Filled",
                    rec.order_id,
                    o.status,
                )
            return self.on_open_order(o)
        self._set_perm(rec, o.perm_id)
        self.store.modifying.pop(rec.order_id, None)
        if o.filled > rec.filled + EPS:
            rec.filled = o.filled
            rec.remaining = max(0.0, rec.quantity - o.filled)
            if o.avg_fill_price:
                rec.avg_fill_price = o.avg_fill_price
        working = o.status not in TERMINAL
        why = "it is working there" if working else f"it ended there as {o.status}"
        self._correct(rec, rec.status, o.status, o.status, why)
        return rec

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
        self._corrections = report.corrected
        try:
            self._reconcile(
                report, open_orders, executions, commissions, completed, statuses, in_flight
            )
        finally:
            self._corrections = None
        return report

    def _reconcile(
        self,
        report: ReconcileReport,
        open_orders: Sequence[UpstreamOrder],
        executions: Sequence[UpstreamExecution],
        commissions: Sequence[UpstreamCommission],
        completed: Sequence[UpstreamOrder] | None,
        statuses: Sequence[UpstreamStatus],
        in_flight: Collection[int],
    ) -> None:
        known_before = set(self.store.by_id)
        seen: set[int] = set()
        for o in [*open_orders, *(completed or ())]:
            rec = self._gateway_order(o)
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
            if (
                rec.order_id in seen
                or rec.owner == EXTERNAL
                or self._family_in_flight(rec, in_flight)
            ):
                continue
            if completed is None and rec.sent:
                log.warning(
                    "order %d was sent but the Gateway reports nothing about it", rec.order_id
                )
                continue
            why = (
                "this order was not sent to the Gateway (the hub stopped, or its Gateway "
                "session ended, before it went up); it will not be re-sent (place it "
                "again with a new client_order_id)"
                if not rec.sent
                else "the Gateway lists it neither as open nor as completed, and has no "
                "execution for it: it is not working and will not be re-sent (place it "
                "again with a new client_order_id)"
            )
            self._correct(rec, rec.status, UNKNOWN_AT_GATEWAY, "Inactive", why, "rejected")
            report.lost.append(rec.order_id)
        report.updated = len(seen)

    def _family_in_flight(self, rec: OrderRecord, in_flight: Collection[int]) -> bool:
        """``rec`` or a member of its bracket is still on its way to the Gateway (a
        bracket's parent is held there, unlisted, until its last child transmits)."""
        if rec.order_id in in_flight:
            return True
        root = rec.parent_id or rec.order_id
        family = [root, *self.store.children.get(root, ())]
        return any(member in in_flight for member in family)
