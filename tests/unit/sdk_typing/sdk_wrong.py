"""Checked by mypy in tests/unit/test_sdk_typing.py (never run): the mistakes a type
checker must catch. Each line with an "E:" comment must get an error there."""

from __future__ import annotations

from ibhub.client import AsyncHub, Hub


async def wrong_async(hub: AsyncHub) -> None:
    bars = await hub.subscribe("AAPL", kind="bars")
    print((await bars.get()).bid)  # E: a bar has no bid
    await hub.subscribe("AAPL", callback=lambda t: print(t.count))  # E: a tick has no count


def wrong_blocking(hub: Hub) -> None:
    for tick in hub.subscribe("AAPL"):
        print(tick.wap)  # E: a tick has no wap
