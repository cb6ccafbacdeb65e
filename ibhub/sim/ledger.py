"""The simulated accounts: cash, positions, realized P&L and the values IB derives from them.

Pure bookkeeping, no I/O. Everything is in USD (the simulator's base currency; non-USD
instruments are valued as if quoted in USD). Average cost follows IB: it includes the multiplier
and the commission, so `avg_cost` of 100 AAPL bought at 190 with $1 commission is 190.01.

Margin model (a simple Reg-T-like approximation, documented in docs/simulator.md): stocks, ETFs
and FX need 25% initial / 25% maintenance of |market value| when long and 30% / 30% when short;
options 100% of premium when long, 20% of underlying notional when short is approximated as 100%
of |value| + 20%; futures 8% initial / 7% maintenance of notional. BuyingPower is 4x the
available funds (a margin account's intraday figure).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

START_CASH = 1_000_000.0
BASE_CURRENCY = "USD"


@dataclass
class Holding:
    """One position: signed quantity, IB-style average cost (incl. multiplier and commission)."""

    con_id: int
    sec_type: str
    multiplier: float
    qty: float = 0.0
    avg_cost: float = 0.0
    avg_price: float = 0.0  # average fill price x multiplier, without commission
    realized_pnl: float = 0.0


@dataclass
class Valuation:
    market_price: float
    market_value: float
    unrealized_pnl: float


@dataclass
class AccountBook:
    """One account's cash and holdings."""

    name: str
    cash: float = START_CASH
    realized_pnl: float = 0.0
    commissions: float = 0.0
    holdings: dict[int, Holding] = field(default_factory=dict)

    def apply_fill(self, con_id: int, sec_type: str, multiplier: float, signed_qty: float,
                   price: float, commission: float) -> float:
        """Book one execution; returns the realized P&L of this fill (net of its commission).

        Futures move no notional: their cash changes by the realized trading gain and the
        commission only, so NetLiquidation counts their open gain (`futures_gain`) instead of
        their market value.
        """
        if signed_qty == 0:
            return 0.0
        h = self.holdings.get(con_id)
        if h is None:
            h = self.holdings[con_id] = Holding(con_id, sec_type, multiplier)
        mult = multiplier or 1.0
        qty = abs(signed_qty)
        unit = price * mult
        unit_cost = unit + commission / qty
        if h.qty == 0 or (h.qty > 0) == (signed_qty > 0):
            closing = 0.0
        else:
            closing = min(qty, abs(h.qty))
        direction = 1.0 if h.qty > 0 else -1.0
        realized = (unit - h.avg_cost) * closing * direction - commission * closing / qty
        trade_gain = (unit - h.avg_price) * closing * direction
        opening = qty - closing
        remaining_old = abs(h.qty) - closing
        if opening > 0:
            if remaining_old > 0:  # adding to a position: blend the averages
                total = remaining_old + opening
                h.avg_cost = (h.avg_cost * remaining_old + unit_cost * opening) / total
                h.avg_price = (h.avg_price * remaining_old + unit * opening) / total
            else:  # opening, or flipping through zero: the rest opens at this fill
                h.avg_cost = unit_cost
                h.avg_price = unit
        h.qty += signed_qty
        if abs(h.qty) < 1e-9:
            h.qty = 0.0
            h.avg_cost = 0.0
            h.avg_price = 0.0
        h.realized_pnl += realized
        self.realized_pnl += realized
        self.commissions += commission
        if sec_type == "FUT":
            self.cash += trade_gain - commission
        else:
            self.cash -= signed_qty * unit + commission
        return realized

    def valuation(self, h: Holding, price: float) -> Valuation:
        mult = h.multiplier or 1.0
        value = h.qty * price * mult
        unrealized = value - h.qty * h.avg_cost
        return Valuation(price, value, unrealized)

    def values(self, price_of: Callable[[int], float]) -> dict[str, float]:
        """Account values IB reports (reqAccountUpdates / reqAccountSummary), all in USD."""
        stock_value = 0.0
        option_value = 0.0
        future_pnl = 0.0
        unrealized = 0.0
        gross = 0.0
        init_margin = 0.0
        maint_margin = 0.0
        for h in self.holdings.values():
            if h.qty == 0:
                continue
            v = self.valuation(h, price_of(h.con_id))
            unrealized += v.unrealized_pnl
            gross += abs(v.market_value)
            if h.sec_type == "FUT":
                future_pnl += v.market_value - h.qty * h.avg_price
                init_margin += 0.08 * abs(v.market_value)
                maint_margin += 0.07 * abs(v.market_value)
            elif h.sec_type in ("OPT", "FOP"):
                option_value += v.market_value
                rate = 1.0 if h.qty > 0 else 1.2
                init_margin += rate * abs(v.market_value)
                maint_margin += rate * abs(v.market_value)
            else:
                stock_value += v.market_value
                rate = 0.25 if h.qty > 0 else 0.30
                init_margin += rate * abs(v.market_value)
                maint_margin += rate * abs(v.market_value)
        net_liq = self.cash + stock_value + option_value + future_pnl
        available = net_liq - init_margin
        excess = net_liq - maint_margin
        return {
            "NetLiquidation": net_liq,
            "TotalCashValue": self.cash,
            "SettledCash": self.cash,
            "AccruedCash": 0.0,
            "CashBalance": self.cash,
            "BuyingPower": max(available, 0.0) * 4.0,
            "EquityWithLoanValue": net_liq,
            "PreviousDayEquityWithLoanValue": START_CASH,
            "GrossPositionValue": gross,
            "StockMarketValue": stock_value,
            "OptionMarketValue": option_value,
            "FuturesPNL": future_pnl,
            "RegTEquity": net_liq,
            "RegTMargin": init_margin,
            "SMA": max(available, 0.0),
            "InitMarginReq": init_margin,
            "MaintMarginReq": maint_margin,
            "FullInitMarginReq": init_margin,
            "FullMaintMarginReq": maint_margin,
            "AvailableFunds": available,
            "FullAvailableFunds": available,
            "ExcessLiquidity": excess,
            "FullExcessLiquidity": excess,
            "LookAheadInitMarginReq": init_margin,
            "LookAheadMaintMarginReq": maint_margin,
            "LookAheadAvailableFunds": available,
            "LookAheadExcessLiquidity": excess,
            "Cushion": excess / net_liq if net_liq else 0.0,
            "Leverage": gross / net_liq if net_liq else 0.0,
            "UnrealizedPnL": unrealized,
            "RealizedPnL": self.realized_pnl,
        }


def margin_for(sec_type: str, signed_value: float) -> tuple[float, float]:
    """(initial, maintenance) margin of a position with this signed market value."""
    v = abs(signed_value)
    if sec_type == "FUT":
        return 0.08 * v, 0.07 * v
    if sec_type in ("OPT", "FOP"):
        rate = 1.0 if signed_value >= 0 else 1.2
        return rate * v, rate * v
    rate = 0.25 if signed_value >= 0 else 0.30
    return rate * v, rate * v
