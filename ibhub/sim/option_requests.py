"""The simulator's option and instrument-search requests.

* ``reqSecDefOptParams`` (78) -> securityDefinitionOptionParameter (75) per exchange,
  then its end (76): the expirations and strikes of an underlying's chain.
* ``calculateImpliedVolatility`` (54) / ``calculateOptionPrice`` (55) ->
  one tickOptionComputation (21, tick type 53 "custom") from the option model;
  their cancels (56 / 57) have nothing left to stop.
* ``reqMatchingSymbols`` (81) -> symbolSamples (79): up to 16 underlyings whose symbol
  starts with the pattern, then those whose name contains it.

Requests a Gateway would refuse are refused with the code it uses, never 321 (which
ib_async treats as a warning, so the client's request would never end).
"""

from __future__ import annotations

import logging
from collections import defaultdict

from ibhub.sim.contracts import Instrument, parse_c12
from ibhub.sim.extra_ticks import computation_fields, greeks_at, underlying_price
from ibhub.sim.handlers import NO_SECURITY
from ibhub.sim.options import bs_greeks, years_to_expiry
from ibhub.sim.session import ClientSession, Handler, RequestError

__all__ = ["option_handlers"]

log = logging.getLogger(__name__)

CHAIN_EXCHANGES = ("SMART", "CBOE", "AMEX", "ISE")  # what each chain lists, as IB does
CUSTOM_COMPUTATION = 53  # the tick type of a calculateImpliedVolatility/OptionPrice answer
MAX_SAMPLES = 16


def req_sec_def_opt_params(s: ClientSession, f: list[str]) -> None:
    """[78, reqId, underlyingSymbol, futFopExchange, underlyingSecType, underlyingConId]."""
    req_id = int(f[1])
    symbol, exchange, sec_type = f[2].upper(), f[3].upper(), f[4].upper()
    con_id = int(f[5] or 0)
    universe = s.gateway.universe
    under = universe.by_con_id(con_id) if con_id else next(
        (i for i in universe if i.symbol == symbol and i.sec_type == (sec_type or "STK")), None)
    if under is None or (symbol and under.symbol != symbol):
        raise RequestError(200, NO_SECURITY)
    chains: dict[tuple[str, str], tuple[set[str], set[float]]] = defaultdict(
        lambda: (set(), set()))
    for inst in universe:
        if inst.under_con_id == under.con_id and inst.sec_type in ("OPT", "FOP"):
            expiries, strikes = chains[(inst.trading_class, inst.multiplier)]
            expiries.add(inst.last_trade_date)
            strikes.add(inst.strike)
    listed = CHAIN_EXCHANGES if under.sec_type == "STK" else (under.exchange,)
    exchanges = [e for e in listed if not exchange or e == exchange]
    for exch in exchanges:
        for (trading_class, mult), (expiries, strikes) in sorted(chains.items()):
            s.send(75, req_id, exch, under.con_id, trading_class, mult,
                   len(expiries), *sorted(expiries), len(strikes), *sorted(strikes))
    s.send(76, req_id)


def _option(s: ClientSession, f: list[str]) -> Instrument:
    query = parse_c12(f, 3)
    found = s.gateway.universe.resolve(query)
    if len(found) != 1:
        raise RequestError(200, NO_SECURITY if not found else
                           f"The contract description specified for {query.symbol} is "
                           "ambiguous.")
    inst = found[0]
    if inst.sec_type not in ("OPT", "FOP") or not inst.under_con_id:
        raise RequestError(322, f"Error processing request.-'{f[0]}' : cause - "
                                f"{inst.local_symbol} is a {inst.sec_type}, not an option")
    return inst


def _number(text: str, what: str) -> float:
    try:
        return float(text) if text else 0.0
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a number") from None


def calculate_implied_volatility(s: ClientSession, f: list[str]) -> None:
    """[54, 3, reqId, C12, optionPrice, underPrice, nOptions, options]."""
    req_id = int(f[2])
    inst = _option(s, f)
    price = _number(f[15], "optionPrice")
    spot = _number(f[16], "underPrice") or underlying_price(s.gateway.market, inst)
    if price <= 0 or spot <= 0:
        raise RequestError(322, "Error processing request.-'54' : cause - the option and "
                                "underlying prices must be positive")
    g = greeks_at(inst, price, spot)
    s.send(*computation_fields(req_id, CUSTOM_COMPUTATION, g, price, spot))


def calculate_option_price(s: ClientSession, f: list[str]) -> None:
    """[55, 3, reqId, C12, volatility, underPrice, nOptions, options]."""
    req_id = int(f[2])
    inst = _option(s, f)
    vol = _number(f[15], "volatility")
    spot = _number(f[16], "underPrice") or underlying_price(s.gateway.market, inst)
    if not 0 < vol < 10 or spot <= 0:
        raise RequestError(322, "Error processing request.-'55' : cause - the volatility "
                                "must be in (0, 10) and the underlying price positive")
    g = bs_greeks(inst.right, spot, inst.strike, years_to_expiry(inst.last_trade_date), vol)
    s.send(*computation_fields(req_id, CUSTOM_COMPUTATION, g, g.opt_price, spot))


def cancel_calculation(s: ClientSession, f: list[str]) -> None:
    """56 / 57: the answer was the one computation; nothing is running."""


def req_matching_symbols(s: ClientSession, f: list[str]) -> None:
    """[81, reqId, pattern] -> [79, reqId, n, (conId, symbol, secType, primaryExchange,
    currency, nDeriv, deriv*, description, issuerId)*n]."""
    req_id = int(f[1])
    pattern = f[2].strip().upper()
    if not pattern:
        raise RequestError(322, "Error processing request.-'81' : cause - empty pattern")
    universe = list(s.gateway.universe)
    derivs: dict[int, set[str]] = defaultdict(set)
    for inst in universe:
        if inst.under_con_id:
            derivs[inst.under_con_id].add(inst.sec_type)
    bases = [i for i in universe if i.sec_type in ("STK", "CASH")]
    for inst in universe:  # a future's underlying index stands for its symbol
        if inst.sec_type == "FUT" and all(b.con_id != inst.under_con_id for b in bases):
            bases.append(inst)
    by_symbol = [b for b in bases if b.symbol.startswith(pattern)]
    by_name = [b for b in bases if b not in by_symbol and pattern in b.long_name.upper()]
    out: list[object] = []
    seen: set[int] = set()
    for b in sorted(by_symbol, key=lambda i: (len(i.symbol), i.symbol)) + by_name:
        con_id = b.under_con_id if b.sec_type == "FUT" else b.con_id
        if con_id in seen:
            continue
        seen.add(con_id)
        if len(seen) > MAX_SAMPLES:
            break
        kinds = sorted(derivs.get(con_id, ()))
        sec_type = "IND" if b.sec_type == "FUT" else b.sec_type
        primary = b.primary_exchange or b.exchange
        out += [con_id, b.symbol, sec_type, primary, b.currency, len(kinds), *kinds,
                b.long_name, ""]
    s.send(79, req_id, min(len(seen), MAX_SAMPLES), *out)


def option_handlers() -> dict[int, Handler]:
    return {
        78: req_sec_def_opt_params,
        54: calculate_implied_volatility,
        55: calculate_option_price,
        56: cancel_calculation,
        57: cancel_calculation,
        81: req_matching_symbols,
    }
