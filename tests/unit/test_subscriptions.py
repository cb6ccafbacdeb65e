"""SubscriptionRegistry: ref counts and the line budget."""

from __future__ import annotations

import pytest

from ibhub.hub.subscriptions import LineLimit, NotSubscribed, SubscriptionRegistry
from ibhub.protocol import ContractInfo


def info(con_id: int, symbol: str) -> ContractInfo:
    return ContractInfo(con_id=con_id, symbol=symbol, sec_type="STK", exchange="SMART",
                        primary_exchange="NASDAQ", currency="USD", local_symbol=symbol,
                        trading_class="NMS", expiry="", strike=0.0, right="", multiplier="",
                        min_tick=0.01, long_name=symbol)


AAPL, MSFT, IBM = info(1, "AAPL"), info(2, "MSFT"), info(3, "IBM")


def test_one_subscription_per_instrument_and_kind() -> None:
    r = SubscriptionRegistry(lines_max=10)
    s1, created1 = r.add("a", AAPL, "ticks", "tick.AAPL", object())
    s2, created2 = r.add("b", AAPL, "ticks", "ignored", object())
    assert s1 is s2 and (created1, created2) == (True, False)
    assert s1.leases == {"a", "b"} and s1.topic == "tick.AAPL"
    s3, created3 = r.add("a", AAPL, "bars", "bar.AAPL", object())
    assert created3 and s3 is not s1
    assert r.lines_used == 2
    # Adding the same lease twice is idempotent.
    r.add("a", AAPL, "ticks", "tick.AAPL", object())
    assert s1.leases == {"a", "b"}


def test_last_unsubscribe_empties_and_frees_the_line() -> None:
    r = SubscriptionRegistry(lines_max=10)
    r.add("a", AAPL, "ticks", "tick.AAPL", None)
    r.add("b", AAPL, "ticks", "tick.AAPL", None)
    sub, empty = r.remove("a", "tick.AAPL")
    assert not empty and sub.leases == {"b"} and r.lines_used == 1
    with pytest.raises(NotSubscribed, match="lease a is not subscribed"):
        r.remove("a", "tick.AAPL")
    sub, empty = r.remove("b", "tick.AAPL")
    assert empty and r.lines_used == 0 and r.by_topic("tick.AAPL") is None
    with pytest.raises(NotSubscribed):
        r.remove("b", "tick.NOPE")


def test_release_lease_returns_emptied_subscriptions() -> None:
    r = SubscriptionRegistry(lines_max=10)
    r.add("a", AAPL, "ticks", "tick.AAPL", None)
    r.add("a", MSFT, "ticks", "tick.MSFT", None)
    r.add("b", MSFT, "ticks", "tick.MSFT", None)
    emptied = r.release_lease("a")
    assert [s.topic for s in emptied] == ["tick.AAPL"]
    sub = r.get(2, "ticks")
    assert sub is not None and sub.leases == {"b"}
    assert r.release_lease("nobody") == []


def test_line_budget() -> None:
    r = SubscriptionRegistry(lines_max=2)
    r.add("a", AAPL, "ticks", "tick.AAPL", None)
    r.add("a", MSFT, "ticks", "tick.MSFT", None)
    with pytest.raises(LineLimit, match="2 of 2 lines"):
        r.add("a", IBM, "ticks", "tick.IBM", None)
    r.check_line_available(1, "ticks")  # joining a held line needs no new line
    r.add("b", AAPL, "ticks", "tick.AAPL", None)
    r.remove("a", "tick.MSFT")
    r.add("a", IBM, "ticks", "tick.IBM", None)
    assert r.lines_used == 2


def test_unknown_kind_refused() -> None:
    with pytest.raises(ValueError, match="unknown subscription kind"):
        SubscriptionRegistry(1).add("a", AAPL, "options", "x", None)


def test_depth_budget_is_its_own_and_named() -> None:
    depth = SubscriptionRegistry(1, budget="market-depth", setting="depth_max")
    depth.add("a", AAPL, "depth", "depth.AAPL", None)
    with pytest.raises(LineLimit, match=r"market-depth limit reached: 1 of 1 .* depth_max"):
        depth.add("a", IBM, "depth", "depth.IBM", None)
    sub, created = depth.add("b", AAPL, "depth", "depth.AAPL", None)
    assert not created and sub.leases == {"a", "b"} and depth.lines_used == 1
