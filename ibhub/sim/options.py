"""The simulator's option model: Black-Scholes prices, greeks and implied volatility.

Deterministic by construction (no randomness here): an option's quotes come from its
seeded walk (:mod:`ibhub.sim.market`), its underlying's price from the underlying's
walk, and everything this module computes is a pure function of those numbers, so
the greeks a client sees are consistent with the prices it sees (the IV of the
option's mid reprices the mid). European exercise, no dividends (``pvDividend`` 0),
one flat rate: enough for a script's chain -> greeks -> order flow, and what IB's own
``calculateImpliedVolatility`` / ``calculateOptionPrice`` answer with the same model.

Units follow IB's ``tickOptionComputation``: implied vol as a fraction (0.18),
delta per 1.0 of the underlying, gamma per 1.0, vega per 1 vol point (1%), theta per
calendar day; a value the model cannot give is sent as IB's "not computed" marker
(-1 for vol/price, -2 for the greeks).
"""

from __future__ import annotations

import datetime as dt
import math
from typing import NamedTuple

__all__ = [
    "RATE",
    "Greeks",
    "bs_greeks",
    "bs_price",
    "implied_vol",
    "model_vol",
    "years_to_expiry",
]

RATE = 0.045  # the flat risk-free rate of the model (continuous)
MIN_YEARS = 1.0 / (365 * 24)  # an expiring option is priced with one hour left
_BASE_VOL = {"SPY": 0.15, "QQQ": 0.20, "IWM": 0.22, "AAPL": 0.25, "TSLA": 0.55,
             "NVDA": 0.45, "ES": 0.16, "NQ": 0.20}
_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2.0 * math.pi)


class Greeks(NamedTuple):
    """One option computation, in tickOptionComputation's units and order."""

    implied_vol: float
    delta: float
    opt_price: float
    pv_dividend: float
    gamma: float
    vega: float
    theta: float
    und_price: float


def _cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / _SQRT2))


def _pdf(x: float) -> float:
    return math.exp(-0.5 * x * x) / _SQRT2PI


def model_vol(symbol: str, strike: float, spot: float) -> float:
    """The model's volatility for a strike: a base per underlying with a skew and a smile
    (lower strikes richer, like equity index options)."""
    base = _BASE_VOL.get(symbol, 0.30)
    if strike <= 0 or spot <= 0:
        return base
    m = math.log(strike / spot)
    return max(0.05, base * (1.0 - 0.8 * m + 6.0 * m * m))


def years_to_expiry(last_trade_date: str, now: dt.datetime | None = None) -> float:
    """Years from ``now`` to 16:00 New York (taken as 21:00 UTC) on the expiry day."""
    now = now or dt.datetime.now(dt.UTC)
    try:
        day = dt.datetime.strptime(last_trade_date[:8], "%Y%m%d").replace(
            hour=21, tzinfo=dt.UTC)
    except ValueError:
        raise ValueError(f"expiry {last_trade_date!r} is not YYYYMMDD") from None
    return max(MIN_YEARS, (day - now).total_seconds() / (365.0 * 86400))


def _d1_d2(spot: float, strike: float, t: float, sigma: float) -> tuple[float, float]:
    sd = sigma * math.sqrt(t)
    d1 = (math.log(spot / strike) + (RATE + 0.5 * sigma * sigma) * t) / sd
    return d1, d1 - sd


def bs_price(right: str, spot: float, strike: float, t: float, sigma: float) -> float:
    """The Black-Scholes price of a European call ("C") or put ("P")."""
    if spot <= 0 or strike <= 0:
        raise ValueError(f"spot {spot} and strike {strike} must be positive")
    disc = math.exp(-RATE * t)
    if sigma <= 0:
        fwd = spot - strike * disc
        return max(0.0, fwd) if right == "C" else max(0.0, -fwd)
    d1, d2 = _d1_d2(spot, strike, t, sigma)
    if right == "C":
        return spot * _cdf(d1) - strike * disc * _cdf(d2)
    return strike * disc * _cdf(-d2) - spot * _cdf(-d1)


def bs_greeks(right: str, spot: float, strike: float, t: float, sigma: float,
              implied: float | None = None) -> Greeks:
    """Price and greeks at ``sigma``; ``implied`` is the vol reported (default sigma)."""
    price = bs_price(right, spot, strike, t, sigma)
    d1, d2 = _d1_d2(spot, strike, t, sigma)
    disc = math.exp(-RATE * t)
    pdf = _pdf(d1)
    sqrt_t = math.sqrt(t)
    if right == "C":
        delta = _cdf(d1)
        theta_y = -spot * pdf * sigma / (2 * sqrt_t) - RATE * strike * disc * _cdf(d2)
    else:
        delta = _cdf(d1) - 1.0
        theta_y = -spot * pdf * sigma / (2 * sqrt_t) + RATE * strike * disc * _cdf(-d2)
    gamma = pdf / (spot * sigma * sqrt_t)
    vega = spot * pdf * sqrt_t / 100.0
    return Greeks(sigma if implied is None else implied, delta, price, 0.0, gamma, vega,
                  theta_y / 365.0, spot)


def implied_vol(right: str, price: float, spot: float, strike: float, t: float) -> float | None:
    """The volatility at which the model gives ``price``; None when no volatility does
    (a price below intrinsic value or above the underlying)."""
    if price <= 0 or spot <= 0 or strike <= 0:
        return None
    lo, hi = 1e-4, 5.0
    if not bs_price(right, spot, strike, t, lo) <= price <= bs_price(right, spot, strike, t, hi):
        return None
    sigma = 0.3
    for _ in range(8):  # Newton from a mid guess; bisection below if it wanders off
        d1, _ = _d1_d2(spot, strike, t, sigma)
        vega = spot * _pdf(d1) * math.sqrt(t)
        diff = bs_price(right, spot, strike, t, sigma) - price
        if abs(diff) < 1e-7:
            return sigma
        if vega < 1e-8:
            break
        nxt = sigma - diff / vega
        if not lo < nxt < hi:
            break
        sigma = nxt
    for _ in range(100):
        sigma = 0.5 * (lo + hi)
        if bs_price(right, spot, strike, t, sigma) > price:
            hi = sigma
        else:
            lo = sigma
        if hi - lo < 1e-7:
            break
    return 0.5 * (lo + hi)
