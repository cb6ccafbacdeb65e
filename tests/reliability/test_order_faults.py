"""Orders across hub kills and upstream outages: none lost, none twice."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ibhub.orders.service import OrderService
from tests.reliability import order_faults as of
from tests.reliability.harness import rig


async def test_hub_killed_and_restarted_repeatedly() -> None:
    fig = await of.hub_killed_cycles(2, per_script=30)
    fig.save()
    print(fig.row())
    assert fig.recoveries == 2 and fig.lost == 0 and fig.duplicated == 0
    assert fig.notes["retries_answered_duplicate"] == fig.notes["acknowledged"]


async def test_orders_during_outage_refused_then_placed_once() -> None:
    async with rig() as r:
        fig = await of.outage_orders(r, 2, per_round=5)
    fig.save()
    print(fig.row())
    assert fig.notes["refused_upstream_down"] == 10
    assert fig.notes["placed_on_retry"] == 10
    assert fig.lost == 0 and fig.duplicated == 0


async def test_gateway_drop_with_orders_in_flight() -> None:
    async with rig() as r:
        fig = await of.drop_mid_burst(r, 60)
    fig.save()
    print(fig.row())
    assert fig.lost == 0 and fig.duplicated == 0
    assert fig.notes["acknowledged"] + fig.notes["refused"] == 60
    assert fig.notes["contradicted"] == 0  # found: queued orders were "rejected", then sent


async def test_orders_placed_through_gateway_restarts() -> None:
    async with rig() as r:
        fig = await of.orders_through_restarts(r, 10)
    fig.save()
    print(fig.row())
    assert fig.recoveries == 10 and fig.lost == 0 and fig.duplicated == 0
    # found: orders placed while a reconnect reconciled were marked "not sent", then sent
    assert fig.notes["contradicted"] == 0


async def test_no_request_is_served_before_the_order_service_is_attached(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Found by bench/soak.py: traders retrying across a hub restart got bad_request
    # "request type 'place_order' is not served by this hub" while the order service
    # was still starting, because the request loop already ran.
    serving_during_start: list[bool] = []
    original = OrderService.start

    async def spy(self: OrderService, *args: Any, **kwargs: Any) -> Any:
        serving_during_start.append(
            any(t.get_name() == "ibhub-rpc" for t in asyncio.all_tasks()))
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(OrderService, "start", spy)
    async with rig(orders=True) as r:
        assert r.hub.orders is not None
    assert serving_during_start == [False]
