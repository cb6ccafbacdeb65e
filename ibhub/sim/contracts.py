"""The simulator's instrument universe and IB-style contract matching.

A request names a contract with the 12-field block ``C12`` (tws-protocol.md section 4).
:func:`parse_c12` turns it into a :class:`ContractQuery`; :meth:`Universe.resolve`
matches it the way the Gateway does: a non-zero conId wins, otherwise every field
the client filled in must agree, and ``SMART`` matches anything SMART-routable.

Futures and option expiries are computed from today's date so the universe never
holds an expired "front month", whatever day the tests run.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ibhub.sim.options import bs_price, model_vol, years_to_expiry
from ibhub.tws.contracts import ContractFields, parse_c12

__all__ = [
    "ContractQuery",
    "Instrument",
    "Universe",
    "build_universe",
    "contract_details_fields",
    "parse_c12",
]

STK_EXCHANGES = (
    "SMART,AMEX,NYSE,CBOE,PHLX,ISE,CHX,ARCA,ISLAND,DRCTEDGE,BEX,BATS,EDGEA,BYX,IEX,"
    "EDGX,FOXRIVER,PEARL,NYSENAT,LTSE,MEMX,IBEOS,OVERNIGHT,TPLUS0,PSX"
)
STK_ORDER_TYPES = (
    "ACTIVETIM,AD,ADJUST,ALERT,ALGO,ALLOC,AON,AVGCOST,BASKET,BENCHPX,CASHQTY,COND,"
    "CONDORDER,DARKONLY,DARKPOLL,DAY,DEACT,DEACTDIS,DEACTEOD,DIS,DUR,GAT,GTC,GTD,GTT,"
    "HID,IBKRATS,ICE,IMB,IOC,LIT,LMT,LOC,MIDPX,MIT,MKT,MOC,MTL,NGCOMB,NODARK,NONALGO,"
    "OCA,OPG,OPGREROUT,PEGBENCH,PEGMID,POSTATS,POSTONLY,PREOPGRTH,PRICECHK,REL,"
    "REL2MID,RELPCTOFS,RPI,RTH,SCALE,SCALEODD,SCALERST,SIZECHK,SNAPMID,SNAPMKT,"
    "SNAPREL,STP,STPLMT,SWEEP,TRAIL,TRAILLIT,TRAILLMT,TRAILMIT,WHATIF"
)
FUT_ORDER_TYPES = (
    "ACTIVETIM,AD,ADJUST,ALERT,ALGO,ALLOC,AVGCOST,BASKET,BENCHPX,COND,CONDORDER,DAY,"
    "DEACT,DEACTDIS,DEACTEOD,GAT,GTC,GTD,GTT,HID,ICE,IOC,LIT,LMT,LTH,MIT,MKT,MTL,NGCOMB,"
    "NONALGO,OCA,PEGBENCH,SCALE,SCALERST,SNAPMID,SNAPMKT,SNAPREL,STP,STPLMT,TRAIL,"
    "TRAILLIT,TRAILLMT,TRAILMIT,WHATIF"
)
CASH_ORDER_TYPES = (
    "ACTIVETIM,AD,ADJUST,ALERT,ALGO,ALLOC,AVGCOST,BASKET,CASHQTY,COND,CONDORDER,DAY,"
    "DEACT,DEACTDIS,DEACTEOD,GAT,GTC,GTD,GTT,IOC,LIT,LMT,MIT,MKT,NONALGO,OCA,REL,"
    "RELPCTOFS,SCALE,SCALERST,STP,STPLMT,TRAIL,TRAILLIT,TRAILLMT,TRAILMIT,WHATIF"
)
OPT_ORDER_TYPES = (
    "ACTIVETIM,AD,ADJUST,ALERT,ALLOC,AVGCOST,BASKET,COND,CONDORDER,DAY,DEACT,DEACTDIS,"
    "DEACTEOD,DIS,GAT,GTC,GTD,GTT,HID,ICE,IOC,LIT,LMT,MIT,MKT,MTL,NGCOMB,NONALGO,OCA,"
    "OPENCLOSE,PEGMIDVOL,PEGMKTVOL,PEGPRMVOL,PEGSRFVOL,POSTONLY,PRICECHK,REL,"
    "REL2MID,RELPCTOFS,SCALE,SCALERST,SIZECHK,SNAPMID,SNAPMKT,SNAPREL,STP,STPLMT,"
    "SWEEP,TRAIL,TRAILLIT,TRAILLMT,TRAILMIT,VOLAT,WHATIF"
)
OPT_EXCHANGES = (
    "SMART,AMEX,BATS,BOX,CBOE,CBOE2,CBOEOPT,EDGX,EMERALD,GEMINI,IBUSOPT,ISE,MERCURY,"
    "MIAX,NASDAQBX,NASDAQOM,PEARL,PHLX,PSE,SAPPHIRE"
)


@dataclass(frozen=True, slots=True)
class Instrument:
    """One tradable contract with everything contract details and the walk need."""

    con_id: int
    symbol: str
    sec_type: str  # STK, FUT, CASH, OPT
    last_trade_date: str  # YYYYMMDD for FUT/OPT, "" otherwise
    strike: float
    right: str  # C, P or ""
    multiplier: str
    exchange: str  # SMART for stocks and options, CME, IDEALPRO
    primary_exchange: str
    currency: str
    local_symbol: str
    trading_class: str
    min_tick: float
    long_name: str  # ASCII only: the clients unicode-unescape it
    start_price: float
    market_name: str = ""
    industry: str = ""
    category: str = ""
    subcategory: str = ""
    time_zone: str = "US/Eastern"
    stock_type: str = ""
    valid_exchanges: str = ""
    order_types: str = ""
    under_con_id: int = 0
    under_symbol: str = ""
    under_sec_type: str = ""
    market_rule_id: int = 26
    lot: int = 100  # typical quote size unit
    max_spread_ticks: int = 3
    min_size: str = "1"
    size_increment: str = "1"
    suggested_size_increment: str = "100"
    head_timestamp: str = "19800101 14:30:00"
    trades: bool = True  # CASH pairs have quotes but no trades

    @property
    def contract_month(self) -> str:
        return self.last_trade_date[:6]

    @property
    def price_decimals(self) -> int:
        """Decimals needed to print a multiple of min_tick exactly."""
        text = repr(self.min_tick)
        if "e-" in text:
            mantissa, exp = text.split("e-")
            return int(exp) + (len(mantissa.split(".")[1]) if "." in mantissa else 0)
        return len(text.split(".")[1]) if "." in text else 0

    def c11_position(self) -> list[object]:
        """conId..tradingClass as position (61) carries them (with exchange)."""
        return [self.con_id, self.symbol, self.sec_type, self.last_trade_date,
                self.strike, self.right, self.multiplier, self.exchange, self.currency,
                self.local_symbol, self.trading_class]

    def c11_portfolio(self) -> list[object]:
        """conId..tradingClass as updatePortfolio (7) carries them (primaryExchange)."""
        return [self.con_id, self.symbol, self.sec_type, self.last_trade_date,
                self.strike, self.right, self.multiplier, self.primary_exchange,
                self.currency, self.local_symbol, self.trading_class]


#: A request's C12 block (``parse_c12``); the resolver's name for the shared type.
ContractQuery = ContractFields


def _same_mult(a: str, b: str) -> bool:
    try:
        return float(a or 0) == float(b or 0)
    except ValueError:
        return False


def _matches(inst: Instrument, q: ContractQuery) -> bool:
    if q.symbol and q.symbol != inst.symbol.upper():
        return False
    if q.local_symbol and q.local_symbol.replace(" ", "") != inst.local_symbol.replace(" ", ""):
        return False
    if not q.symbol and not q.local_symbol:
        return False
    if q.sec_type and q.sec_type != inst.sec_type:
        return False
    if q.currency and q.currency != inst.currency:
        return False
    if q.last_trade_date and not inst.last_trade_date.startswith(q.last_trade_date):
        return False
    if q.strike and q.strike != inst.strike:
        return False
    if q.right and q.right != inst.right:
        return False
    if q.multiplier and not _same_mult(q.multiplier, inst.multiplier):
        return False
    if q.trading_class and q.trading_class != inst.trading_class:
        return False
    if q.primary_exchange and q.primary_exchange != inst.primary_exchange:
        return False
    if q.exchange and q.exchange != inst.exchange:
        directed = inst.valid_exchanges.split(",")
        if q.exchange not in directed and q.exchange != inst.primary_exchange:
            return False
    return True


class Universe:
    """All instruments the simulator knows, indexed by conId."""

    def __init__(self, instruments: Sequence[Instrument]) -> None:
        self._by_id: dict[int, Instrument] = {}
        for inst in instruments:
            if inst.con_id in self._by_id:
                raise ValueError(f"duplicate conId {inst.con_id} ({inst.symbol})")
            self._by_id[inst.con_id] = inst

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Instrument]:
        return iter(self._by_id.values())

    def by_con_id(self, con_id: int) -> Instrument | None:
        return self._by_id.get(con_id)

    def resolve(self, query: ContractQuery | Sequence[str]) -> list[Instrument]:
        """Every instrument the query matches, as the Gateway would list them."""
        q = query if isinstance(query, ContractQuery) else parse_c12(query, 0)
        if q.con_id:
            inst = self._by_id.get(q.con_id)
            return [inst] if inst is not None else []
        if q.sec_type == "CONTFUT":  # the continuous future is the front month
            fut = dataclasses.replace(q, sec_type="FUT", last_trade_date="")
            fronts: dict[str, Instrument] = {}
            for i in self._by_id.values():
                if _matches(i, fut):
                    best = fronts.get(i.symbol)
                    if best is None or i.last_trade_date < best.last_trade_date:
                        fronts[i.symbol] = i
            return list(fronts.values())
        return [i for i in self._by_id.values() if _matches(i, q)]

    def resolve_one(self, query: ContractQuery) -> Instrument | None:
        """The single match, or None when unknown or ambiguous (error 200 either way)."""
        found = self.resolve(query)
        return found[0] if len(found) == 1 else None


# ---------------------------------------------------------------------------
# The built-in universe

# symbol, conId, primary exchange, long name, price, (industry, category, subcategory)
_STOCKS: tuple[tuple[str, int, str, str, float, tuple[str, str, str]], ...] = (
    ("AAPL", 265598, "NASDAQ", "APPLE INC", 190.0,
     ("Technology", "Computers", "Computers")),
    ("MSFT", 272093, "NASDAQ", "MICROSOFT CORP", 420.0,
     ("Technology", "Software", "Software")),
    ("TSLA", 76792991, "NASDAQ", "TESLA INC", 250.0,
     ("Consumer, Cyclical", "Auto Manufacturers", "Auto-Cars/Light Trucks")),
    ("NVDA", 4815747, "NASDAQ", "NVIDIA CORP", 140.0,
     ("Technology", "Semiconductors", "Electronic Compo-Semicon")),
    ("AMZN", 3691937, "NASDAQ", "AMAZON.COM INC", 200.0,
     ("Communications", "Internet", "E-Commerce/Products")),
    ("GOOGL", 208813719, "NASDAQ", "ALPHABET INC-CL A", 170.0,
     ("Communications", "Internet", "Web Portals/ISP")),
    ("META", 107113386, "NASDAQ", "META PLATFORMS INC-CLASS A", 560.0,
     ("Communications", "Internet", "Internet Content-Entmnt")),
    ("AMD", 4391, "NASDAQ", "ADVANCED MICRO DEVICES", 140.0,
     ("Technology", "Semiconductors", "Electronic Compo-Semicon")),
    ("NFLX", 15124833, "NASDAQ", "NETFLIX INC", 700.0,
     ("Communications", "Internet", "Internet Content-Entmnt")),
    ("JPM", 1520593, "NYSE", "JPMORGAN CHASE & CO", 210.0,
     ("Financial", "Banks", "Money Center Banks")),
    ("XOM", 13977, "NYSE", "EXXON MOBIL CORP", 115.0,
     ("Energy", "Oil&Gas", "Oil Comp-Integrated")),
    ("BAC", 10098, "NYSE", "BANK OF AMERICA CORP", 40.0,
     ("Financial", "Banks", "Money Center Banks")),
    ("INTC", 270639, "NASDAQ", "INTEL CORP", 22.0,
     ("Technology", "Semiconductors", "Electronic Compo-Semicon")),
    ("KO", 8894, "NYSE", "COCA-COLA CO/THE", 63.0,
     ("Consumer, Non-cyclical", "Beverages", "Beverages-Non-alcoholic")),
    ("PEP", 11017, "NASDAQ", "PEPSICO INC", 160.0,
     ("Consumer, Non-cyclical", "Beverages", "Beverages-Non-alcoholic")),
    ("WMT", 13824, "NYSE", "WALMART INC", 80.0,
     ("Consumer, Cyclical", "Retail", "Retail-Discount")),
    ("DIS", 6459, "NYSE", "WALT DISNEY CO/THE", 95.0,
     ("Communications", "Media", "Multimedia")),
    ("IBM", 8314, "NYSE", "INTL BUSINESS MACHINES CORP", 210.0,
     ("Technology", "Computers", "Computer Services")),
    ("CSCO", 268084, "NASDAQ", "CISCO SYSTEMS INC", 55.0,
     ("Communications", "Telecommunications", "Networking Products")),
    ("V", 49462172, "NYSE", "VISA INC-CLASS A SHARES", 290.0,
     ("Financial", "Diversified Finan Serv", "Finance-Credit Card")),
)
_ETFS: tuple[tuple[str, int, str, str, float], ...] = (
    ("SPY", 756733, "ARCA", "SPDR S&P 500 ETF TRUST", 590.0),
    ("QQQ", 320227571, "NASDAQ", "INVESCO QQQ TRUST SERIES 1", 510.0),
    ("IWM", 9579970, "ARCA", "ISHARES RUSSELL 2000 ETF", 220.0),
    ("DIA", 73128548, "ARCA", "SPDR DJIA TRUST", 420.0),
    ("GLD", 51529211, "ARCA", "SPDR GOLD SHARES", 240.0),
    ("TLT", 15547841, "NASDAQ", "ISHARES 20+ YEAR TREASURY BO", 92.0),
)
# symbol, conId, currency, long name, price, min tick, head timestamp
_FX: tuple[tuple[str, int, str, str, float, float], ...] = (
    ("EUR", 12087792, "USD", "European Monetary Union Euro", 1.085, 0.00005),
    ("GBP", 12087797, "USD", "British pound", 1.27, 0.00005),
    ("USD", 15016059, "JPY", "US dollar", 151.5, 0.005),
)
# symbol, index conId, long name, multiplier, price, conId base
_FUTS: tuple[tuple[str, int, str, str, float, int], ...] = (
    ("ES", 11004968, "E-mini S&P 500", "50", 5900.0, 637533000),
    ("NQ", 11004958, "E-mini NASDAQ 100", "20", 20800.0, 637534000),
)
_MONTH_CODES = "FGHJKMNQUVXZ"
# option chains: underlying, its conId, its price, strikes, monthly expiries, conId base
# (each expiry adds 10,000 to the base; a strike's call/put are base + 2i / 2i + 1)
_OPTION_CHAINS: tuple[tuple[str, int, float, tuple[float, ...], int, int], ...] = (
    ("SPY", 756733, 590.0, tuple(float(k) for k in range(550, 631, 5)), 3, 745_000_000),
    ("AAPL", 265598, 190.0, tuple(float(k) for k in range(170, 211, 5)), 2, 745_100_000),
)
_LONG_NAMES = {"SPY": "SPDR S&P 500 ETF TRUST", "AAPL": "APPLE INC"}
# options on the front ES future (FOP, CME, expiring with it)
_ES_FOP_STRIKES = tuple(float(k) for k in range(5800, 6001, 50))
_FOP_CON_ID_BASE = 745_200_000


def third_friday(year: int, month: int) -> dt.date:
    first = dt.date(year, month, 1)
    return first + dt.timedelta(days=(4 - first.weekday()) % 7 + 14)


def front_quarter(today: dt.date) -> dt.date:
    """Expiry of the nearest quarterly (H/M/U/Z) future that has not expired."""
    year, month = today.year, today.month
    while True:
        if month % 3 == 0:
            expiry = third_friday(year, month)
            if expiry > today:
                return expiry
        month += 1
        if month > 12:
            year, month = year + 1, 1


def quarterly_expiries(today: dt.date, n: int) -> list[dt.date]:
    """The next ``n`` quarterly (H/M/U/Z) expiries that have not expired."""
    out = [front_quarter(today)]
    while len(out) < n:
        out.append(front_quarter(out[-1]))
    return out


def option_expiry(today: dt.date) -> dt.date:
    """A monthly (third Friday) expiry at least two weeks out."""
    year, month = today.year, today.month
    while True:
        expiry = third_friday(year, month)
        if expiry >= today + dt.timedelta(days=14):
            return expiry
        month += 1
        if month > 12:
            year, month = year + 1, 1


def option_expiries(today: dt.date, n: int) -> list[dt.date]:
    """``n`` consecutive monthly expiries, the first at least two weeks out."""
    out = [option_expiry(today)]
    while len(out) < n:
        out.append(option_expiry(out[-1] - dt.timedelta(days=13)))
    return out


def build_universe(today: dt.date | None = None) -> Universe:
    """The default universe: US stocks and ETFs, ES (four quarterly months) and NQ
    (front month) futures, FX, SPY and AAPL option chains, options on the front ES."""
    today = today or dt.datetime.now(dt.UTC).date()
    out: list[Instrument] = []
    for sym, cid, prim, name, px, (ind, cat, sub) in _STOCKS:
        out.append(_stock(sym, cid, prim, name, px, ind, cat, sub, "COMMON"))
    for sym, cid, prim, name, px in _ETFS:
        out.append(_stock(sym, cid, prim, name, px, "", "", "", "ETF"))
    for sym, cid, cur, name, px, tick in _FX:
        out.append(Instrument(
            con_id=cid, symbol=sym, sec_type="CASH", last_trade_date="", strike=0.0,
            right="", multiplier="", exchange="IDEALPRO", primary_exchange="",
            currency=cur, local_symbol=f"{sym}.{cur}", trading_class=f"{sym}.{cur}",
            min_tick=tick, long_name=name, start_price=px, market_name=f"{sym}.{cur}",
            valid_exchanges="IDEALPRO", order_types=CASH_ORDER_TYPES, market_rule_id=239,
            lot=1_000_000, max_spread_ticks=4, min_size="0.01", size_increment="0.01",
            suggested_size_increment="0.01", head_timestamp="20050301 00:00:00",
            trades=False, category="Major",
        ))
    for sym, und, name, mult, px, base in _FUTS:
        # ES lists the quarterly cycle (four months, like the Gateway's chain); NQ only
        # its front month, so `Future("NQ", exchange="CME")` still names one contract
        expiries = quarterly_expiries(today, 4 if sym == "ES" else 1)
        for n, expiry in enumerate(expiries):
            out.append(_future(sym, und, name, mult, px * (1 + 0.01 * n), base, expiry))
    front_es = next(i for i in out if i.symbol == "ES" and i.sec_type == "FUT")
    out.extend(_futures_options(front_es, _ES_FOP_STRIKES, today))
    for sym, und_id, spot, strikes, n_exp, base in _OPTION_CHAINS:
        for n, expiry in enumerate(option_expiries(today, n_exp)):
            out.extend(_options(sym, und_id, spot, strikes, expiry, base + n * 10_000, today))
    return Universe(out)


def _stock(sym: str, cid: int, prim: str, name: str, px: float, ind: str, cat: str,
           sub: str, stock_type: str) -> Instrument:
    return Instrument(
        con_id=cid, symbol=sym, sec_type="STK", last_trade_date="", strike=0.0, right="",
        multiplier="", exchange="SMART", primary_exchange=prim, currency="USD",
        local_symbol=sym, trading_class="NMS" if prim == "NASDAQ" else sym,
        min_tick=0.01, long_name=name, start_price=px,
        market_name="NMS" if prim == "NASDAQ" else sym, industry=ind, category=cat,
        subcategory=sub, stock_type=stock_type, valid_exchanges=STK_EXCHANGES,
        order_types=STK_ORDER_TYPES, max_spread_ticks=3,
    )


def _future(sym: str, und: int, name: str, mult: str, px: float, base: int,
            expiry: dt.date) -> Instrument:
    code = _MONTH_CODES[expiry.month - 1] + str(expiry.year % 10)
    return Instrument(
        con_id=base + (expiry.year % 100) * 12 + expiry.month, symbol=sym,
        sec_type="FUT", last_trade_date=expiry.strftime("%Y%m%d"), strike=0.0,
        right="", multiplier=mult, exchange="CME", primary_exchange="",
        currency="USD", local_symbol=sym + code, trading_class=sym,
        min_tick=0.25, long_name=name, start_price=round(px * 4) / 4,
        market_name=sym, time_zone="US/Central", valid_exchanges="CME,QBALGO",
        order_types=FUT_ORDER_TYPES, under_con_id=und, under_symbol=sym,
        under_sec_type="IND", market_rule_id=67, lot=1, max_spread_ticks=2,
        suggested_size_increment="1",
        head_timestamp=(expiry - dt.timedelta(days=400)).strftime("%Y%m%d 23:00:00"),
    )


def _futures_options(fut: Instrument, strikes: Sequence[float],
                     today: dt.date) -> list[Instrument]:
    """Quarterly options on a future (FOP): a call and a put per strike, expiring with
    the future, priced by the option model on the future's price."""
    out = []
    ymd = fut.last_trade_date
    t = years_to_expiry(ymd, dt.datetime.combine(today, dt.time(14, 30), tzinfo=dt.UTC))
    spot = fut.start_price
    for i, strike in enumerate(strikes):
        for j, right in enumerate("CP"):
            fair = bs_price(right, spot, strike, t, model_vol(fut.symbol, strike, spot))
            out.append(dataclasses.replace(
                fut, con_id=_FOP_CON_ID_BASE + i * 2 + j, sec_type="FOP", strike=strike,
                right=right, local_symbol=f"{fut.local_symbol} {right}{int(strike)}",
                start_price=max(0.25, round(fair * 4) / 4), under_con_id=fut.con_id,
                under_symbol=fut.symbol, under_sec_type="FUT", order_types=OPT_ORDER_TYPES,
                valid_exchanges="CME", lot=5, market_rule_id=67,
            ))
    return out


def _options(sym: str, und_id: int, spot: float, strikes: Sequence[float],
             expiry: dt.date, base: int, today: dt.date) -> list[Instrument]:
    """One expiry of a chain: a call and a put per strike, priced by the option model
    (so the walks start where the model's greeks say they should)."""
    out = []
    ymd = expiry.strftime("%Y%m%d")
    t = years_to_expiry(ymd, dt.datetime.combine(today, dt.time(14, 30), tzinfo=dt.UTC))
    for i, strike in enumerate(strikes):
        for j, right in enumerate("CP"):
            fair = bs_price(right, spot, strike, t, model_vol(sym, strike, spot))
            out.append(Instrument(
                con_id=base + i * 2 + j,
                symbol=sym, sec_type="OPT", last_trade_date=ymd, strike=strike,
                right=right, multiplier="100", exchange="SMART", primary_exchange="",
                currency="USD",
                local_symbol=f"{sym:<6}{ymd[2:]}{right}{int(strike * 1000):08d}",
                trading_class=sym, min_tick=0.01, long_name=_LONG_NAMES[sym],
                start_price=max(0.05, round(fair, 2)), market_name=sym,
                valid_exchanges=OPT_EXCHANGES, order_types=OPT_ORDER_TYPES,
                under_con_id=und_id, under_symbol=sym, under_sec_type="STK",
                market_rule_id=32, lot=10, max_spread_ticks=5,
                suggested_size_increment="1",
                head_timestamp=(expiry - dt.timedelta(days=120)).strftime("%Y%m%d 14:30:00"),
            ))
    return out


# ---------------------------------------------------------------------------
# contractDetails (10)

def trading_hours(inst: Instrument, today: dt.date, days: int = 7) -> tuple[str, str]:
    """(tradingHours, liquidHours) for the next ``days`` days, in the contract's zone."""
    trading: list[str] = []
    liquid: list[str] = []
    for n in range(days):
        d = today + dt.timedelta(days=n)
        ymd = d.strftime("%Y%m%d")
        prev = (d - dt.timedelta(days=1)).strftime("%Y%m%d")
        weekend = d.weekday() >= 5
        if weekend:
            trading.append(f"{ymd}:CLOSED")
            liquid.append(f"{ymd}:CLOSED")
        elif inst.sec_type == "STK":
            trading.append(f"{ymd}:0400-{ymd}:2000")
            liquid.append(f"{ymd}:0930-{ymd}:1600")
        elif inst.sec_type == "OPT":
            trading.append(f"{ymd}:0930-{ymd}:1600")
            liquid.append(f"{ymd}:0930-{ymd}:1600")
        elif inst.sec_type in ("FUT", "FOP"):
            trading.append(f"{prev}:1700-{ymd}:1600")
            liquid.append(f"{ymd}:0830-{ymd}:1500")
        else:  # CASH
            trading.append(f"{prev}:1715-{ymd}:1700")
            liquid.append(f"{prev}:1715-{ymd}:1700")
    return ";".join(trading), ";".join(liquid)


def contract_details_fields(req_id: int, inst: Instrument, exchange: str = "",
                            today: dt.date | None = None,
                            sec_type: str = "") -> list[object]:
    """The 40 fields of contractDetails at sv 176 (no version field, no secIds).

    ``exchange`` echoes a directed exchange from the request; otherwise the
    instrument's own (SMART for stocks), like the Gateway. ``sec_type`` echoes
    CONTFUT for a continuous-future query (same conId as the front month).
    """
    today = today or dt.datetime.now(dt.UTC).date()
    hours, liquid = trading_hours(inst, today)
    ltd = inst.last_trade_date
    if inst.sec_type in ("FUT", "FOP"):
        ltd = f"{ltd} 08:30 US/Central"
    elif inst.sec_type == "OPT":
        ltd = f"{ltd} 16:00 US/Eastern"
    rules = ",".join([str(inst.market_rule_id)] * len(inst.valid_exchanges.split(",")))
    return [
        10, req_id, inst.symbol, sec_type or inst.sec_type, ltd, inst.strike, inst.right,
        exchange or inst.exchange, inst.currency, inst.local_symbol, inst.market_name,
        inst.trading_class, inst.con_id, inst.min_tick, inst.multiplier, inst.order_types,
        inst.valid_exchanges, 1, inst.under_con_id, inst.long_name, inst.primary_exchange,
        inst.contract_month, inst.industry, inst.category, inst.subcategory,
        inst.time_zone, hours, liquid, "", "", 0,
        1, inst.under_symbol, inst.under_sec_type, rules, inst.last_trade_date,
        inst.stock_type, inst.min_size, inst.size_increment, inst.suggested_size_increment,
    ]
