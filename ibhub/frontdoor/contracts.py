"""Contracts between the TWS wire (the C12 block) and the hub's typed contracts.

Both directions use :class:`~ibhub.tws.contracts.ContractFields`: parsed from a
request, and built from a :class:`ContractInfo` for the simulator's message
builders (which read those twelve fields).
"""

from __future__ import annotations

from typing import TypeVar

import msgspec

from ibhub.hub.requests import BadRequest, check_fields
from ibhub.protocol import ContractInfo, ContractSpec, GetContractDetails
from ibhub.tws.contracts import ContractFields

T = TypeVar("T", bound=msgspec.Struct)


def inst_from_info(info: ContractInfo) -> ContractFields:
    """The twelve fields of a contract the hub resolved."""
    return ContractFields(
        con_id=info.con_id, symbol=info.symbol, sec_type=info.sec_type,
        last_trade_date=info.expiry, strike=info.strike, right=info.right,
        multiplier=info.multiplier, exchange=info.exchange,
        primary_exchange=info.primary_exchange, currency=info.currency,
        local_symbol=info.local_symbol, trading_class=info.trading_class,
    )  # fmt: skip


def inst_for(known: dict[int, ContractInfo], con_id: int, symbol: str, sec_type: str,
             currency: str, exchange: str = "") -> ContractFields:
    """The full contract if the hub resolved it before, else the fields at hand."""
    info = known.get(con_id)
    if info is not None:
        return inst_from_info(info)
    return ContractFields(con_id=con_id, symbol=symbol, sec_type=sec_type,
                          currency=currency, exchange=exchange)


def spec_from_query(q: ContractFields) -> ContractSpec:
    """A C12 block as the hub's :class:`ContractSpec`, checked by the same field rules
    as a ZeroMQ request (``protocol.TEXT_PATTERN``, lengths): a field that breaks one
    raises ``ValueError`` naming it (``$.contract.symbol``), answered 321 on the
    request's id.

    With a conId the block is taken as given (blank fields stay blank, so a conId
    names any kind of contract); without one, blank secType/exchange/currency get
    the hub's defaults (STK, SMART, USD), like its ZeroMQ clients.
    """
    spec = _spec(q)
    checked(GetContractDetails(id=0, contract=spec))
    return spec


def checked(req: T) -> T:
    """``req`` (a request the front door built from a script's fields) if it meets the
    ZeroMQ decoder's field rules, else ``ValueError`` naming the field (-> 321)."""
    try:
        check_fields(req)
    except BadRequest as exc:
        raise ValueError(str(exc)) from None
    return req


def _spec(q: ContractFields) -> ContractSpec:
    if q.con_id:
        return ContractSpec(
            con_id=q.con_id, symbol=q.symbol, sec_type=q.sec_type, exchange=q.exchange,
            currency=q.currency, expiry=q.last_trade_date, strike=q.strike, right=q.right,
            multiplier=q.multiplier, primary_exchange=q.primary_exchange,
            local_symbol=q.local_symbol, trading_class=q.trading_class,
        )  # fmt: skip
    return ContractSpec(
        symbol=q.symbol, sec_type=q.sec_type or "STK", exchange=q.exchange or "SMART",
        currency=q.currency or "USD", expiry=q.last_trade_date, strike=q.strike,
        right=q.right, multiplier=q.multiplier, primary_exchange=q.primary_exchange,
        local_symbol=q.local_symbol, trading_class=q.trading_class,
    )  # fmt: skip
