"""Checked by mypy in tests/unit/test_sdk_typing.py (never run): what a type checker
knows about the SDK's subscriptions. Every ``assert_type`` must hold."""

from __future__ import annotations

from typing import assert_type

from ibhub.client import AsyncHub, BlockingSubscription, Hub, Subscription
from ibhub.protocol import Bar, DepthBook, Event, Tick, TickByTick


async def typed_async(hub: AsyncHub, kind: str) -> None:
    ticks = await hub.subscribe("AAPL")
    assert_type(ticks, Subscription[Tick])
    async for tick in ticks:
        assert_type(tick, Tick)
        assert_type(tick.bid, float)
    assert_type(ticks.latest, Tick | None)
    bars = await hub.subscribe("AAPL", kind="bars", queue_size=10)
    assert_type(bars, Subscription[Bar])
    assert_type(await bars.get(timeout=1.0), Bar)
    other = await hub.subscribe(265598, kind=kind)
    assert_type(other, Subscription[Event])
    book = await hub.subscribe("AAPL", kind="depth")
    assert_type(book, Subscription[DepthBook])
    assert_type((await book.get()).bids[0].price, float)
    tbt = await hub.subscribe("AAPL", kind="tbt.BidAsk")
    assert_type(tbt, Subscription[TickByTick])
    await hub.subscribe("EUR", sec_type="CASH", callback=lambda t: print(t.ask))


def typed_blocking(hub: Hub) -> None:
    sub = hub.subscribe("AAPL")
    assert_type(sub, BlockingSubscription[Tick])
    for tick in sub:
        assert_type(tick, Tick)
    assert_type(hub.subscribe("AAPL", kind="bars").get(), Bar)
