"""Tick fan-out through the hub vs the same scripts each connected directly.

Not a test. For every cell (target rate x number of subscriber processes x mode) it
starts a fresh simulated Gateway in its own process (stamped sizes), and for the hub
modes a fresh ``ibhub run --gateway`` subprocess, then N subscriber processes, sets
the simulator's rate, warms up, and measures a window of ``--duration`` seconds:

    python bench/fanout.py [--quick] [--duration 10] [--repeat 1]
                           [--rates 10000,50000,100000,flat] [--subs 1,8]
                           [--modes sdk,sdk-sub,topics,bundle,batch,batch-sub,raw,direct,tcp]

Modes (each subscriber is a separate process, on a stdlib asyncio loop):

* ``sdk``: ``ibhub.client.AsyncHub`` as a script gets it by default, one
  ``subscribe(con_id, callback=...)`` per instrument (since session 5 the SDK reads a
  hub's ``bundle.tick`` by default, decoding only the held topics; before, per-topic;
  since session 6 over the hub's lane, a local plain socket, instead of the SUB socket);
* ``sdk-sub``: the same with ``AsyncHub(lane_ticks=False)``: the bundle over SUB;
* ``topics``: the same with ``AsyncHub(tick_bundle=False)``: one SUB subscription per
  instrument topic, one message per instrument per read;
* ``bundle``: the same SDK script with ``AsyncHub(tick_bundle=True)``: every tick
  arrives through ``bundle.tick``, one message per Gateway read (docs/protocol.md);
* ``batch``: the SDK's batch mode, ``tick_bundle=True`` and
  ``subscribe_batches(con_id, callback=...)``: one call per hub message, the callback
  walks the batch's ticks (client/batch.py); ``batch-sub``: the same over SUB
  (``lane_ticks=False``);
* ``raw``: plain pyzmq SUB + DEALER with msgspec (hello, subscribe, heartbeat), no SDK;
* ``direct``: the baseline, ib_insync ``IB.connectAsync`` to the simulator,
  ``reqMktData`` per instrument, ticks from ``pendingTickersEvent`` / ``ticker.ticks``;
* ``tcp``: a bare TWS socket reader that only frames and reads the stamp (the floor:
  what the simulator and one loopback TCP hop cost without any decoding library).

All 41 instruments of the simulator's universe are subscribed; a "tick" is one
streamed TWS message (tickPrice or tickSize); the rate is the simulator's total for
one connection (each direct script gets its own copy). "flat out" sets a rate no
reader sustains, so the simulator runs under its flow control (an instrument steps
only while one of its readers has socket buffer room; a full reader is skipped).

Figures per cell: ``sent/s`` messages the simulator wrote per connection;
``got/s`` ticks delivered per subscriber (median over subscribers); ``lost`` ticks
by per-topic sequence gaps (hub modes) or offered minus received (direct/tcp,
estimated from the simulator's event count); latency p50/p99/p99.9 in us over all
subscribers' ticks; CPU seconds of the hub and of all subscribers together in the
window; hub CPU per published tick; hub peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import statistics
import struct
import sys
import time
from collections import defaultdict
from multiprocessing.connection import Connection
from typing import Any

import zmq
from benchlib import (
    HubProcess,
    LatencyHist,
    SimProcess,
    Worker,
    cpu_seconds,
    machine,
    peak_rss_mb,
    per_instrument_rate,
    print_table,
    recv_async,
    sleep_until,
    spread,
    start_workers,
)

FLAT = "flat"
# subscribers of a hub; others read the sim
HUB_MODES = ("sdk", "sdk-sub", "topics", "bundle", "batch", "batch-sub", "raw")
# AsyncHub options per SDK mode ({}: the SDK's defaults)
SDK_OPTIONS: dict[str, dict[str, bool]] = {
    "sdk": {}, "sdk-sub": {"lane_ticks": False}, "topics": {"tick_bundle": False},
    "bundle": {"tick_bundle": True}, "batch": {"tick_bundle": True},
    "batch-sub": {"tick_bundle": True, "lane_ticks": False},
}
FLAT_PER_INSTRUMENT = 20_000.0  # events/s per instrument: ~1.6 M msgs/s offered
STAMP_MIN = 1e15  # a stamped size is epoch microseconds; real sizes are far smaller


# ---------------------------------------------------------------------------- recording


class TickRecorder:
    """Counts ticks, sequence gaps and stamp latencies inside the window [t0, t1].

    The per-tick work is the same in every mode, so that the CPU a subscriber spends is
    what its delivery costs, not what the recorder does: the window check, the count and,
    for a stamped tick, the end-to-end latency (``on_stamp``, all a direct reader does).
    A hub reader also checks each topic's sequence (the "lost" column: per tick in the
    default mode, per batch in batch mode, where the SDK delivers consecutive events)
    and records the hub -> subscriber hop of the same stamped ticks. Until session 7 the
    hub modes recorded the hop of every tick and looked the sequence up in a dict per
    tick (~0.2 us per tick more than a direct reader, warm; docs/performance.md 10).
    """

    def __init__(self) -> None:
        self.t0 = self.t1 = math.inf
        self.count = 0
        self.lost = 0
        self.hist = LatencyHist()
        self.hop = LatencyHist()  # hub publish (the event's ts) -> receive
        self._last: dict[int, int] = {}

    def window(self, t0: float, t1: float) -> None:
        self.t0, self.t1 = int(t0 * 1e9), int(t1 * 1e9)

    def tick_callback(self) -> Any:
        """A ``subscribe(..., callback=)`` for one instrument (its sequence kept in the
        closure, not looked up per tick)."""
        last = 0
        stamp = self.stamp

        def on_tick(ev: Any) -> None:
            nonlocal last
            now = time.time_ns()
            seq = ev.seq
            prev, last = last, seq
            if now < self.t0 or now > self.t1:
                return
            self.count += 1
            if prev and seq > prev + 1:
                self.lost += seq - prev - 1
            stamp(now, ev)

        return on_tick

    def on_batch(self, batch: Any) -> None:
        """An SDK ``Batch``: one instrument's consecutive ticks of one hub message."""
        now = time.time_ns()
        events = batch.events
        first = events[0]
        key = first.con_id
        prev = self._last.get(key, 0)
        self._last[key] = events[-1].seq
        if now < self.t0 or now > self.t1:
            return
        self.count += len(events)
        if prev and first.seq > prev + 1:
            self.lost += first.seq - prev - 1
        stamp = self.stamp
        for ev in events:
            stamp(now, ev)

    def stamp(self, now: int, ev: Any) -> None:
        """A hub tick received at ``now``: its latencies if it is stamped (one call per
        tick, as a direct reader's :meth:`on_stamp`)."""
        s = ev.bid_size
        if ev.ask_size > s:
            s = ev.ask_size
        if ev.last_size > s:
            s = ev.last_size
        if s > STAMP_MIN:
            self.hist.add(now // 1000 - int(s))
            self.hop.add((now - ev.ts) // 1000)

    def on_stamp(self, now: int, size: float) -> None:
        """A direct reader's tick (``now`` ns, ``size`` its size field)."""
        if now < self.t0 or now > self.t1:
            return
        self.count += 1
        if size > STAMP_MIN:
            self.hist.add(now // 1000 - int(size))

    def result(self) -> dict[str, Any]:
        return {"count": self.count, "lost": self.lost, "hist": self.hist, "hop": self.hop}


# ---------------------------------------------------------------------------- subscribers


def sdk_subscriber(conn: Connection, pub: str, rpc: str, con_ids: list[int], idx: int,
                   options: dict[str, bool], batches: bool = False) -> None:
    logging.basicConfig(level=logging.WARNING)

    async def main() -> None:
        from ibhub.client import AsyncHub

        rec = TickRecorder()
        hub = AsyncHub(pub, rpc, name=f"bench-sdk-{idx}", request_timeout=30.0, **options)
        await hub.connect()
        for cid in con_ids:
            if batches:  # one call per hub message; the recorder walks its ticks
                await hub.subscribe_batches(cid, callback=rec.on_batch)
            else:
                await hub.subscribe(cid, callback=rec.tick_callback())
        conn.send(("ready", None))
        rec.window(*await recv_async(conn))
        await recv_async(conn)  # "report"
        conn.send(rec.result())
        await hub.close()

    asyncio.run(main())


def raw_subscriber(conn: Connection, pub: str, rpc: str, con_ids: list[int], idx: int) -> None:
    """pyzmq + msgspec only: hello, subscribe, heartbeat over a DEALER; SUB for ticks."""
    from ibhub import wire
    from ibhub.protocol import (
        PROTOCOL_VERSION,
        ContractSpec,
        Heartbeat,
        Hello,
        Subscribe,
        Tick,
        Ticks,
    )

    ctx = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(rpc)
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVHWM, 100_000)
    sub.connect(pub)

    def call(req: Any) -> Any:
        dealer.send_multipart([b"", wire.encode(req)])
        if not dealer.poll(30_000):
            raise TimeoutError(f"no reply to {type(req).__name__}")
        return wire.decode_reply(dealer.recv_multipart()[-1])

    welcome = call(Hello(id=1, name=f"bench-raw-{idx}", protocol=PROTOCOL_VERSION))
    lease, beat = welcome.token, float(welcome.heartbeat_interval)
    for i, cid in enumerate(con_ids):
        reply = call(Subscribe(id=10 + i, lease=lease, contract=ContractSpec(con_id=cid)))
        sub.setsockopt(zmq.SUBSCRIBE, reply.topic.encode())
    rec = TickRecorder()
    decode = wire.decode_event
    on_tick = {cid: rec.tick_callback() for cid in con_ids}
    recv = sub.recv_multipart
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    next_beat = time.monotonic() + beat
    conn.send(("ready", None))
    while True:
        if conn.poll():
            msg = conn.recv()
            if msg == "report":
                break
            rec.window(*msg)
        now = time.monotonic()
        if now >= next_beat:
            dealer.send_multipart([b"", wire.encode(Heartbeat(id=2, lease=lease))])
            next_beat = now + beat
        while dealer.poll(0):
            dealer.recv_multipart()
        if not poller.poll(50):
            continue
        for _ in range(10_000):
            try:
                frames = recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            ev = decode(frames[1])
            if type(ev) is Ticks:
                for tick in ev.ticks:
                    on_tick[tick.con_id](tick)
            elif type(ev) is Tick:
                on_tick[ev.con_id](ev)
    conn.send(rec.result())
    sub.close(0)
    dealer.close(0)
    ctx.term()


def direct_subscriber(conn: Connection, port: int, con_ids: list[int], client_id: int) -> None:
    """The baseline: one ib_insync connection per script, Ticker machinery as users use it."""
    logging.basicConfig(level=logging.ERROR)

    async def main() -> None:
        from ibhub.ib.lib import IB, Contract

        rec = TickRecorder()
        ib = IB()
        await ib.connectAsync("127.0.0.1", port, clientId=client_id, timeout=30)
        for cid in con_ids:
            ib.reqMktData(Contract(conId=cid))
        on_stamp = rec.on_stamp

        def on_pending(tickers: set[Any]) -> None:
            now = time.time_ns()
            for t in tickers:
                for td in t.ticks:
                    on_stamp(now, td.size if td.tickType in (1, 2, 4) else 0.0)

        ib.pendingTickersEvent += on_pending
        conn.send(("ready", None))
        rec.window(*await recv_async(conn))
        await recv_async(conn)
        conn.send(rec.result())
        ib.disconnect()

    asyncio.run(main())


def tcp_subscriber(conn: Connection, port: int, con_ids: list[int], client_id: int) -> None:
    """The floor: frames the TWS stream and reads each tickPrice's stamp, nothing else."""
    from ibhub.sim.codec import frame

    async def main() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"API\0" + struct.pack(">I", 9) + b"v157..176")
        writer.write(frame([71, 2, client_id, ""]))
        for req_id, cid in enumerate(con_ids, start=1000):
            writer.write(frame([1, 11, req_id, cid, "", "", "", 0.0, "", "", "", "", "", "",
                                "", 0, "", 0, 0, ""]))
        rec = TickRecorder()
        on_stamp = rec.on_stamp
        unpack = struct.Struct(">I").unpack_from
        conn.send(("ready", None))
        loop = asyncio.get_running_loop()
        control = loop.run_in_executor(None, conn.recv)
        buf = b""
        while True:
            if control.done():
                msg = control.result()
                if msg == "report":
                    break
                rec.window(*msg)
                control = loop.run_in_executor(None, conn.recv)
            try:
                async with asyncio.timeout(0.1):
                    data = await reader.read(1 << 20)
            except TimeoutError:
                continue
            if not data:
                raise ConnectionError("simulator closed the socket")
            buf = buf + data if buf else data
            now = time.time_ns()
            pos, n = 0, len(buf)
            while n - pos > 4:
                end = pos + 4 + unpack(buf, pos)[0]
                if end > n:
                    break
                head = buf[pos + 4:pos + 6]
                if head == b"1\0":
                    parts = buf[pos + 4:end].split(b"\0", 6)
                    if parts[3] in (b"1", b"2", b"4"):
                        on_stamp(now, float(parts[5]))
                elif head == b"2\0":
                    on_stamp(now, 0.0)
                pos = end
            buf = buf[pos:]
        conn.send(rec.result())
        writer.close()

    asyncio.run(main())


# ---------------------------------------------------------------------------- one cell


def run_cell(mode: str, rate: str, subs: int, duration: float, warmup: float,
             stamp: str = "write", slice_ms: float = 10.0) -> dict[str, Any]:
    with SimProcess(stamp=stamp, slice_seconds=slice_ms / 1000.0) as sim:
        con_ids = [i.con_id for i in sim.instruments]
        hub: HubProcess | None = None
        workers: list[Worker] = []
        try:
            if mode in HUB_MODES:
                hub = HubProcess(sim.port)
                if mode == "raw":
                    workers = start_workers(raw_subscriber, [(hub.pub, hub.rpc, con_ids, i)
                                                             for i in range(subs)])
                else:
                    workers = start_workers(sdk_subscriber, [
                        (hub.pub, hub.rpc, con_ids, i, SDK_OPTIONS[mode],
                         mode.startswith("batch")) for i in range(subs)])
            else:
                target = direct_subscriber if mode == "direct" else tcp_subscriber
                workers = start_workers(target, [(sim.port, con_ids, 1 + i)
                                                 for i in range(subs)])
            hz = (FLAT_PER_INSTRUMENT if rate == FLAT
                  else per_instrument_rate(float(rate), len(con_ids)))
            sim.rate(hz)
            t0 = time.time() + warmup
            t1 = t0 + duration
            for w in workers:
                w.send((t0, t1))
            # CPU first, at the window's edges (and timed: scaled to the window below):
            # the simulator answers ``counts`` from its loop, which flat out to 8 direct
            # scripts can take seconds (its own clock dates the counts; before session 7
            # the CPU was read after them, and such a cell read ~0 CPU and "sent 0")
            sleep_until(t0)
            read0 = time.time()
            cpu0 = [cpu_seconds(w.ps) for w in workers]
            hub_cpu0 = cpu_seconds(hub.ps) if hub else 0.0
            sim_cpu0 = cpu_seconds(sim.ps)
            read0 = (read0 + time.time()) / 2
            ev0, msg0, sim_t0 = sim.counts()
            pub0 = hub.published_ticks() if hub else 0
            sleep_until(t1)
            read1 = time.time()
            cpu1 = [cpu_seconds(w.ps) for w in workers]
            hub_cpu1 = cpu_seconds(hub.ps) if hub else 0.0
            sim_cpu1 = cpu_seconds(sim.ps)
            read1 = (read1 + time.time()) / 2
            ev1, msg1, sim_t1 = sim.counts()
            pub1 = hub.published_ticks() if hub else 0
            sim.rate(0.0)
            time.sleep(0.3)
            reports = [w.report() for w in workers]
            hub_rss = peak_rss_mb(hub.proc.pid) if hub else float("nan")
        finally:
            if hub is not None:
                hub.close()
            for w in workers:
                w.close()
    hist = LatencyHist()
    hop = LatencyHist()
    for r in reports:
        hist.merge(r["hist"])
        hop.merge(r["hop"])
    counts = [r["count"] for r in reports]
    # the simulator's counts over its own interval, scaled to the window (the same
    # length unless its loop answered late; none that could be read: NaN)
    sim_span = sim_t1 - sim_t0
    scale = duration / sim_span if sim_span > duration / 2 else math.nan
    sent = (msg1 - msg0) * scale / (subs if mode in ("direct", "tcp") else 1)
    if mode in ("direct", "tcp"):
        offered = 2 * (ev1 - ev0) * scale  # messages per connection, without lastTimestamp
        lost = sum(max(0, offered - c) for c in counts) if offered == offered else math.nan
        total = offered * subs
    else:
        lost = sum(r["lost"] for r in reports)
        total = sum(counts) + lost
    published = pub1 - pub0
    # this process can read the CPU late too, on a saturated machine: scaled to the window
    cpu_scale = duration / (read1 - read0)
    hub_cpu = (hub_cpu1 - hub_cpu0) * cpu_scale
    return {
        "mode": mode, "rate": rate, "subs": subs, "slice_ms": slice_ms,
        "sent": sent / duration,
        "got": statistics.median(counts) / duration,
        "got_min": min(counts) / duration,
        "lost": lost, "lost_pct": 100.0 * lost / total if total else 0.0,
        "p50": hist.percentile(50), "p99": hist.percentile(99), "p999": hist.percentile(99.9),
        "hop50": hop.percentile(50), "hop99": hop.percentile(99),
        "hub_cpu": hub_cpu if hub else float("nan"),
        "sub_cpu": sum(b - a for a, b in zip(cpu0, cpu1, strict=True)) * cpu_scale,
        "sim_cpu": (sim_cpu1 - sim_cpu0) * cpu_scale,
        # unscaled CPU over the hub's own count, both read at the same two moments
        "us_per_tick": (1e6 * (hub_cpu1 - hub_cpu0) / published if hub and published
                        else float("nan")),
        "rss": hub_rss,
    }


# ---------------------------------------------------------------------------- report


COLUMNS = [
    ("sent/s", "sent", "{:,.0f}"), ("got/s/sub", "got", "{:,.0f}"),
    ("lost %", "lost_pct", "{:.2f}"), ("p50 us", "p50", "{:,.0f}"), ("p99 us", "p99", "{:,.0f}"),
    ("p99.9 us", "p999", "{:,.0f}"), ("hub->sub p50", "hop50", "{:,.0f}"),
    ("hub->sub p99", "hop99", "{:,.0f}"), ("hub CPU s", "hub_cpu", "{:.2f}"),
    ("subs CPU s", "sub_cpu", "{:.2f}"), ("hub us/tick", "us_per_tick", "{:.2f}"),
    ("hub RSS MB", "rss", "{:.0f}"),
]


def report(results: list[dict[str, Any]], duration: float, markdown: bool = False) -> None:
    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = defaultdict(list)
    order: list[tuple[str, int, str]] = []
    for r in results:
        key = (r["rate"], r["subs"], r["mode"])
        if key not in groups:
            order.append(key)
        groups[key].append(r)
    rows = []
    for key in order:
        rs = groups[key]
        rate, subs, mode = key
        label = "flat out" if rate == FLAT else f"{int(rate):,}"
        rows.append([label, str(subs), mode,
                     *(spread((r[k] for r in rs), fmt) for _, k, fmt in COLUMNS)])
    print(f"\nfan-out, {duration:g} s windows, {len(results)} cells "
          "(median [min-max] over repeats)")
    print_table(["rate", "subs", "mode", *(c for c, _, _ in COLUMNS)], rows, markdown)
    # hub vs direct, per rate and subscriber count, from the same run
    ratio_rows = []
    for rate, subs, mode in order:
        if mode not in HUB_MODES:
            continue
        direct = groups.get((rate, subs, "direct"))
        if not direct:
            continue
        hub = groups[(rate, subs, mode)]
        label = "flat out" if rate == FLAT else f"{int(rate):,}"
        got = [h["got"] / d["got"] for h, d in zip(hub, direct, strict=False) if d["got"]]
        cpu = [(h["hub_cpu"] + h["sub_cpu"]) / d["sub_cpu"]
               for h, d in zip(hub, direct, strict=False) if d["sub_cpu"]]
        # the same, per tick delivered: direct scripts that fall behind deliver fewer
        # ticks, so their total CPU alone flatters them once the machine is saturated
        per_tick = [(h["hub_cpu"] + h["sub_cpu"]) / h["got"] / (d["sub_cpu"] / d["got"])
                    for h, d in zip(hub, direct, strict=False)
                    if d["sub_cpu"] and d["got"] and h["got"]]
        dp50 = [h["p50"] - d["p50"] for h, d in zip(hub, direct, strict=False)]
        dp99 = [h["p99"] - d["p99"] for h, d in zip(hub, direct, strict=False)]
        ratio_rows.append([label, str(subs), mode, spread(got, "{:.2f}"), spread(cpu, "{:.2f}"),
                           spread(per_tick, "{:.2f}"), spread(dp50, "{:+,.0f}"),
                           spread(dp99, "{:+,.0f}")])
    if ratio_rows:
        print("\nhub vs direct ib_insync (same run): delivered ticks ratio, CPU ratio "
              "(hub + subscribers) / direct scripts, the same per delivered tick, "
              "latency difference")
        print_table(["rate", "subs", "mode", "got ratio", "CPU ratio", "CPU/tick ratio",
                     "p50 +us", "p99 +us"], ratio_rows, markdown)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="3 s windows, 10k and flat, 1 and 8")
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--rates", default="10000,50000,100000,flat")
    p.add_argument("--subs", default="1,8")
    p.add_argument("--modes", default="sdk,topics,bundle,batch,raw,direct,tcp")
    p.add_argument("--stamp", choices=["write", "slice"], default="write",
                   help="latency origin: the simulator's socket write (default) or the "
                        "start of its 10 ms slice (its native stamp, ~0.5-1 ms earlier)")
    p.add_argument("--slice-ms", type=float, default=10.0,
                   help="the simulator's streaming slice: it writes each connection's "
                        "ticks once per slice (default 10 ms, its own default); smaller "
                        "slices mean smaller bursts, closer to per-hop latency")
    p.add_argument("--out", help="append each cell's figures to this JSON-lines file")
    p.add_argument("--report", metavar="FILE", help="only print the tables of a saved --out file")
    p.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    args = p.parse_args()
    if args.report:
        saved = [json.loads(line) for line in open(args.report) if line.strip()]
        report(saved, float("nan"), args.markdown)
        return
    if args.quick:
        args.duration, args.warmup, args.rates = 3.0, 1.0, "10000,flat"
    rates = [r.strip() for r in args.rates.split(",")]
    subs_list = [int(s) for s in args.subs.split(",")]
    modes = [m.strip() for m in args.modes.split(",")]
    logging.basicConfig(level=logging.WARNING)
    print(f"machine: {machine()}")
    print(f"command: python bench/fanout.py {' '.join(sys.argv[1:])}")
    results = []
    started = time.monotonic()
    for rep in range(args.repeat):
        for rate in rates:
            for subs in subs_list:
                for mode in modes:
                    try:
                        r = run_cell(mode, rate, subs, args.duration, args.warmup, args.stamp,
                                     args.slice_ms)
                    except (TimeoutError, RuntimeError, ConnectionError, EOFError) as exc:
                        print(f"  [{rep + 1}/{args.repeat}] {rate:>8} x{subs} {mode:<6} "
                              f"FAILED: {exc}", flush=True)
                        continue
                    results.append(r)
                    if args.out:
                        with open(args.out, "a") as f:
                            f.write(json.dumps(r) + "\n")
                    print(f"  [{rep + 1}/{args.repeat}] {rate:>8} x{subs} {mode:<6} "
                          f"got/s {r['got']:>9,.0f}  lost {r['lost_pct']:6.2f}%  "
                          f"p50 {r['p50']:>6,.0f}  p99 {r['p99']:>7,.0f} us  "
                          f"(hub->sub {r['hop50']:,.0f}/{r['hop99']:,.0f})  "
                          f"hub {r['hub_cpu']:.2f}s subs {r['sub_cpu']:.2f}s", flush=True)
    report(results, args.duration, args.markdown)
    print(f"\ntotal {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
