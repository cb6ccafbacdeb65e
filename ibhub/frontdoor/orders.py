"""Orders through the front door: the hub's order path, the script's own order ids.

``placeOrder`` is parsed with the simulator's sv 176 field walk and becomes a
:class:`~ibhub.protocol.PlaceOrder` handed to the hub's :class:`OrderManager` — the
same validation, risk limits, live-account guard, journal and pacing as a ZeroMQ
script's order. The owner is ``tws-client-<clientId>``: like a Gateway, orders
belong to the client id, so a script that reconnects with its id finds its
working orders (under the order ids it gave them) and can cancel them. A second
``placeOrder`` with a known id is a modification; ``cancelOrder`` cancels.

What happens next arrives as :class:`OrderEvent` s on ``order.tws:<connection>``
and is re-encoded with the script's order id and client id (openOrder,
orderStatus, execDetails with reqId -1, commissionReport after its execDetails).
A refusal by the hub or by IB is an error on the order id, which ends the trade
in the client ("Order rejected - reason: ...", 201).

Brackets (ib_insync's ``bracketOrder``: a parent and a take-profit LMT sent with
``transmit=False``, then a stop-loss STP that transmits) are held here until the
transmitting child arrives and then placed as one hub bracket (``take_profit`` /
``stop_loss``), so the journal and risk checks see the whole family; each leg
keeps the script's own order id. Other held families are refused with an error
on each id. whatIf orders go to the hub's what-if service (the same checks as an
order; IB's margin estimate comes back in one openOrder; nothing is placed).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from ibhub.frontdoor.contracts import checked, inst_for, spec_from_query
from ibhub.frontdoor.order_fields import (
    fixed_changes,
    refusal_for,
    type_fields,
    unhonoured,
)
from ibhub.frontdoor.requests import UNSUPPORTED, unsupported_text
from ibhub.frontdoor.session import DownstreamSession, Handler
from ibhub.orders import order_types
from ibhub.orders.journal import FillRecord, OrderRecord
from ibhub.orders.manager import Caller
from ibhub.orders.port import decode_algo_params
from ibhub.orders.store import TERMINAL
from ibhub.protocol import (
    CancelAllOrders,
    CancelOrder,
    CancelRequested,
    ModifyOrder,
    OrderAccepted,
    OrderEvent,
    OrderRejected,
    PlaceOrder,
    WhatIfOrder,
)
from ibhub.sim import broker_messages as msgs
from ibhub.sim.orders import OrderRequest, SimExecution, SimOrder, parse_place_order
from ibhub.tws.contracts import parse_c12

if TYPE_CHECKING:
    from ibhub.frontdoor.server import FrontDoor

log = logging.getLogger(__name__)

REJECTED: Final = 201  # "Order rejected - reason:"; ends the trade in both libraries
CANT_CANCEL: Final = 10148
NOT_FOUND: Final = 135  # "Can't find order with id ="
CANCELLED: Final = 202  # "Order Canceled - reason:" after a cancel the script asked for
ORDER_MESSAGE: Final = 399  # a warning in both libraries: the order keeps working


@dataclass
class _Held:
    """An order sent with transmit=False, waiting for its family's transmitting child."""

    req: OrderRequest
    fields: list[str]
    children: list[OrderRequest] = field(default_factory=list)


def handlers(relay: OrderRelay) -> dict[int, Handler]:
    return {
        3: relay.place_order,
        4: relay.cancel_order,
        58: relay.global_cancel,
        5: relay.req_open_orders,
        16: relay.req_all_open_orders,
        99: relay.req_completed_orders,
        7: relay.req_executions,
    }


class OrderRelay:
    def __init__(self, door: FrontDoor) -> None:
        self._door = door
        self._held: dict[tuple[int, int], _Held] = {}  # (connection, parent id) -> family
        # hub order ids a script asked to cancel: their Cancelled comes with IB's 202
        self._cancelling: set[int] = set()

    # ------------------------------------------------------------------ plumbing

    def _book(self) -> Any:
        service = self._door.order_service()
        return None if service is None else service.book

    def _caller(self, s: DownstreamSession) -> Caller:
        # A TWS client is a loopback client: the hub's local_role, never more (the TWS
        # protocol has no way to prove operator; docs/security.md).
        settings = getattr(self._door.hub, "settings", None)
        return Caller(s.lease, s.owner, getattr(settings, "local_role", "trader"))

    def session_started(self, s: DownstreamSession) -> None:
        """Before nextValidId: adopt this client id's working orders the front door has no
        ids for (placed before the hub restarted; the journal kept them), then route the
        owner's events (held ones first) to this connection."""
        book = self._book()
        if book is None:
            return
        self._adopt(s, book)
        book.bind_owner(s.owner, s.lease, release=True)

    def _adopt(self, s: DownstreamSession, book: Any) -> None:
        cbook = s.book
        assert cbook is not None
        owner_of = self._door.books.owner_of
        lost = [r for r in sorted(book.store.working, key=lambda r: r.order_id)
                if r.owner == s.owner and r.order_id not in owner_of]
        fresh = []
        for rec in lost:
            # client order id "<script's order id>.<run tag>" (bracket legs add .tp/.sl)
            parts = (rec.client_order_id or "").split(".")
            down = int(parts[0]) if len(parts) == 2 and parts[0].isdigit() else None
            if down is None or down in cbook.to_hub:
                fresh.append(rec)
            else:
                self._door.books.bind(cbook, down, rec.order_id)
        for rec in fresh:  # ids the script never used: above everything it did use
            self._door.books.bind(cbook, cbook.next_id, rec.order_id)
        if lost:
            log.info("tws client %d: %d working order(s) from before the hub restarted",
                     s.client_id, len(lost))

    def _adopt_corrected(self, owner: str, order_id: int, book: Any) -> tuple[int, int] | None:
        """An order reconciliation found working that the connected script has no id for
        (the journal said it had ended when the script started): give it the script's id,
        as for working orders at session start; openOrder then tells the script."""
        for s in list(self._door.clients.values()):
            if s.owner == owner and s.book is not None:
                self._adopt(s, book)
                return self._door.books.owner_of.get(order_id)
        return None

    def session_gone(self, s: DownstreamSession) -> None:
        for key in [k for k in self._held if k[0] == s.number]:
            del self._held[key]  # never transmitted: nothing reached the hub or IB
        book = self._book()
        if book is not None and s.started:
            book.lease_gone(s.lease)

    # ------------------------------------------------------------------ requests

    async def place_order(self, s: DownstreamSession, f: list[str]) -> None:
        req = parse_place_order(f)
        oid = req.order_id
        cbook = s.book
        assert cbook is not None
        cbook.saw_id(oid)
        book = self._book()
        if book is None:
            s.send_error(oid, REJECTED, "Order rejected - reason: trading is not enabled on "
                                        "this hub (no order service attached)")
            return
        if req.what_if:
            await self._what_if(s, req, f)
            return
        bad = unhonoured(req)
        existing = await cbook.hub_id(oid)
        if bad:
            log.info("tws client %d order %d refused: unhonoured attribute(s) %s",
                     s.client_id, oid, ", ".join(bad))
            if existing is None:
                s.send_error(oid, *refusal_for(bad))
            else:  # a refused modification: a warning, the order keeps working (not an end)
                s.send_error(oid, ORDER_MESSAGE, "Order message: modification refused: "
                                                 + refusal_for(bad)[1])
            return
        if existing is not None:
            await self._modify(s, book, oid, existing, req)
            return
        family = self._held.get((s.number, req.parent_id)) if req.parent_id else None
        if not req.transmit:
            if family is not None:
                family.children.append(req)
            elif not req.parent_id:
                self._held[(s.number, oid)] = _Held(req, f)
            else:
                s.send_error(oid, UNSUPPORTED, unsupported_text(
                    3, "a held (transmit=False) child of a transmitted parent"))
            return
        if family is not None:
            del self._held[(s.number, req.parent_id)]
            family.children.append(req)
            await self._place_bracket(s, book, family)
            return
        parent = 0
        if req.parent_id:
            parent = await cbook.hub_id(req.parent_id) or 0
            if not parent:
                s.send_error(oid, REJECTED, f"Order rejected - reason: parent order "
                                            f"{req.parent_id} is not known")
                return
        await self._submit(s, book, self._order(s, req, f, parent_order_id=parent), [oid])

    async def _what_if(self, s: DownstreamSession, req: OrderRequest, f: list[str]) -> None:
        """IB's whatIf through the hub's what-if service: one openOrder with whatIf set
        and the margins (what ends the client's request), or an error on the id. Nothing
        is placed and the id is not bound to any order."""
        oid = req.order_id
        service = self._door.order_service()
        bad = unhonoured(req)
        if bad:
            s.send_error(oid, *refusal_for(bad))
            return
        if req.parent_id or not req.transmit:
            s.send_error(oid, UNSUPPORTED, unsupported_text(
                3, "a what-if order that is part of a bracket (ask per order)"))
            return
        order = self._order(s, req, f)
        ask = WhatIfOrder(**{n: getattr(order, n) for n in order.__struct_fields__})
        reply = await service.what_if.check(self._caller(s), ask)
        if isinstance(reply, OrderRejected):
            s.send_error(oid, REJECTED, f"Order rejected - reason: {reply.message}")
            return
        margins = (reply.init_margin_before, reply.maint_margin_before,
                   reply.equity_with_loan_before, reply.init_margin_change,
                   reply.maint_margin_change, reply.equity_with_loan_change,
                   reply.init_margin_after, reply.maint_margin_after,
                   reply.equity_with_loan_after, reply.commission)  # fmt: skip
        if any(m is None for m in margins):  # a client would wait for ever on blanks
            s.send_error(oid, REJECTED, "Order rejected - reason: the Gateway's what-if "
                                        "answer has no margin figures")
            return
        q = parse_c12(f, 2)
        inst = inst_for(self._door.contracts, q.con_id, q.symbol, q.sec_type, q.currency,
                        q.exchange)
        fields = type_fields(req)
        echo = SimOrder(
            order_id=oid, client_id=s.client_id, perm_id=0, con_id=q.con_id,
            symbol=q.symbol, action=req.action, total_qty=req.total_qty,
            order_type=req.order_type, lmt_price=fields["limit_price"],
            aux_price=req.aux_price, tif=req.tif or "DAY", status=reply.status or "PreSubmitted",
            order_ref=req.order_ref, account=req.account or self._door.account, request=req,
            trail_stop=req.trail_stop_price, trailing_percent=req.trailing_percent,
            algo_strategy=req.algo_strategy, algo_params=req.algo_params,
        )  # fmt: skip
        s.send_fields(msgs.open_order(echo, inst, q.exchange,
                                      [float(m) for m in margins if m is not None]))

    def _order(self, s: DownstreamSession, req: OrderRequest, f: list[str],
               **extra: Any) -> PlaceOrder:
        return checked(PlaceOrder(
            id=0, lease=s.lease, client_order_id=f"{req.order_id}.{self._door.run_tag}",
            contract=spec_from_query(parse_c12(f, 2)), action=req.action,
            quantity=req.total_qty, order_type=req.order_type, **type_fields(req),
            tif=req.tif or "DAY", outside_rth=req.outside_rth,
            account=req.account, oca_group=req.oca_group, oca_type=req.oca_type,
            order_ref=req.order_ref, algo_strategy=req.algo_strategy,
            algo_params=dict(req.algo_params), algo_id=req.algo_id, **extra,
        ))  # fmt: skip

    async def _submit(self, s: DownstreamSession, book: Any, order: PlaceOrder,
                      down_ids: list[int]) -> None:
        """Place ``order`` (for a bracket ``down_ids`` are the parent, take-profit and
        stop-loss ids) and map the hub's ids to the script's; a refusal is an error on
        each id."""
        cbook = s.book
        assert cbook is not None
        loop = asyncio.get_running_loop()
        futs: dict[int, asyncio.Future[int | None]] = {d: loop.create_future() for d in down_ids}
        cbook.placing.update(futs)
        bound: dict[int, int] = {}
        try:
            reply = await book.place(self._caller(s), order)
            if isinstance(reply, OrderAccepted):
                hub_ids = [reply.order_id, *reply.child_order_ids]
                for down, hub_id in zip(down_ids, hub_ids, strict=False):
                    self._door.books.bind(cbook, down, hub_id)
                    bound[down] = hub_id
        finally:
            for down, fut in futs.items():
                cbook.placing.pop(down, None)
                fut.set_result(bound.get(down))
        if isinstance(reply, OrderRejected):
            log.info("tws client %d order %s refused: %s", s.client_id, down_ids, reply.message)
            for down in down_ids:
                s.send_error(down, REJECTED, f"Order rejected - reason: {reply.message}")

    async def _place_bracket(self, s: DownstreamSession, book: Any, family: _Held) -> None:
        parent = family.req
        exit_action = "SELL" if parent.action == "BUY" else "BUY"
        tp = [c for c in family.children if c.order_type == "LMT"]
        sl = [c for c in family.children if c.order_type in ("STP", "STP LMT")]
        ids = [parent.order_id, *(c.order_id for c in family.children)]
        if (len(tp) > 1 or len(sl) > 1 or len(tp) + len(sl) != len(family.children)
                or any(c.action != exit_action or abs(c.total_qty - parent.total_qty) > 1e-9
                       or c.oca_group or c.algo_strategy or c.order_ref != parent.order_ref
                       for c in family.children)):
            for down in ids:
                s.send_error(down, UNSUPPORTED, unsupported_text(
                    3, "this held order family; the hub places brackets of a parent with a "
                       "take-profit LMT and/or a stop-loss STP or STP LMT of the same size, "
                       "opposite side "
                       "(the legs carry the parent's orderRef and no OCA group or algo)"))
            return
        order = self._order(s, parent, family.fields,
                            take_profit=tp[0].lmt_price if tp else None,
                            stop_loss=sl[0].aux_price if sl else None,
                            stop_loss_limit=(sl[0].lmt_price if sl and sl[0].order_type ==
                                             "STP LMT" else None))
        down_ids = [parent.order_id, *(c.order_id for c in tp), *(c.order_id for c in sl)]
        await self._submit(s, book, order, down_ids)

    async def _modify(self, s: DownstreamSession, book: Any, oid: int, hub_id: int,
                      req: OrderRequest) -> None:
        rec: OrderRecord | None = book.store.get(hub_id)
        prices = type_fields(req)
        limit, stop = prices["limit_price"], prices["stop_price"]
        if rec is not None and req.order_type != rec.order_type:
            s.send_error(oid, ORDER_MESSAGE, f"Order message: cannot change order {oid} from "
                                             f"{rec.order_type} to {req.order_type} (ibhub)")
            return
        changed = [] if rec is None else fixed_changes(rec, req)
        if changed:
            s.send_error(oid, ORDER_MESSAGE, f"Order message: modification refused: the hub "
                                             f"cannot change {', '.join(changed)} of a working "
                                             f"order; cancel it and place a new one (ibhub)")
            return
        reply = await book.modify(self._caller(s), ModifyOrder(
            id=0, lease=s.lease, order_id=hub_id, quantity=req.total_qty, limit_price=limit,
            stop_price=stop, tif=req.tif or None, outside_rth=req.outside_rth))
        if isinstance(reply, OrderRejected):
            s.send_error(oid, ORDER_MESSAGE,
                         f"Order message: modification refused: {reply.message}")

    async def cancel_order(self, s: DownstreamSession, f: list[str]) -> None:
        oid = int(f[2])
        cbook = s.book
        assert cbook is not None
        book = self._book()
        family = self._held.pop((s.number, oid), None)
        if family is not None:  # never transmitted: cancelled here, IB never saw it
            for req in (family.req, *family.children):
                s.send(3, req.order_id, "Cancelled", 0.0, req.total_qty, 0.0, 0, oid if
                       req is not family.req else 0, 0.0, s.client_id, "", 0.0)
            return
        hub_id = await cbook.hub_id(oid)
        if book is None or hub_id is None:
            s.send_error(oid, NOT_FOUND, f"Can't find order with id ={oid}")
            return
        self._cancelling.add(hub_id)
        reply = await book.cancel(self._caller(s), CancelOrder(id=0, lease=s.lease,
                                                                order_id=hub_id))
        if not isinstance(reply, OrderRejected):
            return
        self._cancelling.discard(hub_id)
        rec: OrderRecord | None = book.store.get(hub_id)
        if rec is None or rec.status in TERMINAL:
            # the order has ended: IB's own answer, and it ends nothing that still works
            s.send_error(oid, CANT_CANCEL, f"OrderId {oid} that needs to be cancelled cannot "
                                           f"be cancelled: {reply.message}")
            return
        # The hub refused the cancel (no Gateway session, role, ...) and the order works
        # on: a warning, then the status the hub holds. IB's 10148 here would make both
        # client libraries end the trade as Cancelled while it works at the Gateway.
        s.send_error(oid, ORDER_MESSAGE, f"Order message: cancel refused: {reply.message}")
        s.send_fields(msgs.order_status(self._sim_order(s, rec, oid, rec.status)))

    async def global_cancel(self, s: DownstreamSession, f: list[str]) -> None:
        """reqGlobalCancel cancels this client id's working orders only: other scripts'
        orders are theirs (the hub's operator can cancel everything)."""
        book = self._book()
        if book is not None:
            mine = [hub_id for hub_id, _ in self._door.books.owner_of.items()
                    if self._door.books.owner_of[hub_id][0] == s.client_id]
            self._cancelling.update(mine)
            reply = await book.cancel_all(self._caller(s), CancelAllOrders(id=0, lease=s.lease))
            if isinstance(reply, CancelRequested):
                self._cancelling.difference_update(set(mine) - set(reply.order_ids))

    def req_open_orders(self, s: DownstreamSession, f: list[str]) -> None:
        for rec, cid, down in self._mine(s, working=True):
            self._send_open(s, rec, down, rec.status, cid)
            s.send_fields(msgs.order_status(self._sim_order(s, rec, down, rec.status,
                                                            client_id=cid)))
        s.send_fields(msgs.open_order_end())

    def req_all_open_orders(self, s: DownstreamSession, f: list[str]) -> None:
        """The master client sees every working order (docs/security.md), others theirs."""
        for rec, cid, down in self._visible(s, working=True):
            self._send_open(s, rec, down, rec.status, cid)
            s.send_fields(msgs.order_status(self._sim_order(s, rec, down, rec.status,
                                                            client_id=cid)))
        s.send_fields(msgs.open_order_end())

    def req_completed_orders(self, s: DownstreamSession, f: list[str]) -> None:
        for rec, cid, down in self._visible(s, working=False):
            order = self._sim_order(s, rec, down, rec.status, client_id=cid)
            order.completed_time = _ib_time(rec.updated_ns)
            order.completed_status = rec.message or rec.status
            s.send_fields(msgs.completed_order(order, self._inst(rec), rec.exchange))
        s.send_fields(msgs.completed_orders_end())

    def req_executions(self, s: DownstreamSession, f: list[str]) -> None:
        rid = int(f[2])
        book = self._book()
        if book is not None:
            for rec, cid, down in self._visible(s, working=None):
                for fill in book.store.fills_by_order.get(rec.order_id, ()):
                    ex = self._execution(s, rec, down, fill, client_id=cid)
                    s.send_fields(msgs.exec_details(rid, ex, self._inst(rec), rec.exchange))
                    if fill.commission is not None:
                        s.send_fields(msgs.commission_report(ex))
        s.send_fields(msgs.exec_details_end(rid))

    def is_master(self, s: DownstreamSession) -> bool:
        master = getattr(getattr(self._door.hub, "settings", None), "tws_master_client_id",
                         None)
        return master is not None and s.client_id == master

    def _visible(self, s: DownstreamSession, working: bool | None
                 ) -> list[tuple[OrderRecord, int, int]]:
        """The orders this session may list: the whole book for the master client id,
        else its own. Each with the (client id, order id) a Gateway would show: a front-
        door script's own ids, the hub's client id and order id for a ZeroMQ script's
        order, and for an external order its client id unknown here (0) and id 0."""
        if not self.is_master(s):
            return self._mine(s, working)
        book = self._book()
        if book is None:
            return []
        hub_cid = book.upstream_client_id
        owner_of = self._door.books.owner_of
        out = []
        for rec in sorted(book.store.by_id.values(), key=lambda r: r.order_id):
            if working is not None and (rec.status not in TERMINAL) != working:
                continue
            route = owner_of.get(rec.order_id)
            if route is not None:
                out.append((rec, *route))
            elif rec.owner == "external" or rec.order_id <= 0:
                out.append((rec, 0, 0))
            else:
                out.append((rec, hub_cid, rec.order_id))
        return out

    def _mine(self, s: DownstreamSession, working: bool | None
              ) -> list[tuple[OrderRecord, int, int]]:
        book = self._book()
        cbook = s.book
        if book is None or cbook is None:
            return []
        out = []
        for hub_id, down in sorted(cbook.to_down.items(), key=lambda kv: kv[1]):
            rec = book.store.get(hub_id)
            if rec is None or (working is not None and (rec.status not in TERMINAL) != working):
                continue
            out.append((rec, s.client_id, down))
        return out

    # ------------------------------------------------------------------ hub events

    def on_event(self, ev: Any) -> None:
        if not isinstance(ev, OrderEvent):
            return
        route = self._door.books.owner_of.get(ev.order_id)
        book = self._book()
        if book is None:
            return
        if route is None and ev.kind == "corrected" and ev.status not in TERMINAL:
            route = self._adopt_corrected(ev.owner, ev.order_id, book)
        if route is None:
            return
        client_id, down = route
        s = self._door.clients.get(client_id)
        rec = book.store.get(ev.order_id)
        if s is None or rec is None:
            self._cancelling.discard(ev.order_id)
            return  # the script is away: its orders stay; reqOpenOrders shows them later
        kind = ev.kind
        if kind != "cancelled" and ev.status in TERMINAL:
            self._cancelling.discard(ev.order_id)  # ended otherwise (filled first, ...)
        if kind in ("submitted", "modified"):
            self._send_open(s, rec, down, ev.status)
            s.send_fields(msgs.order_status(self._sim_order(s, rec, down, ev.status, ev)))
        elif kind in ("partially_filled", "filled"):
            fill = book.store.fills.get(ev.exec_id)
            if fill is not None:
                ex = self._execution(s, rec, down, fill)
                s.send_fields(msgs.exec_details(-1, ex, self._inst(rec), rec.exchange))
            s.send_fields(msgs.order_status(self._sim_order(s, rec, down, ev.status, ev)))
        elif kind == "commission":
            fill = book.store.fills.get(ev.exec_id)
            if fill is not None and fill.commission is not None:
                ex = self._execution(s, rec, down, fill)
                s.send_fields(msgs.commission_report(ex))
        elif kind == "cancelled":
            s.send_fields(msgs.order_status(self._sim_order(s, rec, down, ev.status, ev)))
            if ev.order_id in self._cancelling:  # as a Gateway: after the status, a warning
                self._cancelling.discard(ev.order_id)
                s.send_error(down, CANCELLED, "Order Canceled - reason:")
        elif kind == "rejected":
            s.send_error(down, REJECTED, f"Order rejected - reason: {ev.message}")
            s.send_fields(msgs.order_status(self._sim_order(s, rec, down, ev.status, ev)))
        elif kind == "modify_rejected":
            s.send_error(down, ORDER_MESSAGE, f"Order message: {ev.message}")
            self._send_open(s, rec, down, ev.status)
        elif kind == "cancel_rejected":
            # A warning, not IB's 10147/10148 error: both client libraries end a trade on
            # an order error, and the order may well work on. The status that follows is
            # the one the hub holds (the script's library set PendingCancel itself).
            s.send_error(down, ORDER_MESSAGE, f"Order message: cancel refused: {ev.message}")
            s.send_fields(msgs.order_status(self._sim_order(s, rec, down, ev.status, ev)))
        elif kind == "corrected":
            # reconciliation with the Gateway: the true state, even after an end
            if ev.status not in TERMINAL:
                self._send_open(s, rec, down, ev.status)
            else:
                s.send_error(down, ORDER_MESSAGE, f"Order message: {ev.message}")
            s.send_fields(msgs.order_status(self._sim_order(s, rec, down, ev.status, ev)))

    # ------------------------------------------------------------------ builders

    def _inst(self, rec: OrderRecord) -> Any:
        return inst_for(self._door.contracts, rec.con_id, rec.symbol, rec.sec_type,
                        rec.currency, rec.exchange)

    def _sim_order(self, s: DownstreamSession, rec: OrderRecord, down: int, status: str,
                   ev: OrderEvent | None = None, client_id: int | None = None) -> SimOrder:
        cbook = s.book
        own = client_id is None or client_id == s.client_id
        if own:
            parent = cbook.to_down.get(rec.parent_id, 0) if cbook is not None else 0
        else:  # another client's order (master view): its parent in that client's ids
            route = self._door.books.owner_of.get(rec.parent_id)
            parent = route[1] if route is not None else rec.parent_id
        params = order_types.decode_params(rec.order_params)
        return SimOrder(
            order_id=down, client_id=s.client_id if client_id is None else client_id,
            perm_id=rec.perm_id, con_id=rec.con_id,
            symbol=rec.symbol, action=rec.action, total_qty=rec.quantity,
            order_type=rec.order_type, lmt_price=rec.limit_price,
            aux_price=order_types.ib_aux_price(rec.order_type, rec.stop_price, params),
            trail_stop=params.get("trail_stop_price"),
            trailing_percent=params.get("trailing_percent"),
            tif=rec.tif, status=status,
            filled=ev.filled if ev is not None else rec.filled,
            avg_fill_price=ev.avg_fill_price if ev is not None else rec.avg_fill_price,
            account=rec.account or self._door.account, parent_id=parent,
            outside_rth=rec.outside_rth,
            last_fill_price=ev.last_fill_price if ev is not None else 0.0,
            order_ref=rec.order_ref, oca_group=rec.oca_group, oca_type=rec.oca_type,
            algo_strategy=rec.algo_strategy,
            algo_params=tuple(decode_algo_params(rec.algo_params).items()),
        )  # fmt: skip

    def _send_open(self, s: DownstreamSession, rec: OrderRecord, down: int, status: str,
                   client_id: int | None = None) -> None:
        order = self._sim_order(s, rec, down, status, client_id=client_id)
        s.send_fields(msgs.open_order(order, self._inst(rec), rec.exchange))

    def _execution(self, s: DownstreamSession, rec: OrderRecord, down: int,
                   fill: FillRecord, client_id: int | None = None) -> SimExecution:
        return SimExecution(
            exec_id=fill.exec_id, order_id=down,
            client_id=s.client_id if client_id is None else client_id, perm_id=rec.perm_id,
            con_id=fill.con_id, account=fill.account or rec.account or self._door.account,
            side=fill.side, shares=fill.shares, price=fill.price,
            time=dt.datetime.fromtimestamp(fill.time_ns / 1e9, dt.UTC),
            cum_qty=fill.cum_qty, avg_price=fill.avg_price, order_ref=rec.order_ref,
            commission=fill.commission or 0.0, realized_pnl=fill.realized_pnl,
            exchange=fill.exchange,
        )  # fmt: skip


def _ib_time(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y%m%d %H:%M:%S") + " UTC"
