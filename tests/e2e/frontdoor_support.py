"""Support for the front-door end-to-end tests (tests/e2e/test_frontdoor_*.py).

A hub on the simulated Gateway with its TWS port open (and, for trading tests, the
order service attached), and unmodified ib_insync clients connected to that port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from ibhub.frontdoor import FrontDoor
from ibhub.hub.server import HubServer, attach_orders
from tests.e2e.conftest import HubFactory
from tests.helpers import wait_until
from tests.ibclient import IB, NAME, Stock

ClientFactory = Callable[..., Awaitable[IB]]


def door_of(hub: HubServer) -> FrontDoor:
    doors = [s for s in hub.services if isinstance(s, FrontDoor)]
    assert doors, "the hub has no front door (tws_port not set?)"
    return doors[0]


@pytest.fixture
async def door_hub(make_hub: HubFactory) -> HubServer:
    """A hub with its TWS front door on a free port and the order service attached."""
    hub = await make_hub(tws_port=0)
    if getattr(hub, "orders", None) is None:
        svc = await attach_orders(hub, journal_sync="NORMAL")
        hub.orders = svc
    await wait_until(hub.orders.reconciled.is_set, 5.0, "orders reconciled")
    return hub


@pytest.fixture
async def ib_clients(door_hub: HubServer) -> AsyncIterator[ClientFactory]:
    """``await ib_clients(client_id)``: an ib_insync IB connected to the hub's TWS port."""
    made: list[IB] = []
    port = door_of(door_hub).tws_port

    async def connect(client_id: int, timeout: float = 5.0, **kw: Any) -> IB:
        ib = IB()
        made.append(ib)
        await ib.connectAsync("127.0.0.1", port, clientId=client_id, timeout=timeout, **kw)
        return ib

    yield connect
    for ib in made:
        ib.disconnect()
    # let the hub see the closes before it is stopped
    with contextlib.suppress(AssertionError):
        await wait_until(lambda: not door_of(door_hub).sessions, 2.0, "front door sessions closed")


async def priced_aapl(ib: IB) -> Stock:
    """AAPL qualified through the front door, with a live bid (the hub's price band
    needs a price before it accepts an order)."""
    c = Stock("AAPL", "SMART", "USD")
    await ib.qualifyContractsAsync(c)
    ib.reqMktData(c)
    await wait_until(lambda: ib.ticker(c) is not None and ib.ticker(c).bid > 0, 5.0, "AAPL bid")
    return c


def quiet_ib_insync() -> None:
    """The client library logs every warning at INFO/ERROR; keep test output readable."""
    logging.getLogger(NAME).setLevel(logging.CRITICAL)


async def settle(seconds: float) -> None:
    """Not synchronisation: lets a stream run for a measured interval (benchmarks)."""
    await asyncio.sleep(seconds)
