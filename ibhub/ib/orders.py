"""Orders and account data over the hub's ib_insync session.

The order manager (:mod:`ibhub.orders.manager`) and the account cache
(:mod:`ibhub.orders.account`) never see ib_insync; this adapter is their bridge to the
:class:`ib_insync.IB` object that :class:`ibhub.ib.session.Upstream` owns. Like
:mod:`ibhub.ib.convert`, it is where IB's camelCase
stops: it implements :class:`~ibhub.orders.port.OrderUpstream` (place / cancel /
global cancel / order ids) and turns ib_insync's order, fill, commission, error and
account events into the plain dataclasses of :mod:`ibhub.orders.port`.

Two ib_insync behaviours it corrects for:

* On any non-warning error whose reqId is an order id, ib_insync marks the trade
  Cancelled itself and emits ``orderStatusEvent`` (even when IB only refused a modify
  or a cancel and the order keeps working). Those synthetic statuses (their log entry
  carries the error code) are not forwarded; the error goes to
  :meth:`OrderUpdates.on_order_error`, which decides whether the order really ended.
* ``IB.cancelOrder`` sets the trade to PendingCancel (or Cancelled, for an order it
  believes held or inactive) and emits ``orderStatusEvent`` before the Gateway said
  anything; the hub cancels with the plain client call, so the book records only what
  the Gateway reports.
* Start-up sync (open orders, executions) fires no events, so after every (re)connect
  :meth:`IbOrderGateway.reconcile` feeds the session's trades, fills and completed
  orders to the book and seeds the account cache.
* When the book doubts its state of an order (an error on a cancel, a working status
  for an order it has as ended), :meth:`IbOrderGateway.verify` asks the Gateway afresh
  (reqOpenOrders, reqCompletedOrders, reqExecutions: ib_insync's own view may carry its
  synthetic Cancelled) and reconciles with the answers.

And one it works around: ib_insync caches every order and fill of the session until
it ends. :class:`~ibhub.ib.trade_cache.TradeCache` prunes ended orders once the book holds
them; this adapter is its view of the book (:class:`~ibhub.ib.trade_cache.BookView`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ibhub.ib.account_feed import IbAccountFeed
from ibhub.ib.convert import to_ib_contract
from ibhub.ib.lib import IB, Order, RequestError, TagValue
from ibhub.ib.trade_cache import GRACE, PENDING, SETTLED, UNKNOWN, WORKING, TradeCache
from ibhub.orders.account import AccountBook
from ibhub.orders.manager import OrderManager
from ibhub.orders.order_types import ib_aux_price
from ibhub.orders.port import (
    OrderFields,
    UpstreamCommission,
    UpstreamExecution,
    UpstreamOrder,
    UpstreamRefused,
    UpstreamStatus,
    UpstreamWhatIf,
)
from ibhub.orders.store import EPS, TERMINAL
from ibhub.orders.updates import ReconcileReport
from ibhub.protocol import ContractSpec
from ibhub.tws.codec import UNSET_DOUBLE
from ibhub.tws.ib_codes import is_warning

#: order-type fields of the hub -> the IB Order attribute (auxPrice is ib_aux_price's)
_IB_PARAM_NAMES = {
    "trailing_percent": "trailingPercent", "trail_stop_price": "trailStopPrice",
    "limit_price_offset": "lmtPriceOffset", "good_till_date": "goodTillDate",
}  # fmt: skip

log = logging.getLogger(__name__)

# Seconds a verification waits before asking the Gateway, so that a burst of doubts
# (a dozen refused cancels) costs one round of questions.
VERIFY_DELAY = 0.2
SNAPSHOT_TIMEOUT = 10.0  # seconds for each of the Gateway's answers

_UNSET = sys.float_info.max / 2  # anything this large is IB's UNSET_DOUBLE


def _price(value: float | None) -> float | None:
    if value is None or value >= _UNSET or math.isnan(value):
        return None
    return value


def _fnum(value: Any) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return float("nan") if f >= _UNSET else f


def trade_to_order(trade: Any) -> UpstreamOrder:
    o, c, s = trade.order, trade.contract, trade.orderStatus
    filled = float(s.filled or 0.0)
    if not filled:  # a completed order carries its filled quantity in the order only
        filled = _fnum(getattr(o, "filledQuantity", 0.0))
        filled = filled if filled == filled and filled > 0 else 0.0
    return UpstreamOrder(
        order_id=int(o.orderId),
        client_id=int(o.clientId),
        perm_id=int(o.permId),
        con_id=int(c.conId),
        symbol=c.symbol,
        sec_type=c.secType,
        exchange=c.exchange,
        currency=c.currency,
        action=o.action,
        quantity=float(o.totalQuantity),
        order_type=o.orderType,
        limit_price=_price(o.lmtPrice) or None,
        stop_price=_price(o.auxPrice) or None,
        tif=o.tif,
        outside_rth=bool(o.outsideRth),
        account=o.account,
        order_ref=o.orderRef or "",
        parent_id=int(o.parentId or 0),
        status=s.status,
        filled=filled,
        remaining=float(s.remaining or 0.0),
        avg_fill_price=float(s.avgFillPrice or 0.0),
        oca_group=o.ocaGroup or "",
        oca_type=int(o.ocaType or 0),
        algo_strategy=o.algoStrategy or "",
        algo_params=tuple((p.tag, p.value) for p in o.algoParams or ()),
    )


def _ib_order(order_id: int, fields: OrderFields) -> Any:
    """The IB library Order for ``fields`` (order id 0: the library assigns one)."""
    order = Order(
        orderId=order_id,
        action=fields.action,
        totalQuantity=fields.quantity,
        orderType=fields.order_type,
        tif=fields.tif,
        outsideRth=fields.outside_rth,
        account=fields.account,
        parentId=fields.parent_id,
        transmit=fields.transmit,
        orderRef=fields.order_ref,
        ocaGroup=fields.oca_group,
        ocaType=fields.oca_type,
        algoStrategy=fields.algo_strategy,
        algoParams=[TagValue(tag, value) for tag, value in fields.algo_params],
        algoId=fields.algo_id,
    )
    if fields.limit_price is not None:
        order.lmtPrice = fields.limit_price
    params = dict(fields.params)
    aux = ib_aux_price(fields.order_type, fields.stop_price, params)
    if aux is not None:
        order.auxPrice = aux
    for name, ib_name in _IB_PARAM_NAMES.items():
        if name in params:
            setattr(order, ib_name, params[name])
    return order


def _num(value: Any) -> float | None:
    """An orderState number (a string at the wire, a float in ib_async) or None."""
    if value in (None, ""):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if not math.isfinite(number) or abs(number) >= UNSET_DOUBLE else number


def what_if_state(state: Any) -> UpstreamWhatIf:
    names = ("initMarginBefore", "maintMarginBefore", "equityWithLoanBefore",
             "initMarginChange", "maintMarginChange", "equityWithLoanChange",
             "initMarginAfter", "maintMarginAfter", "equityWithLoanAfter")  # fmt: skip
    return UpstreamWhatIf(
        status=str(state.status or ""),
        margins=tuple(_num(getattr(state, n, None)) for n in names),
        commission=_num(state.commission),
        min_commission=_num(state.minCommission),
        max_commission=_num(state.maxCommission),
        commission_currency=str(state.commissionCurrency or ""),
        warning_text=str(state.warningText or ""),
    )


async def _what_if_answer(answer: asyncio.Future[Any]) -> UpstreamWhatIf:
    """The Gateway's answer to a whatIf placeOrder, as the order book's port says it."""
    try:
        state = await answer
    except RequestError as exc:
        raise UpstreamRefused(exc.code, exc.message) from None
    if state is None:  # ended by an error while RaiseRequestErrors is off
        raise UpstreamRefused(0, "the Gateway refused the what-if order")
    return what_if_state(state)


def gateway_status(trade: Any) -> str:
    """The trade's last status that came from the Gateway: ib_insync's own Cancelled after
    an order error (a log entry with the error code) is skipped."""
    if trade.log and trade.log[-1].errorCode:
        for entry in reversed(trade.log):
            if not entry.errorCode and entry.status:
                return str(entry.status)
    return str(trade.orderStatus.status)


def trade_to_status(trade: Any) -> UpstreamStatus:
    o, s = trade.order, trade.orderStatus
    return UpstreamStatus(
        order_id=int(o.orderId),
        client_id=int(o.clientId),
        perm_id=int(o.permId or s.permId or 0),
        status=s.status,
        filled=float(s.filled or 0.0),
        remaining=float(s.remaining or 0.0),
        avg_fill_price=float(s.avgFillPrice or 0.0),
        last_fill_price=float(s.lastFillPrice or 0.0),
        why_held=s.whyHeld or "",
    )


def fill_to_execution(fill: Any) -> UpstreamExecution:
    return execution_to_upstream(fill.contract, fill.execution, fill.execution.time or fill.time)


def execution_to_upstream(c: Any, e: Any, when: Any) -> UpstreamExecution:
    return UpstreamExecution(
        exec_id=e.execId,
        order_id=int(e.orderId),
        client_id=int(e.clientId),
        perm_id=int(e.permId),
        con_id=int(c.conId),
        symbol=c.symbol,
        side=e.side,
        shares=float(e.shares),
        price=float(e.price),
        cum_qty=float(e.cumQty),
        avg_price=float(e.avgPrice),
        time_ns=int(when.timestamp() * 1e9) if when else 0,
        account=e.acctNumber,
        exchange=e.exchange,
        order_ref=e.orderRef or "",
    )


def report_to_commission(report: Any) -> UpstreamCommission:
    pnl = _fnum(report.realizedPNL)
    return UpstreamCommission(
        exec_id=report.execId,
        commission=float(report.commission),
        currency=report.currency,
        realized_pnl=None if pnl != pnl else pnl,
    )


class IbOrderGateway:
    """Implements ``OrderUpstream`` on an ib_insync ``IB`` and feeds the book its events."""

    def __init__(
        self,
        ib: IB,
        *,
        client_id: int,
        connected: Callable[[], bool],
        cache_grace: float | None = GRACE,
    ) -> None:
        """``cache_grace``: seconds an ended order may wait in ib_insync's caches for its
        missing executions or commissions (:mod:`ibhub.ib.trade_cache`); None keeps
        ib_insync's caches unpruned."""
        self._ib = ib
        self._cache_grace = cache_grace
        self.cache: TradeCache | None = None
        self._client_id = client_id
        self._connected = connected
        self._book: OrderManager | None = None
        self._account: AccountBook | None = None
        self.account_feed: IbAccountFeed | None = None
        # ib_insync keys its completed-orders request by name, not by id: two in flight
        # at once orphan the first future (it then waits out its timeout). Reconciles
        # triggered back to back (a service attached while connected, then the state
        # change) therefore run one after the other.
        self._reconcile_lock = asyncio.Lock()
        self.on_order_error_unrouted: Callable[[int, int, str], None] | None = None
        # verify(): doubts collected while a fresh reconcile is pending or running
        self._doubts: dict[int, str] = {}
        self._verify_task: asyncio.Task[None] | None = None
        self.verify_delay = VERIFY_DELAY
        self.verifications = 0

    # ------------------------------------------------------------------ OrderUpstream

    @property
    def client_id(self) -> int:
        return self._client_id

    def is_connected(self) -> bool:
        return self._connected() and self._ib.client.isReady()

    def next_order_id(self) -> int:
        return int(self._ib.client.getReqId())

    def ensure_ids_above(self, order_id: int) -> None:
        self._ib.client.updateReqId(order_id + 1)

    def place(self, order_id: int, contract: ContractSpec, fields: OrderFields) -> None:
        if not self.is_connected():
            raise ConnectionError("not connected to the Gateway")
        self._ib.placeOrder(to_ib_contract(contract), _ib_order(order_id, fields))

    def start_what_if(self, order_id: int, contract: ContractSpec,
                      fields: OrderFields) -> asyncio.Future[UpstreamWhatIf]:
        """IB's whatIf for an order, under ``order_id`` (a new id from the order book, in
        its id line): the placeOrder is written now; the future gets the orderState, or
        :class:`UpstreamRefused` with IB's error. ConnectionError when down. What
        ``IB.whatIfOrderAsync`` does, with the hub's id instead of the library's next."""
        if not self.is_connected():
            raise ConnectionError("not connected to the Gateway")
        ib_contract = to_ib_contract(contract)
        order = _ib_order(order_id, fields)
        order.whatIf = True
        answer = self._ib.wrapper.startReq(order_id, ib_contract)
        self._ib.client.placeOrder(order_id, ib_contract, order)
        return asyncio.ensure_future(_what_if_answer(answer))

    def cancel(self, order_id: int) -> None:
        if not self.is_connected():
            raise ConnectionError("not connected to the Gateway")
        # Not IB.cancelOrder: it invents a status (see the module doc).
        self._ib.client.cancelOrder(order_id, "")

    def global_cancel(self) -> None:
        if not self.is_connected():
            raise ConnectionError("not connected to the Gateway")
        self._ib.reqGlobalCancel()

    # ------------------------------------------------------------------ events

    def attach(self, book: OrderManager | None, account: AccountBook | None) -> None:
        self._book, self._account = book, account
        ib = self._ib
        if book is not None:
            book.updates.on_doubt = self.verify
            ib.openOrderEvent += self._on_open_order
            ib.orderStatusEvent += self._on_order_status
            ib.execDetailsEvent += self._on_exec
            ib.commissionReportEvent += self._on_commission
            ib.errorEvent += self._on_error
            if self._cache_grace is not None:
                self.cache = TradeCache(ib, self, grace=self._cache_grace)
                self.cache.install()
        if account is not None:
            self.account_feed = IbAccountFeed(ib, account)
            ib.accountValueEvent += self._on_account_value
            ib.accountSummaryEvent += self._on_summary
            ib.positionEvent += self._on_position
            ib.updatePortfolioEvent += self._on_portfolio

    def detach(self) -> None:
        ib = self._ib
        if self._verify_task is not None:
            self._verify_task.cancel()
            self._verify_task = None
        if self._book is not None:
            self._book.updates.on_doubt = None
            ib.openOrderEvent -= self._on_open_order
            ib.orderStatusEvent -= self._on_order_status
            ib.execDetailsEvent -= self._on_exec
            ib.commissionReportEvent -= self._on_commission
            ib.errorEvent -= self._on_error
        if self.cache is not None:
            self.cache.uninstall()
            self.cache = None
        if self._account is not None:
            if self.account_feed is not None:
                self.account_feed.close()
                self.account_feed = None
            ib.accountValueEvent -= self._on_account_value
            ib.accountSummaryEvent -= self._on_summary
            ib.positionEvent -= self._on_position
            ib.updatePortfolioEvent -= self._on_portfolio
        self._book = self._account = None

    def _on_open_order(self, trade: Any) -> None:
        if self._book is not None and not trade.order.whatIf:
            self._book.updates.on_open_order(trade_to_order(trade))

    def _on_order_status(self, trade: Any) -> None:
        if self._book is None:
            return
        if trade.log and trade.log[-1].errorCode:
            return  # ib_insync's own "Cancelled" after an error: see the module doc
        self._book.updates.on_order_status(trade_to_status(trade))

    def _on_exec(self, _trade: Any, fill: Any) -> None:
        if self._book is not None:
            self._book.updates.on_execution(fill_to_execution(fill))

    def _on_commission(self, _trade: Any, _fill: Any, report: Any) -> None:
        if self._book is not None:
            self._book.updates.on_commission(report_to_commission(report))

    def _on_error(self, req_id: int, code: int, message: str, _contract: Any) -> None:
        book = self._book
        if book is None or req_id <= 0 or book.store.get(req_id) is None:
            return
        ended = book.updates.on_order_error(req_id, code, message, is_warning(code))
        if not ended and not is_warning(code) and self.on_order_error_unrouted is not None:
            self.on_order_error_unrouted(req_id, code, message)

    # ------------------------------------------------------------------ BookView (trade_cache)

    def _record(self, order_id: int, client_id: int, perm_id: int, ref: str = "") -> Any:
        if self._book is None:
            return None
        return self._book.updates.find(int(order_id), int(client_id), int(perm_id), ref)

    def trade_state(self, trade: Any) -> str:
        o, s = trade.order, trade.orderStatus
        rec = self._record(o.orderId, o.clientId, o.permId or s.permId or 0, o.orderRef or "")
        if rec is None or self._book is None:
            return UNKNOWN
        if rec.status not in TERMINAL:
            return WORKING
        fills, shares = self._book.store.fills, 0.0
        for f in trade.fills:
            got = fills.get(f.execution.execId)
            if got is None or got.commission is None:
                return PENDING
            shares += float(f.execution.shares)
        # executions the status already counts but that have not arrived yet
        return PENDING if shares < float(s.filled or 0.0) - EPS else SETTLED

    def fill_settled(self, exec_id: str) -> bool:
        fill = None if self._book is None else self._book.store.fills.get(exec_id)
        return fill is not None and fill.commission is not None

    def knows_fill(self, exec_id: str) -> bool:
        return self._book is not None and exec_id in self._book.store.fills

    def knows_order(self, order_id: int, client_id: int, perm_id: int) -> bool:
        return self._record(order_id, client_id, perm_id) is not None

    def late_execution(self, contract: Any, execution: Any) -> None:
        if self._book is not None:
            e = execution_to_upstream(contract, execution, execution.time)
            self._book.updates.on_execution(e)

    def late_commission(self, report: Any) -> None:
        if self._book is not None:
            self._book.updates.on_commission(report_to_commission(report))

    def late_status(
        self, order_id: int, client_id: int, perm_id: int, status: str, filled: float,
        remaining: float, avg_fill_price: float, last_fill_price: float, why_held: str,
    ) -> None:  # fmt: skip
        if self._book is not None:
            self._book.updates.on_order_status(UpstreamStatus(
                int(order_id), int(client_id), int(perm_id), status, float(filled),
                float(remaining), float(avg_fill_price), float(last_fill_price), why_held or "",
            ))  # fmt: skip

    # ------------------------------------------------------------------ account

    def _on_account_value(self, v: Any) -> None:
        if self._account is not None and not v.modelCode:
            self._account.on_account_value(v.account, v.tag, v.value, v.currency)

    def _on_summary(self, v: Any) -> None:
        if self._account is not None:
            self._account.on_summary(v.account, v.tag, v.value, v.currency)

    def _on_position(self, p: Any) -> None:
        if self._account is not None:
            c = p.contract
            self._account.on_position(
                p.account, c.conId, c.symbol, c.secType, c.currency, float(p.position),
                float(p.avgCost),
            )  # fmt: skip

    def _on_portfolio(self, item: Any) -> None:
        if self._account is not None:
            c = item.contract
            self._account.on_portfolio(
                item.account, c.conId, c.symbol, c.secType, c.currency, float(item.position),
                _fnum(item.marketPrice), _fnum(item.marketValue), _fnum(item.averageCost),
                _fnum(item.unrealizedPNL), _fnum(item.realizedPNL),
            )  # fmt: skip

    # ------------------------------------------------------------------ after (re)connect

    def subscribe_account_data(self, accounts: Sequence[str], pace: Any = None) -> None:
        """Every (re)connect: account summary, PnL, position PnL (ib/account_feed.py),
        each sent through ``pace(send, label)`` (the hub's upstream budget)."""
        if self.account_feed is not None:
            self.account_feed.subscribe(accounts, pace)

    def verify(self, order_id: int, why: str) -> None:
        """The book doubts its state of ``order_id``: ask the Gateway (open orders,
        completed orders, executions) and reconcile, once for a burst of doubts. Without
        a session nothing is asked now: the reconcile after the reconnect will."""
        self._doubts.setdefault(order_id, why)
        if self._verify_task is None or self._verify_task.done():
            self._verify_task = asyncio.get_running_loop().create_task(
                self._verify(), name="ibhub-order-verify"
            )

    async def _verify(self) -> None:
        while self._doubts:
            await asyncio.sleep(self.verify_delay)
            doubts, self._doubts = self._doubts, {}
            if self._book is None or not self.is_connected():
                log.info("orders %s: not connected; the next reconcile decides",
                         sorted(doubts))  # fmt: skip
                return
            log.info("asking the Gateway about order(s) %s (%s)", sorted(doubts),
                     "; ".join(sorted(set(doubts.values()))))  # fmt: skip
            self.verifications += 1
            try:
                await self.reconcile(fresh=True)
            except (ConnectionError, TimeoutError, OSError) as exc:
                log.warning("asking the Gateway about orders %s failed (%s); the next "
                            "reconcile decides", sorted(doubts), exc)  # fmt: skip
                return
            except Exception:  # a background task: its failure must be seen, not lost
                log.exception("asking the Gateway about orders %s failed", sorted(doubts))
                return

    async def reconcile(
        self, *, completed: bool = True, completed_timeout: float = SNAPSHOT_TIMEOUT,
        fresh: bool = False,
    ) -> ReconcileReport | None:  # fmt: skip
        """Feed the session's state to the book and the account cache (never sends orders).

        Call after every (re)connect (ib_insync's start-up sync has just listed the open
        orders and executions). ``completed``: also ask IB for completed orders (one
        request), which lets the book tell "cancelled while away" from "never sent".
        ``fresh``: ask the Gateway for open orders and executions too, instead of using
        ib_insync's view of them (mid-session, after a doubt).
        """
        async with self._reconcile_lock:
            return await self._reconcile(
                completed=completed, completed_timeout=completed_timeout, fresh=fresh
            )

    async def _ask(self, what: str, request: Any, timeout: float) -> Any:
        try:
            return await asyncio.wait_for(request, timeout)
        except TimeoutError:
            log.warning("no answer to %s within %gs", what, timeout)
            return None

    async def _reconcile(
        self, *, completed: bool, completed_timeout: float, fresh: bool = False
    ) -> ReconcileReport | None:
        ib = self._ib
        report = None
        if self._book is not None:
            # Orders that enter flight from now on were sent after the snapshot below
            # was asked for; it cannot know them, so they are not judged by it.
            in_flight = self._book.watch_in_flight()
            try:
                # Open orders are listed before completed orders (the start-up sync did
                # the same for ``fresh=False``): an order that ends between the two
                # snapshots (a cancel or fill landing meanwhile) is then in the second;
                # asked the other way round it would be in neither and judged lost.
                open_trades = None
                if fresh:
                    open_trades = await self._ask(
                        "reqOpenOrders", ib.reqOpenOrdersAsync(), completed_timeout
                    )
                done_trades = None
                if completed:
                    done_trades = await self._ask(
                        "reqCompletedOrders", ib.reqCompletedOrdersAsync(apiOnly=False),
                        completed_timeout,
                    )  # fmt: skip
                    if done_trades is None:
                        log.warning("reconciling without completed orders (orders the "
                                    "Gateway does not list stay as journaled)")  # fmt: skip
                if fresh:
                    trades = open_trades
                    fills = await self._ask(
                        "reqExecutions", ib.reqExecutionsAsync(), completed_timeout
                    )
                    if trades is None or fills is None:
                        return None  # a partial picture judges nothing
                    trades = [t for t in trades if not t.order.whatIf]
                    # listed open: a status ib_insync invented after an error is not the
                    # Gateway's (TWS follows each openOrder with its orderStatus, which
                    # normally has replaced it already)
                    open_orders = [
                        dataclasses.replace(trade_to_order(t), status=gateway_status(t))
                        for t in trades
                    ]
                    # reqExecutions answers with new Fill objects; the commission reports
                    # that follow update ib_insync's cached ones
                    cached = ib.wrapper.fills
                    reports = [
                        cached[f.execution.execId].commissionReport
                        for f in fills
                        if f.execution.execId in cached
                    ]
                else:
                    trades = ib.openTrades()
                    fills = ib.fills()
                    reports = [f.commissionReport for f in fills]
                    open_orders = [trade_to_order(t) for t in trades]
                report = self._book.updates.reconcile(
                    open_orders=open_orders,
                    executions=[fill_to_execution(f) for f in fills],
                    commissions=[report_to_commission(r) for r in reports if r.execId],
                    completed=(None if done_trades is None
                               else [trade_to_order(t) for t in done_trades]),
                    statuses=[trade_to_status(t) for t in trades if not t.log
                              or not t.log[-1].errorCode],
                    in_flight=in_flight | self._book.queued,
                )
                log.info(
                    "orders reconciled%s: %d seen upstream, %d fills published, %d adopted, "
                    "%d lost, %d corrected", " (asked afresh)" if fresh else "",
                    report.updated, report.fills_published, report.adopted, len(report.lost),
                    len(report.corrected),
                )  # fmt: skip
            finally:
                self._book.unwatch(in_flight)
            if self.cache is not None:
                self.cache.scan()  # the sync re-listed the day's ended orders and fills
        if self._account is not None:
            for v in ib.accountValues():
                self._on_account_value(v)
            for p in ib.positions():
                self._on_position(p)
            for item in ib.portfolio():
                self._on_portfolio(item)
        return report
