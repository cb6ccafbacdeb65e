"""Field lists for the broker's server -> client messages at server version 176.

Pure builders: each returns the list of fields of one message (fields[0] is the message id) and
the session frames it. Layouts follow tws-protocol.md §5.1, §5.3 and §5.6; the clients unpack
several of them exactly (position 16, updatePortfolio 20, execDetails 31, commissionReport 8,
orderStatus 12), so each builder's length is fixed and covered by tests.

Values that are unset go out as '' (safe for every client decoder) except where a decoder runs
int() or needs a number (counts, ids, margin strings of a whatIf reply).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from ibhub.sim.orders import SimExecution, SimOrder
from ibhub.tws.codec import UNSET_DOUBLE

OPEN_ORDER_FIELDS = 128  # without algo parameters (they add 1 + 2n after algoStrategy)
COMPLETED_ORDER_FIELDS = 97


class InstrumentLike(Protocol):
    """What the builders read from `ibhub.sim.contracts.Instrument` or a
    `ibhub.tws.contracts.ContractFields` (read-only, so frozen dataclasses fit)."""

    @property
    def con_id(self) -> int: ...
    @property
    def symbol(self) -> str: ...
    @property
    def sec_type(self) -> str: ...
    @property
    def last_trade_date(self) -> str: ...
    @property
    def strike(self) -> float: ...
    @property
    def right(self) -> str: ...
    @property
    def multiplier(self) -> str: ...
    @property
    def exchange(self) -> str: ...
    @property
    def primary_exchange(self) -> str: ...
    @property
    def currency(self) -> str: ...
    @property
    def local_symbol(self) -> str: ...
    @property
    def trading_class(self) -> str: ...


def _mult(inst: InstrumentLike) -> str:
    m = inst.multiplier
    return "" if m in (None, "", 0, 1, "1") else str(m)


def contract11(inst: InstrumentLike, exchange: str | None = None) -> list[object]:
    """conId, symbol, secType, ltd, strike, right, multiplier, exchange, currency, localSymbol,
    tradingClass: the contract block of position, openOrder and execDetails."""
    return [
        inst.con_id, inst.symbol, inst.sec_type, inst.last_trade_date, float(inst.strike or 0.0),
        inst.right, _mult(inst), exchange if exchange is not None else inst.exchange,
        inst.currency, inst.local_symbol, inst.trading_class,
    ]


def _price(value: float | None) -> object:
    return UNSET_DOUBLE if value is None else value


def _opt(value: float | None) -> object:
    return "" if value is None else value


def ib_time(t: datetime) -> str:
    """Execution / completion time as 'YYYYmmdd HH:MM:SS UTC' (tz-aware for every client)."""
    return t.strftime("%Y%m%d %H:%M:%S") + " UTC"


# ---- orders -------------------------------------------------------------------------------


def order_status(order: SimOrder) -> list[object]:
    """orderStatus (3): 12 fields, no version field at sv >= 136."""
    return [
        3, order.order_id, order.status, order.filled, order.remaining, order.avg_fill_price,
        order.perm_id, order.parent_id, order.last_fill_price, order.client_id, order.why_held,
        0.0,
    ]


def _order_head(order: SimOrder, inst: InstrumentLike, exchange: str) -> list[object]:
    """openOrder fields 2..23 / completedOrder fields 1..22: contract, action .. orderRef."""
    req = order.request
    return [
        *contract11(inst, exchange),
        order.action, order.total_qty, order.order_type,
        _price(order.lmt_price), _price(order.aux_price),
        order.tif, order.oca_group, order.account,
        req.open_close if req else "", req.origin if req else 0, order.order_ref,
    ]


def _algo(order: SimOrder) -> list[object]:
    """algoStrategy, then (only if it is set) the parameter count and tag/value pairs."""
    if not order.algo_strategy:
        return [""]
    return [order.algo_strategy, len(order.algo_params),
            *(x for pair in order.algo_params for x in pair)]


def _algo_extra(order: SimOrder) -> int:
    """Fields `_algo` adds beyond the one algoStrategy slot of the fixed counts."""
    return 1 + 2 * len(order.algo_params) if order.algo_strategy else 0


def _margin_state(order: SimOrder, margins: Sequence[float] | None) -> list[object]:
    """orderState: status, 9 margin strings, commission, min, max, currency, warningText."""
    if margins is None:
        return [order.status, *[""] * 9, "", "", "", "", ""]
    return [order.status, *[f"{m:.2f}" for m in margins[:9]],
            f"{margins[9]:.2f}", f"{margins[9]:.2f}", f"{margins[9]:.2f}", "USD", ""]


def open_order(order: SimOrder, inst: InstrumentLike, exchange: str,
               what_if_margins: Sequence[float] | None = None) -> list[object]:
    """openOrder (5): exactly 128 fields at sv 176 (§5.3).

    `what_if_margins` = (initBefore, maintBefore, ewlBefore, initChange, maintChange, ewlChange,
    initAfter, maintAfter, ewlAfter, commission) turns it into the whatIf reply.
    """
    req = order.request
    fields: list[object] = [
        5, order.order_id, *_order_head(order, inst, exchange),
        order.client_id, order.perm_id, order.outside_rth, req.hidden if req else False,
        0.0, req.good_after_time if req else "", "",                      # 28 discAmt .. 30
        "", "", "", "",                                                   # 31-34 fa*
        "", req.good_till_date if req else "", "", "", "", 0, "", -1, 0,  # 35-43
        "", "", "", "", "",                                               # 44-48
        req.display_size if req else 0, False, False, False, "",          # 49-53
        order.oca_type, False, False, "",                                 # 54-57
        order.parent_id, req.trigger_method if req else 0, "", "", "", "",  # 58-63
        False, "", _opt(order.trail_stop), _opt(order.trailing_percent),  # 64-67
        "", "", "", 0, 0, 0,                                              # 68-73
        "", "", "", "",                                                   # 74-77
        False, "", "", False, 0, *_algo(order),                           # 78-83
        False, what_if_margins is not None,                               # 84-85
        *_margin_state(order, what_if_margins),                           # 86-100
        False, False, 0,                                                  # 101-103
        "", "", "", "", "", "", "", 0, "", "", "", "",                    # 104-115
        False, False, False, "",                                          # 116-119
        "", "", False, "", "", "", "", "",                                # 120-127
    ]
    want = OPEN_ORDER_FIELDS + _algo_extra(order)
    if len(fields) != want:  # a wrong count is silently dropped by the clients
        raise AssertionError(f"openOrder has {len(fields)} fields, must be {want}")
    return fields


def completed_order(order: SimOrder, inst: InstrumentLike, exchange: str) -> list[object]:
    """completedOrder (101) at sv 176, as ib_insync's and ibapi's decoders read it.

    Like openOrder without orderId/clientId/whatIf and with a shorter state; ends with
    completedTime, completedStatus and the five sv>=170 fields.
    """
    req = order.request
    fields: list[object] = [
        101, *_order_head(order, inst, exchange),                         # 1-22
        order.perm_id, order.outside_rth, req.hidden if req else False,   # 23-25
        0.0, req.good_after_time if req else "",                          # 26-27
        "", "", "", "",                                                   # 28-31 fa*
        "", req.good_till_date if req else "", "", "", "", 0, "", -1,     # 32-39
        "", "", "", "", "",                                               # 40-44
        req.display_size if req else 0, False, False, "",                 # 45-48
        order.oca_type, req.trigger_method if req else 0,                 # 49-50
        "", "", "", "",                                                   # 51-54 vol .. dnAux
        False, "", "", "", "",                                            # 55-59
        0, 0, 0,                                                          # 60-62 legs
        "", "", "", "",                                                   # 63-66 scale, hedge
        "", "", False, 0, *_algo(order),                                  # 67-71
        False, order.status, False, False, 0,                             # 72-76
        "", "", "", False, False, "", order.filled, 0,                    # 77-84
        False, "", False, False, 0,                                       # 85-89
        order.completed_time, order.completed_status,                     # 90-91
        "", "", "", "", "",                                               # 92-96
    ]
    want = COMPLETED_ORDER_FIELDS + _algo_extra(order)
    if len(fields) != want:
        raise AssertionError(f"completedOrder has {len(fields)} fields, must be {want}")
    return fields


def exec_details(req_id: int, ex: SimExecution, inst: InstrumentLike,
                 contract_exchange: str) -> list[object]:
    """execDetails (11): exactly 31 fields. req_id is -1 for live fills (§6.7)."""
    return [
        11, req_id, ex.order_id, *contract11(inst, contract_exchange),
        ex.exec_id, ib_time(ex.time), ex.account, ex.exchange, ex.side, ex.shares, ex.price,
        ex.perm_id, ex.client_id, 0, ex.cum_qty, ex.avg_price, ex.order_ref, "", "", "", 0,
    ]


def commission_report(ex: SimExecution) -> list[object]:
    """commissionReport (59): exactly 8 fields; must follow its execDetails."""
    realized = UNSET_DOUBLE if ex.realized_pnl is None else ex.realized_pnl
    return [59, 1, ex.exec_id, ex.commission, "USD", realized, UNSET_DOUBLE, ""]


def open_order_end() -> list[object]:
    return [53, 1]


def completed_orders_end() -> list[object]:
    return [102]


def exec_details_end(req_id: int) -> list[object]:
    return [55, 1, req_id]


# ---- positions and account ---------------------------------------------------------------


def position(account: str, inst: InstrumentLike, qty: float, avg_cost: float) -> list[object]:
    """position (61): exactly 16 fields."""
    return [61, 3, account, *contract11(inst), qty, avg_cost]


def position_end() -> list[object]:
    return [62, 1]


def portfolio(account: str, inst: InstrumentLike, qty: float, market_price: float,
              market_value: float, avg_cost: float, unrealized: float,
              realized: float) -> list[object]:
    """updatePortfolio (7): exactly 20 fields; primaryExchange where position has exchange."""
    return [
        7, 8, inst.con_id, inst.symbol, inst.sec_type, inst.last_trade_date,
        float(inst.strike or 0.0), inst.right, _mult(inst), inst.primary_exchange or inst.exchange,
        inst.currency, inst.local_symbol, inst.trading_class,
        qty, market_price, market_value, avg_cost, unrealized, realized, account,
    ]


def account_value(key: str, value: str, currency: str, account: str) -> list[object]:
    return [6, 2, key, value, currency, account]


def account_time(t: datetime) -> list[object]:
    return [8, 1, t.strftime("%H:%M")]


def account_download_end(account: str) -> list[object]:
    return [54, 1, account]


def account_update_multi(req_id: int, account: str, model_code: str, key: str, value: str,
                         currency: str) -> list[object]:
    return [73, 1, req_id, account, model_code, key, value, currency]


def account_update_multi_end(req_id: int) -> list[object]:
    return [74, 1, req_id]


def account_summary(req_id: int, account: str, tag: str, value: str,
                    currency: str) -> list[object]:
    return [63, 1, req_id, account, tag, value, currency]


def account_summary_end(req_id: int) -> list[object]:
    return [64, 1, req_id]
