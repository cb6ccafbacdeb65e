"""IB's account summary semantics over the hub's cache of ``reqAccountSummary`` rows.

The hub holds one upstream ``reqAccountSummary`` (group "All", every tag plus
``$LEDGER:ALL``) and answers every script's request from it, as a Gateway would:

* a plain tag (``NetLiquidation``, ``BuyingPower``, ...) gives one row per account, in
  the account's base currency (or without a currency for tags that have none);
* ``$LEDGER`` gives the ledger tags (``CashBalance``, ``TotalCashBalance``,
  ``NetLiquidationByCurrency``, ...) in the base currency only, currency ``"BASE"``;
* ``$LEDGER:ALL`` gives them for every currency (``"BASE"`` and each currency held);
* ``$LEDGER:EUR`` gives them for that currency only.

The group is ``"All"`` (every account) or one account id. A tag the cache does not hold
gives no row (IB too sends nothing for an unknown tag).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

#: the tags reqAccountSummary accepts besides $LEDGER (IB's AccountSummaryTags)
SUMMARY_TAGS: Final = frozenset({
    "AccountType", "NetLiquidation", "TotalCashValue", "SettledCash", "AccruedCash",
    "BuyingPower", "EquityWithLoanValue", "PreviousDayEquityWithLoanValue",
    "GrossPositionValue", "RegTEquity", "RegTMargin", "SMA", "InitMarginReq",
    "MaintMarginReq", "AvailableFunds", "ExcessLiquidity", "Cushion", "FullInitMarginReq",
    "FullMaintMarginReq", "FullAvailableFunds", "FullExcessLiquidity", "LookAheadNextChange",
    "LookAheadInitMarginReq", "LookAheadMaintMarginReq", "LookAheadAvailableFunds",
    "LookAheadExcessLiquidity", "HighestSeverity", "DayTradesRemaining",
    "DayTradesRemainingT+1", "DayTradesRemainingT+2", "DayTradesRemainingT+3",
    "DayTradesRemainingT+4", "Leverage",
})  # fmt: skip
#: the tags $LEDGER adds (per currency)
LEDGER_TAGS: Final = frozenset({
    "CashBalance", "TotalCashBalance", "AccruedCash", "StockMarketValue",
    "OptionMarketValue", "FutureOptionValue", "FuturesPNL", "NetLiquidationByCurrency",
    "UnrealizedPnL", "RealizedPnL", "ExchangeRate", "FundValue", "NetDividend",
    "MutualFundValue", "MoneyMarketFundValue", "CorporateBondValue", "TBondValue",
    "TBillValue", "WarrantValue", "FxCashBalance", "AccountOrGroup", "RealCurrency",
    "IssuerOptionValue", "SettledCash",
})  # fmt: skip
#: every tag the hub asks the Gateway for (ib_insync's reqAccountSummary list)
ALL_TAGS: Final = ",".join(sorted(SUMMARY_TAGS)) + ",$LEDGER:ALL"

Row = tuple[str, str, str]  # (account, tag, currency)


def wants(tags: Iterable[str]) -> tuple[frozenset[str], frozenset[str] | None]:
    """(plain tags, ledger currencies) a request's tag list asks for; ledger currencies
    None = none asked, ``{"*"}`` = every currency."""
    plain: set[str] = set()
    ledger: set[str] | None = None
    for raw in tags:
        tag = raw.strip()
        if not tag.startswith("$LEDGER"):
            if tag:
                plain.add(tag)
            continue
        which = tag.partition(":")[2].upper()
        ledger = ledger or set()
        ledger.add("BASE" if not which else "*" if which == "ALL" else which)
    return frozenset(plain), None if ledger is None else frozenset(ledger)


def matches(row: Row, base: Mapping[str, str], plain: frozenset[str],
            ledger: frozenset[str] | None, group: str = "All") -> bool:
    """Whether the cached ``row`` answers a request (``base``: account -> base currency)."""
    account, tag, currency = row
    if group not in ("", "All", "ALL") and account != group:
        return False
    if tag in plain and tag in SUMMARY_TAGS and currency in ("", base.get(account, "USD")):
        return True
    if ledger is None or tag not in LEDGER_TAGS:
        return False
    if currency == "BASE":
        return "BASE" in ledger or "*" in ledger
    return "*" in ledger or currency in ledger


def select(rows: Mapping[Row, str], base: Mapping[str, str], tags: Iterable[str],
           group: str = "All") -> list[tuple[Row, str]]:
    """The cached rows (and values) answering a request, in a stable order."""
    plain, ledger = wants(tags)
    if not plain and ledger is None:  # no tag list: every plain tag, as the hub's default
        plain = SUMMARY_TAGS
    return [(row, value) for row, value in sorted(rows.items())
            if matches(row, base, plain, ledger, group)]
