"""Request ids across a Gateway restart: the hub's ids upstream never collide.

ib_insync restarts its request-id counter at the new session's nextValidId; the
front door's pass-through remembered ids it had retired in the session before.
Without ids kept unique across sessions, replies to the hub's own new requests
that reuse such an id were swallowed as "late replies": a contract lookup timed
out and an order the Gateway refused stayed PendingSubmit for ever.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ibhub.hub.server import HubServer
from ibhub.protocol import (
    ContractDetailsReply,
    ContractSpec,
    Error,
    ErrorCode,
    GetContractDetails,
)
from ibhub.sim import SimConfig, SimGateway
from tests.e2e import frontdoor_support
from tests.e2e.conftest import SEED
from tests.e2e.frontdoor_support import ClientFactory, door_of, quiet_ib_insync
from tests.helpers import wait_until
from tests.ibclient import NAME, LimitOrder, Stock

door_hub = frontdoor_support.door_hub
ib_clients = frontdoor_support.ib_clients

SIM_MAX_QTY = 50  # the simulated Gateway refuses (201) larger orders; the hub allows them

STOCKS = (
    "MSFT",
    "TSLA",
    "NVDA",
    "AMZN",
    "GOOGL",
    "META",
    "AMD",
    "NFLX",
    "JPM",
    "XOM",
    "BAC",
    "INTC",
    "KO",
    "PEP",
    "WMT",
    "DIS",
)


@pytest.fixture
async def hub_sim() -> AsyncIterator[SimGateway]:
    """The shared simulator, but one that refuses orders above SIM_MAX_QTY."""
    print(f"sim seed {SEED}")
    config = SimConfig(
        host="127.0.0.1", port=0, seed=SEED, tick_rate=40.0, max_order_qty=SIM_MAX_QTY
    )
    async with SimGateway(config) as gw:
        yield gw


async def _restart(door_hub: HubServer, hub_sim: SimGateway) -> None:
    up = door_hub.upstream
    assert up is not None
    count = up.reconnect_count
    await hub_sim.restart(0.3)
    await wait_until(lambda: up.reconnect_count > count and up.connected, 10.0, "hub back")


async def test_frontdoor_after_gateway_restart(
    ib_clients: ClientFactory, door_hub: HubServer, hub_sim: SimGateway
) -> None:
    quiet_ib_insync()
    ib = await ib_clients(91)
    # Pass-through requests before the restart: each takes (and retires) one hub id.
    for sym in STOCKS:
        assert await ib.reqContractDetailsAsync(Stock(sym, "SMART", "USD"))
    await _restart(door_hub, hub_sim)

    # A contract never looked up before, qualified and traded through the front door.
    c = Stock("IBM", "SMART", "USD")
    assert await ib.qualifyContractsAsync(c) == [c]
    errors: list[tuple[int, int]] = []
    ib.errorEvent += lambda rid, code, _msg, _c: errors.append((rid, code))
    started = time.monotonic()
    trade = ib.placeOrder(c, LimitOrder("BUY", SIM_MAX_QTY * 4, 150.0))
    await wait_until(trade.isDone, 4.0, "the Gateway's refusal reaches the script")
    assert (trade.order.orderId, 201) in errors, errors
    assert trade.orderStatus.status in ("Cancelled", "Inactive")
    assert time.monotonic() - started < 4.0
    # and a market-data request on another new contract is served (hub-side lookup)
    t = Stock("CSCO", "SMART", "USD")
    if NAME == "ib_async":  # it cannot hash a contract without its conId
        await ib.qualifyContractsAsync(t)
    ib.reqMktData(t)
    await wait_until(
        lambda: ib.ticker(t) is not None and ib.ticker(t).bid > 0,
        4.0,
        "CSCO quotes after the restart",
    )
    assert not [e for e in errors if e[1] not in (201,) and e[1] < 2100], errors


async def test_sdk_contract_details_after_gateway_restart(
    ib_clients: ClientFactory, door_hub: HubServer, hub_sim: SimGateway, clients
) -> None:
    quiet_ib_insync()
    ib = await ib_clients(92)
    for sym in STOCKS:
        assert await ib.reqContractDetailsAsync(Stock(sym, "SMART", "USD"))
    up = door_hub.upstream
    assert up is not None and up.ib is not None
    used = up.req_id_floor  # every id taken so far is below this
    assert used > len(STOCKS)
    await _restart(door_hub, hub_sim)
    assert up.ib.client.getReqId() >= used  # the new session goes on above them
    rpc = clients(door_hub.rpc_endpoint)
    await rpc.hello("after-restart")
    for sym in ("IBM", "V", "CSCO"):
        reply = await rpc.request(
            GetContractDetails(id=rpc.next_id(), contract=ContractSpec(symbol=sym)), timeout=4.0
        )
        assert isinstance(reply, ContractDetailsReply), reply
        assert reply.contracts[0].symbol == sym
    assert door_of(door_hub).passthrough.routes == {}


async def test_requests_in_flight_at_a_restart_fail_at_once(
    ib_clients: ClientFactory, door_hub: HubServer, hub_sim: SimGateway, clients
) -> None:
    """A request whose session ends is answered at once, not after request_timeout."""
    quiet_ib_insync()
    asked = asyncio.Event()
    answer = hub_sim.handlers[9]

    def never_for_ibm(s: Any, f: list[str]) -> None:
        if "IBM" in f:
            asked.set()  # and no answer: the Gateway goes away first
            return
        answer(s, f)

    hub_sim.handlers[9] = never_for_ibm
    ib = await ib_clients(93)
    codes: list[int] = []
    ib.errorEvent += lambda _rid, code, _msg, _c: codes.append(code)
    rpc = clients(door_hub.rpc_endpoint)
    await rpc.hello("in-flight")
    sdk = asyncio.ensure_future(
        rpc.request(
            GetContractDetails(id=rpc.next_id(), contract=ContractSpec(symbol="IBM")),
            timeout=10.0,
        )
    )
    script = asyncio.ensure_future(ib.reqContractDetailsAsync(Stock("IBM", "SMART", "USD")))
    await wait_until(asked.is_set, 5.0, "the lookups reached the Gateway")
    started = time.monotonic()
    await hub_sim.restart(0.3)
    async with asyncio.timeout(3.0):
        reply, details = await asyncio.gather(sdk, script)
    assert time.monotonic() - started < 3.0
    assert isinstance(reply, Error) and reply.code == ErrorCode.UPSTREAM_DOWN, reply
    assert "session ended" in reply.message
    assert details == [] and 504 in codes
