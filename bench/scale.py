"""Hub footprint with many scripts, and start-up time.

Not a test.

    python bench/scale.py [--quick] [--duration 10] [--leases 50] [--per-lease 2] [--starts 5]

1. ``ibhub run --gateway`` against a simulator in its own process. One helper
   process opens ``--leases`` leases (each its own DEALER, heartbeating) and each
   subscribes ``--per-lease`` instruments (lease i takes instruments i, i+1, ... of
   the simulator's 41, so 50 x 2 = 100 subscriptions on 41 upstream lines), plus one
   SUB socket that receives every tick (so the PUB side really sends). Figures: hub
   RSS now and peak, CPU seconds per second, idle (tick rate 0) and under
   ``--rate`` ticks/s.
2. ``ibhub run --sim``: wall time from process start until a status request says
   CONNECTED, ``--starts`` times.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

import zmq
from benchlib import (
    HubProcess,
    SimProcess,
    Worker,
    cpu_seconds,
    machine,
    peak_rss_mb,
    per_instrument_rate,
    print_table,
    rss_mb,
    spread,
)


def lease_holder(conn: Connection, pub: str, rpc: str, con_ids: list[int], leases: int,
                 per_lease: int) -> None:
    """``leases`` DEALER leases heartbeating, their subscriptions, one SUB counting ticks."""
    from ibhub import wire
    from ibhub.protocol import (
        PROTOCOL_VERSION,
        ContractSpec,
        Heartbeat,
        Hello,
        Subscribe,
        Subscribed,
        Welcome,
    )

    ctx: zmq.Context[Any] = zmq.Context()
    socks = []
    lease_ids = []
    subscribed = 0
    topics: set[bytes] = set()
    for k in range(leases):
        d = ctx.socket(zmq.DEALER)
        d.setsockopt(zmq.LINGER, 0)
        d.connect(rpc)
        hello = Hello(id=1, name=f"bench-scale-{k}", protocol=PROTOCOL_VERSION)
        d.send_multipart([b"", wire.encode(hello)])
        if not d.poll(30_000):
            raise TimeoutError("no welcome")
        w = wire.decode_reply(d.recv_multipart()[-1])
        assert isinstance(w, Welcome), w
        for j in range(per_lease):
            cid = con_ids[(k + j) % len(con_ids)]
            d.send_multipart([b"", wire.encode(Subscribe(id=2 + j, lease=w.token,
                                                         contract=ContractSpec(con_id=cid)))])
            if not d.poll(30_000):
                raise TimeoutError("no reply to subscribe")
            r = wire.decode_reply(d.recv_multipart()[-1])
            assert isinstance(r, Subscribed), r
            subscribed += 1
            topics.add(r.topic.encode())
        socks.append(d)
        lease_ids.append(w.token)
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVHWM, 100_000)
    sub.connect(pub)
    for t in topics:
        sub.setsockopt(zmq.SUBSCRIBE, t)
    conn.send(("ready", {"subscriptions": subscribed, "topics": len(topics)}))
    received = 0
    next_beat = time.monotonic()
    while True:
        if conn.poll():
            conn.recv()  # "report"
            break
        now = time.monotonic()
        if now >= next_beat:
            for d, lease in zip(socks, lease_ids, strict=True):
                d.send_multipart([b"", wire.encode(Heartbeat(id=9, lease=lease))])
            next_beat = now + 0.5
        for d in socks:
            while d.poll(0):
                d.recv_multipart()
        if sub.poll(20):
            for _ in range(10_000):
                try:
                    sub.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                received += 1
    conn.send({"received": received})
    for d in socks:
        d.close(0)
    sub.close(0)
    ctx.term()


def footprint(args: argparse.Namespace) -> list[dict[str, Any]]:
    out = []
    with SimProcess(stamp="slice") as sim:
        con_ids = [i.con_id for i in sim.instruments]
        with HubProcess(sim.port) as hub:
            rss_start = rss_mb(hub.proc.pid)
            holder = Worker(lease_holder, hub.pub, hub.rpc, con_ids, args.leases, args.per_lease)
            holder.wait_ready(120)
            status = hub.status()
            for label, rate in (("idle", 0.0), (f"{args.rate:,.0f} ticks/s", args.rate)):
                sim.rate(per_instrument_rate(rate, len(con_ids)) if rate else 0.0)
                time.sleep(1.0)
                c0, p0, t0 = cpu_seconds(hub.ps), hub.published_ticks(), time.perf_counter()
                time.sleep(args.duration)
                c1, p1, t1 = cpu_seconds(hub.ps), hub.published_ticks(), time.perf_counter()
                ticks = p1 - p0
                out.append({"state": label, "leases": len(status.leases),
                            "subs": holder.info["subscriptions"], "lines": status.lines_used,
                            "cpu_per_s": (c1 - c0) / (t1 - t0), "ticks_per_s": ticks / (t1 - t0),
                            "us_per_tick": 1e6 * (c1 - c0) / ticks if ticks else float("nan"),
                            "rss": rss_mb(hub.proc.pid), "peak": peak_rss_mb(hub.proc.pid),
                            "rss_start": rss_start})
            sim.rate(0.0)
            holder.report()
            holder.close()
    return out


def startup(n: int) -> list[float]:
    times = []
    for _ in range(n):
        with HubProcess(sim=True) as hub:
            times.append(hub.ready_seconds)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="3 s windows, 3 starts")
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--rate", type=float, default=10_000.0)
    p.add_argument("--leases", type=int, default=50)
    p.add_argument("--per-lease", type=int, default=2)
    p.add_argument("--starts", type=int, default=5)
    p.add_argument("--repeat", type=int, default=1)
    args = p.parse_args()
    if args.quick:
        args.duration, args.starts = 3.0, 3
    logging.basicConfig(level=logging.WARNING)
    print(f"machine: {machine()}")
    print(f"command: python bench/scale.py {' '.join(sys.argv[1:])}")
    runs = [footprint(args) for _ in range(args.repeat)]
    rows = []
    for i, first in enumerate(runs[0]):
        rs = [r[i] for r in runs]
        rows.append([first["state"], str(first["leases"]), str(first["subs"]), str(first["lines"]),
                     spread(r["ticks_per_s"] for r in rs),
                     spread((100 * r["cpu_per_s"] for r in rs), "{:.1f}"),
                     spread((r["us_per_tick"] for r in rs), "{:.2f}"),
                     spread((r["rss"] for r in rs), "{:.0f}"),
                     spread((r["peak"] for r in rs), "{:.0f}")])
    print(f"\nhub footprint (RSS at start, before any lease: "
          f"{spread((r[0]['rss_start'] for r in runs), '{:.0f}')} MB)")
    print_table(["state", "leases", "subscriptions", "upstream lines", "ticks/s published",
                 "hub CPU %", "hub us/tick", "RSS MB", "peak RSS MB"], rows)
    times = startup(args.starts)
    print(f"\n`ibhub run --sim` to ready (status CONNECTED), {args.starts} starts: "
          f"median {spread(times, '{:.2f}')} s")


if __name__ == "__main__":
    main()
