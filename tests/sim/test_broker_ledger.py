"""The account book: IB-style average cost, realized P&L, cash and margin."""

from __future__ import annotations

import pytest

from ibhub.sim.ledger import START_CASH, AccountBook


def test_adding_blends_average_cost_including_commission() -> None:
    book = AccountBook("DU1")
    book.apply_fill(1, "STK", 1.0, 100, 10.0, 1.0)
    book.apply_fill(1, "STK", 1.0, 100, 12.0, 1.0)
    h = book.holdings[1]
    assert h.qty == 200 and h.avg_cost == pytest.approx(11.01)
    assert book.cash == pytest.approx(START_CASH - 2202.0)


def test_closing_realizes_net_of_both_commissions() -> None:
    book = AccountBook("DU1")
    book.apply_fill(1, "STK", 1.0, 100, 10.0, 1.0)
    realized = book.apply_fill(1, "STK", 1.0, -100, 11.0, 1.0)
    assert realized == pytest.approx(100.0 - 2.0)
    assert book.holdings[1].qty == 0 and book.cash == pytest.approx(START_CASH + 98.0)
    assert book.values(lambda cid: 11.0)["NetLiquidation"] == pytest.approx(START_CASH + 98.0)


def test_flipping_through_zero_opens_the_rest_at_the_fill_price() -> None:
    book = AccountBook("DU1")
    book.apply_fill(1, "STK", 1.0, 100, 10.0, 1.0)
    realized = book.apply_fill(1, "STK", 1.0, -300, 9.0, 3.0)
    h = book.holdings[1]
    assert h.qty == -200 and h.avg_cost == pytest.approx(9.0 + 0.01)
    assert realized == pytest.approx((9.0 - 10.01) * 100 - 1.0)
    values = book.values(lambda cid: 9.0)
    assert values["GrossPositionValue"] == pytest.approx(1800.0)
    assert values["InitMarginReq"] == pytest.approx(0.30 * 1800.0)  # short stock rate


def test_futures_move_cash_by_gains_only() -> None:
    book = AccountBook("DU1")
    book.apply_fill(7, "FUT", 50.0, 2, 5000.0, 1.70)
    assert book.cash == pytest.approx(START_CASH - 1.70)
    values = book.values(lambda cid: 5001.0)
    assert values["FuturesPNL"] == pytest.approx(100.0)  # 2 x 1.0 x 50
    assert values["NetLiquidation"] == pytest.approx(START_CASH - 1.70 + 100.0)
    assert values["InitMarginReq"] == pytest.approx(0.08 * 2 * 5001.0 * 50)
    book.apply_fill(7, "FUT", 50.0, -2, 5002.0, 1.70)
    assert book.cash == pytest.approx(START_CASH - 3.40 + 200.0)
    assert book.realized_pnl == pytest.approx(200.0 - 3.40)
