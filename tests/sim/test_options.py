"""Options and instrument data from the simulator, over the TWS wire with the installed
IB client library: chains, greeks on market data, IV / price calculations, generic
ticks, delayed data and symbol search."""

from __future__ import annotations

import asyncio
import math

import pytest

from ibhub.sim import SimConfig, SimGateway
from ibhub.sim.options import bs_greeks, bs_price, implied_vol, years_to_expiry
from tests.helpers import wait_until
from tests.ibclient import IB, ContFuture, Option, Stock, lib
from tests.sim.core_support import connected

SEED = 1515


def errors_of(ib: IB) -> list[tuple[int, int]]:
    seen: list[tuple[int, int]] = []
    ib.errorEvent += lambda req_id, code, msg, contract: seen.append((req_id, code))
    return seen


def test_model_prices_greeks_and_iv_agree() -> None:
    t = 30 / 365
    for right in "CP":
        for strike in (560.0, 590.0, 620.0):
            price = bs_price(right, 590.0, strike, t, 0.18)
            iv = implied_vol(right, price, 590.0, strike, t)
            assert iv is not None and abs(iv - 0.18) < 1e-5
            g = bs_greeks(right, 590.0, strike, t, 0.18)
            bumped = bs_price(right, 591.0, strike, t, 0.18) - price
            assert abs(g.delta - bumped) < 0.01  # delta is the price's slope
            assert g.gamma > 0 and g.vega > 0 and g.theta < 0
    call = bs_price("C", 590.0, 590.0, t, 0.18)
    put = bs_price("P", 590.0, 590.0, t, 0.18)
    assert abs(call - put - (590.0 - 590.0 * math.exp(-0.045 * t))) < 1e-9  # parity
    assert implied_vol("C", 0.001, 590.0, 500.0, t) is None  # below intrinsic value
    with pytest.raises(ValueError, match="YYYYMMDD"):
        years_to_expiry("2027-01-15")


async def test_chain_greeks_and_calculations() -> None:
    async with SimGateway(SimConfig(seed=SEED, tick_rate=40)) as sim, connected(sim) as ib:
        errors = errors_of(ib)
        spy = Stock("SPY", "SMART", "USD")
        await ib.qualifyContractsAsync(spy)
        chains = await asyncio.wait_for(
            ib.reqSecDefOptParamsAsync("SPY", "", "STK", spy.conId), 3)
        assert [c.exchange for c in chains] == ["SMART", "CBOE", "AMEX", "ISE"]
        chain = chains[0]
        assert chain.tradingClass == "SPY" and chain.multiplier == "100"
        assert int(chain.underlyingConId) == spy.conId  # ib_insync keeps it a str
        assert len(chain.expirations) == 3 and list(chain.expirations) == sorted(
            chain.expirations)
        assert len(chain.strikes) == 17 and 590.0 in chain.strikes
        only = await ib.reqSecDefOptParamsAsync("SPY", "CBOE", "STK", spy.conId)
        assert [c.exchange for c in only] == ["CBOE"]
        assert await asyncio.wait_for(  # an unknown underlying ends the request (200)
            ib.reqSecDefOptParamsAsync("NOPE", "", "STK", 0), 3) == []
        assert (errors[-1][1]) == 200

        call = Option("SPY", chain.expirations[0], 590.0, "C", "SMART")
        put = Option("SPY", chain.expirations[0], 580.0, "P", "SMART")
        await ib.qualifyContractsAsync(call, put)
        tc = ib.reqMktData(call, "100,101,106")
        tp = ib.reqMktData(put)
        await wait_until(lambda: tc.modelGreeks and tc.bidGreeks and tc.askGreeks
                         and tp.modelGreeks, 3, "option greeks")
        assert sim.market.active.get(spy.conId) == 2  # the underlying walks for its options
        m = tc.modelGreeks
        assert 0.3 < m.delta < 0.7 and m.gamma > 0 and m.vega > 0 and m.theta < 0
        assert 0.05 < m.impliedVol < 0.5 and abs(m.undPrice - 590.0) < 5
        assert -0.6 < tp.modelGreeks.delta < 0
        # the model's computation reprices the quote it was computed from
        t = years_to_expiry(call.lastTradeDateOrContractMonth)
        assert abs(bs_price("C", m.undPrice, 590.0, t, m.impliedVol) - m.optPrice) < 0.02
        assert tc.bidGreeks.impliedVol <= tc.askGreeks.impliedVol
        await wait_until(lambda: tc.callOpenInterest > 0 and tc.impliedVolatility > 0, 2,
                         "open interest and IV")
        await wait_until(lambda: tc.lastGreeks is not None, 5, "last greeks after a trade")

        iv = await asyncio.wait_for(ib.calculateImpliedVolatilityAsync(call, 15.0, 591.0), 3)
        assert iv.optPrice == 15.0 and iv.undPrice == 591.0 and 0.05 < iv.impliedVol < 0.6
        px = await asyncio.wait_for(
            ib.calculateOptionPriceAsync(call, iv.impliedVol, 591.0), 3)
        assert abs(px.optPrice - 15.0) < 1e-3 and abs(px.delta - iv.delta) < 1e-4
        # not an option: refused with 322, which ends the request (an empty result)
        refused = await asyncio.wait_for(ib.calculateImpliedVolatilityAsync(spy, 1.0, 590.0),
                                         3)
        assert not refused and errors[-1][1] == 322
        ib.cancelMktData(call)
        ib.cancelMktData(put)
        await wait_until(lambda: not sim.market_data_subscriptions(), 2, "cancels")
        assert spy.conId not in sim.market.active


async def test_generic_ticks_delayed_data_and_symbols() -> None:
    async with SimGateway(SimConfig(seed=SEED, tick_rate=60)) as sim, connected(sim) as ib:
        errors = errors_of(ib)
        aapl = Stock("AAPL", "SMART", "USD")
        spy = Stock("SPY", "SMART", "USD")
        await ib.qualifyContractsAsync(aapl, spy)
        a = ib.reqMktData(aapl, "100,101,104,165,233,236,411,456")
        await wait_until(lambda: a.callOpenInterest > 0 and a.putVolume > 0
                         and a.histVolatility > 0 and a.shortableShares > 0
                         and a.rtHistVolatility > 0 and a.avVolume > 0
                         and a.dividends is not None, 3, "generic ticks")
        await wait_until(lambda: (a.rtVolume == a.rtVolume and a.rtVolume > 0)
                         or (a.vwap == a.vwap and a.vwap > 0), 5, "RTVolume")
        assert a.high52week > a.low52week > 0
        ib.reqMktData(spy, "999")
        await wait_until(lambda: any(code == 321 for _, code in errors), 2, "illegal list")
        ib.cancelMktData(spy)  # refused: nothing to cancel, nothing left behind
        assert not [s for s in sim.market_data_subscriptions() if s.symbol == "SPY"]

        ib.reqMarketDataType(3)
        chain = (await ib.reqSecDefOptParamsAsync("AAPL", "", "STK", aapl.conId))[0]
        opt = Option("AAPL", chain.expirations[0], 190.0, "P", "SMART")
        await ib.qualifyContractsAsync(opt)
        seen: set[int] = set()  # every tick type the option's ticker got
        ib.pendingTickersEvent += lambda tickers: seen.update(
            t.tickType for ticker in tickers if ticker.contract == opt for t in ticker.ticks)
        d = ib.reqMktData(opt)
        await wait_until(lambda: d.modelGreeks is not None and d.bid > 0 and {66, 67} <= seen,
                         3, "delayed greeks")
        assert d.marketDataType == 3 and d.modelGreeks.delta < 0
        assert seen <= {66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 88}

        # options on the front ES future (FOP on CME)
        es = ContFuture("ES", "CME")
        await ib.qualifyContractsAsync(es)
        [fops] = await ib.reqSecDefOptParamsAsync("ES", "CME", "FUT", es.conId)
        assert fops.exchange == "CME" and fops.multiplier == "50"
        assert list(fops.expirations) == [es.lastTradeDateOrContractMonth[:8]]
        fop = lib.FuturesOption("ES", fops.expirations[0], 5900.0, "C", "CME")
        await ib.qualifyContractsAsync(fop)
        f = ib.reqMktData(fop)
        await wait_until(lambda: f.modelGreeks is not None, 3, "FOP greeks")
        assert abs(f.modelGreeks.undPrice - 5900) < 50 and 0.2 < f.modelGreeks.delta < 0.8

        found = await asyncio.wait_for(ib.reqMatchingSymbolsAsync("AAP"), 3)
        assert found and found[0].contract.symbol == "AAPL"
        assert found[0].contract.conId == aapl.conId and "OPT" in found[0].derivativeSecTypes
        es = await ib.reqMatchingSymbolsAsync("ES")
        assert es[0].contract.secType == "IND" and es[0].derivativeSecTypes == ["FUT"]
        named = await ib.reqMatchingSymbolsAsync("apple")
        assert [s.contract.symbol for s in named] == ["AAPL"]
