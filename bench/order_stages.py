"""Where an order acknowledgement's time goes, stage by stage.

Not a test. Runs the same set-up as ``bench/manager.py`` (simulator and hub in their
own processes, a raw wire client placing 1-share market orders ``--interval`` apart)
and stamps each order with ``time.perf_counter_ns`` (CLOCK_MONOTONIC: one clock for
every process on the host) at each stage of the ack path:

    client send -> hub receive (ROUTER, or the lane with --lane) -> RPC task spawned
    (with an eager route: its first step runs here) -> OrderManager.place starts ->
    journal write queued -> SQL commit starts -> commit ends (on the loop, no fsync)
    -> durable (the fsync thread is done) -> place returns -> reply send starts -> send
    returns -> client has the reply

and the fill path: the send queued (on the loop's turn after the reply) -> placeOrder
written upstream -> the first Gateway read after it -> execution
decoded -> the fill's commit -> ``filled`` published -> the client has it.

The hub side is timed by wrapping those methods *in the hub process of this script
only* (the package is unchanged). Prints p50/p90/p99/max of each stage in us.

    python bench/order_stages.py [--orders 300] [--interval 0.06] [--journal-sync FULL]
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import itertools
import logging
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

from benchlib import machine
from orders import HubProcess, WireClient, order_hub, place_req

STAGES: dict[str, list[int]] = {}
EAGER: list[bool] = []  # per order: its place started inside the receive call


def _mark(name: str, t: int | None = None) -> None:
    STAGES.setdefault(name, []).append(time.perf_counter_ns() if t is None else t)


def _instrument() -> None:
    """Wrap the ack path's methods with timestamps (this hub process only)."""
    from ibhub.hub import lane, requests
    from ibhub.orders import journal, journal_writer, manager

    last_recv = [0]
    in_spawn = [False]  # a place that starts inside _spawn ran eagerly (ibhub.tasks.eager_task)
    serve_payload, spawn = requests.RpcServer.serve_payload, requests.RpcServer._spawn
    place, write = manager.OrderManager.place, journal_writer.JournalWriter.write_then
    run_batch, send = journal.Journal.run_batch, requests.RpcServer._send
    lane_reply = lane.LaneConnection.reply

    def _serve_payload(self: Any, *args: Any) -> Any:  # every transport comes here
        last_recv[0] = time.perf_counter_ns()
        return serve_payload(self, *args)

    def _spawn(self: Any, send: Any, req: Any, *rest: Any) -> None:
        if type(req).__name__ == "PlaceOrder":
            _mark("1 hub receive", last_recv[0])
            _mark("2 task spawned")
        in_spawn[0] = True
        try:
            spawn(self, send, req, *rest)
        finally:
            in_spawn[0] = False

    async def _place(self: Any, caller: Any, req: Any) -> Any:
        _mark("3 place starts")
        EAGER.append(in_spawn[0])
        reply = await place(self, caller, req)
        _mark("8 place returns")
        return reply

    def _write(self: Any, fn: Any, args: Any, callback: Any, **kw: Any) -> Any:
        if fn.__name__ != "op_insert" or not kw.get("durable"):
            return write(self, fn, args, callback, **kw)
        _mark("4 journal put")

        def durable(result: Any) -> None:
            _mark("7 durable (fsync done)")
            callback(result)

        return write(self, fn, args, durable, **kw)

    def _run_batch(self: Any, ops: list[Any], *rest: Any) -> list[Any]:
        t0 = time.perf_counter_ns()
        results = run_batch(self, ops, *rest)
        if any(getattr(fn, "__name__", "") == "op_insert" for fn, _ in ops):
            _mark("5 commit starts", t0)
            _mark("6 commit ends")
        return results

    def _send(self: Any, envelope: list[bytes], reply: Any) -> Any:
        ack = type(reply).__name__ == "OrderAccepted"
        if ack:
            _mark("9 reply send starts")
        result = send(self, envelope, reply)
        if not inspect.isawaitable(result):
            if ack:
                _mark("10 reply send returns")
            return None
        return _sent(result, ack)

    def _lane_reply(self: Any, reply: Any) -> None:
        ack = type(reply).__name__ == "OrderAccepted"
        if ack:
            _mark("9 reply send starts")
        lane_reply(self, reply)
        if ack:
            _mark("10 reply send returns")

    async def _sent(result: Any, ack: bool) -> None:  # before: zmq.asyncio's awaited send
        await result
        if ack:
            _mark("10 reply send returns")

    requests.RpcServer.serve_payload = _serve_payload  # type: ignore[method-assign]
    lane.LaneConnection.reply = _lane_reply  # type: ignore[method-assign]
    requests.RpcServer._spawn = _spawn  # type: ignore[method-assign]
    requests.RpcServer._send = _send  # type: ignore[method-assign]
    manager.OrderManager.place = _place  # type: ignore[method-assign]
    journal_writer.JournalWriter.write_then = _write  # type: ignore[method-assign]
    journal.Journal.run_batch = _run_batch  # type: ignore[method-assign]
    _instrument_fill()  # wraps the wrappers above


FILL: dict[str, list[int]] = {}


def _fmark(name: str, t: int | None = None) -> None:
    FILL.setdefault(name, []).append(time.perf_counter_ns() if t is None else t)


def _instrument_fill() -> None:
    """Wrap the fill path's methods (after the ack) with timestamps: the send queued,
    the placeOrder written upstream, the first Gateway read after it, the execution
    decoded, the fill's journal commit, the ``filled`` event published."""
    from ibhub.ib import reader
    from ibhub.orders import journal, manager, store, updates

    queue_send, write = manager.OrderManager._queue_send, manager.OrderManager._write
    on_data, on_exec = reader.TickReader.on_socket_data, updates.OrderUpdates.on_execution
    run_batch, deliver = journal.Journal.run_batch, store.OrderStore.deliver
    sync_wal = journal.Journal.sync_wal
    waiting = [False]

    def _sync_wal(self: Any) -> None:  # on the fsync thread: the disk's part alone
        t0 = time.perf_counter_ns()
        sync_wal(self)
        FILL.setdefault("fsyncs", []).append(time.perf_counter_ns() - t0)

    def _queue_send(self: Any, unsent: Any) -> None:
        _fmark("1 send queued")
        queue_send(self, unsent)

    def _write(self: Any, unsent: Any) -> None:
        _fmark("2 upstream write")
        write(self, unsent)
        _fmark("3 upstream written")
        waiting[0] = True

    def _on_data(self: Any, data: bytes) -> None:
        if waiting[0]:
            waiting[0] = False
            _fmark("4 first Gateway read")
        on_data(self, data)

    def _on_exec(self: Any, e: Any) -> bool:
        _fmark("5 execution decoded")
        return on_exec(self, e)

    def _run_batch(self: Any, ops: list[Any], *rest: Any) -> list[Any]:
        t0 = time.perf_counter_ns()
        results = run_batch(self, ops, *rest)
        names = [getattr(fn, "__name__", "") for fn, _ in ops]
        if "op_fill" in names:
            _fmark("6 fill commit starts", t0)
            _fmark("7 fill commit ends")
        if "op_update" in names and "op_fill" not in names and "op_insert" not in names:
            FILL.setdefault("other commits", []).append(time.perf_counter_ns() - t0)
        return results

    def _deliver(self: Any, rec: Any, ev: Any) -> None:
        deliver(self, rec, ev)
        if getattr(ev, "kind", "") == "filled":
            _fmark("8 filled published")

    manager.OrderManager._queue_send = _queue_send  # type: ignore[method-assign]
    manager.OrderManager._write = _write  # type: ignore[method-assign]
    reader.TickReader.on_socket_data = _on_data  # type: ignore[method-assign]
    updates.OrderUpdates.on_execution = _on_exec  # type: ignore[method-assign]
    journal.Journal.run_batch = _run_batch  # type: ignore[method-assign]
    store.OrderStore.deliver = _deliver  # type: ignore[method-assign]
    journal.Journal.sync_wal = _sync_wal  # type: ignore[method-assign]


def hub_main(conn: Connection, gateway_port: int, data_dir: str, journal_sync: str) -> None:
    import os

    from ibhub.orders import journal_writer

    if "IBHUB_BENCH_SWITCH_INTERVAL" in os.environ:  # 0: leave CPython's 5 ms
        journal_writer.SWITCH_INTERVAL = float(os.environ["IBHUB_BENCH_SWITCH_INTERVAL"])
    _instrument()
    logging.basicConfig(level=logging.WARNING)

    async def serve() -> None:
        async with order_hub(gateway_port, data_dir, journal_sync) as hub:
            STAGES.clear()
            EAGER.clear()
            FILL.clear()
            conn.send((hub.pub_endpoint, hub.rpc_endpoint))
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)
            FILL["eager"] = [int(e) for e in EAGER]
            conn.send((STAGES, FILL))

    import uvloop

    uvloop.run(serve())


def client(pub: str, rpc: str, n: int, interval: float,
           lane: bool = False) -> tuple[list[int], list[int], list[int]]:
    import zmq

    from ibhub.protocol import OrderAccepted, OrderEvent

    ctx: zmq.Context[Any] = zmq.Context()
    c = WireClient(ctx, pub, rpc, "bench-order-stages", lane=lane)
    sent: list[int] = []
    acked: list[int] = []
    filled: list[int] = []
    run = f"{time.time_ns()}"
    next_at = time.perf_counter()
    try:
        for i in range(n):
            next_at += interval
            coid = f"{run}-{i}"
            req = place_req(c, coid)
            t0 = time.perf_counter_ns()
            c.send(req)
            reply = c.recv_reply()
            t1 = time.perf_counter_ns()
            if not isinstance(reply, OrderAccepted):
                raise RuntimeError(f"order refused: {reply}")
            sent.append(t0)
            acked.append(t1)
            while True:  # one order at a time, as bench/manager.py
                ev = c.event()
                if isinstance(ev, OrderEvent) and ev.client_order_id == coid and \
                        ev.kind == "filled":
                    filled.append(time.perf_counter_ns())
                    break
            if i % 10 == 0:
                c.heartbeat()
            delay = next_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
    finally:
        c.close()
        ctx.term()
    return sent, acked, filled


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--orders", type=int, default=300)
    p.add_argument("--interval", type=float, default=0.06)
    p.add_argument("--journal-sync", default="FULL", choices=["FULL", "NORMAL"])
    p.add_argument("--journal-sync-updates", choices=["FULL", "NORMAL"],
                   help="commits no reply waits on (hub default NORMAL)")
    p.add_argument("--lane", action="store_true",
                   help="the client's requests and order events over the hub's lane "
                        "(the SDK's default) instead of ZeroMQ")
    args = p.parse_args()
    if args.journal_sync_updates:
        args.journal_sync += "/" + args.journal_sync_updates
    logging.basicConfig(level=logging.WARNING)
    print(f"machine: {machine()}")
    print(f"command: python bench/order_stages.py {' '.join(sys.argv[1:])}")
    with HubProcess(hub_main, args.journal_sync) as h:
        sent, acked, filled = client(h.pub, h.rpc, args.orders, args.interval, args.lane)
        h.stop()
        stages, fill = h.conn.recv()
    stages["0 client sends"] = sent
    stages["11 client has reply"] = acked
    via = "lane" if args.lane else "ZeroMQ"
    _chain(f"ack path ({via}), journal_sync={args.journal_sync}", stages, sent, acked)
    eager = fill.pop("eager", [])
    print(f"\nplaces started inside the receive call (eager): {sum(eager)} of {len(eager)}")
    other = fill.pop("other commits", [])
    fsyncs = fill.pop("fsyncs", [])
    fill["0 client sends"] = sent
    fill["9 client has fill"] = filled
    _chain(f"fill path ({via}), journal_sync={args.journal_sync}", fill, sent, filled)
    cross = [("6 commit ends", "1 send queued"), ("3 upstream written", "7 durable (fsync done)"),
             ("7 durable (fsync done)", "4 first Gateway read")]
    print("\nacross the two paths (the send now starts at the commit, before the fsync):")
    for a, b in cross:
        sa, sb = stages.get(a) or fill.get(a), fill.get(b) or stages.get(b)
        if sa and sb:
            n = min(len(sa), len(sb))
            ds = [(sb[i] - sa[i]) / 1e3 for i in range(n)]
            print(f"{a:>22} -> {b:<22} {_pct(ds, 50):7.0f} {_pct(ds, 90):7.0f} "
                  f"{_pct(ds, 99):7.0f} {max(ds):7.0f}")
    for label, xs in (("status/sent commits (no fill, no insert)", other),
                      ("fdatasync itself (fsync thread)", fsyncs)):
        if xs:
            print(f"{label:>48} {_pct(xs, 50) / 1e3:7.0f} {_pct(xs, 90) / 1e3:7.0f} "
                  f"{_pct(xs, 99) / 1e3:7.0f} {max(xs) / 1e3:7.0f}  (n={len(xs)})")


def _chain(title: str, stages: dict[str, list[int]], start: list[int], end: list[int]) -> None:
    names = sorted(stages, key=lambda k: int(k.split()[0]))
    n = min(len(v) for v in stages.values())
    print(f"\n{n} orders, {title}; us per stage (p50 / p90 / p99 / max)")
    for a, b in itertools.pairwise(names):
        ds = [(stages[b][i] - stages[a][i]) / 1e3 for i in range(n)]
        print(f"{a:>22} -> {b:<22} {_pct(ds, 50):7.0f} {_pct(ds, 90):7.0f} "
              f"{_pct(ds, 99):7.0f} {max(ds):7.0f}")
    total = [(end[i] - start[i]) / 1e3 for i in range(n)]
    print(f"{'total (client send -> ' + names[-1].split(' ', 2)[-1] + ')':>48} "
          f"{_pct(total, 50):7.0f} {_pct(total, 90):7.0f} "
          f"{_pct(total, 99):7.0f} {max(total):7.0f}")

if __name__ == "__main__":
    main()
