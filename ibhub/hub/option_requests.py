"""Option and instrument-data requests: option chains, IB's option model, symbol search.

Thin over the upstream session's option queries (:mod:`ibhub.ib.option_queries`): the
contract is resolved through the market-data service's cache first (an option
calculation needs exactly one option; a chain exactly one underlying). Each waits on
the Gateway and runs as a task (``slow``); none needs a lease (read-only, like
contract details). Option greeks themselves stream on the tick topic (``Tick.greeks``).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ibhub.hub.registry import Context, Registry
from ibhub.ib.queries import UpstreamDown, UpstreamRequestError
from ibhub.protocol import (
    CalculateImpliedVolatility,
    CalculateOptionPrice,
    ContractInfo,
    Error,
    ErrorCode,
    GetMatchingSymbols,
    GetOptionChain,
    MatchingSymbolsReply,
    OptionChainReply,
    OptionComputationReply,
    Reply,
)
from ibhub.tws.pacing import PacerBusy

if TYPE_CHECKING:
    from ibhub.hub.server import HubServer

OPTION_TYPES = ("OPT", "FOP")


class OptionRequests:
    """Serves the option and symbol-search requests for ``hub``."""

    def __init__(self, hub: HubServer) -> None:
        self.hub = hub

    def register(self, registry: Registry) -> None:
        registry.add(GetOptionChain, self.option_chain, slow=True)
        registry.add(CalculateImpliedVolatility, self.implied_volatility, slow=True)
        registry.add(CalculateOptionPrice, self.option_price, slow=True)
        registry.add(GetMatchingSymbols, self.matching_symbols, slow=True)

    async def option_chain(self, req: GetOptionChain, ctx: Context) -> Reply:
        under = await self.hub.market.resolve_one(req.id, req.underlying)
        if isinstance(under, Error):
            return under
        chains = await _upstream(req.id, "option chain",
                                 lambda q: q.option_chain(under, req.exchange), self.hub)
        if isinstance(chains, Error):
            return chains
        return OptionChainReply(id=req.id, underlying=under, chains=chains)

    async def implied_volatility(self, req: CalculateImpliedVolatility, ctx: Context) -> Reply:
        bad = _positive(req.id, option_price=req.option_price,
                        underlying_price=req.underlying_price)
        option = bad or await self._option(req.id, req)
        if isinstance(option, Error):
            return option
        comp = await _upstream(
            req.id, "implied volatility",
            lambda q: q.implied_volatility(option, req.option_price, req.underlying_price),
            self.hub)
        return _computation(req.id, option, comp)

    async def option_price(self, req: CalculateOptionPrice, ctx: Context) -> Reply:
        bad = _positive(req.id, volatility=req.volatility,
                        underlying_price=req.underlying_price)
        if bad is None and req.volatility >= 10:
            bad = Error(id=req.id, code=ErrorCode.BAD_REQUEST,
                        message=f"volatility {req.volatility:g} is a fraction (0.2 = 20%) "
                                "and must be below 10")
        option = bad or await self._option(req.id, req)
        if isinstance(option, Error):
            return option
        comp = await _upstream(
            req.id, "option price",
            lambda q: q.option_price(option, req.volatility, req.underlying_price), self.hub)
        return _computation(req.id, option, comp)

    async def matching_symbols(self, req: GetMatchingSymbols, ctx: Context) -> Reply:
        if not req.pattern.strip():
            return Error(id=req.id, code=ErrorCode.BAD_REQUEST,
                         message="pattern is empty: give the start of a symbol or a name")
        found = await _upstream(req.id, "symbol search",
                                lambda q: q.matching_symbols(req.pattern.strip()), self.hub)
        if isinstance(found, Error):
            return found
        return MatchingSymbolsReply(id=req.id, matches=found)

    async def _option(self, rid: int,
                      req: CalculateImpliedVolatility | CalculateOptionPrice) -> Any:
        option = await self.hub.market.resolve_one(rid, req.contract)
        if isinstance(option, Error):
            return option
        if option.sec_type not in OPTION_TYPES:
            return Error(id=rid, code=ErrorCode.BAD_REQUEST,
                         message=f"{option.symbol} (con_id {option.con_id}) is a "
                                 f"{option.sec_type}, not an option (OPT or FOP)")
        return option


def _positive(rid: int, **values: float) -> Error | None:
    for name, value in values.items():
        if not (math.isfinite(value) and value > 0):
            return Error(id=rid, code=ErrorCode.BAD_REQUEST,
                         message=f"{name} must be a positive number, not {value!r}")
    return None


def _computation(rid: int, option: ContractInfo, comp: Any) -> Reply:
    if isinstance(comp, Error):
        return comp
    if comp is None:
        return Error(id=rid, code=ErrorCode.TIMEOUT,
                     message="IB sent no option computation (its model gives none "
                             "within 4 s for this contract)")
    return OptionComputationReply(id=rid, contract=option, computation=comp)


async def _upstream(rid: int, what: str, call: Callable[[Any], Awaitable[Any]],
                    hub: HubServer) -> Any:
    """``call(option_queries)``, with the session's failures as Error replies."""
    upstream = hub.upstream
    if upstream is None:
        return Error(id=rid, code=ErrorCode.UPSTREAM_DOWN, message="the hub is starting")
    try:
        return await call(upstream.option_queries)
    except UpstreamDown as exc:
        return Error(id=rid, code=ErrorCode.UPSTREAM_DOWN, message=str(exc))
    except UpstreamRequestError as exc:
        return Error(id=rid, code=ErrorCode.IB_ERROR, ib_code=exc.code,
                     message=f"IB refused the {what}: {exc.message}")
    except TimeoutError:
        return Error(id=rid, code=ErrorCode.TIMEOUT,
                     message=f"no {what} within {hub.settings.request_timeout:g}s")
    except PacerBusy as exc:
        return Error(id=rid, code=ErrorCode.BUSY, message=str(exc))
