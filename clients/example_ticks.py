#!/usr/bin/env python3
"""Example: stream ticks through a running hub with the SDK (blocking or asyncio).

    ibhub run --sim &                       # a hub on the simulator, default endpoints
    python clients/example_ticks.py AAPL MSFT --count 20
    python clients/example_ticks.py AAPL --asyncio

Endpoints come from --pub/--rpc, else IBHUB_PUB/IBHUB_RPC, else the hub's defaults.
The script never touches ib_insync, and survives a Gateway or hub restart without
doing anything: the SDK re-subscribes and the handlers below just report it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import sys
import threading

from ibhub.client import AsyncHub, BlockingSubscription, Hub, HubError, HubStatus, Tick


def line(tick: Tick) -> str:
    def f(x: float) -> str:
        return "-" if math.isnan(x) else f"{x:g}"

    return (f"{tick.symbol:<6} #{tick.seq:<6} bid {f(tick.bid):>9} x {f(tick.bid_size):<6} "
            f"ask {f(tick.ask):>9} x {f(tick.ask_size):<6} last {f(tick.last)}")


def on_down(status: HubStatus) -> None:
    print(f"!! upstream down: {status.state} {status.message}", file=sys.stderr)


def on_up(status: HubStatus) -> None:
    print(f"!! upstream back: {status.state}", file=sys.stderr)


def run_blocking(args: argparse.Namespace) -> None:
    """Plain threads: one blocking iterator per symbol."""
    with Hub(pub=args.pub, rpc=args.rpc, name="example_ticks") as hub:
        hub.add_disconnect_handler(on_down)
        hub.add_connect_handler(on_up)
        status = hub.status()
        print(f"hub upstream {status.state}, lease {hub.lease}, client id {hub.client_id}")
        subs = [hub.subscribe(symbol) for symbol in args.symbols]
        lock = threading.Lock()

        def read(sub: BlockingSubscription) -> None:
            for n, tick in enumerate(sub, start=1):
                assert isinstance(tick, Tick)
                with lock:
                    print(line(tick), flush=True)
                if args.count and n >= args.count:
                    break

        threads = [threading.Thread(target=read, args=(s,)) for s in subs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(f"gaps recovered: {sum(s.gaps for s in subs)}", file=sys.stderr)


async def run_async(args: argparse.Namespace) -> None:
    """asyncio: ``async for`` over each subscription."""
    async with AsyncHub(pub=args.pub, rpc=args.rpc, name="example_ticks") as hub:
        hub.add_disconnect_handler(on_down)
        hub.add_connect_handler(on_up)
        details = await hub.contract_details(args.symbols[0])
        if details:
            print(f"{details[0].symbol}: {details[0].long_name}, conId {details[0].con_id}")

        async def read(symbol: str) -> None:
            sub = await hub.subscribe(symbol)
            n = 0
            async for tick in sub:
                assert isinstance(tick, Tick)
                print(line(tick), flush=True)
                n += 1
                if args.count and n >= args.count:
                    await sub.close()
                    break

        await asyncio.gather(*(read(s) for s in args.symbols))


def main() -> int:
    parser = argparse.ArgumentParser(description="Print ticks from a running ibhub.")
    parser.add_argument("symbols", nargs="*", default=["AAPL"])
    parser.add_argument("--pub", default=None)
    parser.add_argument("--rpc", default=None)
    parser.add_argument("--count", type=int, default=0, help="ticks per symbol (0: forever)")
    parser.add_argument("--asyncio", action="store_true", help="use AsyncHub instead of Hub")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.asyncio:
            asyncio.run(run_async(args))
        else:
            run_blocking(args)
    except HubError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
