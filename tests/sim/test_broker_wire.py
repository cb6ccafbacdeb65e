"""Wire-level checks of the broker without a server: the placeOrder walk against the bytes
ib_insync really sends, and every message builder against ib_insync's own decoder.

These catch an off-by-one in a field list, which the clients would otherwise drop silently.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from ibhub.sim import broker_messages as msg
from ibhub.sim.codec import fmt
from ibhub.sim.orders import (
    OrderParseError,
    SimExecution,
    SimOrder,
    commission_for,
    fill_price,
    parse_place_order,
)
from tests.ibclient import (
    NAME,
    Bag,
    ComboLeg,
    Contract,
    Decoder,
    DeltaNeutralContract,
    LimitOrder,
    MarketOrder,
    Order,
    PriceCondition,
    Stock,
    StopLimitOrder,
    TagValue,
    TimeCondition,
)
from tests.sim.broker_support import place_order_fields


def _wire(contract: Contract, order: Order, order_id: int = 7) -> list[str]:
    return place_order_fields(contract, order, order_id)


def test_walk_reads_a_plain_limit_order() -> None:
    order = LimitOrder("BUY", 5, 190.25, tif="GTC", orderRef="r1", account="DU1")
    req = parse_place_order(_wire(Stock("AAPL", "SMART", "USD"), order, 11))
    assert (req.order_id, req.action, req.total_qty, req.order_type) == (11, "BUY", 5.0, "LMT")
    assert (req.lmt_price, req.aux_price, req.tif, req.account) == (190.25, None, "GTC", "DU1")
    assert req.order_ref == "r1" and req.transmit and not req.what_if
    assert req.c12[1:3] == ("AAPL", "STK") and req.exchange == "SMART"


def test_walk_finds_what_if_behind_every_variable_block() -> None:
    """Algo params, conditions, hedge param, delta-neutral order and contract all shift whatIf."""
    contract = Stock("MSFT", "SMART", "USD")
    contract.deltaNeutralContract = DeltaNeutralContract(1, 0.5, 10.0)
    order = StopLimitOrder("SELL", 3, 99.5, 100.0, whatIf=True, parentId=4, transmit=False,
                           ocaGroup="g", ocaType=1, outsideRth=True)
    order.algoStrategy = "Adaptive"
    order.algoParams = [TagValue("adaptivePriority", "Normal")]
    order.hedgeType = "D"
    order.hedgeParam = "0.5"
    order.deltaNeutralOrderType = "LMT"
    order.scalePriceIncrement = 0.05
    order.conditions = [PriceCondition(price=101.0, conId=272093, exch="SMART"),
                        TimeCondition(time="20300101 10:00:00 UTC")]
    req = parse_place_order(_wire(contract, order))
    assert req.what_if and not req.transmit
    assert (req.order_type, req.lmt_price, req.aux_price) == ("STP LMT", 99.5, 100.0)
    assert (req.parent_id, req.oca_group, req.oca_type, req.outside_rth) == (4, "g", 1, True)
    assert req.algo_strategy == "Adaptive"


def test_walk_reads_trailing_fields() -> None:
    order = Order(action="SELL", totalQuantity=2, orderType="TRAIL", trailingPercent=1.5,
                  trailStopPrice=180.0)
    req = parse_place_order(_wire(Stock("AAPL", "SMART", "USD"), order))
    assert (req.order_type, req.trailing_percent, req.trail_stop_price) == ("TRAIL", 1.5, 180.0)
    assert req.aux_price is None and not req.what_if


def test_walk_handles_combo_legs() -> None:
    bag = Bag(symbol="SPY", exchange="SMART", currency="USD",
              comboLegs=[ComboLeg(conId=1, ratio=1, action="BUY", exchange="SMART"),
                         ComboLeg(conId=2, ratio=1, action="SELL", exchange="SMART")])
    order = MarketOrder("BUY", 1, whatIf=True)
    req = parse_place_order(_wire(bag, order))
    assert req.what_if and req.c12[2] == "BAG"


def test_walk_rejects_truncated_messages() -> None:
    fields = _wire(Stock("AAPL", "SMART", "USD"), LimitOrder("BUY", 1, 1.0))
    for cut in (10, 40, 90, len(fields) - 10):
        with pytest.raises(OrderParseError):
            parse_place_order(fields[:cut])


@dataclass(frozen=True)
class _Inst:
    con_id: int = 265598
    symbol: str = "AAPL"
    sec_type: str = "STK"
    last_trade_date: str = ""
    strike: float = 0.0
    right: str = ""
    multiplier: str = ""
    exchange: str = "SMART"
    primary_exchange: str = "NASDAQ"
    currency: str = "USD"
    local_symbol: str = "AAPL"
    trading_class: str = "NMS"


class _Recorder:
    """A stand-in wrapper that records every callback the decoder makes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[object, ...]]] = []
        self.ib = type("IBStub", (), {"TimezoneTWS": None})()
        self.defaultTimezone = UTC  # ib_async's decoder converts execution times to it

    def __getattr__(self, name: str):
        def record(*args: object) -> None:
            self.calls.append((name, args))
        return record


def _decode(fields: list[object], caplog: pytest.LogCaptureFixture) -> tuple[str, tuple]:
    rec = _Recorder()
    dec = Decoder(rec, 176)
    with caplog.at_level(logging.ERROR, logger=NAME):
        dec.interpret([fmt(f) for f in fields])
    assert not caplog.records, caplog.text
    assert len(rec.calls) == 1, rec.calls
    return rec.calls[0]


def _order(**kw: object) -> SimOrder:
    base: dict[str, object] = dict(
        order_id=12, client_id=3, perm_id=1000007, con_id=265598, symbol="AAPL", action="BUY",
        total_qty=100.0, order_type="LMT", lmt_price=190.5, aux_price=None, tif="DAY",
        status="Submitted", order_ref="ref", account="DU1234567", parent_id=0)
    base.update(kw)
    return SimOrder(**base)  # type: ignore[arg-type]


def test_open_order_decodes_with_echoed_ids(caplog: pytest.LogCaptureFixture) -> None:
    fields = msg.open_order(_order(), _Inst(), "SMART")
    assert len(fields) == 128
    name, (order_id, contract, order, state) = _decode(fields, caplog)
    assert name == "openOrder" and order_id == 12
    assert (order.clientId, order.permId, order.orderId) == (3, 1000007, 12)
    assert (order.lmtPrice, order.totalQuantity, order.orderRef) == (190.5, 100.0, "ref")
    assert state.status == "Submitted" and not order.whatIf
    assert (contract.conId, contract.symbol, contract.exchange) == (265598, "AAPL", "SMART")


def test_what_if_open_order_carries_numeric_margins(caplog: pytest.LogCaptureFixture) -> None:
    margins = (0.0, 0.0, 1e6, 4762.5, 4762.5, -1.0, 4762.5, 4762.5, 999999.0, 1.0)
    _name, (_, _, order, state) = _decode(msg.open_order(_order(), _Inst(), "SMART", margins),
                                         caplog)
    assert order.whatIf and float(state.initMarginChange) == 4762.5
    assert state.commission == 1.0 and state.commissionCurrency == "USD"


def test_completed_order_decodes(caplog: pytest.LogCaptureFixture) -> None:
    o = _order(status="Filled", filled=100.0, completed_time="20240102 10:00:00 UTC",
               completed_status="Filled")
    name, (contract, order, state) = _decode(msg.completed_order(o, _Inst(), "SMART"), caplog)
    assert name == "completedOrder"
    assert (state.status, state.completedStatus, order.permId) == ("Filled", "Filled", 1000007)
    assert order.filledQuantity == 100.0 and contract.conId == 265598


def test_order_status_exec_details_commission_decode(caplog: pytest.LogCaptureFixture) -> None:
    o = _order(status="Filled", filled=100.0, avg_fill_price=190.5, last_fill_price=190.5)
    name, args = _decode(msg.order_status(o), caplog)
    assert name == "orderStatus" and args[:3] == (12, "Filled", 100.0) and args[8] == 3
    ex = SimExecution("0001.00000001.01.01", 12, 3, 1000007, 265598, "DU1234567", "BOT", 100.0,
                      190.5, datetime(2024, 1, 2, 15, 0, tzinfo=UTC), 100.0, 190.5, "ref", 1.0,
                      None, "NASDAQ")
    fields = msg.exec_details(-1, ex, _Inst(), "SMART")
    assert len(fields) == 31
    name, (req_id, _contract, execution) = _decode(fields, caplog)
    assert name == "execDetails" and req_id == -1
    assert (execution.clientId, execution.orderId, execution.permId) == (3, 12, 1000007)
    assert execution.time == datetime(2024, 1, 2, 15, 0, tzinfo=UTC)
    assert len(msg.commission_report(ex)) == 8
    name, (report,) = _decode(msg.commission_report(ex), caplog)
    assert name == "commissionReport" and report.commission == 1.0


def test_position_and_portfolio_decode(caplog: pytest.LogCaptureFixture) -> None:
    fields = msg.position("DU1", _Inst(), 100.0, 190.51)
    assert len(fields) == 16
    name, args = _decode(fields, caplog)
    assert name == "position" and args[0] == "DU1" and args[2:] == (100.0, 190.51)
    fields = msg.portfolio("DU1", _Inst(), 100.0, 191.0, 19100.0, 190.51, 49.0, 0.0)
    assert len(fields) == 20
    name, args = _decode(fields, caplog)
    assert name == "updatePortfolio" and args[1:] == (100.0, 191.0, 19100.0, 190.51, 49.0, 0.0,
                                                      "DU1")


def test_fill_rules() -> None:
    buy_lmt = _order(lmt_price=100.0)
    assert fill_price(buy_lmt, 100.1, 100.2, 100.1, arriving=True) is None
    assert fill_price(buy_lmt, 99.8, 99.9, 99.9, arriving=True) == 99.9     # marketable: touch
    assert fill_price(buy_lmt, 99.8, 99.9, 99.9, arriving=False) == 100.0   # resting: its limit
    sell_stop = _order(action="SELL", order_type="STP", lmt_price=None, aux_price=95.0)
    assert fill_price(sell_stop, 95.5, 95.6, 95.5, arriving=False) is None
    assert fill_price(sell_stop, 94.9, 95.0, 94.95, arriving=False) == 94.9
    mkt = _order(order_type="MKT", lmt_price=None)
    assert fill_price(mkt, 10.0, 10.1, 10.05, arriving=True) == 10.1


def test_commission_model() -> None:
    assert commission_for("STK", 100, 190.0, 1.0) == 1.0          # minimum
    assert commission_for("STK", 1000, 190.0, 1.0) == 5.0         # per share
    assert commission_for("STK", 1, 5.0, 1.0) == 0.05             # 1% cap beats the minimum
    assert commission_for("FUT", 2, 5000.0, 50.0) == 1.7
    assert commission_for("OPT", 1, 2.0, 100.0) == 1.0


def test_resting_book_hands_out_orders_only_when_a_level_is_reached() -> None:
    from ibhub.sim.orders import RestingBook

    book = RestingBook()
    buy = _order(perm_id=1, lmt_price=100.0)
    stop = _order(perm_id=2, action="SELL", order_type="STP", lmt_price=None, aux_price=95.0)
    book.add(buy)
    book.add(stop)
    assert book.candidates(100.5, 100.6, 100.55) == []
    assert book.candidates(99.9, 100.0, 99.95) == [buy, stop]      # ask reached the limit
    assert book.candidates(95.5, 95.6, 95.0) == [buy, stop]        # last reached the stop
    book.discard(1)
    buy.lmt_price = 101.0
    assert book.candidates(100.5, 100.6, 100.55) == []              # gone
    book.add(_order(perm_id=3, order_type="TRAIL", action="SELL", lmt_price=None, aux_price=1))
    assert len(book.candidates(100.5, 100.6, 100.55)) == 2          # trails move every step
