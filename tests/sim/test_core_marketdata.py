"""Streaming market data, snapshots, tick-by-tick and real-time bars, with ib_insync."""

from __future__ import annotations

import asyncio
import math
import time

from ibhub.sim import SimConfig, SimGateway
from ibhub.sim.market import Market
from tests.helpers import wait_until
from tests.ibclient import IB, Forex, Stock
from tests.sim.core_support import connected

SEED = 4242


def errors_of(ib: IB) -> list[tuple[int, int, str]]:
    seen: list[tuple[int, int, str]] = []
    ib.errorEvent += lambda req_id, code, msg, contract: seen.append((req_id, code, msg))
    return seen


async def test_stream_cancel_and_subscriptions() -> None:
    async with SimGateway(SimConfig(seed=SEED, tick_rate=50)) as sim:
        async with connected(sim) as ib:
            aapl = Stock("AAPL", "SMART", "USD")
            await ib.qualifyContractsAsync(aapl)
            ticker = ib.reqMktData(aapl, "233,236,mdoff")  # generic ticks: ignored, no error
            await wait_until(lambda: ticker.bid > 0 and ticker.last == ticker.last, 2,
                             "first ticks")
            assert ticker.minTick == 0.01
            assert ticker.marketDataType == 1
            assert ticker.bid < ticker.ask
            assert ticker.close == 190.0
            assert ticker.volume >= 0
            subs = sim.market_data_subscriptions()
            assert [(s.client_id, s.con_id, s.symbol, s.kind) for s in subs] == [
                (1, 265598, "AAPL", "mkt")]
            bids: list[float] = []
            ticker.updateEvent += lambda t: bids.append(t.bid)
            await wait_until(lambda: len(bids) >= 20, 3, "20 updates at 50 ev/s")
            assert all(round(b * 100) == b * 100 for b in bids if not math.isnan(b))
            ib.cancelMktData(aapl)
            await wait_until(lambda: sim.market_data_subscriptions() == [], 2, "cancel")


async def test_snapshot_ends_with_57(sim: SimGateway) -> None:
    async with connected(sim) as ib:
        contracts = [Stock("MSFT", "SMART", "USD"), Forex("EURUSD")]
        await ib.qualifyContractsAsync(*contracts)
        msft, eur = await asyncio.wait_for(ib.reqTickersAsync(*contracts), 2)
        assert msft.bid < msft.ask and msft.close == 420.0 and msft.last > 0
        assert eur.bid < eur.ask and math.isnan(eur.last)  # FX has quotes, no trades
        assert sim.market_data_subscriptions() == []
        assert sim.request_counts[1] == 2


async def test_line_limit_error_101() -> None:
    async with SimGateway(SimConfig(seed=SEED, max_lines=2)) as sim:
        async with connected(sim) as ib:
            errors = errors_of(ib)
            names = ("AAPL", "MSFT", "SPY")
            contracts = [Stock(n, "SMART", "USD") for n in names]
            await ib.qualifyContractsAsync(*contracts)
            for c in contracts:
                ib.reqMktData(c)
            await wait_until(lambda: any(code == 101 for _, code, _ in errors), 2, "error 101")
            [(req_id, _, msg)] = [e for e in errors if e[1] == 101]
            assert msg == "Max number of tickers has been reached"
            subs = sim.market_data_subscriptions()
            assert len(subs) == 2 and req_id not in {s.req_id for s in subs}
            # snapshots do not take a line
            ko = Stock("KO", "SMART", "USD")
            await ib.qualifyContractsAsync(ko)  # ib_async cannot hash a contract without conId
            [t] = await asyncio.wait_for(ib.reqTickersAsync(ko), 2)
            assert t.bid > 0


async def test_delayed_market_data_type(sim: SimGateway) -> None:
    async with connected(sim) as ib:
        ib.reqMarketDataType(3)
        spy = Stock("SPY", "SMART", "USD")
        await ib.qualifyContractsAsync(spy)
        ticker = ib.reqMktData(spy)
        await wait_until(lambda: ticker.bid > 0 and ticker.marketDataType == 3, 2,
                         "delayed quote")
        assert ticker.close == 590.0


async def test_tick_by_tick_kinds() -> None:
    async with SimGateway(SimConfig(seed=SEED, tick_rate=100)) as sim:
        async with connected(sim) as ib:
            nvda = Stock("NVDA", "SMART", "USD")
            amd = Stock("AMD", "SMART", "USD")
            eur = Forex("EURUSD")
            await ib.qualifyContractsAsync(nvda, amd, eur)
            bidask = ib.reqTickByTickData(nvda, "BidAsk")  # one Ticker per contract in
            last = ib.reqTickByTickData(amd, "Last")  # ib_insync, so one kind each
            mid = ib.reqTickByTickData(eur, "MidPoint")
            seen: dict[int, list] = {id(bidask): [], id(last): [], id(mid): []}
            for t in (bidask, last, mid):
                t.updateEvent += lambda t: seen[id(t)].extend(t.tickByTicks)
            await wait_until(lambda: len(seen[id(bidask)]) > 3 and len(seen[id(last)]) > 1
                             and len(seen[id(mid)]) > 3, 3, "tick-by-tick of each kind")
            ba = seen[id(bidask)][-1]
            assert ba.bidPrice < ba.askPrice and ba.bidSize > 0
            tr = seen[id(last)][-1]
            assert tr.price > 0 and tr.size > 0
            assert 1.0 < seen[id(mid)][-1].midPoint < 1.2
            assert {s.kind for s in sim.market_data_subscriptions()} == {"tbt"}
            for c, kind in ((nvda, "BidAsk"), (amd, "Last"), (eur, "MidPoint")):
                ib.cancelTickByTickData(c, kind)
            await wait_until(lambda: sim.market_data_subscriptions() == [], 2, "tbt cancel")


async def test_real_time_bars() -> None:
    async with SimGateway(SimConfig(seed=SEED, tick_rate=50, rt_bar_seconds=0.25)) as sim:
        async with connected(sim) as ib:
            ibm = Stock("IBM", "SMART", "USD")
            await ib.qualifyContractsAsync(ibm)
            bars = ib.reqRealTimeBars(ibm, 5, "TRADES", False)
            await wait_until(lambda: len(bars) >= 2, 3, "two real-time bars")
            b = bars[-1]
            assert b.low <= b.open_ <= b.high and b.low <= b.close <= b.high
            assert b.volume >= 0
            ib.cancelRealTimeBars(bars)
            await wait_until(lambda: sim.market_data_subscriptions() == [], 2, "rt cancel")


async def test_same_seed_same_ticks() -> None:
    async def first_ticks(seed: int) -> list[tuple[int, float, float]]:
        async with SimGateway(SimConfig(seed=seed, tick_rate=300)) as sim:
            async with connected(sim) as ib:
                c = Stock("TSLA", "SMART", "USD")
                await ib.qualifyContractsAsync(c)
                ticker = ib.reqMktData(c)
                seen: list[tuple[int, float, float]] = []
                ticker.updateEvent += lambda t: seen.extend(
                    (d.tickType, d.price, d.size) for d in t.ticks)
                await wait_until(lambda: len(seen) >= 60, 3, "60 ticks")
                return seen[:60]

    a, b, c = await first_ticks(7), await first_ticks(7), await first_ticks(8)
    assert a == b
    assert a != c


def test_market_walk_is_seeded() -> None:
    from ibhub.sim.contracts import build_universe

    u = build_universe()
    m1, m2, m3 = Market(1, u), Market(1, u), Market(2, u)
    for m in (m1, m2, m3):
        m.walk(265598)
    seq = [[(m.step(265598), m.quote(265598)) for _ in range(200)] for m in (m1, m2, m3)]
    assert seq[0] == seq[1] and seq[0] != seq[2]
    assert all(q.bid < q.ask for _, q in seq[0])


async def test_stamp_sizes_are_send_times() -> None:
    async with SimGateway(SimConfig(seed=SEED, tick_rate=100, stamp_sizes=True)) as sim:
        async with connected(sim) as ib:
            c = Stock("AMD", "SMART", "USD")
            await ib.qualifyContractsAsync(c)
            ticker = ib.reqMktData(c)
            stamps: list[tuple[float, float]] = []
            ticker.updateEvent += lambda t: stamps.extend(
                (d.size, time.time_ns() / 1000) for d in t.ticks if d.tickType in (1, 2))
            await wait_until(lambda: len(stamps) > 20, 3, "stamped ticks")
            for sent_us, got_us in stamps[5:]:
                assert sent_us == int(sent_us)
                assert 0 <= got_us - sent_us < 1_000_000


async def test_tick_rate_can_change_and_many_ticks_flow() -> None:
    async with SimGateway(SimConfig(seed=SEED, tick_rate=0)) as sim:
        async with connected(sim) as ib:
            contracts = [Stock(n, "SMART", "USD") for n in
                         ("AAPL", "MSFT", "NVDA", "AMZN", "META", "JPM", "XOM", "KO")]
            await ib.qualifyContractsAsync(*contracts)
            tickers = [ib.reqMktData(c) for c in contracts]
            count = 0

            def on_pending(ts: set) -> None:
                nonlocal count
                count += sum(len(t.ticks) for t in ts)

            ib.pendingTickersEvent += on_pending
            await wait_until(lambda: all(t.bid > 0 for t in tickers), 2, "initial quotes")
            count = 0
            sim.set_tick_rate(500)  # 8 instruments x ~2 msgs x 500 = ~8,000/s
            t0 = time.perf_counter()
            await wait_until(lambda: count >= 4000, 3, "4,000 ticks")
            assert time.perf_counter() - t0 < 2.0
            sim.set_tick_rate(0)
