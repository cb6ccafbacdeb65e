"""Account cache: change-only events, per-account topics, request answers."""

from __future__ import annotations

import math
from typing import Any

from ibhub.orders.account import AccountBook
from ibhub.protocol import (
    AccountSummaryReply,
    AccountValueEvent,
    AccountValuesReply,
    Event,
    GetAccountSummary,
    GetAccountValues,
    GetPortfolio,
    GetPositions,
    PortfolioReply,
    PositionEvent,
    PositionsReply,
    Reply,
)


def ask(book: AccountBook, req: Any) -> Reply:
    """What the hub's request registry does with an account request (the book's table)."""
    return book.handlers()[type(req)](req)


def make() -> tuple[AccountBook, list[tuple[str, Event]]]:
    events: list[tuple[str, Event]] = []
    return AccountBook(lambda topic, ev: events.append((topic, ev))), events


def test_values_publish_only_changes() -> None:
    book, events = make()
    book.on_account_value("DU1", "NetLiquidation", "1000000.00", "USD")
    book.on_account_value("DU1", "NetLiquidation", "1000000.00", "USD")  # IB re-sends
    book.on_account_value("DU2", "NetLiquidation", "5.00", "USD")
    book.on_account_value("DU1", "NetLiquidation", "999998.99", "USD")
    topics = [t for t, _ in events]
    assert topics == ["account.DU1", "account.DU2", "account.DU1"]
    last = events[-1][1]
    assert isinstance(last, AccountValueEvent) and last.value == "999998.99"
    reply = ask(book, GetAccountValues(id=1, account="DU1"))
    assert isinstance(reply, AccountValuesReply)
    assert [(v.key, v.value) for v in reply.values] == [("NetLiquidation", "999998.99")]
    assert book.accounts == ["DU1", "DU2"]


def test_positions_and_portfolio_merge() -> None:
    book, events = make()
    book.on_position("DU1", 265598, "AAPL", "STK", "USD", 10.0, 190.11)
    book.on_position("DU1", 265598, "AAPL", "STK", "USD", 10.0, 190.11)  # unchanged
    book.on_portfolio("DU1", 265598, "AAPL", "STK", "USD", 10.0, 191.0, 1910.0, 190.11, 8.9, 0.0)
    assert [t for t, _ in events] == ["position.DU1", "position.DU1"]
    first, second = (ev for _, ev in events)
    assert isinstance(first, PositionEvent) and math.isnan(first.market_price)
    assert isinstance(second, PositionEvent) and second.market_value == 1910.0
    pos = ask(book, GetPositions(id=2))
    assert isinstance(pos, PositionsReply) and pos.positions[0].avg_cost == 190.11
    port = ask(book, GetPortfolio(id=3, account="DU1"))
    assert isinstance(port, PortfolioReply) and port.items[0].unrealized_pnl == 8.9
    book.on_position("DU1", 265598, "AAPL", "STK", "USD", 0.0, 0.0)  # flat
    flat = ask(book, GetPositions(id=4))
    assert isinstance(flat, PositionsReply) and flat.positions == []
    assert isinstance(events[-1][1], PositionEvent) and events[-1][1].position == 0.0


def test_summary_falls_back_to_values() -> None:
    book, _ = make()
    book.on_account_value("DU1", "BuyingPower", "4000000", "USD")
    book.on_account_value("DU1", "Cushion", "1", "")
    reply = ask(book, GetAccountSummary(id=5, tags=["BuyingPower"]))
    assert isinstance(reply, AccountSummaryReply)
    assert [(v.key, v.value) for v in reply.values] == [("BuyingPower", "4000000")]
    book.on_summary("DU1", "NetLiquidation", "1000000", "USD")
    reply = ask(book, GetAccountSummary(id=6))
    assert isinstance(reply, AccountSummaryReply)
    assert [v.key for v in reply.values] == ["NetLiquidation"]
