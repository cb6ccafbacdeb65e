"""Front door: reference-data requests served like a Gateway serves them (issue 15).

Id-less requests (news providers, scanner parameters, market rules) come back to
every script that asks, as one upstream request; news bulletins are one shared
upstream subscription; scanner, fundamentals, histogram, news, SMART components and
user info pass through; refused requests end at once (no hang) in the client library.
"""

from __future__ import annotations

import asyncio
import time

from ibhub.client import AsyncHub, NewsBulletin
from ibhub.hub.server import HubServer
from ibhub.sim import SimGateway
from ibhub.sim.reference import NEWS_PROVIDERS
from tests.e2e import frontdoor_support
from tests.e2e.frontdoor_support import ClientFactory, door_of, quiet_ib_insync
from tests.helpers import wait_until
from tests.ibclient import ScannerSubscription, Stock

door_hub = frontdoor_support.door_hub
ib_clients = frontdoor_support.ib_clients


async def test_reference_requests_through_the_front_door(
    ib_clients: ClientFactory, door_hub: HubServer, hub_sim: SimGateway
) -> None:
    quiet_ib_insync()
    a, b = await ib_clients(71), await ib_clients(72)
    door = door_of(door_hub)
    async with asyncio.timeout(20):
        # id-less: two scripts at once, one upstream request, both answered
        counts_before = hub_sim.request_counts[85]
        pa, pb = await asyncio.gather(a.reqNewsProvidersAsync(), b.reqNewsProvidersAsync())
        assert [p.code for p in pa] == [p.code for p in pb] == [c for c, _ in NEWS_PROVIDERS]
        assert hub_sim.request_counts[85] - counts_before == 1
        xa, xb = await asyncio.gather(a.reqScannerParametersAsync(),
                                      b.reqScannerParametersAsync())
        assert xa == xb and "TOP_PERC_GAIN" in xa
        [aapl] = await a.qualifyContractsAsync(Stock("AAPL", "SMART", "USD"))
        [details] = await a.reqContractDetailsAsync(aapl)
        rule = int(details.marketRuleIds.split(",")[0])
        increments = await b.reqMarketRuleAsync(rule)
        assert increments and increments[0].increment > 0
        assert not door.idless.waiting

        # news bulletins: the hub's one upstream subscription (made at connect) serves
        # both scripts and SDK scripts (news.bulletin events)
        got: list[NewsBulletin] = []
        async with AsyncHub(pub=door_hub.pub_endpoint, rpc=door_hub.rpc_endpoint,
                            name="bulletins", request_timeout=5.0) as sdk:
            sdk.add_bulletin_handler(got.append)
            a.reqNewsBulletins(True)
            b.reqNewsBulletins(True)
            await wait_until(lambda: a.newsBulletins() and b.newsBulletins(), 5.0,
                             "the day's bulletin in both scripts")
            assert hub_sim.request_counts[12] == 1 and len(hub_sim.news.subscribers) == 1
            hub_sim.news.post_bulletin("halt lifted", 3, "NASDAQ")
            await wait_until(lambda: len(a.newsBulletins()) == len(b.newsBulletins()) == 2,
                             5.0, "the posted bulletin in both scripts")
            await wait_until(lambda: any(g.message == "halt lifted" for g in got), 5.0,
                             "the bulletin as an SDK event")
            assert [(g.msg_type, g.exchange) for g in got][-1] == (3, "NASDAQ")
        a.cancelNewsBulletins()
        await wait_until(lambda: not any(s.client_id == 71
                                         for s in door.idless.bulletin_subscribers),
                         2.0, "a cancelled")
        hub_sim.news.post_bulletin("second notice", 1, "")
        await wait_until(lambda: len(b.newsBulletins()) == 3, 5.0, "b still gets them")
        assert len(a.newsBulletins()) == 2
        b.cancelNewsBulletins()

        # passed through with remapped ids
        rows = await a.reqScannerDataAsync(ScannerSubscription(
            instrument="STK", locationCode="STK.US.MAJOR", scanCode="TOP_PERC_GAIN",
            numberOfRows=2))
        assert len(rows) == 2
        snapshot = await b.reqFundamentalDataAsync(aapl, "ReportSnapshot")
        assert "<SharesOut>" in snapshot
        histogram = await a.reqHistogramDataAsync(aapl, True, "2 days")
        assert histogram
        components = await b.reqSmartComponentsAsync("a6")
        assert len(components) >= 5
        headlines = await a.reqHistoricalNewsAsync(aapl.conId, "BRFG", "", "", 2)
        last = headlines[-1] if isinstance(headlines, list) else headlines
        article = await a.reqNewsArticleAsync(last.providerCode, last.articleId)
        assert "AAPL" in article.articleText
        assert not await b.reqUserInfoAsync()
        await wait_until(lambda: not door.passthrough.routes, 2.0, "routes ended")

        # refused: ends at once with 320 (ib_insync and ib_async both end on it)
        a.RaiseRequestErrors = True
        started = time.monotonic()
        try:
            await a.getWshMetaDataAsync()
        except Exception as exc:
            assert getattr(exc, "code", None) == 320 and "reqWshMetaData" in str(exc), exc
        else:
            raise AssertionError("reqWshMetaData was served")
        assert time.monotonic() - started < 2


async def test_idless_request_without_gateway_ends_with_empty_answer(
    ib_clients: ClientFactory, door_hub: HubServer, hub_sim: SimGateway
) -> None:
    """No Gateway session: 504 on -1 and the empty reply, so the awaitable ends."""
    quiet_ib_insync()
    ib = await ib_clients(73)
    errors: list[int] = []
    ib.errorEvent += lambda rid, code, msg, _c: errors.append(code)
    await hub_sim.close_port()
    for s in list(hub_sim.started_sessions()):
        s.abort()
    await wait_until(lambda: door_hub.upstream is not None
                     and not door_hub.upstream.connected, 5.0, "hub lost its session")
    async with asyncio.timeout(5):
        assert await ib.reqNewsProvidersAsync() == []
        assert await ib.reqMktDepthExchangesAsync() == []  # frontdoor/depth.py, same rule
    await wait_until(lambda: errors.count(504) == 2, 2.0, "504 on -1 for each")
    await hub_sim.open_port()
