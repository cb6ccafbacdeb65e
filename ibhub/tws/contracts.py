"""The TWS contract block (C12) as one typed value, shared by both servers.

Requests name a contract with twelve fields (tws-protocol.md section 4):
conId, symbol, secType, lastTradeDateOrContractMonth, strike, right, multiplier,
exchange, primaryExchange, currency, localSymbol, tradingClass. The simulator
matches them against its universe; the front door turns them into the hub's
``ContractSpec`` and, the other way round, builds them from what the hub resolved
for the message builders (``ibhub.sim.broker_messages.InstrumentLike``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["ContractFields", "parse_c12"]


@dataclass(frozen=True, slots=True)
class ContractFields:
    """The twelve C12 fields, typed. In a request an empty string means "not specified"."""

    con_id: int = 0
    symbol: str = ""
    sec_type: str = ""
    last_trade_date: str = ""
    strike: float = 0.0
    right: str = ""
    multiplier: str = ""
    exchange: str = ""
    primary_exchange: str = ""
    currency: str = ""
    local_symbol: str = ""
    trading_class: str = ""


def parse_c12(fields: Sequence[str], offset: int) -> ContractFields:
    """Read the 12 contract fields starting at ``offset``.

    Raises ``ValueError`` with a message naming the bad field when conId or strike
    is not a number or the block is cut short; the session turns that into an error
    reply on the request id.
    """
    if len(fields) < offset + 12:
        raise ValueError(f"contract block needs 12 fields, message has {len(fields) - offset}")
    f = fields[offset : offset + 12]
    try:
        con_id = int(f[0] or 0)
    except ValueError:
        raise ValueError(f"conId {f[0]!r} is not an integer") from None
    try:
        strike = float(f[4] or 0.0)
    except ValueError:
        raise ValueError(f"strike {f[4]!r} is not a number") from None
    return ContractFields(
        con_id=con_id, symbol=f[1].strip().upper(), sec_type=f[2].strip().upper(),
        last_trade_date=f[3].strip(), strike=strike, right=_norm_right(f[5]),
        multiplier=f[6].strip(), exchange=f[7].strip().upper(),
        primary_exchange=f[8].strip().upper(), currency=f[9].strip().upper(),
        local_symbol=f[10].strip(), trading_class=f[11].strip(),
    )


def _norm_right(right: str) -> str:
    r = right.strip().upper()
    return {"CALL": "C", "PUT": "P", "?": "", "0": ""}.get(r, r)
