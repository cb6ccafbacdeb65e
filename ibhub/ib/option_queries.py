"""Option and instrument-search queries over the Gateway session.

Option chains (``reqSecDefOptParams``), IB's option model (``calculateImpliedVolatility``,
``calculateOptionPrice``) and symbol search (``reqMatchingSymbols``), each waiting its turn
in the hub's one upstream budget like the other one-off queries (:mod:`ibhub.ib.queries`:
same errors, same time-out) and answered in the hub's types.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

from ibhub.config import HubSettings
from ibhub.ib.convert import to_ib_contract
from ibhub.ib.lib import IB
from ibhub.ib.queries import Queries
from ibhub.protocol import ContractInfo, OptionChain, OptionComputation, SymbolMatch

__all__ = ["OptionQueries", "computation_of"]


class OptionQueries:
    """The option and symbol-search queries of a session (see module docstring)."""

    def __init__(
        self,
        settings: HubSettings,
        require: Callable[[], IB],
        queries: Queries,
    ) -> None:
        self.settings = settings
        self._require = require
        self._queries = queries

    async def _ask(self, start: Callable[[IB], Awaitable[Any]], label: str) -> Any:
        ib = self._require()
        return await self._queries.run(lambda: start(ib), label=label)

    async def option_chain(self, underlying: ContractInfo, exchange: str) -> list[OptionChain]:
        """One chain per exchange and trading class (empty: no options listed)."""
        # IB's futFopExchange is the exchange of futures options and "" for stock options
        fut_fop = exchange if underlying.sec_type in ("FUT", "IND") else ""
        chains = await self._ask(
            lambda ib: ib.reqSecDefOptParamsAsync(underlying.symbol, fut_fop,
                                                  underlying.sec_type, underlying.con_id),
            f"option chain {underlying.symbol}",
        )
        return [
            OptionChain(
                exchange=c.exchange, underlying_con_id=int(c.underlyingConId or 0),
                trading_class=c.tradingClass, multiplier=str(c.multiplier),
                expirations=sorted(c.expirations), strikes=sorted(float(k) for k in c.strikes),
            )
            for c in chains or ()
            if not exchange or c.exchange == exchange
        ]

    async def implied_volatility(
        self, contract: ContractInfo, option_price: float, underlying_price: float
    ) -> OptionComputation | None:
        comp = await self._ask(
            lambda ib: ib.calculateImpliedVolatilityAsync(
                to_ib_contract(contract), option_price, underlying_price),
            f"implied volatility {contract.local_symbol}",
        )
        return computation_of(comp)

    async def option_price(
        self, contract: ContractInfo, volatility: float, underlying_price: float
    ) -> OptionComputation | None:
        comp = await self._ask(
            lambda ib: ib.calculateOptionPriceAsync(
                to_ib_contract(contract), volatility, underlying_price),
            f"option price {contract.local_symbol}",
        )
        return computation_of(comp)

    async def matching_symbols(self, pattern: str) -> list[SymbolMatch]:
        found = await self._ask(lambda ib: ib.reqMatchingSymbolsAsync(pattern),
                                f"matching symbols {pattern!r}")
        return [
            SymbolMatch(
                con_id=d.contract.conId, symbol=d.contract.symbol, sec_type=d.contract.secType,
                primary_exchange=d.contract.primaryExchange, currency=d.contract.currency,
                derivative_sec_types=list(d.derivativeSecTypes or ()),
                # at sv 176 the library puts the description on the contract
                description=getattr(d.contract, "description", "") or "",
            )
            for d in found or ()
        ]


def _num(value: Any) -> float:
    """The library's value (None = not computed) as a float, NaN when not computed."""
    if value is None:
        return math.nan
    v = float(value)
    return v if math.isfinite(v) else math.nan


def computation_of(comp: Any) -> OptionComputation | None:
    """The library's OptionComputation (None: none came) in the hub's type."""
    if comp is None:
        return None
    return OptionComputation(
        implied_vol=_num(comp.impliedVol), delta=_num(comp.delta), opt_price=_num(comp.optPrice),
        pv_dividend=_num(comp.pvDividend), gamma=_num(comp.gamma), vega=_num(comp.vega),
        theta=_num(comp.theta), und_price=_num(comp.undPrice),
    )
