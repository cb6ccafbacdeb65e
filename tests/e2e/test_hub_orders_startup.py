"""A hub started with its order service (the `ibhub run` default) is ready to trade at once.

Regression: the service's first reconciliation and the one triggered by the state change
overlapped; ib_insync keys reqCompletedOrders by name, so the first request's future was
orphaned and reconciliation waited out its 10 s timeout before the hub could trade.
"""

from __future__ import annotations

import asyncio
import time

from ibhub.hub.server import HubServer
from tests.e2e.conftest import HubFactory
from tests.helpers import wait_until


async def test_order_service_reconciles_promptly_at_start_up(make_hub: HubFactory) -> None:
    started = time.monotonic()
    hub: HubServer = await make_hub(orders=True)
    assert hub.orders is not None
    await wait_until(hub.orders.reconciled.is_set, 5.0, "orders reconciled")
    assert time.monotonic() - started < 5.0
    assert hub.orders.status()["trading"] == "allowed"


async def test_overlapping_reconciliations_both_finish(make_hub: HubFactory) -> None:
    hub: HubServer = await make_hub(orders=True)
    await wait_until(hub.orders.reconciled.is_set, 5.0, "orders reconciled")
    gateway = hub.orders.gateway
    started = time.monotonic()
    async with asyncio.timeout(5.0):
        await asyncio.gather(gateway.reconcile(), gateway.reconcile())
    assert time.monotonic() - started < 5.0
