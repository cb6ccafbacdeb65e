"""Request/reply round trips: status and snapshot.

Not a test.

    python bench/rpc.py [--quick] [--requests 2000] [--rate 10000]

``ibhub run --gateway`` against a simulator in its own process; one lease holds a
subscription to AAPL (so ``tick.AAPL`` has a last value) and, while loaded, to every
instrument, with one SUB process receiving every tick. From this process, in
sequence (one request in flight), ``--requests`` round trips each of:

* raw DEALER (pyzmq + msgspec): ``status``, ``snapshot tick.AAPL``;
* SDK (``AsyncHub.status()``, ``AsyncHub.snapshot("tick.AAPL")``).

Measured idle and with the simulator streaming ``--rate`` ticks/s through the hub.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from typing import Any

import zmq
from benchlib import (
    HubProcess,
    SimProcess,
    Worker,
    machine,
    pct,
    per_instrument_rate,
    print_table,
    spread,
)
from scale import lease_holder


def raw_round_trips(rpc: str, n: int) -> dict[str, list[float]]:
    from ibhub import wire
    from ibhub.protocol import GetSnapshot, GetStatus, Snapshot, StatusReply

    ctx: zmq.Context[Any] = zmq.Context()
    d = ctx.socket(zmq.DEALER)
    d.setsockopt(zmq.LINGER, 0)
    d.connect(rpc)
    out: dict[str, list[float]] = {}
    try:
        for name, req, expected in (("raw status", GetStatus(id=1), StatusReply),
                                    ("raw snapshot", GetSnapshot(id=2, topic="tick.AAPL"),
                                     Snapshot)):
            payload = wire.encode(req)
            times = []
            for _ in range(n + 20):
                t0 = time.perf_counter()
                d.send_multipart([b"", payload])
                if not d.poll(10_000):
                    raise TimeoutError(f"no reply to {name}")
                reply = wire.decode_reply(d.recv_multipart()[-1])
                times.append(time.perf_counter() - t0)
                if not isinstance(reply, expected):
                    raise RuntimeError(f"{name}: unexpected reply {reply}")
            out[name] = times[20:]  # first ones warm up the connection
    finally:
        d.close(0)
        ctx.term()
    return out


async def sdk_round_trips(pub: str, rpc: str, n: int) -> dict[str, list[float]]:
    from ibhub.client import AsyncHub

    out: dict[str, list[float]] = {}
    async with AsyncHub(pub, rpc, name="bench-rpc") as hub:
        for name, call in (("SDK status()", hub.status),
                           ("SDK snapshot()", lambda: hub.snapshot("tick.AAPL"))):
            times = []
            for _ in range(n + 20):
                t0 = time.perf_counter()
                await call()
                times.append(time.perf_counter() - t0)
            out[name] = times[20:]
    return out


def run_once(args: argparse.Namespace) -> dict[str, dict[str, list[float]]]:
    results: dict[str, dict[str, list[float]]] = {}
    with SimProcess(stamp="slice") as sim:
        con_ids = [i.con_id for i in sim.instruments]
        with HubProcess(sim.port) as hub:
            # one lease per instrument keeps every line (AAPL included) subscribed
            holder = Worker(lease_holder, hub.pub, hub.rpc, con_ids, len(con_ids), 1)
            holder.wait_ready(120)
            try:
                for label, rate in (("idle", 0.0), (f"{args.rate:,.0f} ticks/s", args.rate)):
                    sim.rate(per_instrument_rate(rate, len(con_ids)) if rate else 0.0)
                    time.sleep(1.0)
                    r = raw_round_trips(hub.rpc, args.requests)
                    r.update(asyncio.run(sdk_round_trips(hub.pub, hub.rpc, args.requests)))
                    results[label] = r
                sim.rate(0.0)
            finally:
                holder.report()
                holder.close()
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="300 requests each")
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--rate", type=float, default=10_000.0)
    p.add_argument("--repeat", type=int, default=1)
    args = p.parse_args()
    if args.quick:
        args.requests = 300
    logging.basicConfig(level=logging.WARNING)
    print(f"machine: {machine()}")
    print(f"command: python bench/rpc.py {' '.join(sys.argv[1:])}")
    runs = [run_once(args) for _ in range(args.repeat)]
    rows = []
    us = "{:,.0f}"
    for state, calls in runs[0].items():
        for name in calls:
            samples = [r[state][name] for r in runs]
            rows.append([state, name, str(len(samples[0])),
                         spread((1e6 * pct(s, 50) for s in samples), us),
                         spread((1e6 * pct(s, 99) for s in samples), us),
                         spread((1e6 * max(s) for s in samples), us)])
    print(f"\nround trips, one request in flight (us; median [min-max] over {args.repeat} runs)")
    print_table(["load", "request", "n", "p50 us", "p99 us", "max us"], rows)


if __name__ == "__main__":
    main()
