"""Front door: unmodified ib_insync scripts connect to the hub's TWS port.

The hub is connected to the simulated Gateway; every script below is plain
ib_insync over TCP, as it would talk to a real Gateway.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

import pytest

from ibhub.hub.server import HubServer
from ibhub.sim import SimGateway
from tests.e2e import frontdoor_support
from tests.e2e.frontdoor_support import ClientFactory, door_of, quiet_ib_insync
from tests.helpers import wait_until
from tests.ibclient import IB, Stock

# fixtures shared by the front-door tests
door_hub = frontdoor_support.door_hub
ib_clients = frontdoor_support.ib_clients

SYMBOLS = ("AAPL", "MSFT", "SPY", "NVDA")


def errors_of(ib: IB) -> list[tuple[int, int, str]]:
    """Collect (reqId, code, message) of every error/notice the client receives."""
    seen: list[tuple[int, int, str]] = []
    ib.errorEvent += lambda req_id, code, msg, _c: seen.append((req_id, code, msg))
    return seen


@pytest.mark.timeout(60)
async def test_forty_scripts_share_one_line_per_instrument(
    ib_clients: ClientFactory, door_hub: HubServer, hub_sim: SimGateway
) -> None:
    quiet_ib_insync()
    started = time.monotonic()
    ibs = await asyncio.gather(*(ib_clients(100 + i, timeout=20) for i in range(40)))
    print(f"40 clients connected in {time.monotonic() - started:.2f}s")
    assert all(ib.isConnected() for ib in ibs)
    assert len(door_of(door_hub).clients) == 40
    # the Gateway sees one API client: the hub
    assert hub_sim.connected_client_ids() == [door_hub.settings.client_id]
    contracts = [Stock(sym, "SMART", "USD") for sym in SYMBOLS]
    await ibs[0].qualifyContractsAsync(*contracts)
    tickers = []
    for n, ib in enumerate(ibs):
        c = contracts[n % len(contracts)]
        tickers.append(ib.reqMktData(c))
    await wait_until(
        lambda: all(t.bid == t.bid and t.bid > 0 for t in tickers), 15.0, "a bid on all 40"
    )
    # ...and keep ticking: every script sees more updates arrive
    counts = [len(t.ticks) for t in tickers]
    updates = [0] * len(tickers)

    def count(n: int) -> Any:
        def on_update(_t: Any) -> None:
            updates[n] += 1
        return on_update

    for n, t in enumerate(tickers):
        t.updateEvent += count(n)
    await wait_until(lambda: all(u >= 2 for u in updates), 15.0, "updates on all 40")
    assert counts  # (ib_insync keeps no tick history for plain reqMktData)
    per_con = collections.Counter(s.con_id for s in hub_sim.market_data_subscriptions())
    assert sorted(per_con.values()) == [1] * len(SYMBOLS), per_con
    assert {s.client_id for s in hub_sim.market_data_subscriptions()} == {
        door_hub.settings.client_id
    }
    # cancelling in 39 scripts keeps the line; the last one releases it upstream
    for ib, t in zip(ibs[1:], tickers[1:], strict=True):
        ib.cancelMktData(t.contract)
    await wait_until(
        lambda: len(hub_sim.market_data_subscriptions()) == 1, 5.0, "39 cancels -> 1 line"
    )
    ibs[0].cancelMktData(tickers[0].contract)
    await wait_until(lambda: not hub_sim.market_data_subscriptions(), 5.0, "no line left")


async def test_duplicate_client_id_gets_326(ib_clients: ClientFactory) -> None:
    quiet_ib_insync()
    first = await ib_clients(5)
    second = IB()
    seen = errors_of(second)
    port = first.client.port
    started = time.monotonic()
    with pytest.raises((TimeoutError, ConnectionError, asyncio.TimeoutError)):
        await second.connectAsync("127.0.0.1", port, clientId=5, timeout=1.5)
    second.disconnect()
    assert time.monotonic() - started < 5
    assert first.isConnected()
    assert any(code == 326 for _, code, _ in seen), seen
    assert not second.isConnected()
    # the first keeps working
    assert (await first.reqCurrentTimeAsync()).year >= 2024
    # and once it leaves, the id is free again
    first.disconnect()
    again = await ib_clients(5)
    assert again.isConnected()


async def test_duplicate_id_326_on_the_wire(door_hub: HubServer) -> None:
    """The exact answer a Gateway gives: error -1/326, then the socket closes."""
    port = door_of(door_hub).tws_port
    r1, w1 = await asyncio.open_connection("127.0.0.1", port)
    r2, w2 = await asyncio.open_connection("127.0.0.1", port)
    try:
        for w in (w1, w2):
            w.write(b"API\0" + _framed(["v157..176"]))
        for r in (r1, r2):
            assert (await _read(r))[0] == "176"
        w1.write(_framed(["71", "2", "9", ""]))
        first = [await _read(r1), await _read(r1)]
        assert first[0][:2] == ["9", "1"] and first[1][:2] == ["15", "1"]
        w2.write(_framed(["71", "2", "9", ""]))
        err = await _read(r2)
        assert err[:4] == ["4", "2", "-1", "326"] and len(err) == 6
        async with asyncio.timeout(3):
            assert await r2.read() == b""  # closed by the hub
    finally:
        for w in (w1, w2):
            w.close()


async def test_connect_time_answers_and_unsupported_request(ib_clients: ClientFactory) -> None:
    quiet_ib_insync()
    started = time.monotonic()
    ib = await ib_clients(11, timeout=3)
    # every connect-time request (positions, open/completed orders, account updates,
    # executions) was answered: no request timed out
    assert time.monotonic() - started < 2.0
    assert ib.wrapper.accounts  # managedAccounts from the hub's upstream accounts
    seen = errors_of(ib)
    # Wall Street Horizon data is not served: an error on that request id, not a hang
    async with asyncio.timeout(5):
        with pytest.raises(Exception) as info:  # ib_insync raises RequestError or returns []
            ib.RaiseRequestErrors = True
            await ib.getWshMetaDataAsync()
    assert "not supported through ibhub" in str(info.value)
    assert any("reqWshMetaData is not supported through ibhub" in m
               for _, _, m in seen)


def _framed(fields: list[str]) -> bytes:
    payload = "".join(f + "\0" for f in fields).encode()
    return len(payload).to_bytes(4, "big") + payload


async def _read(r: asyncio.StreamReader) -> list[str]:
    async with asyncio.timeout(5):
        size = int.from_bytes(await r.readexactly(4), "big")
        data = await r.readexactly(size)
    return data.decode().split("\0")[:-1]
