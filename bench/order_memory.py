"""Hub memory per order, with and without pruning ib_insync's caches (ibhub.ib.trade_cache).

Not a test. For each mode, a fresh simulated Gateway (its own process) and a fresh hub
with its order service (another process, journal in a temporary directory): one wire
script places ``--warmup`` market orders of 1 share, then ``--orders`` more; after each
batch the hub reports, once every order is Filled with its commission (and, when
pruning, once nothing waits to be pruned), its RSS and what ib_insync holds
(``ib.wrapper.trades``, ``permId2Trade``, ``fills``) after a ``gc.collect()``.

    python bench/order_memory.py [--orders 5000] [--warmup 300] [--modes off,on]

Modes: ``off`` keeps ib_insync's caches as ib_insync leaves them (``ib_cache_grace=None``,
the hub before pruning); ``on`` prunes with the default grace (60 s). Pacing is lifted
for the run (hub pacer and per-script order rate raised, the simulator's message limit
too, and ib_insync's own 45/s throttle): memory per order does not depend on the rate,
and 5,000 orders at IB's 50/s would take minutes per mode. ``--throttle`` keeps the
hub's pacer (40/s) as in production: orders wait in its queue, not in ib_insync's.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
import tempfile
import time
import tracemalloc
from multiprocessing.connection import Connection
from typing import Any

import psutil
import zmq
from benchlib import SPAWN, SimProcess, free_port, machine, print_table
from orders import WireClient, place_req


def hub_main(
    conn: Connection,
    gateway_port: int,
    data_dir: str,
    grace: float | None,
    trace: bool = False,
    throttle: bool = False,
) -> None:
    """A hub on the simulator with its order service; answers "stats" until "stop"
    (and "top": where the Python heap grew since the previous "top", with ``trace``)."""
    logging.basicConfig(level=logging.WARNING)
    if trace:
        tracemalloc.start(1)
    snap: list[Any] = []

    async def serve() -> None:
        from ibhub.config import HubSettings
        from ibhub.hub.server import HubServer, attach_orders
        from ibhub.orders.store import TERMINAL

        settings = HubSettings(gateway_host="127.0.0.1", gateway_port=gateway_port,
                               pub=f"tcp://127.0.0.1:{free_port()}",
                               rpc=f"tcp://127.0.0.1:{free_port()}", http_port=0,
                               data_dir=data_dir, orders=False, pacer_queue_max=1_000_000,
                               pacer_queue_per_lease=1_000_000)  # fmt: skip
        async with HubServer(settings) as hub:
            while not (hub.upstream and hub.upstream.connected):
                await asyncio.sleep(0.02)
            if not throttle:  # see the module doc
                hub.pacer.rate, hub.pacer.burst = 5_000.0, 500.0
                hub.upstream.ib.client.MaxRequests = 0  # ib_insync's own 45/s throttle
            # back-pressure off: this measures memory with orders queued, not refusals
            svc = await attach_orders(hub, ib_cache_grace=grace, order_rate=100_000.0,
                                      order_burst=100_000.0, max_order_delay=3600.0)  # fmt: skip
            await asyncio.wait_for(svc.reconciled.wait(), 30)
            conn.send((hub.pub_endpoint, hub.rpc_endpoint))
            loop = asyncio.get_running_loop()
            store, w = svc.book.store, hub.upstream.ib.wrapper
            while True:
                cmd = await loop.run_in_executor(None, conn.recv)
                if cmd == "stop":
                    break
                gc.collect()
                if cmd == "top":
                    now = tracemalloc.take_snapshot()
                    diff = now.compare_to(snap[-1], "lineno")[:12] if snap else []
                    snap[:] = [now]
                    conn.send([str(d) for d in diff])
                    continue
                cache = svc.gateway.cache
                conn.send({
                    "rss_mb": psutil.Process().memory_info().rss / 1e6,
                    "ended": sum(1 for r in store.by_id.values() if r.status in TERMINAL),
                    "commissions": sum(1 for f in store.fills.values()
                                       if f.commission is not None),
                    "trades": len(w.trades),
                    "perm_id_trades": len(w.permId2Trade),
                    "fills": len(w.fills),
                    "waiting": cache.sizes()["waiting"] if cache is not None else 0,
                    "heap_mb": tracemalloc.get_traced_memory()[0] / 1e6 if trace else 0.0,
                })  # fmt: skip

    import uvloop

    uvloop.run(serve())


class Hub:
    def __init__(self, grace: float | None, trace: bool = False, throttle: bool = False) -> None:
        self.sim = SimProcess(stamp="slice", tick_rate=4.0)
        self._dir = tempfile.TemporaryDirectory(prefix="ibhub-bench-ordmem-")
        self.conn, child = SPAWN.Pipe()
        args = (child, self.sim.port, self._dir.name, grace, trace, throttle)
        self.proc = SPAWN.Process(target=hub_main, args=args, daemon=True)
        self.proc.start()
        if not self.conn.poll(60):
            raise TimeoutError("hub did not start")
        self.pub, self.rpc = self.conn.recv()

    def top(self) -> list[str]:
        self.conn.send("top")
        if not self.conn.poll(120):
            raise TimeoutError("hub did not answer top")
        result: list[str] = self.conn.recv()
        return result

    def stats(self) -> dict[str, Any]:
        self.conn.send("stats")
        if not self.conn.poll(60):
            raise TimeoutError("hub did not answer stats")
        result: dict[str, Any] = self.conn.recv()
        return result

    def close(self) -> None:
        self.conn.send("stop")
        self.proc.join(20)
        if self.proc.is_alive():
            self.proc.terminate()
        self.sim.close()
        self._dir.cleanup()


def place_batch(c: WireClient, n: int, tag: str, window: int = 200) -> None:
    """``n`` orders, at most ``window`` unanswered at a time; heartbeats in between."""
    from ibhub.protocol import Heartbeat, OrderAccepted

    sent = answered = 0
    pending: set[int] = set()
    while answered < n:
        while sent < n and sent - answered < window:
            req = place_req(c, f"{tag}-{sent}")
            pending.add(req.id)
            c.send(req)
            sent += 1
            if sent % 500 == 0:
                c.send(Heartbeat(id=c.next_id(), lease=c.lease))
        reply = c.recv_reply(60)
        if reply.id not in pending:
            continue  # a heartbeat's answer
        pending.discard(reply.id)
        if not isinstance(reply, OrderAccepted):
            raise RuntimeError(f"order refused: {reply}")
        answered += 1


def settle(hub: Hub, c: WireClient, total: int, pruning: bool, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        s = hub.stats()
        done = s["ended"] >= total and s["commissions"] >= total
        if done and (not pruning or (s["waiting"] == 0 and s["trades"] == 0)):
            return s
        if time.monotonic() > deadline:
            raise TimeoutError(f"orders did not settle: {s}")
        c.heartbeat()
        time.sleep(0.5)


def run_mode(
    mode: str, orders: int, warmup: int, trace: bool, steps: int, throttle: bool
) -> dict[str, Any]:
    pruning = mode == "on"
    hub = Hub(None if not pruning else 60.0, trace, throttle)
    ctx: zmq.Context[Any] = zmq.Context()
    c = WireClient(ctx, hub.pub, hub.rpc, f"bench-mem-{mode}")
    c.sub.setsockopt(zmq.UNSUBSCRIBE, f"order.{c.handle}".encode())  # only the hub's stats
    marks: list[dict[str, Any]] = []
    try:
        place_batch(c, warmup, "warm")
        before = settle(hub, c, warmup, pruning)
        if trace:
            hub.top()
        t0 = time.perf_counter()
        step, done = orders // steps, warmup
        for k in range(steps):
            place_batch(c, step, f"run{k}")
            done += step
            marks.append(settle(hub, c, done, pruning))
        elapsed = time.perf_counter() - t0
        if trace:
            print(f"\nprune {mode}: Python heap growth over the run, by line (tracemalloc):")
            print("\n".join(hub.top()))
    finally:
        c.close()
        ctx.term()
        hub.close()
    return {"mode": mode, "before": before, "after": marks[-1], "marks": marks,
            "elapsed": elapsed}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--orders", type=int, default=5000)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--modes", default="off,on", help="off (ib_insync as is), on (pruned)")
    ap.add_argument("--steps", type=int, default=1, help="also print RSS after each of N batches")
    ap.add_argument(
        "--trace",
        action="store_true",
        help="also show where the hub's Python heap grew (tracemalloc; slower)",
    )
    ap.add_argument(
        "--throttle",
        action="store_true",
        help="keep the hub's pacing (40 messages/s to the Gateway)",
    )
    args = ap.parse_args()
    print(f"# {machine()}")
    print(f"# command: python bench/order_memory.py {' '.join(sys.argv[1:])}".rstrip())
    rows = []
    for mode in args.modes.split(","):
        r = run_mode(mode.strip(), args.orders, args.warmup, args.trace, args.steps, args.throttle)
        b, a = r["before"], r["after"]
        if args.steps > 1:
            print(
                f"prune {r['mode']}: RSS MB after each batch of {args.orders // args.steps}: "
                + ", ".join(f"{m['rss_mb']:.1f}" for m in r["marks"])
            )
        per_order_kb = (a["rss_mb"] - b["rss_mb"]) * 1e3 / args.orders
        heap_kb = (a["heap_mb"] - b["heap_mb"]) * 1e3 / args.orders
        rows.append([
            r["mode"], f"{b['rss_mb']:.1f}", f"{a['rss_mb']:.1f}", f"{per_order_kb:.2f}",
            f"{heap_kb:.2f}" if args.trace else "-",
            f"{b['trades']} / {b['perm_id_trades']} / {b['fills']}",
            f"{a['trades']} / {a['perm_id_trades']} / {a['fills']}", f"{r['elapsed']:.1f}",
        ])  # fmt: skip
    print(f"\n{args.orders} market orders after {args.warmup} warm-up orders, all filled:")
    print_table(["prune", "RSS before MB", "RSS after MB", "RSS KB/order", "heap KB/order",
                 "trades/permId/fills before", "after", "s"], rows)  # fmt: skip


if __name__ == "__main__":
    main()
