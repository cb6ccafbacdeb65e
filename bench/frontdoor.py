"""Ticks/s and added latency through the hub's TWS front door, beside direct connections.

Not a test. Three processes, as in production: the simulated Gateway, the hub
(with its front door), and the scripts. N unmodified ib_insync clients (one
process, one loop) subscribe to the same K instruments, either

* **direct**: each to the simulator itself (N x K upstream lines), or
* **front door**: each to the hub's TWS port (the hub holds K upstream lines).

The simulator runs with ``stamp_sizes=True``: the size of every streamed
tickPrice is its send time in microseconds, carried unchanged through the hub,
so ``receive time - size`` is the end-to-end latency a script sees (including
the simulator's 10 ms send slices and ib_insync's decoding, in both modes).

    python bench/frontdoor.py [--clients 10] [--instruments 4] [--rate 50] [--seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing as mp
import statistics
import tempfile
import time
from multiprocessing.connection import Connection
from typing import Any

from ibhub.ib import lib
from ibhub.ib.lib import IB, Contract

PRICE_TICKS = frozenset({1, 2, 4})


def _serve_sim(args: dict[str, Any], conn: Connection) -> None:
    from ibhub.sim import SimConfig, SimGateway

    async def run() -> None:
        cfg = SimConfig(seed=1, tick_rate=args["rate"], stamp_sizes=True,
                        max_msg_rate=10_000.0, max_clients=args["clients"] + 8,
                        max_lines=args["clients"] * args["instruments"] + 50)
        async with SimGateway(cfg) as sim:
            ids = [i.con_id for i in sim.universe if i.sec_type == "STK"]
            conn.send((sim.port, ids[: args["instruments"]]))
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # "stop"

    logging.basicConfig(level=logging.WARNING)
    _run(run())


def _serve_hub(sim_port: int, conn: Connection) -> None:
    from ibhub.config import HubSettings
    from ibhub.frontdoor import FrontDoor
    from ibhub.hub.server import HubServer

    async def run() -> None:
        tmp = tempfile.mkdtemp(prefix="ibhub-bench-")
        settings = HubSettings(gateway_port=sim_port, client_id=0, tws_port=0,
                               pub=f"ipc://{tmp}/pub", rpc=f"ipc://{tmp}/rpc", data_dir=tmp,
                               stale_after=0.0)
        async with HubServer(settings) as hub:
            while hub.upstream is None or not hub.upstream.connected:
                await asyncio.sleep(0.02)
            door = next(s for s in hub.services if isinstance(s, FrontDoor))
            conn.send(door.tws_port)
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # "stop"

    logging.basicConfig(level=logging.WARNING)
    _run(run())


def _run(coro: Any) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(coro)
    else:
        uvloop.run(coro)


def _spawn(target: Any, *args: Any) -> tuple[mp.process.BaseProcess, Connection]:
    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(target=target, args=(*args, child), daemon=True)
    proc.start()
    return proc, parent


async def measure(port: int, con_ids: list[int], clients: int, seconds: float,
                  first_id: int) -> tuple[float, list[float]]:
    """Connect ``clients`` ib_insync scripts to ``port``; ticks/s and latencies (ms)."""
    logging.getLogger(lib.NAME).setLevel(logging.CRITICAL)
    ibs = [IB() for _ in range(clients)]
    await asyncio.gather(*(ib.connectAsync("127.0.0.1", port, clientId=first_id + n,
                                           timeout=20) for n, ib in enumerate(ibs)))
    counting = False
    count = 0
    lats: list[float] = []

    def on_pending(tickers: set[Any]) -> None:
        nonlocal count
        if not counting:
            return
        now_us = time.time_ns() // 1000
        for t in tickers:
            for td in t.ticks:
                count += 1
                if td.tickType in PRICE_TICKS and td.size > 1e15:
                    lats.append((now_us - td.size) / 1000.0)

    try:
        for ib in ibs:
            ib.pendingTickersEvent += on_pending
            for con_id in con_ids:
                ib.reqMktData(Contract(conId=con_id, exchange="SMART"))
        await asyncio.sleep(1.5)  # warm-up: initial blocks, lines open, steady state
        counting = True
        t0 = time.perf_counter()
        await asyncio.sleep(seconds)
        counting = False
        elapsed = time.perf_counter() - t0
    finally:
        for ib in ibs:
            ib.disconnect()
    return count / elapsed, lats


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def main_async(a: argparse.Namespace) -> None:
    cfg = {"rate": a.rate, "clients": a.clients, "instruments": a.instruments}
    sim, sim_conn = _spawn(_serve_sim, cfg)
    hub = hub_conn = None
    loop = asyncio.get_running_loop()
    try:
        sim_port, con_ids = await loop.run_in_executor(None, sim_conn.recv)
        direct = await measure(sim_port, con_ids, a.clients, a.seconds, 100)
        hub, hub_conn = _spawn(_serve_hub, sim_port)
        tws_port = await loop.run_in_executor(None, hub_conn.recv)
        door = await measure(tws_port, con_ids, a.clients, a.seconds, 100)
    finally:  # the hub first, so it does not see its Gateway go away
        for proc, conn in ((hub, hub_conn), (sim, sim_conn)):
            if proc is not None and conn is not None:
                conn.send("stop")
                proc.join(5)
                if proc.is_alive():
                    proc.terminate()
    print(f"{a.clients} ib_insync scripts x {a.instruments} instruments, "
          f"{a.rate:g} market events/s per instrument, {a.seconds:g} s, sizes stamped")
    print(f"{'path':>12} {'ticks/s':>10} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
          f"{'mean ms':>8} {'upstream lines':>15}")
    lines = {"direct": a.clients * a.instruments, "front door": a.instruments}
    for name, (rate, lats) in (("direct", direct), ("front door", door)):
        mean = statistics.fmean(lats) if lats else float("nan")
        print(f"{name:>12} {rate:>10,.0f} {_pct(lats, 0.5):>8.2f} {_pct(lats, 0.9):>8.2f} "
              f"{_pct(lats, 0.99):>8.2f} {mean:>8.2f} {lines[name]:>15}")
    added = _pct(door[1], 0.5) - _pct(direct[1], 0.5)
    print(f"added latency through the front door (p50): {added:+.2f} ms")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--instruments", type=int, default=4)
    p.add_argument("--rate", type=float, default=50.0, help="market events/s per instrument")
    p.add_argument("--seconds", type=float, default=3.0)
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
