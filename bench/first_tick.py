"""Time to first tick when many scripts start at once, direct and through the front door.

Not a test. The simulated Gateway and the hub run in processes of their own (as in
production); N unmodified ib_insync scripts (one process, one loop) start together,
each as a typical script does: connect, ``qualifyContractsAsync(Stock(symbol))``, then
``reqMktData`` and wait for the first bid. Scripts take the universe's stocks in turn
(30 scripts: 26 stocks, 4 of them watched by two scripts). Reported per path: the
median / p90 / max seconds from a script's start to its first bid, and from its
``reqMktData`` to its first bid.

    python bench/first_tick.py [--clients 30] [--rounds 1]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import statistics
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from frontdoor import _serve_hub, _spawn

from ibhub.ib import lib
from ibhub.ib.lib import IB

SYMBOLS = ("AAPL", "MSFT", "TSLA", "NVDA", "AMZN", "GOOGL", "META", "AMD", "NFLX", "JPM",
           "XOM", "BAC", "INTC", "KO", "PEP", "WMT", "DIS", "IBM", "CSCO", "V", "SPY", "QQQ",
           "IWM", "DIA", "GLD", "TLT")


def _serve_sim(args: dict[str, Any], conn: Connection) -> None:
    """The simulated Gateway; answers "counts" with the requests it got per message id."""
    from ibhub.sim import SimConfig, SimGateway

    async def run() -> None:
        cfg = SimConfig(seed=1, tick_rate=args["rate"], max_clients=args["clients"] + 8,
                        max_lines=args["clients"] + 50)
        async with SimGateway(cfg) as sim:
            conn.send(sim.port)
            loop = asyncio.get_running_loop()
            while (cmd := await loop.run_in_executor(None, conn.recv)) != "stop":
                conn.send(dict(sim.request_counts))
                sim.request_counts.clear()
                del cmd

    logging.basicConfig(level=logging.WARNING)
    asyncio.run(run())


async def one_script(port: int, client_id: int, symbol: str,
                     all_done: asyncio.Event) -> tuple[float, float]:
    """(seconds from start to first bid, seconds from reqMktData to first bid); the
    script keeps its line until every script has its first bid (scripts keep running)."""
    t0 = time.perf_counter()
    ib = IB()
    try:
        await ib.connectAsync("127.0.0.1", port, clientId=client_id, timeout=30)
        c = lib.module.Stock(symbol, "SMART", "USD")
        await ib.qualifyContractsAsync(c)
        t1 = time.perf_counter()
        ticker = ib.reqMktData(c)
        while not (ticker.bid > 0 and math.isfinite(ticker.bid)):
            await ticker.updateEvent
        t2 = time.perf_counter()
        await all_done.wait()
        return t2 - t0, t2 - t1
    finally:
        ib.disconnect()


async def start_together(port: int, clients: int, first_id: int) -> list[tuple[float, float]]:
    logging.getLogger(lib.NAME).setLevel(logging.CRITICAL)
    done = asyncio.Event()
    tasks = [asyncio.ensure_future(one_script(port, first_id + n, SYMBOLS[n % len(SYMBOLS)],
                                              done)) for n in range(clients)]
    try:
        async with asyncio.timeout(60):
            while sum(t.done() for t in tasks) + _waiting(tasks) < clients:
                await asyncio.sleep(0.01)
    finally:
        done.set()
    return await asyncio.gather(*tasks)


def _waiting(tasks: list[Any]) -> int:
    """Scripts that have their first bid (and wait for the others)."""
    return sum(1 for t in tasks if not t.done() and _has_bid(t))


def _has_bid(task: Any) -> bool:
    frame = task.get_coro().cr_frame
    return frame is not None and "t2" in frame.f_locals


def _row(name: str, results: list[tuple[float, float]]) -> str:
    total = sorted(r[0] for r in results)
    after = sorted(r[1] for r in results)
    p90 = total[min(len(total) - 1, int(0.9 * len(total)))]
    return (f"{name:>11} {statistics.median(total):>8.3f} {p90:>8.3f} {total[-1]:>8.3f}"
            f" {statistics.median(after):>12.3f} {after[-1]:>10.3f}")


async def main_async(a: argparse.Namespace) -> None:
    cfg = {"rate": a.rate, "clients": a.clients, "instruments": 1}
    sim, sim_conn = _spawn(_serve_sim, cfg)
    loop = asyncio.get_running_loop()
    rows: list[str] = []
    try:
        sim_port = await loop.run_in_executor(None, sim_conn.recv)

        async def counts() -> dict[int, int]:
            sim_conn.send("counts")
            return await loop.run_in_executor(None, sim_conn.recv)

        for r in range(a.rounds):
            await counts()
            direct = await start_together(sim_port, a.clients, 100 + 100 * r)
            rows.append(_row("direct", direct) + f"  {sum((await counts()).values()):>9}")
            # a fresh hub per round: nothing cached, no line open yet
            hub, hub_conn = _spawn(_serve_hub, sim_port)
            try:
                tws_port = await loop.run_in_executor(None, hub_conn.recv)
                # a hub runs long before scripts start: let its own start-up requests
                # (positions, orders, account) leave the 1-second pacing window first
                await asyncio.sleep(1.5)
                await counts()
                door = await start_together(tws_port, a.clients, 100)
                upstream = await counts()
                rows.append(_row("front door", door) + f"  {sum(upstream.values()):>9}")
                if a.verbose:
                    print("upstream requests by message id:", dict(sorted(upstream.items())))
            finally:
                hub_conn.send("stop")
                hub.join(5)
                if hub.is_alive():
                    hub.terminate()
    finally:
        sim_conn.send("stop")
        sim.join(5)
        if sim.is_alive():
            sim.terminate()
    print(f"{a.clients} ib_insync scripts starting at once (connect, qualify, reqMktData), "
          f"{a.rate:g} market events/s per instrument")
    print(f"{'path':>11} {'p50 s':>8} {'p90 s':>8} {'max s':>8} {'mkt->bid p50':>12} "
          f"{'max':>10}  {'upstream requests':>9}")
    for row in rows:
        print(row)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=30)
    p.add_argument("--rate", type=float, default=4.0, help="market events/s per instrument")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--verbose", action="store_true", help="upstream requests per message id")
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
