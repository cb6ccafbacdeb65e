"""The simulated Gateway's broker: orders, fills, executions, positions and account reports.

One `Broker` per `SimGateway`; it owns every order and account of the simulation and is the only
writer of that state. The session hands it the messages in `HANDLED` (already split into text
fields); replies go back through `session.send(*fields)` / `session.send_error(...)`.

Decisions (IB behaviour the clients depend on, tws-protocol.md §5.3):
* Orders belong to a client id, not to a socket: they keep working after the owner disconnects,
  and a reconnect with the same client id sees them in reqOpenOrders / reqExecutions. Order
  messages go only to the owner's current session (clientId and orderId echoed, §6.8).
* Order ids below the client's next valid id are refused with 103; ids may have gaps because
  request ids and order ids come from one counter in the clients.
* Fills are whole (no partial fills). Resting orders are checked on every step of the market
  walk of their instrument, which the broker keeps walking with `market.acquire`.
* Account reports (positions, portfolio, account values, account summary) are pushed to their
  subscribers after every fill, and after price moves at most every `feed.refresh_interval`.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from ibhub.sim import broker_messages as msg
from ibhub.sim.account_feed import AccountFeed
from ibhub.sim.ledger import AccountBook, margin_for
from ibhub.sim.orders import (
    AT_CLOSE,
    SUPPORTED_ORDER_TYPES,
    OrderParseError,
    OrderRequest,
    RestingBook,
    SimExecution,
    SimOrder,
    Status,
    check_order,
    close_fill_price,
    commission_for,
    fill_price,
    parse_place_order,
)
from ibhub.sim.pnl_feed import PnLFeed
from ibhub.tws.order_time import OrderTimeError, parse_order_time

log = logging.getLogger(__name__)

HANDLED: frozenset[int] = frozenset({3, 4, 5, 6, 7, 15, 16, 58, 61, 62, 63, 64, 76, 77, 99,
                                     92, 93, 94, 95})

EXTERNAL_CLIENT_ID = 0  # orders "typed by hand in TWS" belong to client 0, order id 0
FIRST_PERM_ID = 1_000_001
# permIds from the wall clock: PERM_IDS_PER_SECOND ids per second since PERM_EPOCH on top
# of FIRST_PERM_ID. A restarted simulator starts above every permId an earlier run
# handed out unless that run averaged more than this many orders per second over its
# whole life; the ids stay below 2**31 (Java int, as IB's) until about 2040.
PERM_EPOCH = 1_700_000_000  # 2023-11-14
PERM_IDS_PER_SECOND = 2


def clock_perm_id(now: float | None = None) -> int:
    """The first permId of a simulator started at ``now`` (default: the wall clock)."""
    t = time.time() if now is None else now
    return FIRST_PERM_ID + max(0, int(t) - PERM_EPOCH) * PERM_IDS_PER_SECOND
IMMEDIATE_TIFS = frozenset({"IOC", "FOK"})  # fill on arrival or be cancelled
TIFS = frozenset({"DAY", "GTC", "IOC", "FOK", "GTD"})  # OPG / DTC / GTX are not simulated
# where the request / order id sits in each message, for error replies to bad input
_REQ_ID_INDEX = {3: 1, 4: 2, 7: 2, 62: 2, 63: 2, 76: 2, 77: 2, 92: 1, 94: 1}


class SessionLike(Protocol):
    client_id: int

    def send(self, *fields: object) -> None: ...

    def send_error(self, req_id: int, code: int, message: str) -> None: ...


@dataclass
class _Entry:
    """An order plus what the broker needs to report it."""

    order: SimOrder
    inst: Any  # ibhub.sim.contracts.Instrument
    exchange: str  # the exchange the client routed to (echoed in openOrder)


class Broker:
    """Orders and accounts of one simulated Gateway (see the module docstring)."""

    HANDLED = HANDLED

    def __init__(self, gateway: Any) -> None:
        self._gw = gateway
        self.config = gateway.config
        self.accounts: dict[str, AccountBook] = {a: AccountBook(a) for a in self.config.accounts}
        self._entries: dict[int, _Entry] = {}  # perm_id -> entry, in placement order
        self._by_key: dict[tuple[int, int], int] = {}  # (client_id, order_id) -> perm_id
        self._next_ids: dict[int, int] = {}
        first = self.config.first_perm_id or clock_perm_id()
        self._perm_ids = itertools.count(first)
        self._exec_seq = itertools.count(1)
        # Unique per run too (the first permId): a journal de-duplicates fills by execId.
        self._exec_prefix = f"{(self.config.seed * 2654435761 ^ first) & 0xFFFFFFFF:08x}"
        self._executions: list[SimExecution] = []
        self._working: dict[int, RestingBook] = {}  # con_id -> orders working at the market
        self._kids: dict[int, list[int]] = {}  # parent perm_id -> child perm_ids (brackets)
        self._oca: dict[tuple[int, str], set[int]] = {}  # (client_id, ocaGroup) -> perm_ids
        self._expiring: dict[int, datetime] = {}  # perm_id -> goodTillDate of a GTD order
        self.feed = AccountFeed(self)
        self.pnl = PnLFeed(self)
        # Opt-in: LMT / STP LMT orders fill at most the size shown at the touch per quote, so
        # hub tests can see partial fills. MKT, STP and TRAIL orders always fill whole.
        self.partial_fills = False
        # Opt-in: the live fill reports named here ("execDetails", "commissionReport") wait
        # for release_reports(), so tests can deliver them after the order's final status
        # (a real Gateway may send a commission report seconds after its execution).
        self.hold_reports: set[str] = set()
        self._held_reports: list[tuple[SimOrder, list[object]]] = []
        # Opt-in fault: the next cancelOrder of an order id named here is answered with that
        # error code (10147 not found, 10148 / 161 not cancellable) and the order is left as
        # it is, as a real Gateway does when the cancel reached it before the order did.
        self.refuse_cancels: dict[int, int] = {}
        self._handlers: dict[int, Callable[[SessionLike, Sequence[str]], None]] = {
            3: self._place_order,
            4: self._cancel_order,
            5: self._req_open_orders,
            6: self.feed.req_account_updates,
            7: self._req_executions,
            15: self._req_auto_open_orders,
            16: self._req_all_open_orders,
            58: self._global_cancel,
            61: self.feed.req_positions,
            62: self.feed.req_account_summary,
            63: self.feed.cancel_account_summary,
            64: self.feed.cancel_positions,
            76: self.feed.req_account_updates_multi,
            77: self.feed.cancel_account_updates_multi,
            99: self._req_completed_orders,
            92: self.pnl.req_pnl,
            93: self.pnl.cancel,
            94: self.pnl.req_pnl_single,
            95: self.pnl.cancel,
        }
        gateway.market.add_listener(self._on_quote)

    # ---- contract with the session ------------------------------------------------------

    def next_order_id(self, client_id: int) -> int:
        """nextValidId for this client id: above every order id it has used (even offline)."""
        return self._next_ids.get(client_id, 1)

    def session_opened(self, session: SessionLike) -> None:
        log.debug("client %s connected", session.client_id)

    def session_closed(self, session: SessionLike) -> None:
        """Drop the session's subscriptions; its orders keep working (IB behaviour)."""
        self.feed.drop_session(session)
        self.pnl.drop_session(session)

    def handle(self, session: SessionLike, fields: Sequence[str]) -> None:
        """Dispatch one request whose id is in HANDLED; bad input gets an error, never a crash."""
        msg_id = _int_or(fields, 0, -1)
        handler = self._handlers.get(msg_id)
        if handler is None:
            session.send_error(-1, 320, f"Error reading request: message id {fields[0]!r} "
                                        "is not handled by the broker")
            return
        try:
            handler(session, fields)
        except (ValueError, IndexError) as exc:
            log.warning("client %s sent a bad message %s: %s", session.client_id, fields[:3], exc)
            req_id = _int_or(fields, _REQ_ID_INDEX[msg_id], -1) if msg_id in _REQ_ID_INDEX else -1
            session.send_error(req_id, 320, f"Error reading request: {exc}")

    # ---- public API for tests and the hub ----------------------------------------------

    def orders(self) -> list[SimOrder]:
        return [e.order for e in self._entries.values()]

    def positions(self, account: str | None = None) -> dict[int, tuple[float, float]]:
        book = self.accounts[account or self.config.accounts[0]]
        return {cid: (h.qty, h.avg_cost) for cid, h in book.holdings.items() if h.qty != 0}

    def executions(self) -> list[SimExecution]:
        return list(self._executions)

    def account_values(self, account: str | None = None) -> dict[str, float]:
        return self.accounts[account or self.config.accounts[0]].values(self.price_of)

    def place_external_order(self, symbol: str | int, action: str, quantity: float,
                             order_type: str = "MKT", lmt_price: float | None = None,
                             aux_price: float | None = None, account: str = "",
                             tif: str = "DAY", order_ref: str = "") -> SimOrder:
        """An order typed by hand in TWS: owned by client 0 with order id 0 (IB's manual orders).

        Raises ValueError with the reason IB would give if the order is not acceptable. The
        broker is not thread-safe: with `SimGateway.in_thread` run it on the simulator's loop,
        `sim.call(sim.broker.place_external_order, "AAPL", "BUY", 10)`.
        """
        inst = (self._gw.universe.by_con_id(symbol) if isinstance(symbol, int) else
                next((i for i in self._gw.universe if i.symbol == symbol.upper()
                      and i.sec_type in ("STK", "CASH")), None))
        if inst is None:
            raise ValueError(f"unknown instrument {symbol!r}")
        c12 = (str(inst.con_id), inst.symbol, inst.sec_type, inst.last_trade_date, "",
               inst.right, inst.multiplier, inst.exchange, "", inst.currency, "", "")
        req = OrderRequest(
            order_id=0, c12=c12, action=action.upper(), total_qty=float(quantity),
            order_type=order_type.upper(), lmt_price=lmt_price, aux_price=aux_price, tif=tif,
            oca_group="", account=account, open_close="", origin=0, order_ref=order_ref,
            transmit=True, parent_id=0, outside_rth=False, hidden=False, display_size=0,
            trigger_method=0, good_after_time="", good_till_date="", oca_type=0,
            algo_strategy="", what_if=False)
        reason = self._refusal(req)
        if reason:
            raise ValueError(reason[1])
        entry = self._new_entry(req, EXTERNAL_CLIENT_ID, inst)
        self._submit(entry)
        return entry.order

    @property
    def universe(self) -> Any:
        return self._gw.universe

    def price_of(self, con_id: int) -> float:
        """Mark price for valuation: last trade, else the mid, else the instrument's start."""
        q = self._gw.market.quote(con_id)
        if q.last and q.last > 0:
            return float(q.last)
        if q.bid and q.ask and q.bid > 0 and q.ask > 0:
            return (q.bid + q.ask) / 2.0
        inst = self._gw.universe.by_con_id(con_id)
        return float(inst.start_price) if inst else 0.0

    # ---- requests: orders ---------------------------------------------------------------

    def _place_order(self, session: SessionLike, fields: Sequence[str]) -> None:
        cid = session.client_id
        try:
            req = parse_place_order(fields)
        except OrderParseError as exc:
            session.send_error(_int_or(fields, 1, -1), 320, f"Error reading request: {exc}")
            return
        key = (cid, req.order_id)
        perm_id = self._by_key.get(key)
        if perm_id is not None and not req.what_if:
            self._modify(session, self._entries[perm_id], req)
            return
        if req.order_id < self.next_order_id(cid):
            session.send_error(req.order_id, 103, "Duplicate order id")
            return
        self._next_ids[cid] = req.order_id + 1
        found = self._gw.universe.resolve(req.c12)
        if len(found) != 1:
            text = ("No security definition has been found for the request" if not found else
                    "The contract description specified is ambiguous")
            session.send_error(req.order_id, 200, text)
            return
        inst = found[0]
        refusal = self._refusal(req)
        if refusal:
            session.send_error(req.order_id, *refusal)
            return
        if req.what_if:
            self._what_if(session, req, inst)
            return
        parent = None
        if req.parent_id:
            parent_perm = self._by_key.get((cid, req.parent_id))
            if parent_perm is None:
                session.send_error(req.order_id, 135, f"Can't find order with id ={req.parent_id}")
                return
            parent = self._entries[parent_perm]
            if parent.order.is_done and parent.order.status != Status.FILLED:
                session.send_error(req.order_id, 201, "Order rejected - reason:The parent order "
                                   f"{req.parent_id} is {parent.order.status}")
                return
        entry = self._new_entry(req, cid, inst)
        if not req.transmit:
            log.debug("order %s held: transmit=0", req.order_id)
            return
        root = parent if parent is not None else entry
        self._transmit_family(root)

    def _refusal(self, req: OrderRequest) -> tuple[int, str] | None:
        """(code, message) if the order is refused before it reaches the market."""
        if req.total_qty <= 0 or req.total_qty > self.config.max_order_qty:
            return 201, (f"Order rejected - reason:Order quantity {req.total_qty:g} is outside "
                         f"the allowed range (0, {self.config.max_order_qty:g}]")
        if req.order_type not in SUPPORTED_ORDER_TYPES:
            return 387, (f"Unsupported order type {req.order_type!r} for this exchange and "
                         f"security type (simulated: {', '.join(sorted(SUPPORTED_ORDER_TYPES))})")
        tif = req.tif or "DAY"
        if tif not in TIFS:
            return 201, (f"Order rejected - reason:Time in force {tif!r} is not supported "
                         f"(simulated: {', '.join(sorted(TIFS))})")
        if req.order_type in AT_CLOSE and tif != "DAY":
            return 201, f"Order rejected - reason:{req.order_type} orders must be DAY orders"
        if tif == "GTD" and req.good_till_date:
            try:
                until = parse_order_time(req.good_till_date)
            except OrderTimeError as exc:
                return 201, f"Order rejected - reason:Invalid goodTillDate: {exc}"
            if until <= datetime.now(UTC):
                return 201, (f"Order rejected - reason:goodTillDate {req.good_till_date!r} is "
                             "in the past")
        if req.account and req.account not in self.accounts:
            return 201, (f"Order rejected - reason:Account {req.account} is not one of the "
                         f"managed accounts {', '.join(self.accounts)}")
        reason = check_order(req)
        if reason:
            return 201, f"Order rejected - reason:{reason}"
        return None

    def _new_entry(self, req: OrderRequest, client_id: int, inst: Any) -> _Entry:
        order = SimOrder(
            order_id=req.order_id, client_id=client_id, perm_id=next(self._perm_ids),
            con_id=inst.con_id, symbol=inst.symbol, action=req.action, total_qty=req.total_qty,
            order_type=req.order_type, lmt_price=req.lmt_price, aux_price=req.aux_price,
            tif=req.tif or "DAY", status=Status.PENDING_SUBMIT, order_ref=req.order_ref,
            account=req.account or self.config.accounts[0], oca_group=req.oca_group,
            parent_id=req.parent_id, transmit=req.transmit, outside_rth=req.outside_rth,
            trail_stop=req.trail_stop_price, trailing_percent=req.trailing_percent, request=req,
            oca_type=req.oca_type, algo_strategy=req.algo_strategy, algo_params=req.algo_params)
        entry = _Entry(order, inst, req.exchange or inst.exchange)
        if order.tif == "GTD" and req.good_till_date:
            self._expiring[order.perm_id] = parse_order_time(req.good_till_date)
        self._entries[order.perm_id] = entry
        if req.order_id > 0:
            self._by_key[(client_id, req.order_id)] = order.perm_id
        parent = self._parent(order)
        if parent is not None:
            self._kids.setdefault(parent.perm_id, []).append(order.perm_id)
        if order.oca_group:
            self._oca.setdefault((client_id, order.oca_group), set()).add(order.perm_id)
        return entry

    def _children(self, parent: SimOrder) -> list[_Entry]:
        return [self._entries[p] for p in self._kids.get(parent.perm_id, ())]

    def _siblings(self, order: SimOrder) -> list[_Entry]:
        """The other children of `order`'s parent: a filled bracket leg cancels them."""
        parent = self._parent(order)
        perms = set(self._kids.get(parent.perm_id, ())) if parent is not None else set()
        perms.discard(order.perm_id)
        return [self._entries[p] for p in sorted(perms)]

    def _oca_members(self, order: SimOrder) -> list[_Entry]:
        """The other unfinished orders of `order`'s OCA group (same client, same name)."""
        if not order.oca_group:
            return []
        perms = set(self._oca.get((order.client_id, order.oca_group), ()))
        perms.discard(order.perm_id)
        return [self._entries[p] for p in sorted(perms) if not self._entries[p].order.is_done]

    def _oca_after_fill(self, entry: _Entry, shares: float) -> None:
        """IB's ocaType on an execution of `shares` of a group member (docs/simulator.md):
        1 (and 0, IB's default) cancels every other member at the first fill; 2 and 3
        reduce each other member by the filled quantity, cancelling a member reduced to
        what it has filled. "With block" (1, 2) is IB's overfill protection while routing;
        fills here are atomic, so 2 and 3 behave alike."""
        order = entry.order
        for member in self._oca_members(order):
            if order.oca_type in (2, 3):
                self._reduce(member, shares)
            else:
                self._cancel(member, notify=False)

    def _reduce(self, entry: _Entry, shares: float) -> None:
        order = entry.order
        order.total_qty = max(order.total_qty - shares, order.filled)
        if order.remaining <= 1e-9:
            self._cancel(entry, notify=False)
            return
        book = self._working.get(order.con_id)
        if book is not None:
            book.touch()
        self._send_owner(order, msg.open_order(order, entry.inst, entry.exchange))
        self._send_owner(order, msg.order_status(order))

    def _transmit_family(self, root: _Entry) -> None:
        """A transmit=1 order sends its held parent and siblings with it (a bracket)."""
        if root.order.status == Status.PENDING_SUBMIT:
            self._submit(root)
        for child in self._children(root.order):
            if child.order.status == Status.PENDING_SUBMIT:
                self._submit(child)

    def _submit(self, entry: _Entry) -> None:
        """Accept an order at the market: children of an unfilled parent wait as PreSubmitted."""
        order = entry.order
        parent = self._parent(order)
        if parent is not None and parent.status != Status.FILLED:
            order.status = Status.PRE_SUBMITTED
            self._report(entry, order_status=True)
            return
        order.status = Status.SUBMITTED
        self._report(entry, order_status=True)
        self._try_fill(entry, arriving=True)
        if order.status == Status.SUBMITTED:
            if order.tif in IMMEDIATE_TIFS:  # IOC / FOK never rest
                self._cancel(entry, notify=False)
            else:
                self._rest(entry)

    def _parent(self, order: SimOrder) -> SimOrder | None:
        if not order.parent_id:
            return None
        perm = self._by_key.get((order.client_id, order.parent_id))
        return self._entries[perm].order if perm is not None else None

    def _modify(self, session: SessionLike, entry: _Entry, req: OrderRequest) -> None:
        order = entry.order
        if order.is_done:
            code, text = ((104, "Can't modify a filled order") if order.status == Status.FILLED
                          else (103, "Duplicate order id"))
            session.send_error(req.order_id, code, text)
            return
        found = self._gw.universe.resolve(req.c12)
        if len(found) != 1 or found[0].con_id != order.con_id:
            session.send_error(req.order_id, 201, "Order rejected - reason:The contract of an "
                                                  "order cannot be changed; cancel and re-place")
            return
        refusal = self._refusal(req)
        if refusal is None and req.total_qty < order.filled:
            refusal = (201, f"Order rejected - reason:Quantity {req.total_qty:g} is below the "
                            f"filled quantity {order.filled:g}")
        if refusal:
            session.send_error(req.order_id, *refusal)
            return
        order.total_qty = req.total_qty
        order.order_type = req.order_type
        order.lmt_price = req.lmt_price
        order.aux_price = req.aux_price
        order.tif = req.tif or order.tif
        order.order_ref = req.order_ref
        order.outside_rth = req.outside_rth
        order.trailing_percent = req.trailing_percent
        if req.trail_stop_price is not None:
            order.trail_stop = req.trail_stop_price
        if req.oca_group != order.oca_group:
            self._oca.get((order.client_id, order.oca_group), set()).discard(order.perm_id)
            if req.oca_group:
                self._oca.setdefault((order.client_id, req.oca_group), set()).add(order.perm_id)
            order.oca_group = req.oca_group
        order.oca_type = req.oca_type
        order.algo_strategy, order.algo_params = req.algo_strategy, req.algo_params
        order.request = req
        if order.status == Status.PENDING_SUBMIT:  # held (transmit=0) until now
            order.transmit = req.transmit
            if req.transmit:
                self._transmit_family(entry)
            return
        book = self._working.get(order.con_id)
        if book is not None:
            book.touch()
        if order.filled > 0 and order.remaining <= 1e-9:  # cut down to what already filled
            self._unrest(entry)
            self._complete(order, Status.FILLED)
            self._send_owner(order, msg.order_status(order))
            self._send_owner(order, msg.open_order(order, entry.inst, entry.exchange))
            self._after_filled(entry)
            return
        self._report(entry, order_status=True)
        if order.status == Status.SUBMITTED:
            self._try_fill(entry, arriving=True)
            if order.status == Status.SUBMITTED and order.tif in IMMEDIATE_TIFS:
                self._cancel(entry, notify=False)

    def _cancel_order(self, session: SessionLike, fields: Sequence[str]) -> None:
        order_id = int(fields[2])
        perm = self._by_key.get((session.client_id, order_id))
        refused = self.refuse_cancels.pop(order_id, None)
        if refused is not None:
            state = self._entries[perm].order.status if perm is not None else "unknown"
            text = {10147: f"OrderId {order_id} that needs to be cancelled is not found.",
                    161: "Cancel attempted when order is not in a cancellable state."}.get(
                refused, f"OrderId {order_id} that needs to be cancelled cannot be cancelled, "
                         f"state: {state}.")
            log.info("cancel of order %s refused with %s (refuse_cancels)", order_id, refused)
            session.send_error(order_id, refused, text)
            return
        if perm is None:
            session.send_error(order_id, 10147,
                               f"OrderId {order_id} that needs to be cancelled is not found.")
            return
        entry = self._entries[perm]
        if entry.order.is_done:
            session.send_error(order_id, 10148,
                               f"OrderId {order_id} that needs to be cancelled cannot be "
                               f"cancelled, state: {entry.order.status}.")
            return
        self._cancel(entry, notify=True)

    def _global_cancel(self, session: SessionLike, fields: Sequence[str]) -> None:
        for entry in list(self._entries.values()):
            if not entry.order.is_done:
                self._cancel(entry, notify=True)

    def _cancel(self, entry: _Entry, notify: bool, reason: str = "") -> None:
        """Cancel one order and its unfilled children. `notify` adds IB's error 202."""
        order = entry.order
        if order.is_done:
            return
        held = order.status == Status.PENDING_SUBMIT
        self._unrest(entry)
        self._complete(order, Status.CANCELLED)
        if not held:
            self._send_owner(order, msg.order_status(order))
            if notify:
                self._error_owner(order, 202, f"Order Canceled - reason:{reason}")
        for child in self._children(order):
            self._cancel(child, notify=notify, reason=reason)

    def _complete(self, order: SimOrder, status: Status) -> None:
        order.status = status
        order.completed_time = msg.ib_time(datetime.now(UTC))
        order.completed_status = status.value

    def _what_if(self, session: SessionLike, req: OrderRequest, inst: Any) -> None:
        """One openOrder with whatIf=1 and the margin impact as numbers; nothing is stored."""
        book = self.accounts[req.account or self.config.accounts[0]]
        before = book.values(self.price_of)
        price = req.lmt_price or self.price_of(inst.con_id)
        mult = _multiplier(inst)
        signed = (1 if req.action == "BUY" else -1) * req.total_qty
        held = book.holdings.get(inst.con_id)
        old_value = (held.qty if held else 0.0) * price * mult
        init_old, maint_old = margin_for(inst.sec_type, old_value)
        init_new, maint_new = margin_for(inst.sec_type, old_value + signed * price * mult)
        commission = commission_for(inst.sec_type, req.total_qty, price, mult)
        d_init, d_maint = init_new - init_old, maint_new - maint_old
        ewl = before["EquityWithLoanValue"]
        margins = (before["InitMarginReq"], before["MaintMarginReq"], ewl, d_init, d_maint,
                   -commission, before["InitMarginReq"] + d_init,
                   before["MaintMarginReq"] + d_maint, ewl - commission, commission)
        order = SimOrder(
            order_id=req.order_id, client_id=session.client_id, perm_id=0, con_id=inst.con_id,
            symbol=inst.symbol, action=req.action, total_qty=req.total_qty,
            order_type=req.order_type, lmt_price=req.lmt_price, aux_price=req.aux_price,
            tif=req.tif, status=Status.PRE_SUBMITTED, order_ref=req.order_ref,
            account=book.name, request=req, oca_group=req.oca_group, oca_type=req.oca_type,
            algo_strategy=req.algo_strategy, algo_params=req.algo_params)
        session.send(*msg.open_order(order, inst, req.exchange or inst.exchange, margins))

    # ---- the market ---------------------------------------------------------------------

    def market_acquire(self, con_id: int) -> None:
        """Keep ``con_id``'s price walking (a PnL subscription follows it)."""
        self._gw.market.acquire(con_id)

    def market_release(self, con_id: int) -> None:
        self._gw.market.release(con_id)

    def _rest(self, entry: _Entry) -> None:
        con_id = entry.order.con_id
        book = self._working.get(con_id)
        if book is None:
            book = self._working[con_id] = RestingBook()
            self._gw.market.acquire(con_id)
        book.add(entry.order)

    def _unrest(self, entry: _Entry) -> None:
        con_id = entry.order.con_id
        book = self._working.get(con_id)
        if book is None or not book.discard(entry.order.perm_id):
            return
        if not book:
            del self._working[con_id]
            self._gw.market.release(con_id)

    def _on_quote(self, con_id: int, quote: Any) -> None:
        """Market listener: fill resting orders the walk has reached. O(1) when none is."""
        self.feed.on_quote(con_id)
        self.pnl.on_quote(con_id)
        if self._expiring:
            self._expire_gtd()
        book = self._working.get(con_id)
        if book is None:
            return
        last = quote.last if quote.last and quote.last > 0 else (quote.bid + quote.ask) / 2.0
        for order in book.candidates(quote.bid, quote.ask, last):
            if order.is_working:
                self._try_fill(self._entries[order.perm_id], arriving=False, quote=quote)

    def _try_fill(self, entry: _Entry, arriving: bool, quote: Any = None) -> None:
        order = entry.order
        q = quote if quote is not None else self._gw.market.quote(order.con_id)
        last = q.last if q.last and q.last > 0 else (q.bid + q.ask) / 2.0
        px = fill_price(order, float(q.bid), float(q.ask), float(last), arriving)
        if px is None:
            return
        shares = order.remaining
        if self.partial_fills and order.order_type in ("LMT", "STP LMT"):
            # a limit order takes at most what is shown at the touch; the rest keeps working
            shown = q.ask_size if order.action == "BUY" else q.bid_size
            shares = min(shares, max(float(shown), 1.0))
        self._fill(entry, shares, px)

    def _fill(self, entry: _Entry, shares: float, price: float) -> None:
        """One execution: book it, then tell the owner in §5.3 order, then the subscribers."""
        order, inst = entry.order, entry.inst
        mult = _multiplier(inst)
        cum_qty = order.filled + shares
        cum_avg = (order.avg_fill_price * order.filled + price * shares) / cum_qty
        # IB's per-order minimum: charge the order's running total less what was charged
        commission = max(round(commission_for(inst.sec_type, cum_qty, cum_avg, mult)
                               - order.commission, 4), 0.0)
        order.commission += commission
        book = self.accounts[order.account]
        realized = book.apply_fill(inst.con_id, inst.sec_type, mult, order.sign * shares, price,
                                   commission)
        order.avg_fill_price = cum_avg
        order.filled = cum_qty
        order.last_fill_price = price
        ex = SimExecution(
            exec_id=f"{self._exec_prefix}.{next(self._exec_seq):08x}.01.01",
            order_id=order.order_id, client_id=order.client_id, perm_id=order.perm_id,
            con_id=inst.con_id, account=order.account, side=order.side, shares=shares,
            price=price, time=datetime.now(UTC), cum_qty=order.filled,
            avg_price=order.avg_fill_price, order_ref=order.order_ref, commission=commission,
            realized_pnl=realized if realized else None,
            exchange=inst.primary_exchange or inst.exchange)
        self._executions.append(ex)
        if order.remaining <= 1e-9:
            self._unrest(entry)
            self._complete(order, Status.FILLED)
        self._fill_report(order, "execDetails", msg.exec_details(-1, ex, inst, entry.exchange))
        self._send_owner(order, msg.order_status(order))
        if order.status == Status.FILLED:
            self._send_owner(order, msg.open_order(order, inst, entry.exchange))
        self._fill_report(order, "commissionReport", msg.commission_report(ex))
        log.info("filled %s %s %g %s @ %s (client %s order %s)", order.account, order.side,
                 shares, inst.symbol, price, order.client_id, order.order_id)
        self._oca_after_fill(entry, shares)
        if order.status == Status.FILLED:
            self._after_filled(entry)
        self.feed.account_changed(order.account, inst.con_id)
        self.pnl.account_changed(order.account)

    def _expire_gtd(self) -> None:
        """Cancel GTD orders whose goodTillDate has passed (checked on market steps)."""
        now = datetime.now(UTC)
        for perm, until in list(self._expiring.items()):
            entry = self._entries.get(perm)
            if entry is None or entry.order.is_done:
                del self._expiring[perm]
            elif until <= now:
                del self._expiring[perm]
                log.info("order %s expired (GTD %s)", entry.order.order_id, until)
                self._cancel(entry, notify=True, reason="GTD order expired")

    def closing_auction(self, con_id: int | None = None) -> int:
        """The close of ``con_id`` (None: of every instrument): working MOC orders fill at
        the last price, LOC orders where that price is at or better than their limit; the
        rest of the at-close orders are cancelled (error 202), as after a real close.
        Returns the number of orders filled. Call it on the simulator's loop."""
        filled = 0
        for entry in list(self._entries.values()):
            order = entry.order
            if (order.order_type not in AT_CLOSE or not order.is_working
                    or (con_id is not None and order.con_id != con_id)):
                continue
            px = close_fill_price(order, self.price_of(order.con_id))
            if px is None:
                self._cancel(entry, notify=True, reason="LOC limit not reached at the close")
                continue
            self._fill(entry, order.remaining, px)
            filled += 1
        return filled

    def _fill_report(self, order: SimOrder, kind: str, fields: list[object]) -> None:
        if kind in self.hold_reports:
            self._held_reports.append((order, fields))
        else:
            self._send_owner(order, fields)

    def release_reports(self) -> int:
        """Send the fill reports held by ``hold_reports``, in order; how many were sent."""
        held, self._held_reports = self._held_reports, []
        for order, fields in held:
            self._send_owner(order, fields)
        return len(held)

    def _after_filled(self, entry: _Entry) -> None:
        """Bracket children start working; bracket siblings are cancelled (the OCA group
        was handled at each fill: `_oca_after_fill`)."""
        order = entry.order
        for child in self._children(order):
            if child.order.status == Status.PRE_SUBMITTED:
                self._submit(child)
        for sibling in self._siblings(order):
            self._cancel(sibling, notify=False)

    # ---- requests: order reports ------------------------------------------------------------

    def _visible_to(self, client_id: int, order: SimOrder) -> bool:
        return order.client_id == client_id or (
            client_id == EXTERNAL_CLIENT_ID and order.order_id == 0)

    def _req_open_orders(self, session: SessionLike, fields: Sequence[str]) -> None:
        self._send_open_orders(session, lambda o: self._visible_to(session.client_id, o))

    def _req_all_open_orders(self, session: SessionLike, fields: Sequence[str]) -> None:
        self._send_open_orders(session, lambda o: True)

    def _send_open_orders(self, session: SessionLike, want: Callable[[SimOrder], bool]) -> None:
        for entry in self._entries.values():
            o = entry.order
            if want(o) and not o.is_done and o.status != Status.PENDING_SUBMIT:
                session.send(*msg.open_order(o, entry.inst, entry.exchange))
                session.send(*msg.order_status(o))
        session.send(*msg.open_order_end())

    def _req_completed_orders(self, session: SessionLike, fields: Sequence[str]) -> None:
        api_only = len(fields) > 1 and fields[1] == "1"
        for entry in self._entries.values():
            o = entry.order
            if o.is_done and not (api_only and o.order_id == 0):
                session.send(*msg.completed_order(o, entry.inst, entry.exchange))
        session.send(*msg.completed_orders_end())

    def _req_executions(self, session: SessionLike, fields: Sequence[str]) -> None:
        """[7, 3, reqId, clientId, acct, time, symbol, secType, exchange, side]."""
        req_id = int(fields[2])
        f = [*fields[3:10], *[""] * 7][:7]
        want_client = int(f[0] or 0)
        since = f[2].replace("-", " ").strip()
        for ex in self._executions:
            if not self._exec_visible(session.client_id, ex):
                continue
            entry = self._entries[ex.perm_id]
            inst = entry.inst
            if ((want_client and ex.client_id != want_client) or (f[1] and ex.account != f[1])
                    or (f[3] and inst.symbol != f[3].upper())
                    or (f[4] and inst.sec_type != f[4].upper())
                    or (f[5] and f[5].upper() not in (ex.exchange, entry.exchange))
                    or (f[6] and _side(f[6]) != ex.side)
                    or (since and ex.time.strftime("%Y%m%d %H:%M:%S") < since[:17])):
                continue
            session.send(*msg.exec_details(req_id, ex, inst, entry.exchange))
            session.send(*msg.commission_report(ex))
        session.send(*msg.exec_details_end(req_id))

    def _exec_visible(self, client_id: int, ex: SimExecution) -> bool:
        """A client sees its own fills (client 0 therefore also sees the manual orders)."""
        return ex.client_id == client_id

    def _req_auto_open_orders(self, session: SessionLike, fields: Sequence[str]) -> None:
        """[15, 1, bAutoBind]: accepted. Manual orders always report to client 0 here."""
        log.debug("client %s: reqAutoOpenOrders(%s)", session.client_id, fields[2:3])

    # ---- routing --------------------------------------------------------------------------

    def _owner_session(self, order: SimOrder) -> SessionLike | None:
        sessions = self._gw.sessions_by_client_id()
        return sessions.get(order.client_id)

    def _send_owner(self, order: SimOrder, fields: list[object]) -> None:
        session = self._owner_session(order)
        if session is not None:
            session.send(*fields)

    def _error_owner(self, order: SimOrder, code: int, text: str) -> None:
        session = self._owner_session(order)
        if session is not None:
            session.send_error(order.order_id, code, text)

    def _report(self, entry: _Entry, order_status: bool) -> None:
        self._send_owner(entry.order, msg.open_order(entry.order, entry.inst, entry.exchange))
        if order_status:
            self._send_owner(entry.order, msg.order_status(entry.order))


def _multiplier(inst: Any) -> float:
    try:
        return float(inst.multiplier or 1.0)
    except ValueError:
        return 1.0


def _side(text: str) -> str:
    t = text.upper()
    return "BOT" if t in ("BUY", "BOT") else "SLD"


def _int_or(fields: Sequence[str], index: int, default: int) -> int:
    try:
        return int(fields[index])
    except (IndexError, ValueError):
        return default
