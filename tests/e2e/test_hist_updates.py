"""Historical bars kept up to date through the SDK (issue 15): two subscribers of the
same bars share ONE upstream keepUpToDate request; updates are typed Bars of the current
bar; the history comes one-shot; bad kinds are refused at the edge."""

from __future__ import annotations

import pytest

from ibhub.client import AsyncHub, HubError
from ibhub.hub.server import HubServer
from ibhub.protocol import Bar, ErrorCode
from ibhub.sim import SimGateway
from tests.helpers import wait_until

pytestmark = pytest.mark.timeout(60)


def hist_lines(sim: SimGateway) -> list[str]:
    return [s.symbol for s in sim.market_data_subscriptions() if s.kind == "hist"]


async def test_two_subscribers_share_one_keep_up_to_date_request(
    hub: HubServer, hub_sim: SimGateway,
) -> None:
    a = AsyncHub(pub=hub.pub_endpoint, rpc=hub.rpc_endpoint, name="hist-a", request_timeout=5)
    b = AsyncHub(pub=hub.pub_endpoint, rpc=hub.rpc_endpoint, name="hist-b", request_timeout=5)
    async with a, b:
        live_a = await a.subscribe("AAPL", kind="hist.1 min.MIDPOINT")
        assert live_a.topic == "hbar.1min.midpoint.AAPL"
        history = await a.historical_bars("AAPL", duration="600 S", bar_size="1 min",
                                          what_to_show="MIDPOINT")
        assert len(history) >= 5
        first = await live_a.get(5.0)
        assert isinstance(first, Bar) and first.symbol == "AAPL"
        assert first.time % 60 == 0 and first.time >= history[-1].time
        assert first.low <= first.close <= first.high and first.volume == -1
        live_b = await b.subscribe("AAPL", kind="hist.1 min.MIDPOINT")
        late = await live_b.get(5.0)  # the last update at once, then the stream
        assert isinstance(late, Bar) and late.time >= first.time
        assert hist_lines(hub_sim) == ["AAPL"]  # ONE upstream keepUpToDate request
        second = await live_a.get(5.0)
        assert second.seq > first.seq
        with pytest.raises(HubError) as bad:
            await a.subscribe("AAPL", kind="hist.7 min.TRADES")
        assert bad.value.code == ErrorCode.BAD_REQUEST
        await live_a.close()
        await live_b.close()
    await wait_until(lambda: hist_lines(hub_sim) == [], 5.0, "cancelled upstream")


async def test_historical_ticks_through_the_sdk(hub: HubServer) -> None:
    async with AsyncHub(pub=hub.pub_endpoint, rpc=hub.rpc_endpoint, name="ticks",
                        request_timeout=5) as sdk:
        trades = await sdk.historical_ticks("AAPL", end="20260303-15:00:00", count=40)
        assert len(trades) == 40 and trades[-1].time == 1772550000
        assert all(t.price > 0 and t.size > 0 and t.exchange for t in trades)
        quotes = await sdk.historical_ticks("EUR", sec_type="CASH", exchange="IDEALPRO",
                                            what_to_show="BID_ASK", count=5,
                                            start="20260303-15:00:00")
        assert len(quotes) == 5 and all(q.bid < q.ask for q in quotes)
        assert quotes[0].time == 1772550000
        with pytest.raises(HubError) as fx:  # forex has no trades: IB's 162, not a hang
            await sdk.historical_ticks("EUR", sec_type="CASH", exchange="IDEALPRO",
                                       end="20260303-15:00:00", count=5)
        assert fx.value.code == ErrorCode.IB_ERROR and fx.value.ib_code == 162
        with pytest.raises(HubError) as both:
            await sdk.historical_ticks("AAPL", start="20260303-15:00:00",
                                       end="20260303-16:00:00")
        assert both.value.code == ErrorCode.BAD_REQUEST
