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


def spec_to_contract(spec: ContractSpec) -> Contract:
    return Contract(
        conId=spec.con_id,
        symbol=spec.symbol,
        secType=spec.sec_type,
        lastTradeDateOrContractMonth=spec.expiry,
        strike=spec.strike,
        right=spec.right,
        multiplier=spec.multiplier,
        exchange=spec.exchange,
        primaryExchange=spec.primary_exchange,
        currency=spec.currency,
        localSymbol=spec.local_symbol,
        tradingClass=spec.trading_class,
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


def info_to_contract(info: ContractInfo) -> Contract:
    return Contract(
        conId=info.con_id,
        symbol=info.symbol,
        secType=info.sec_type,
        lastTradeDateOrContractMonth=info.expiry,
        strike=info.strike,
        right=info.right,
        multiplier=info.multiplier,
        exchange=info.exchange,
        primaryExchange=info.primary_exchange,
        currency=info.currency,
        localSymbol=info.local_symbol,
        tradingClass=info.trading_class,
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
