"""Contracts the front door learns from the Gateway's contractDetails replies.

A script qualifies its contract (``reqContractDetails``, passed through to the
Gateway) and then asks for its market data by conId. Without this the hub would ask
the Gateway for the same contract's details a second time (to open the line) in the
one upstream budget, and 30 scripts starting together would wait for 30 more queued
requests before their first tick (a median 2 s to the first bid with 30 scripts). The
pass-through tap shows every contractDetails (10) reply here; the contract goes to the
market-data service's conId cache (``MarketDataService.remember``), so the line
request that follows needs no lookup.

The fields are positional at server version 176 (docs: tws-protocol.md 5.4).
"""

from __future__ import annotations

import logging

from ibhub.protocol import ContractInfo

log = logging.getLogger(__name__)


def info_from_details(parts: list[bytes]) -> ContractInfo | None:
    """[10, reqId, symbol, secType, lastTradeDate, strike, right, exchange, currency,
    localSymbol, marketName, tradingClass, conId, minTick, multiplier, orderTypes,
    validExchanges, priceMagnifier, underConId, longName, primaryExchange, contractMonth,
    industry, category, subcategory, timeZoneId, tradingHours, liquidHours, ...];
    None if the message does not parse (the reply still goes to the script unchanged)."""
    try:
        f = [p.decode() for p in parts[:28]]
        con_id = int(f[12])
        if con_id <= 0:
            return None
        return ContractInfo(
            con_id=con_id, symbol=f[2], sec_type=f[3], exchange=f[7],
            primary_exchange=f[20], currency=f[8], local_symbol=f[9], trading_class=f[11],
            expiry=f[4].split(" ")[0], strike=float(f[5] or 0.0), right=f[6],
            multiplier=f[14], min_tick=float(f[13] or 0.0), long_name=f[19],
            time_zone=f[25], trading_hours=f[26], liquid_hours=f[27],
        )
    except (IndexError, ValueError, UnicodeDecodeError) as exc:
        log.debug("contractDetails not learned (%s): %r", exc, parts[:14])
        return None
