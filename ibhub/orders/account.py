"""Account data, centralised: one upstream subscription, served to every script.

IB allows one account-updates subscription per connection, so the hub holds it and
keeps the latest values here: account values (reqAccountUpdates), positions
(reqPositions), portfolio rows (updatePortfolio) and account-summary rows. Scripts read
the cache with ``GetPositions`` / ``GetPortfolio`` / ``GetAccountValues`` /
``GetAccountSummary`` and follow changes on ``account.<ACCOUNT>`` and
``position.<ACCOUNT>``. An update that changes nothing publishes nothing (IB re-sends
unchanged values every few minutes).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from ibhub.orders.account_summary import select
from ibhub.protocol import (
    TOPIC_ACCOUNT,
    TOPIC_POSITION,
    AccountSummaryReply,
    AccountValue,
    AccountValueEvent,
    AccountValuesReply,
    Event,
    GetAccountSummary,
    GetAccountValues,
    GetPnL,
    GetPortfolio,
    GetPositions,
    PnLInfo,
    PnLReply,
    PortfolioItem,
    PortfolioReply,
    PositionEvent,
    PositionInfo,
    PositionsReply,
    Reply,
)

log = logging.getLogger(__name__)

NAN: Final = float("nan")
EventSink = Callable[[str, Event], None]


@dataclass(slots=True)
class _Holding:
    account: str
    con_id: int
    symbol: str
    sec_type: str
    currency: str
    position: float = 0.0
    avg_cost: float = 0.0
    market_price: float = NAN
    market_value: float = NAN
    unrealized_pnl: float = NAN
    realized_pnl: float = NAN
    has_portfolio: bool = False
    has_portfolio_feed: bool = False  # updatePortfolio rows arrive (reqAccountUpdates)

    def event(self) -> PositionEvent:
        return PositionEvent(
            0,
            0,
            self.account,
            self.con_id,
            self.symbol,
            self.sec_type,
            self.currency,
            self.position,
            self.avg_cost,
            self.market_price,
            self.market_value,
            self.unrealized_pnl,
            self.realized_pnl,
        )


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


@dataclass(frozen=True, slots=True)
class PnL:
    """reqPnL (``con_id`` 0) or reqPnLSingle figures, as the Gateway last sent them."""

    account: str
    con_id: int
    daily: float
    unrealized: float
    realized: float
    position: float = NAN  # pnlSingle only
    value: float = NAN  # pnlSingle only


SummaryListener = Callable[[str, str, str, str], None]  # (account, tag, value, currency)
PnLListener = Callable[[PnL], None]


class AccountBook:
    def __init__(self, publish: EventSink) -> None:
        self._publish = publish
        self._values: dict[tuple[str, str, str], str] = {}  # (account, key, currency) -> value
        self._summary: dict[tuple[str, str, str], str] = {}
        self._holdings: dict[tuple[str, int], _Holding] = {}
        self.pnl: dict[tuple[str, int], PnL] = {}  # (account, con_id or 0) -> figures
        # in-process followers (the TWS front door): summary rows and PnL as they change
        self.summary_listeners: list[SummaryListener] = []
        self.pnl_listeners: list[PnLListener] = []

    @property
    def accounts(self) -> list[str]:
        names = {k[0] for k in self._values} | {k[0] for k in self._holdings}
        return sorted(names | {k[0] for k in self._summary})

    # ------------------------------------------------------------------ upstream -> cache

    def on_account_value(self, account: str, key: str, value: str, currency: str) -> None:
        k = (account, key, currency)
        if self._values.get(k) == value:
            return
        self._values[k] = value
        self._publish(
            TOPIC_ACCOUNT + account, AccountValueEvent(0, 0, account, key, value, currency)
        )

    def on_summary(self, account: str, tag: str, value: str, currency: str) -> None:
        k = (account, tag, currency)
        if self._summary.get(k) == value:
            return
        self._summary[k] = value
        for fn in list(self.summary_listeners):
            fn(account, tag, value, currency)

    def on_pnl(self, pnl: PnL) -> None:
        """reqPnL / reqPnLSingle figures; a pnlSingle also values the position (the only
        portfolio figures IB gives for accounts other than the reqAccountUpdates one)."""
        key = (pnl.account, pnl.con_id)
        if self.pnl.get(key) == pnl:
            return
        self.pnl[key] = pnl
        if pnl.con_id:
            self._value_from_pnl(pnl)
        for fn in list(self.pnl_listeners):
            fn(pnl)

    def _value_from_pnl(self, pnl: PnL) -> None:
        h = self._holdings.get((pnl.account, pnl.con_id))
        if h is None or h.has_portfolio_feed or not math.isfinite(pnl.value):
            return  # unknown position, or updatePortfolio (the richer source) covers it
        per_unit = h.sec_type in ("STK", "CASH") and pnl.position
        price = pnl.value / pnl.position if per_unit else NAN
        new = (price, pnl.value, pnl.unrealized, pnl.realized)
        old = (h.market_price, h.market_value, h.unrealized_pnl, h.realized_pnl)
        h.has_portfolio = True
        if all(_same(a, b) for a, b in zip(old, new, strict=True)):
            return
        h.market_price, h.market_value, h.unrealized_pnl, h.realized_pnl = new
        self._emit(h)

    def summary_cache(self) -> dict[tuple[str, str, str], str]:
        """The upstream reqAccountSummary rows: (account, tag, currency) -> value."""
        return self._summary

    def base_currencies(self) -> dict[str, str]:
        """account -> its base currency (the "Currency" account value), default USD."""
        out: dict[str, str] = {}
        for (account, key, _), value in self._values.items():
            if key == "Currency" and value:
                out[account] = value
        for (account, key, _), value in self._summary.items():
            if key == "Currency" and value:
                out.setdefault(account, value)
        return out

    def summary_rows(self, tags: list[str] | None = None, group: str = "All"
                     ) -> list[AccountValue]:
        """IB's reqAccountSummary answer from the upstream summary cache
        (:mod:`ibhub.orders.account_summary`: plain tags, ``$LEDGER``, ``$LEDGER:ALL``,
        ``$LEDGER:CCY``; group "All" or one account)."""
        return [AccountValue(a, k, v, c) for (a, k, c), v in
                select(self._summary, self.base_currencies(), tags or (), group)]

    def _holding(
        self, account: str, con_id: int, symbol: str, sec_type: str, currency: str
    ) -> _Holding:
        h = self._holdings.get((account, con_id))
        if h is None:
            h = self._holdings[(account, con_id)] = _Holding(
                account, con_id, symbol, sec_type, currency
            )
        return h

    def _emit(self, h: _Holding) -> None:
        self._publish(TOPIC_POSITION + h.account, h.event())

    def on_position(
        self,
        account: str,
        con_id: int,
        symbol: str,
        sec_type: str,
        currency: str,
        position: float,
        avg_cost: float,
    ) -> None:
        h = self._holding(account, con_id, symbol, sec_type, currency)
        if _same(h.position, position) and _same(h.avg_cost, avg_cost):
            return
        h.position, h.avg_cost = position, avg_cost
        self._emit(h)

    def on_portfolio(
        self,
        account: str,
        con_id: int,
        symbol: str,
        sec_type: str,
        currency: str,
        position: float,
        market_price: float,
        market_value: float,
        avg_cost: float,
        unrealized_pnl: float,
        realized_pnl: float,
    ) -> None:
        h = self._holding(account, con_id, symbol, sec_type, currency)
        h.has_portfolio_feed = True
        new = (position, market_price, market_value, avg_cost, unrealized_pnl, realized_pnl)
        old = (h.position, h.market_price, h.market_value, h.avg_cost, h.unrealized_pnl,
               h.realized_pnl)  # fmt: skip
        h.has_portfolio = True
        if all(_same(a, b) for a, b in zip(old, new, strict=True)):
            return
        (h.position, h.market_price, h.market_value, h.avg_cost, h.unrealized_pnl,
         h.realized_pnl) = new  # fmt: skip
        self._emit(h)

    # ------------------------------------------------------------------ requests

    def _pick(self, account: str, key_account: str) -> bool:
        return not account or account == key_account

    def positions(self, account: str = "") -> list[PositionInfo]:
        return [
            PositionInfo(
                h.account, h.con_id, h.symbol, h.sec_type, h.currency, h.position, h.avg_cost
            )
            for (acct, _), h in sorted(self._holdings.items())
            if self._pick(account, acct) and h.position != 0
        ]

    def portfolio(self, account: str = "") -> list[PortfolioItem]:
        return [
            PortfolioItem(
                h.account,
                h.con_id,
                h.symbol,
                h.sec_type,
                h.currency,
                h.position,
                h.market_price,
                h.market_value,
                h.avg_cost,
                h.unrealized_pnl,
                h.realized_pnl,
            )
            for (acct, _), h in sorted(self._holdings.items())
            if self._pick(account, acct) and h.has_portfolio and h.position != 0
        ]

    def values(self, account: str = "") -> list[AccountValue]:
        return [
            AccountValue(a, k, v, c)
            for (a, k, c), v in sorted(self._values.items())
            if self._pick(account, a)
        ]

    def summary(self, account: str = "", tags: list[str] | None = None) -> list[AccountValue]:
        """Account-summary rows: IB's reqAccountSummary answer from the upstream summary
        (``tags`` as IB takes them, $LEDGER forms included; none: every plain tag); from
        the account values while no summary has arrived (the same plain tags)."""
        if self._summary:
            return self.summary_rows(tags, account or "All")
        wanted = set(tags or ())
        return [
            AccountValue(a, k, v, c)
            for (a, k, c), v in sorted(self._values.items())
            if self._pick(account, a) and (not wanted or k in wanted)
        ]

    def pnl_of(self, account: str = "") -> list[PnL]:
        return [p for (a, _), p in sorted(self.pnl.items()) if self._pick(account, a)]

    def handlers(self) -> dict[type, Callable[[Any], Reply]]:
        """Each account request type -> the method that answers it from the cache (the
        service registers them in the hub's request registry)."""
        return {
            GetPositions: self.get_positions,
            GetPortfolio: self.get_portfolio,
            GetAccountValues: self.get_account_values,
            GetAccountSummary: self.get_account_summary,
            GetPnL: self.get_pnl,
        }

    def get_positions(self, req: GetPositions) -> Reply:
        return PositionsReply(id=req.id, positions=self.positions(req.account))

    def get_portfolio(self, req: GetPortfolio) -> Reply:
        return PortfolioReply(id=req.id, items=self.portfolio(req.account))

    def get_account_values(self, req: GetAccountValues) -> Reply:
        return AccountValuesReply(id=req.id, values=self.values(req.account))

    def get_pnl(self, req: GetPnL) -> Reply:
        return PnLReply(id=req.id, items=[
            PnLInfo(p.account, p.con_id, p.daily, p.unrealized, p.realized, p.position,
                    p.value) for p in self.pnl_of(req.account)])

    def get_account_summary(self, req: GetAccountSummary) -> Reply:
        return AccountSummaryReply(id=req.id, values=self.summary(req.account, req.tags))
