#!/usr/bin/env python3
"""Example: an options script through the hub's SDK: chain -> strike -> greeks -> bracket.

    ibhub run --sim &                              # a hub on the simulated Gateway
    python clients/example_options.py              # SPY calls, delta near 0.40
    python clients/example_options.py AAPL --right P --delta 0.30 --qty 2

1. the option chain of the underlying (``option_chain``: expirations and strikes);
2. the underlying's price, from its tick stream;
3. the strikes around the money of the nearest expiry at least a week out, each
   subscribed (one shared upstream line per option however many scripts watch it):
   their ticks carry IB's model greeks (``Tick.greeks``); the strike whose delta is
   nearest the target wins;
4. IB's option model checks the quote (``calculate_implied_volatility`` of the mid);
5. a bracket order: buy at the ask (a limit that crosses), a take-profit ``--exit-pct``
   above and a stop-loss as far below (8% by default: the hub refuses prices more than
   ``price_band_pct``, 10% by default, from the last price); it waits for the fill and
   for both children to work, then cancels them (``--keep`` leaves them working).

Endpoints come from --pub/--rpc, else IBHUB_PUB/IBHUB_RPC, else the hub's defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import math
import sys
from collections.abc import Callable

from ibhub.client import AsyncHub, HubError, Order, OrderRejectedError, Tick
from ibhub.protocol import ContractSpec, OptionChain

STRIKES_AROUND = 3  # strikes each side of the money that are watched


def pick_expiry(chain: OptionChain, min_days: int) -> str:
    """The nearest expiry at least ``min_days`` away (else the last one)."""
    today = dt.datetime.now(dt.UTC).date()
    for expiry in chain.expirations:
        if dt.datetime.strptime(expiry, "%Y%m%d").date() >= today + dt.timedelta(min_days):
            return expiry
    return chain.expirations[-1]


async def first_tick(hub: AsyncHub, spec: ContractSpec | str, ready: Callable[[Tick], bool],
                     timeout: float = 10.0) -> Tick:
    """The first tick of ``spec`` for which ``ready(tick)`` holds (the sub stays open)."""
    sub = await hub.subscribe(spec)
    async with asyncio.timeout(timeout):
        while True:
            event = await sub.get()
            if isinstance(event, Tick) and ready(event):
                return event


def mid(t: Tick) -> float:
    return round((t.bid + t.ask) / 2, 4)


async def run(args: argparse.Namespace) -> int:
    async with AsyncHub(pub=args.pub, rpc=args.rpc, name="example_options") as hub:
        chains = await hub.option_chain(args.symbol, exchange="SMART")
        if not chains:
            print(f"{args.symbol} lists no options")
            return 1
        chain = chains[0]
        expiry = pick_expiry(chain, args.min_days)
        print(f"{args.symbol} chain on {chain.exchange}: {len(chain.expirations)} expirations, "
              f"{len(chain.strikes)} strikes, multiplier {chain.multiplier}; using {expiry}")

        under = await first_tick(hub, args.symbol, lambda t: t.bid > 0 and t.ask > 0)
        spot = mid(under)
        atm = min(range(len(chain.strikes)), key=lambda i: abs(chain.strikes[i] - spot))
        strikes = chain.strikes[max(0, atm - STRIKES_AROUND): atm + STRIKES_AROUND + 1]
        print(f"{args.symbol} at {spot:g}; watching strikes {strikes}")

        specs = [ContractSpec(symbol=args.symbol, sec_type="OPT", expiry=expiry, strike=k,
                              right=args.right, multiplier=chain.multiplier)
                 for k in strikes]
        ticks = await asyncio.gather(*(
            first_tick(hub, s, lambda t: t.greeks is not None and t.bid > 0 and t.ask > 0)
            for s in specs))
        print(f"{'strike':>8} {'bid':>8} {'ask':>8} {'iv':>7} {'delta':>7} {'gamma':>7} "
              f"{'vega':>7} {'theta':>7}")
        for spec, t in zip(specs, ticks, strict=True):
            g = t.greeks
            assert g is not None
            print(f"{spec.strike:8g} {t.bid:8.2f} {t.ask:8.2f} {g.implied_vol:7.3f} "
                  f"{g.delta:7.3f} {g.gamma:7.4f} {g.vega:7.3f} {g.theta:7.3f}")
        best = min(range(len(ticks)), key=lambda i: abs(abs(_delta(ticks[i])) - args.delta))
        spec, t = specs[best], ticks[best]
        print(f"picked {args.symbol} {expiry} {spec.strike:g}{args.right}: delta "
              f"{_delta(t):.3f} (target {args.delta:g})")

        model = await hub.calculate_implied_volatility(spec, mid(t), spot)
        print(f"IB's model at the mid {mid(t):g}: implied vol {model.implied_vol:.4f}, "
              f"delta {model.delta:.3f}")

        price = round(t.ask, 2)
        try:
            parent = await hub.place_order(
                spec, "BUY", args.qty, order_type="LMT", limit_price=price,
                take_profit=round(price * (1 + args.exit_pct / 100), 2),
                stop_loss=round(price * (1 - args.exit_pct / 100), 2))
        except OrderRejectedError as exc:
            print(f"refused: {exc.reason}: {exc.message}")
            return 1
        await parent.wait_until(lambda o: o.done, 15)
        print(describe(parent))
        for leg in parent.children:
            await leg.wait_until(lambda o: o.status in ("Submitted", "PreSubmitted"), 15)
            print(describe(leg))
        if not args.keep:
            for leg in parent.children:
                await hub.cancel_order(leg)
            for leg in parent.children:
                await leg.wait_done(15)
                print(describe(leg))
        return 0 if parent.status == "Filled" else 1


def _delta(t: Tick) -> float:
    return t.greeks.delta if t.greeks is not None and not math.isnan(t.greeks.delta) else 0.0


def describe(order: Order) -> str:
    fills = ", ".join(f"{f.shares:g} @ {f.price:g}" for f in order.fills) or "no fills"
    return (f"order {order.order_id}: {order.action} {order.quantity:g} {order.order_type} "
            f"{order.limit_price or order.stop_price or ''} -> {order.status}; {fills}")


def main() -> int:
    parser = argparse.ArgumentParser(description="Chain -> strike -> greeks -> bracket order.")
    parser.add_argument("symbol", nargs="?", default="SPY")
    parser.add_argument("--right", choices=("C", "P"), default="C")
    parser.add_argument("--delta", type=float, default=0.40, help="target |delta|")
    parser.add_argument("--min-days", type=int, default=7, help="nearest expiry this far out")
    parser.add_argument("--qty", type=float, default=1)
    parser.add_argument("--exit-pct", type=float, default=8.0,
                        help="take-profit and stop-loss distance from the entry, in %%")
    parser.add_argument("--keep", action="store_true", help="leave the bracket's exits working")
    parser.add_argument("--pub", default=None)
    parser.add_argument("--rpc", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(run(args))
    except HubError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
