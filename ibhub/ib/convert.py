"""Pure conversions between the IB library's objects and the hub's types.

IB's camelCase stops here: the rest of the hub sees :class:`~ibhub.protocol.ContractInfo`,
:class:`~ibhub.protocol.ContractSpec` and :class:`~ibhub.protocol.BarData` only.
No I/O, no state.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from ibhub.ib.lib import Contract
from ibhub.protocol import BarData, ContractInfo, ContractSpec


def to_ib_contract(c: ContractSpec | ContractInfo) -> Contract:
    """The IB library's ``Contract`` for a hub contract: the one place the hub builds one.

    Takes what a script asked for (:class:`ContractSpec`) or a qualified contract
    (:class:`ContractInfo`); both carry the same contract fields by the same names.
    Empty fields are the library's own defaults, so a spec of ``con_id`` alone sends
    only the id.
    """
    return Contract(
        conId=c.con_id,
        symbol=c.symbol,
        secType=c.sec_type,
        lastTradeDateOrContractMonth=c.expiry,
        strike=c.strike,
        right=c.right,
        multiplier=c.multiplier,
        exchange=c.exchange,
        primaryExchange=c.primary_exchange,
        currency=c.currency,
        localSymbol=c.local_symbol,
        tradingClass=c.trading_class,
    )


def details_to_info(details: Any, requested_exchange: str) -> ContractInfo:
    """ib_insync ``ContractDetails`` -> :class:`ContractInfo` (keeps SMART if asked for)."""
    c = details.contract
    expiry = (c.lastTradeDateOrContractMonth or "").split(" ")[0]
    exchange = requested_exchange if requested_exchange == "SMART" else c.exchange
    return ContractInfo(
        con_id=int(c.conId),
        symbol=c.symbol,
        sec_type=c.secType,
        exchange=exchange or c.exchange,
        primary_exchange=c.primaryExchange or "",
        currency=c.currency,
        local_symbol=c.localSymbol or "",
        trading_class=c.tradingClass or "",
        expiry=expiry,
        strike=float(c.strike or 0.0),
        right=c.right or "",
        multiplier=str(c.multiplier or ""),
        min_tick=float(details.minTick or 0.0),
        long_name=details.longName or "",
        time_zone=details.timeZoneId or "",
        trading_hours=details.tradingHours or "",
        liquid_hours=details.liquidHours or "",
    )


def _epoch(value: Any) -> int:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return int(value.timestamp())
    if isinstance(value, dt.date):
        return int(dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC).timestamp())
    return int(value)


def bar_to_bardata(bar: Any) -> BarData:
    return BarData(
        time=_epoch(bar.date),
        open=float(bar.open),
        high=float(bar.high),
        low=float(bar.low),
        close=float(bar.close),
        volume=float(bar.volume),
        wap=float(bar.average),
        count=int(bar.barCount),
    )
