"""Ticks to 1 and 8 consumers through NATS JetStream vs through ZeroMQ, and what the
bridge costs the hub (issue 17, docs/performance.md "NATS bridge").

Not a test. Per cell it starts a simulated Gateway process, one ``nats-server``
(JetStream in a temporary directory; tests/nats_support.py), an ``ibhub run`` subprocess
and N SDK subscriber processes subscribed to every instrument, sets the simulator's
rate, warms up and measures ``--duration`` seconds:

    python bench/nats.py [--quick] [--rate 10000] [--subs 1,8] [--duration 5]

Modes: ``zmq`` (hub without ``--nats``, SDK on ZeroMQ: the baseline), ``zmq+bridge``
(the same with ``--nats``: the bridge's extra hub CPU) and ``nats`` (hub with
``--nats``, SDK over NATS: ``AsyncHub(nats=..., hub_name=...)``).

Figures: ``got/s`` ticks per subscriber (median), ``gaps`` sequence jumps seen by all
subscribers (recovered from the last value), hub CPU seconds in the window and hub CPU
per published tick (us), nats-server CPU seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

# This file is bench/nats.py: its directory must not be on sys.path, or `import nats`
# (the client library, in the hub and the subscribers) would find this script.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))
sys.path.append(str(_HERE))  # benchlib, after site-packages

import psutil  # noqa: E402
from benchlib import (  # noqa: E402
    HubProcess,
    SimProcess,
    cpu_seconds,
    machine,
    per_instrument_rate,
    print_table,
    recv_async,
    start_workers,
)

from tests.nats_support import PASSWORD, NatsCluster  # noqa: E402

HUB = "bench"
USER = "reader"


def subscriber(conn: Connection, mode: str, hub_args: tuple[str, str, str], con_ids: list[int],
               idx: int) -> None:
    logging.basicConfig(level=logging.WARNING)

    async def main() -> None:
        from ibhub.client import AsyncHub

        pub, rpc, url = hub_args
        if mode == "nats":
            hub = AsyncHub(nats=url, hub_name=HUB, nats_user=USER, role="readonly",
                           nats_options={"password": PASSWORD}, name=f"bench-nats-{idx}",
                           request_timeout=30.0)
        else:
            hub = AsyncHub(pub, rpc, name=f"bench-zmq-{idx}", request_timeout=30.0,
                           role="readonly")
        await hub.connect()
        counting = [False]
        got = [0]

        def on_tick(_tick: Any) -> None:
            if counting[0]:
                got[0] += 1

        for cid in con_ids:
            await hub.subscribe(cid, callback=on_tick)
        conn.send(("ready", None))
        t0, t1 = await recv_async(conn)
        await asyncio.sleep(max(0.0, t0 - time.time()))
        counting[0] = True
        await asyncio.sleep(max(0.0, t1 - time.time()))
        counting[0] = False
        await recv_async(conn)  # "report"
        conn.send({"count": got[0], "gaps": hub.stats["gaps"]})
        await hub.close()

    asyncio.run(main())


def run_cell(mode: str, rate: float, subs: int, duration: float, warmup: float,
             nats: NatsCluster) -> dict[str, Any]:
    url = nats.urls[0]
    extra = ["--nats", url, "--nats-hub", HUB] if mode != "zmq" else []
    env = {"IBHUB_NATS_USER": f"hub-{HUB}", "IBHUB_NATS_PASSWORD": PASSWORD,
           "IBHUB_NATS_STREAM_MAX_BYTES": str(128 << 20),
           "IBHUB_NATS_STREAM_MAX_AGE": "60"}
    with SimProcess() as sim:
        con_ids = [i.con_id for i in sim.instruments]
        hub = HubProcess(sim.port, extra=extra, env=env)
        workers = []
        try:
            sub_mode = "nats" if mode == "nats" else "zmq"
            workers = start_workers(subscriber, [(sub_mode, (hub.pub, hub.rpc, url), con_ids, i)
                                                 for i in range(subs)])
            sim.rate(per_instrument_rate(rate, len(con_ids)))
            t0 = time.time() + warmup
            t1 = t0 + duration
            for w in workers:
                w.send((t0, t1))
            server = psutil.Process(nats.procs[0].pid)  # type: ignore[union-attr]
            time.sleep(max(0.0, t0 - time.time()))
            hub_cpu0, nats_cpu0 = cpu_seconds(hub.ps), cpu_seconds(server)
            ticks0 = hub.published_ticks()
            time.sleep(max(0.0, t1 - time.time()))
            hub_cpu = cpu_seconds(hub.ps) - hub_cpu0
            nats_cpu = cpu_seconds(server) - nats_cpu0
            published = hub.published_ticks() - ticks0
            sim.rate(0.0)
            reports = [w.report() for w in workers]
        finally:
            for w in workers:
                w.close()
            hub.close()
    got = statistics.median(r["count"] for r in reports) / duration
    return {"mode": mode, "subs": subs, "got": got, "gaps": sum(r["gaps"] for r in reports),
            "published": published / duration, "hub_cpu": hub_cpu,
            "us_per_tick": hub_cpu / published * 1e6 if published else float("nan"),
            "nats_cpu": nats_cpu}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 s windows, 1 s warm-up")
    ap.add_argument("--rate", type=float, default=10_000.0, help="simulated ticks/s in total")
    ap.add_argument("--subs", default="1,8")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--modes", default="zmq,zmq+bridge,nats")
    args = ap.parse_args()
    duration, warmup = (3.0, 1.0) if args.quick else (args.duration, 2.0)
    print(machine())
    rows = []
    nats = NatsCluster(1, hubs=(HUB,), clients=(USER,))
    nats.start()
    try:
        for subs in (int(s) for s in args.subs.split(",")):
            for mode in args.modes.split(","):
                r = run_cell(mode, args.rate, subs, duration, warmup, nats)
                rows.append([r["mode"], str(r["subs"]), f"{r['published']:,.0f}",
                             f"{r['got']:,.0f}", str(r["gaps"]), f"{r['hub_cpu']:.2f}",
                             f"{r['us_per_tick']:.1f}", f"{r['nats_cpu']:.2f}"])
                print(rows[-1], flush=True)
    finally:
        nats.stop()
    print_table(["mode", "subs", "published/s", "got/s per sub", "gaps", "hub CPU s",
                 "hub us/tick", "nats CPU s"], rows)


if __name__ == "__main__":
    main()
