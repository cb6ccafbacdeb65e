"""Tick-by-tick end to end (issue 15): an SDK subscriber and two unmodified TWS scripts
on one instrument and type share ONE upstream reqTickByTickData; typed TickByTick events
in the SDK; the scripts get the Gateway's ticks on their own request ids; releases
cancel upstream."""

from __future__ import annotations

import math
from typing import Any

import pytest

from ibhub.client import AsyncHub
from ibhub.hub.server import HubServer
from ibhub.protocol import TickByTick
from ibhub.sim import SimGateway
from tests.e2e import frontdoor_support
from tests.e2e.frontdoor_support import ClientFactory, quiet_ib_insync
from tests.helpers import wait_until
from tests.ibclient import Stock

pytestmark = pytest.mark.timeout(60)

door_hub = frontdoor_support.door_hub
ib_clients = frontdoor_support.ib_clients


def tbt_lines(sim: SimGateway) -> list[tuple[int, str]]:
    return [(s.client_id, s.symbol) for s in sim.market_data_subscriptions() if s.kind == "tbt"]


async def test_sdk_and_scripts_share_one_tick_by_tick_stream(
    ib_clients: ClientFactory, door_hub: HubServer, hub_sim: SimGateway,
) -> None:
    quiet_ib_insync()
    async with AsyncHub(pub=door_hub.pub_endpoint, rpc=door_hub.rpc_endpoint, name="tbt",
                        request_timeout=5.0) as sdk:
        sub = await sdk.subscribe("MSFT", kind="tbt.BidAsk")
        assert sub.topic == "tbt.bidask.MSFT"
        first = await sub.get(5.0)
        assert isinstance(first, TickByTick) and first.kind == "BidAsk"
        assert first.symbol == "MSFT" and 0 < first.bid < first.ask
        assert first.bid_size > 0 and math.isnan(first.price) and first.time > 0
        scripts = [await ib_clients(73), await ib_clients(74)]
        c = Stock("MSFT", "SMART", "USD")
        await scripts[0].qualifyContractsAsync(c)
        tickers = [ib.reqTickByTickData(c, "BidAsk") for ib in scripts]
        got: list[list[Any]] = [[], []]
        for n, t in enumerate(tickers):  # the library keeps only the last update's ticks
            t.updateEvent += lambda t, n=n: got[n].extend(t.tickByTicks)
        await wait_until(lambda: all(len(g) >= 3 for g in got), 5.0, "ticks for both scripts")
        for g in got:
            assert all(0 < tk.bidPrice < tk.askPrice and tk.bidSize > 0 for tk in g)
        assert tbt_lines(hub_sim) == [(0, "MSFT")]  # ONE upstream stream for all three
        line = door_hub.subs.get(c.conId, "tbt.BidAsk")
        assert line is not None and len(line.leases) == 3
        # the same ticks reach the SDK and the scripts: the scripts' last quotes are ones
        # the SDK saw too
        seen: list[TickByTick] = [first]
        while len(seen) < 6:
            seen.append(await sub.get(5.0))
        quotes = {(e.time, e.bid, e.ask) for e in seen}
        await wait_until(lambda: any((int(tk.time.timestamp()), tk.bidPrice, tk.askPrice)
                                     in quotes for tk in got[0]), 5.0, "a tick both saw")
        # another type of the same instrument is a stream of its own
        mids = scripts[1].reqTickByTickData(c, "MidPoint")
        mid_ticks: list[Any] = []
        mids.updateEvent += lambda t: mid_ticks.extend(t.tickByTicks)
        await wait_until(lambda: mid_ticks, 5.0, "MidPoint ticks")
        assert mid_ticks[-1].midPoint > 0
        assert sorted(tbt_lines(hub_sim)) == [(0, "MSFT"), (0, "MSFT")]
        # releases: a script's cancel and a disconnect keep the stream (the SDK holds it)
        scripts[0].cancelTickByTickData(c, "BidAsk")
        scripts[1].disconnect()
        await wait_until(lambda: len(line.leases) == 1, 5.0, "scripts released")
        assert tbt_lines(hub_sim) == [(0, "MSFT")]
        await sub.close()
    await wait_until(lambda: tbt_lines(hub_sim) == [], 5.0, "stream cancelled upstream")
