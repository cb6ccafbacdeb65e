"""Options and instrument data through the hub and the SDK, over ZeroMQ, on the simulator:
option chains, greeks on the shared tick stream, IB's option model, symbol search, and
the session's open/high/low/close on ``Tick``."""

from __future__ import annotations

import asyncio
import math
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ibhub.client import AsyncHub, HubError, Subscription, Tick
from ibhub.hub.server import HubServer, attach_orders
from ibhub.protocol import ContractSpec, ErrorCode
from ibhub.sim import SimGateway
from ibhub.sim.options import bs_price, years_to_expiry
from tests.e2e.conftest import HubFactory
from tests.helpers import wait_until

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]


def sdk(hub: HubServer, name: str) -> AsyncHub:
    return AsyncHub(pub=hub.pub_endpoint, rpc=hub.rpc_endpoint, name=name, request_timeout=5.0)


async def test_chain_greeks_calculations_and_symbols(hub: HubServer,
                                                     hub_sim: SimGateway) -> None:
    async with sdk(hub, "opt-a") as a, sdk(hub, "opt-b") as b:
        chains = await a.option_chain("SPY")
        assert [c.exchange for c in chains] == ["SMART", "CBOE", "AMEX", "ISE"]
        smart = (await a.option_chain("SPY", exchange="SMART"))[0]
        assert smart.underlying_con_id == 756733 and smart.trading_class == "SPY"
        assert len(smart.expirations) == 3 and smart.strikes == sorted(smart.strikes)
        assert await a.option_chain("MSFT") == []  # no options listed: no chain
        with pytest.raises(HubError) as unknown:
            await a.option_chain("NOSUCH")
        assert unknown.value.code == ErrorCode.UNKNOWN_CONTRACT
        expiry = smart.expirations[0]
        spec = ContractSpec(symbol="SPY", sec_type="OPT", expiry=expiry, strike=590.0,
                            right="C")

        # greeks ride on the tick topic: one upstream line for two scripts
        sub_a = await a.subscribe(spec)
        sub_b = await b.subscribe(spec)
        assert sub_a.topic == sub_b.topic
        tick = await _first(sub_a, lambda t: t.greeks is not None and not math.isnan(t.close))
        assert sum(1 for s in hub_sim.market_data_subscriptions()
                   if s.con_id == sub_a.contract.con_id) == 1
        g = tick.greeks
        assert g is not None and 0.3 < g.delta < 0.7 and g.gamma > 0 and g.theta < 0
        assert 0.05 < g.implied_vol < 0.5 and abs(g.und_price - 590.0) < 5
        t = years_to_expiry(expiry)
        assert abs(bs_price("C", g.und_price, 590.0, t, g.implied_vol) - g.opt_price) < 0.02
        assert tick.high >= tick.low > 0 and tick.open > 0
        other = await _first(sub_b, lambda t: t.greeks is not None)
        assert other.greeks is not None and other.con_id == tick.con_id
        snap = await b.snapshot(sub_b.topic)
        snapped = snap[sub_b.topic]
        assert isinstance(snapped, Tick) and snapped.greeks is not None

        # IB's option model
        iv = await a.calculate_implied_volatility(spec, 15.0, 591.0)
        assert iv.opt_price == 15.0 and iv.und_price == 591.0 and 0.05 < iv.implied_vol < 0.6
        px = await a.calculate_option_price(spec, iv.implied_vol, 591.0)
        assert abs(px.opt_price - 15.0) < 1e-3 and abs(px.delta - iv.delta) < 1e-4
        with pytest.raises(HubError) as bad:
            await a.calculate_implied_volatility("SPY", 1.0, 590.0)
        assert bad.value.code == ErrorCode.BAD_REQUEST and "not an option" in str(bad.value)
        with pytest.raises(HubError) as neg:
            await a.calculate_option_price(spec, -0.2, 590.0)
        assert neg.value.code == ErrorCode.BAD_REQUEST and "volatility" in str(neg.value)
        with pytest.raises(HubError) as huge:
            await a.calculate_option_price(spec, 20.0, 590.0)
        assert huge.value.code == ErrorCode.BAD_REQUEST

        with pytest.raises(HubError) as nothing:
            await a.option_chain(ContractSpec(symbol=""))
        assert nothing.value.code == ErrorCode.BAD_REQUEST and "underlying" in str(nothing.value)
        found = await b.matching_symbols("AAP")
        assert found[0].symbol == "AAPL" and found[0].con_id == 265598
        assert "OPT" in found[0].derivative_sec_types and found[0].description
        with pytest.raises(HubError) as empty:
            await b.matching_symbols("  ")
        assert empty.value.code == ErrorCode.BAD_REQUEST
        await sub_a.close()
        await sub_b.close()
        await wait_until(lambda: not hub_sim.market_data_subscriptions(), 3, "line cancelled")


async def _first(sub: Subscription, predicate: Callable[[Tick], bool],
                 timeout: float = 5.0) -> Tick:
    while True:
        event = await sub.get(timeout)
        if isinstance(event, Tick) and predicate(event):
            return event


async def test_the_options_example_runs_against_a_hub(make_hub: HubFactory) -> None:
    """clients/example_options.py in its own process against a hub on the simulator:
    chain -> strikes -> greeks -> IB's model -> a bracket order filled, exits cancelled."""
    hub = await make_hub()
    if getattr(hub, "orders", None) is None:
        hub.orders = await attach_orders(hub, journal_sync="NORMAL")
    await wait_until(hub.orders.reconciled.is_set, 5.0, "orders reconciled")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(REPO / "clients" / "example_options.py"), "SPY", "--delta", "0.5",
        "--pub", hub.pub_endpoint, "--rpc", hub.rpc_endpoint,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 40)
    text = out.decode()
    assert proc.returncode == 0, (text, err.decode())
    assert "SPY chain on SMART: 3 expirations, 17 strikes" in text, text
    assert "picked SPY" in text and "IB's model at the mid" in text, text
    assert "BUY 1 LMT" in text and "-> Filled; 1 @" in text, text
    assert text.count("-> Cancelled") == 2, text  # both exits worked, then were cancelled
