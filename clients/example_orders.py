#!/usr/bin/env python3
"""Example: trade through a running hub with the SDK (blocking or asyncio).

    python clients/example_orders.py --demo              # simulator + hub in this process
    python clients/example_orders.py AAPL --qty 10       # against a hub that serves orders
    python clients/example_orders.py AAPL --asyncio

It buys at market and waits for the fill, rests a limit order below the market,
modifies it, cancels it, and prints the positions and the account summary. Every
order carries a client order id: running the same call again after a timeout returns
the same order instead of placing a second one.

Endpoints come from --pub/--rpc, else IBHUB_PUB/IBHUB_RPC, else the hub's defaults.
``--demo`` starts a simulated Gateway and a hub with its order service in a temporary
directory first, so it runs anywhere without an account.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from ibhub.client import AsyncHub, Hub, HubError, Order, OrderRejectedError


def describe(order: Order) -> str:
    fills = ", ".join(f"{f.shares:g} @ {f.price:g}" for f in order.fills) or "no fills"
    return (f"order {order.order_id} ({order.client_order_id}): {order.action} "
            f"{order.quantity:g} {order.symbol} {order.order_type} -> {order.status}; "
            f"{fills}; commission {order.commission:g}"
            + (f"; {order.message}" if order.message else ""))  # fmt: skip


def run_blocking(args: argparse.Namespace, pub: str | None, rpc: str | None) -> None:
    with Hub(pub=pub, rpc=rpc, name="example_orders") as hub:
        market = hub.place_order(args.symbol, "BUY", args.qty)
        hub.wait_done(market, timeout=10)  # filled; IB's commission report follows the fill:
        market.wait_until_blocking(lambda o: o.commissions_reported, timeout=10)
        print(describe(market))

        price = round(market.avg_fill_price * 0.95, 2)  # well below: it rests
        resting = hub.place_order(args.symbol, "BUY", args.qty, order_type="LMT",
                                  limit_price=price)  # fmt: skip
        resting.wait_until_blocking(lambda o: o.status in ("Submitted", "PreSubmitted"), 10)
        hub.modify_order(resting, limit_price=round(price * 0.99, 2))
        hub.cancel_order(resting)
        hub.wait_done(resting, timeout=10)
        print(describe(resting))

        try:
            hub.place_order(args.symbol, "BUY", 1e9)
        except OrderRejectedError as exc:
            print(f"refused before the Gateway: {exc.reason}: {exc.message}")

        for pos in hub.positions():
            print(f"position {pos.account} {pos.symbol}: {pos.position:g} @ {pos.avg_cost:g}")
        for tag, value in sorted(hub.account_summary().items()):
            print(f"  {tag:<28} {value.value} {value.currency}")


async def run_async(args: argparse.Namespace, pub: str | None, rpc: str | None) -> None:
    async with AsyncHub(pub=pub, rpc=rpc, name="example_orders") as hub:
        market = await hub.place_order(args.symbol, "BUY", args.qty)
        market.callbacks.append(lambda order, event: event and print(f"  event {event.kind}"))
        await market.wait_until(lambda o: o.done and o.commissions_reported, 10)
        print(describe(market))

        price = round(market.avg_fill_price * 0.95, 2)
        bracket = await hub.place_order(
            args.symbol, "BUY", args.qty, order_type="LMT", limit_price=price,
            take_profit=round(price * 1.05, 2), stop_loss=round(price * 0.97, 2),
        )
        legs = [bracket, *bracket.children]
        for leg in legs:
            await leg.wait_until(lambda o: o.status in ("Submitted", "PreSubmitted"), 10)
        print(f"cancelled {await hub.cancel_all_orders()}")
        for leg in legs:
            await leg.wait_done(10)
            print(describe(leg))
        print(f"{len(await hub.executions())} execution(s); positions: "
              f"{[(p.symbol, p.position) for p in await hub.positions()]}")  # fmt: skip


@contextlib.asynccontextmanager
async def demo_hub() -> AsyncIterator[tuple[str, str]]:
    """A simulated Gateway and a hub serving orders, in a temporary directory."""
    from ibhub.config import HubSettings
    from ibhub.hub.server import HubServer, attach_orders
    from ibhub.sim import SimConfig, SimGateway

    with tempfile.TemporaryDirectory(prefix="ibhub-demo-") as tmp:
        async with SimGateway(SimConfig(host="127.0.0.1", port=0, seed=1)) as sim:
            settings = HubSettings(gateway_host="127.0.0.1", gateway_port=sim.port,
                                   pub=f"ipc://{tmp}/pub", rpc=f"ipc://{tmp}/rpc",
                                   data_dir=Path(tmp), http_port=0)  # fmt: skip
            async with HubServer(settings) as hub:
                service = getattr(hub, "orders", None) or await attach_orders(hub)
                await asyncio.wait_for(service.reconciled.wait(), 10)
                try:
                    yield hub.pub_endpoint, hub.rpc_endpoint
                finally:
                    if getattr(hub, "orders", None) is None:
                        await service.stop()


async def run_demo(args: argparse.Namespace) -> None:
    async with demo_hub() as (pub, rpc):
        if args.asyncio:
            await run_async(args, pub, rpc)
        else:
            await asyncio.to_thread(run_blocking, args, pub, rpc)


def main() -> int:
    parser = argparse.ArgumentParser(description="Place, modify and cancel orders via ibhub.")
    parser.add_argument("symbol", nargs="?", default="AAPL")
    parser.add_argument("--qty", type=float, default=10)
    parser.add_argument("--pub", default=None)
    parser.add_argument("--rpc", default=None)
    parser.add_argument("--asyncio", action="store_true", help="use AsyncHub instead of Hub")
    parser.add_argument("--demo", action="store_true",
                        help="start a simulated Gateway and a hub in this process first")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.demo:
            asyncio.run(run_demo(args))
        elif args.asyncio:
            asyncio.run(run_async(args, args.pub, args.rpc))
        else:
            run_blocking(args, args.pub, args.rpc)
    except HubError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
