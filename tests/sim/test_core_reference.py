"""The simulator's reference data (ibhub.sim.reference) through an unmodified client
(ib_insync or ib_async): news, bulletins, scanners, fundamentals, histograms, SMART
components, user info, market rules; refusals end the request; +PACEAPI paces."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from ibhub.sim import SimConfig, SimGateway
from ibhub.sim.reference import NEWS_PROVIDERS, SCAN_CODES
from tests.ibclient import ScannerSubscription, Stock
from tests.sim.core_support import RawClient, connected


async def test_reference_data_through_the_client_library(sim: SimGateway) -> None:
    async with connected(sim, 31) as ib, asyncio.timeout(15):
        ib.RaiseRequestErrors = True
        providers = await ib.reqNewsProvidersAsync()
        assert [(p.code, p.name) for p in providers] == list(NEWS_PROVIDERS)
        [aapl] = await ib.qualifyContractsAsync(Stock("AAPL", "SMART", "USD"))
        news = await ib.reqHistoricalNewsAsync(aapl.conId, "BRFG+DJNL", "", "", 4)
        news = news[-1] if isinstance(news, list) else news  # a list of 4 headlines
        assert news is not None and news.headline.startswith("AAPL")
        text = await ib.reqNewsArticleAsync(news.providerCode, news.articleId)
        assert "AAPL" in text.articleText and text.articleType == 0
        # bulletins: the day's one at once with allMessages, a new one as it is posted
        ib.reqNewsBulletins(True)
        await _until(lambda: ib.newsBulletins(), "the day's bulletin")
        sim.news.post_bulletin("exchange notice for the test", 1, "NYSE")
        await _until(lambda: len(ib.newsBulletins()) == 2, "the posted bulletin")
        assert ib.newsBulletins()[-1].message == "exchange notice for the test"
        ib.cancelNewsBulletins()

        xml = await ib.reqScannerParametersAsync()
        assert all(code in xml for code in SCAN_CODES)
        rows = await ib.reqScannerDataAsync(ScannerSubscription(
            instrument="STK", locationCode="STK.US.MAJOR", scanCode="MOST_ACTIVE",
            numberOfRows=3))
        assert len(rows) == 3 and [r.rank for r in rows] == [0, 1, 2]
        assert all(r.contractDetails.contract.secType == "STK" for r in rows)

        snapshot = await ib.reqFundamentalDataAsync(aapl, "ReportSnapshot")
        assert snapshot.startswith("<?xml") and "<SharesOut>" in snapshot
        histogram = await ib.reqHistogramDataAsync(aapl, False, "3 days")
        assert histogram and all(h.count > 0 for h in histogram)
        components = await ib.reqSmartComponentsAsync("a6")
        assert ("NYSE", "N") in {(c.exchange, c.exchangeLetter) for c in components}
        assert not await ib.reqUserInfoAsync()  # ended: None (ib_insync) or [] (ib_async)
        [details] = await ib.reqContractDetailsAsync(aapl)
        rule = int(details.marketRuleIds.split(",")[0])
        increments = await ib.reqMarketRuleAsync(rule)
        assert increments and increments[0].increment > 0

        # refusals carry codes that end the request in both libraries (never 321)
        eur = (await ib.qualifyContractsAsync(_eurusd()))[0]
        for call, code in ((ib.reqFundamentalDataAsync(eur, "ReportSnapshot"), 430),
                           (ib.reqScannerDataAsync(ScannerSubscription(
                               instrument="STK", locationCode="STK.US.MAJOR",
                               scanCode="NO_SUCH_SCAN")), 162)):
            started = time.monotonic()
            try:
                await asyncio.wait_for(call, 5)
            except Exception as exc:
                assert getattr(exc, "code", None) == code, exc
            else:
                raise AssertionError(f"expected error {code}")
            assert time.monotonic() - started < 2


async def test_paceapi_client_is_paced_not_refused() -> None:
    """With +PACEAPI in the hello, 20 requests over a 10/s rate all get answers, in order,
    and none gets error 100 (which a client without the option does get)."""
    async with SimGateway(SimConfig(seed=1, max_msg_rate=10)) as sim:
        raw = await RawClient.open(sim.port, client_id=None, version=b"v157..176 +PACEAPI")
        try:
            assert (await raw.recv())[0] == "176"
            raw.send(71, 2, 5, "")
            await raw.startup()
            for _ in range(20):
                raw.send(49, 1)
            replies = [await raw.recv(timeout=5) for _ in range(20)]
            assert [m[0] for m in replies] == ["49"] * 20, replies
        finally:
            await raw.close()
        plain = await RawClient.open(sim.port, client_id=6)
        try:
            await plain.startup()
            for _ in range(20):
                plain.send(49, 1)
            await plain.recv_until(lambda m: m[0] == "4" and m[3] == "100", timeout=5)
        finally:
            await plain.close()


def _eurusd() -> Any:
    from tests.ibclient import Forex

    return Forex("EURUSD")


async def _until(pred: Callable[[], object], what: str, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.01)
