"""The simulator's reference-data requests: news, scanners, fundamentals and friends.

What a Gateway answers from IB's reference services rather than from a market-data
line, each small, seeded and deterministic (same seed, same answers):

* news: ``reqNewsProviders`` (three providers), ``reqHistoricalNews`` (a few seeded
  headlines per instrument and provider, newest first), ``reqNewsArticle`` (the text
  of one of them), news bulletins (``reqNewsBulletins``: the day's bulletins at
  once with ``allMessages=1``, later ones as :meth:`NewsDesk.post_bulletin` posts
  them; ``cancelNewsBulletins`` stops them);
* scanners: ``reqScannerParameters`` (an XML listing the instruments, locations and
  scan codes below) and ``reqScannerSubscription`` (the universe's instruments of
  the asked type ranked by the scan code on the current simulated market; one scan
  when subscribed, as IB sends the first one, then nothing until cancelled);
* ``reqFundamentalData`` (a small ``ReportSnapshot`` / ``ReportsFinSummary`` XML for
  stocks; anything else gets IB's 430), ``reqHistogramData`` (volume at price from
  the historical price path), ``reqSmartComponents`` (the SMART exchange map),
  ``reqFamilyCodes``, ``reqSoftDollarTiers`` and ``reqUserInfo`` (what a Gateway
  says for an individual, non-white-branded account: no family code, no tiers, an
  empty branding id), ``requestFA`` (not an FA account: an empty document).

Refusals use codes that end the request in ib_insync, ib_async and ibapi (162, 430,
10172; never 321, which ib_async treats as a warning).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import defaultdict
from typing import TYPE_CHECKING

from ibhub.sim import history
from ibhub.sim.contracts import Instrument, parse_c12
from ibhub.sim.market import stable_seed
from ibhub.sim.session import ClientSession, Handler, RequestError

if TYPE_CHECKING:
    from ibhub.sim.server import SimGateway

__all__ = ["NEWS_PROVIDERS", "SCAN_CODES", "NewsDesk", "reference_handlers"]

log = logging.getLogger(__name__)

NEWS_PROVIDERS = (
    ("BRFG", "Briefing.com General Market Columns"),
    ("BRFUPDN", "Briefing.com Analyst Actions"),
    ("DJNL", "Dow Jones Newsletters"),
)
HEADLINES_PER_PROVIDER = 3
_HEADLINE_WORDS = ("beats estimates", "guides higher", "shares slip after update",
                   "upgraded to Buy", "downgraded to Hold", "announces buyback",
                   "volume spikes in early trade", "sets investor day")

#: scan code -> (description, sort key on (change %, volume, last), descending?)
SCAN_CODES = {
    "TOP_PERC_GAIN": "Top % Gainers",
    "TOP_PERC_LOSE": "Top % Losers",
    "MOST_ACTIVE": "Most Active",
    "HOT_BY_VOLUME": "Hot Contracts by Volume",
}
#: scanner instrument -> the universe's sec type and location codes
SCAN_INSTRUMENTS = {"STK": ("STK", ("STK.US.MAJOR", "STK.US")),
                    "FUT.US": ("FUT", ("FUT.US", "FUT.CME")),
                    "CASH": ("CASH", ("CASH.IDEALPRO",))}
SMART_COMPONENTS = ((0, "NYSE", "N"), (1, "ARCA", "P"), (2, "NASDAQ", "Q"), (3, "BATS", "Z"),
                    (4, "IEX", "V"), (5, "EDGX", "K"), (6, "AMEX", "A"))
NO_FUNDAMENTALS = "We are sorry, but fundamentals data for the security specified is not available."
REPORT_TYPES = ("ReportSnapshot", "ReportsFinSummary")
BULLETIN_REGULAR = 1


class NewsDesk:
    """News bulletins of one simulated Gateway: the day's list and who subscribes."""

    def __init__(self, gateway: SimGateway) -> None:
        self.gateway = gateway
        self.subscribers: set[ClientSession] = set()
        self.bulletins: list[tuple[int, int, str, str]] = [
            (1, BULLETIN_REGULAR, "ibhub simulator: markets open as scheduled", "")]

    def post_bulletin(self, message: str, msg_type: int = BULLETIN_REGULAR,
                      exchange: str = "") -> int:
        """A new bulletin for every subscriber (and later ``allMessages`` ones); its id."""
        msg_id = self.bulletins[-1][0] + 1 if self.bulletins else 1
        bulletin = (msg_id, msg_type, message, exchange)
        self.bulletins.append(bulletin)
        for s in list(self.subscribers):
            if s.closed:
                self.subscribers.discard(s)
            else:
                s.send(14, 1, *bulletin)
        return msg_id

    def subscribe(self, s: ClientSession, f: list[str]) -> None:
        """[12, 1, allMessages]."""
        self.subscribers.add(s)
        if len(f) > 2 and f[2] == "1":
            for bulletin in self.bulletins:
                s.send(14, 1, *bulletin)

    def cancel(self, s: ClientSession, f: list[str]) -> None:
        self.subscribers.discard(s)


# ---------------------------------------------------------------------- news


def req_news_providers(s: ClientSession, f: list[str]) -> None:
    """[85] -> newsProviders [85, n, (code, name)*n]."""
    s.send(85, len(NEWS_PROVIDERS), *[x for p in NEWS_PROVIDERS for x in p])


def _articles(gw: SimGateway, inst: Instrument, provider: str) -> list[tuple[float, str, str]]:
    """(epoch time, article id, headline) of one instrument's seeded news, newest first."""
    seed = stable_seed(gw.config.seed, inst.con_id, provider, "news")
    day = int(time.time() // 86400) * 86400
    out = []
    for k in range(HEADLINES_PER_PROVIDER):
        t = day - k * 86400 + 13 * 3600 + (seed >> (k * 5)) % 3600
        words = _HEADLINE_WORDS[(seed >> (k * 3)) % len(_HEADLINE_WORDS)]
        out.append((float(t), f"{provider}${inst.con_id:x}{k}", f"{inst.symbol} {words}"))
    return out


def req_historical_news(s: ClientSession, f: list[str]) -> None:
    """[86, reqId, conId, providerCodes, start, end, totalResults, options] ->
    historicalNews [86, reqId, time, provider, articleId, headline]*, end [87, reqId, more]."""
    req_id, con_id = int(f[1]), int(f[2])
    inst = s.gateway.universe.by_con_id(con_id)
    if inst is None:
        raise RequestError(200, "No security definition has been found for the request")
    codes = [c for c in f[3].replace(",", "+").split("+") if c]
    known = {code for code, _ in NEWS_PROVIDERS}
    unknown = [c for c in codes if c not in known]
    if not codes or unknown:
        raise RequestError(10172, f"Failed to request historical news: unknown provider "
                                  f"code(s) {unknown or codes!r}; see reqNewsProviders")
    total = max(1, min(int(f[6] or 10), 300))
    items = sorted((a for c in codes for a in [(*x, c) for x in _articles(s.gateway, inst, c)]),
                   reverse=True)
    for t, article_id, headline, code in items[:total]:
        stamp = dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.0")
        s.send(86, req_id, stamp, code, article_id, headline)
    s.send(87, req_id, int(len(items) > total))


def req_news_article(s: ClientSession, f: list[str]) -> None:
    """[84, reqId, providerCode, articleId, options] -> newsArticle [83, reqId, 0, text]."""
    req_id, provider, article_id = int(f[1]), f[2], f[3]
    head, _, tail = article_id.partition("$")
    inst = None
    if head == provider and len(tail) > 1:
        try:
            inst = s.gateway.universe.by_con_id(int(tail[:-1], 16))
        except ValueError:
            inst = None
    found = [a for a in _articles(s.gateway, inst, provider) if a[1] == article_id] \
        if inst is not None else []
    if not found:
        raise RequestError(10172, f"Failed to request news article: no article "
                                  f"{article_id!r} from {provider!r}")
    _, _, headline = found[0]
    s.send(83, req_id, 0, f"{headline}. (ibhub simulator: seeded article text for "
                          f"{inst.symbol if inst else ''}; no real news.)")


# ---------------------------------------------------------------------- scanners


def req_scanner_parameters(s: ClientSession, f: list[str]) -> None:
    """[24, 1] -> scannerParameters [19, 1, xml]."""
    s.send(19, 1, scanner_parameters_xml())


def scanner_parameters_xml() -> str:
    instruments = "".join(
        f"<Instrument><name>{code}</name><type>{code}</type><secType>{sec}</secType>"
        f"</Instrument>" for code, (sec, _) in SCAN_INSTRUMENTS.items())
    locations = "".join(
        f"<Location><locationCode>{loc}</locationCode><instruments>{code}</instruments>"
        f"</Location>" for code, (_, locs) in SCAN_INSTRUMENTS.items() for loc in locs)
    scans = "".join(
        f"<ScanType><displayName>{name}</displayName><scanCode>{code}</scanCode>"
        f"<instruments>{','.join(SCAN_INSTRUMENTS)}</instruments></ScanType>"
        for code, name in SCAN_CODES.items())
    return (f'<?xml version="1.0" encoding="UTF-8"?><ScanParameterResponse>'
            f"<InstrumentList>{instruments}</InstrumentList>"
            f"<LocationTree>{locations}</LocationTree>"
            f"<ScanTypeList>{scans}</ScanTypeList></ScanParameterResponse>")


def req_scanner_subscription(s: ClientSession, f: list[str]) -> None:
    """[22, reqId, numberOfRows, instrument, locationCode, scanCode, ...] -> one
    scannerData [20, 3, reqId, n, (rank, C10, marketName, tradingClass, distance,
    benchmark, projection, legs)*n] (the clients call scannerDataEnd after it)."""
    req_id = int(f[1])
    rows = int(f[2]) if f[2] not in ("", "-1", "2147483647") else 50
    instrument, location, code = f[3], f[4], f[5]
    if instrument not in SCAN_INSTRUMENTS:
        raise RequestError(162, f"Scanner error: instrument {instrument!r} is not one of "
                                f"{sorted(SCAN_INSTRUMENTS)}; see reqScannerParameters")
    sec_type, locations = SCAN_INSTRUMENTS[instrument]
    if location not in locations:
        raise RequestError(162, f"Scanner error: location {location!r} is not one of "
                                f"{list(locations)} for {instrument}")
    if code not in SCAN_CODES:
        raise RequestError(162, f"Scanner error: scan code {code!r} is not one of "
                                f"{sorted(SCAN_CODES)}")
    ranked = scan(s.gateway, sec_type, code)[:max(1, min(rows, 50))]
    out: list[object] = [20, 3, req_id, len(ranked)]
    for rank, inst in enumerate(ranked):
        out += [rank, inst.con_id, inst.symbol, inst.sec_type, inst.last_trade_date,
                inst.strike, inst.right, inst.exchange, inst.currency, inst.local_symbol,
                inst.market_name or inst.symbol, inst.trading_class, "", "", "", ""]
    s.send_fields(out)


def scan(gw: SimGateway, sec_type: str, code: str) -> list[Instrument]:
    """The universe's ``sec_type`` instruments ranked by ``code`` on the current market."""
    def change(inst: Instrument) -> float:
        q = gw.market.quote(inst.con_id)
        px = q.last if q.last == q.last else (q.bid + q.ask) / 2
        return (px - inst.start_price) / inst.start_price

    def volume(inst: Instrument) -> float:
        q = gw.market.quote(inst.con_id)
        return q.volume + stable_seed(gw.config.seed, inst.con_id, "scan") % 1000

    pool = [i for i in gw.universe if i.sec_type == sec_type]
    if code == "TOP_PERC_GAIN":
        return sorted(pool, key=lambda i: (-change(i), i.con_id))
    if code == "TOP_PERC_LOSE":
        return sorted(pool, key=lambda i: (change(i), i.con_id))
    return sorted(pool, key=lambda i: (-volume(i), i.con_id))


# ---------------------------------------------------------------------- fundamentals etc.


def req_fundamental_data(s: ClientSession, f: list[str]) -> None:
    """[52, 2, reqId, conId, symbol, secType, exchange, primaryExchange, currency,
    localSymbol, reportType, n, options] -> fundamentalData [51, 1, reqId, xml]."""
    req_id = int(f[2])
    con_id = int(f[3] or 0)
    universe = s.gateway.universe
    inst = universe.by_con_id(con_id) if con_id else next(
        (i for i in universe if i.symbol == f[4] and i.sec_type == (f[5] or "STK")), None)
    report = f[10]
    if inst is None or inst.sec_type != "STK":
        raise RequestError(430, NO_FUNDAMENTALS)
    if report not in REPORT_TYPES:
        raise RequestError(430, f"{NO_FUNDAMENTALS} Report type {report!r} is not one of "
                                f"{list(REPORT_TYPES)}")
    s.send(51, 1, req_id, fundamental_xml(s.gateway, inst, report))


def fundamental_xml(gw: SimGateway, inst: Instrument, report: str) -> str:
    seed = stable_seed(gw.config.seed, inst.con_id, "fundamentals")
    shares = 1_000_000_000 + seed % 9_000_000_000
    eps = round(1 + (seed >> 8) % 900 / 100, 2)
    ident = (f'<CoIDs><CoID Type="CompanyName">{inst.long_name}</CoID></CoIDs>'
             f'<Issues><Issue Type="C" Desc="Common Stock"><IssueID Type="Ticker">'
             f"{inst.symbol}</IssueID><Exchange>{inst.primary_exchange}</Exchange>"
             f"</Issue></Issues>")
    if report == "ReportSnapshot":
        body = (f"{ident}<CoGeneralInfo><SharesOut>{shares}</SharesOut></CoGeneralInfo>"
                f'<Ratios><Group ID="Per share data"><Ratio FieldName="TTMEPSXCLX" '
                f'Type="N">{eps}</Ratio></Group></Ratios>')
        return f'<?xml version="1.0" encoding="UTF-8"?><ReportSnapshot>{body}</ReportSnapshot>'
    rows = "".join(f'<EPS asofDate="{2025 - k}-12-31" reportType="A" period="12M">'
                   f"{round(eps * (1 - 0.08 * k), 2)}</EPS>" for k in range(3))
    return (f'<?xml version="1.0" encoding="UTF-8"?><FinancialSummary>{ident}'
            f"<EPSs>{rows}</EPSs></FinancialSummary>")


def req_histogram_data(s: ClientSession, f: list[str]) -> None:
    """[88, reqId, C12, includeExpired, useRTH, period] -> histogramData
    [89, reqId, n, (price, count)*n]: volume at price over the period's hourly bars."""
    req_id = int(f[1])
    inst = s.gateway.universe.resolve_one(parse_c12(f, 2))
    if inst is None:
        raise RequestError(200, "No security definition has been found for the request")
    n_text, _, unit = f[16].strip().partition(" ")
    units = {"day": "D", "days": "D", "week": "W", "weeks": "W", "month": "M",
             "months": "M"}
    if not n_text.isdigit() or unit.lower() not in units or not 0 < int(n_text) <= 12:
        raise RequestError(162, f"Historical Market Data Service error message:histogram "
                                f"period {f[16]!r} is invalid (e.g. '3 days', '1 week')")
    what = "TRADES" if inst.trades else "MIDPOINT"
    req = history.HistRequest(end=time.time(), bar_seconds=3600, duration_n=int(n_text),
                              duration_unit=units[unit.lower()], use_rth=f[15] == "1",
                              what=what, format_date=2, keep_up_to_date=False)
    bars = history.compute_bars(inst, req, s.gateway.config.seed, 10_000)
    step = inst.min_tick * 10
    counts: defaultdict[float, int] = defaultdict(int)
    for _, bar in bars:
        price = round(round(bar[3] / step) * step, 10)
        counts[price] += max(1, int(bar[4]) if bar[4] > 0 else 1)
    out: list[object] = [89, req_id, len(counts)]
    for price in sorted(counts):
        out += [price, counts[price]]
    s.send_fields(out)


def req_smart_components(s: ClientSession, f: list[str]) -> None:
    """[83, reqId, bboExchange] -> smartComponents [82, reqId, n, (bit, exchange, letter)*]."""
    out: list[object] = [82, int(f[1]), len(SMART_COMPONENTS)]
    for component in SMART_COMPONENTS:
        out += component
    s.send_fields(out)


def req_family_codes(s: ClientSession, f: list[str]) -> None:
    """[80] -> familyCodes [78, n, (account, familyCode)*]: individual accounts, no code."""
    accounts = s.gateway.config.accounts
    s.send(78, len(accounts), *[x for a in accounts for x in (a, "")])


def req_soft_dollar_tiers(s: ClientSession, f: list[str]) -> None:
    """[79, reqId] -> softDollarTiers [77, reqId, 0]: no tiers on these accounts."""
    s.send(77, int(f[1]), 0)


def req_user_info(s: ClientSession, f: list[str]) -> None:
    """[104, reqId] -> userInfo [107, reqId, whiteBrandingId]: not white-branded."""
    s.send(107, int(f[1]), "")


def request_fa(s: ClientSession, f: list[str]) -> None:
    """[18, 1, faDataType] -> receiveFA [16, 1, faDataType, xml]: not an FA account."""
    kind = int(f[2])
    if kind not in (1, 2, 3):
        raise ValueError(f"FA data type {kind} is not 1, 2 or 3")
    s.send(16, 1, kind, "")


def _quiet(s: ClientSession, f: list[str]) -> None:
    """Cancels with nothing to stop (one-shot answers were already sent)."""


def reference_handlers(gw: SimGateway) -> dict[int, Handler]:
    desk = gw.news
    return {
        12: desk.subscribe, 13: desk.cancel, 18: request_fa, 22: req_scanner_subscription,
        23: _quiet, 24: req_scanner_parameters, 52: req_fundamental_data, 53: _quiet,
        79: req_soft_dollar_tiers, 80: req_family_codes, 83: req_smart_components,
        84: req_news_article, 85: req_news_providers, 86: req_historical_news,
        88: req_histogram_data, 89: _quiet, 104: req_user_info,
    }
