#!/usr/bin/env python3
"""Micro-benchmark of the hub's fan-out per Gateway read, in one process, as
``bench/fanout.py`` at 10k ticks/s sees it (counted in a running hub: 93 reads a second,
each touching all 41 instruments with 108 ticks): ``TickStream.price`` for the read's
ticks (not timed), then ``Fanout.flush`` (timed), for each of who takes the ticks:

* ``lane``: the lane's ``bundle_sink`` takes the bundle, nobody subscribes on PUB (the
  SDK's default since session 6);
* ``bundle-sub``: a SUB socket on ``bundle.tick``;
* ``topics-sub``: a SUB socket on ``tick.`` (every per-instrument topic);
* ``nobody``: no wire consumer (a hub serving only the TWS front door).

Prints the median and best of 7 x 1,500 reads in us per read (wall clock of the flush
alone). Works on trees before the XPUB (docs/performance.md 8.6): compare with
``PYTHONPATH=<tree> python bench/fanout_flush.py [scenario ...]``.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

import zmq

from ibhub.hub.fanout import Fanout
from ibhub.protocol import ContractInfo

try:
    from ibhub.hub.xpub import XpubSubscriptions
except ImportError:  # a tree with a plain PUB socket
    XpubSubscriptions = None  # type: ignore[assignment,misc]

INSTRUMENTS = 41
TICKS_PER_READ = 108  # 26 instruments with 3 ticks, 15 with 2
READS = 1_500
REPEATS = 7
SCENARIOS = {"lane": None, "bundle-sub": b"bundle.tick", "topics-sub": b"tick.",
             "nobody": None}


def info(i: int) -> ContractInfo:
    return ContractInfo(con_id=i, symbol=f"S{i}", sec_type="STK", exchange="SMART",
                        primary_exchange="", currency="USD", local_symbol=f"S{i}",
                        trading_class="", expiry="", strike=0.0, right="", multiplier="",
                        min_tick=0.01, long_name="")


def run(scenario: str) -> tuple[float, float]:
    ctx: zmq.Context[Any] = zmq.Context()
    sock = ctx.socket(zmq.XPUB if XpubSubscriptions is not None else zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    subs = XpubSubscriptions(sock) if XpubSubscriptions is not None else None
    fan = Fanout(sock, subs) if subs is not None else Fanout(sock)
    streams = [fan.tick_stream(f"tick.S{i}", info(i)) for i in range(INSTRUMENTS)]
    sunk: list[bytes] = []
    if scenario == "lane":
        fan.bundle_sink = sunk.append
    sub = None
    prefix = SCENARIOS[scenario]
    if prefix is not None:
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, 0)
        sub.connect(f"tcp://127.0.0.1:{port}")
        sub.subscribe(prefix)
        probe = fan.topic("tick.S0" if prefix == b"tick." else "bundle.tick")
        while True:  # until the subscription reached the publisher
            if subs is not None:
                subs.sync()
            fan.publisher.publish(probe.key, b"x")
            if sub.poll(20):
                break
        while sub.poll(50):
            sub.recv()
    per = [3 if i < TICKS_PER_READ - 2 * INSTRUMENTS else 2 for i in range(INSTRUMENTS)]
    results, n = [], 0
    for _ in range(REPEATS):
        total = 0.0
        for _ in range(READS):
            n += 1
            for stream, k in zip(streams, per, strict=True):
                for j in range(k):
                    stream.price(1 + (j & 1), 100.0 + (n % 100) * 0.01, 5.0)
            t0 = time.perf_counter()
            fan.flush()
            total += time.perf_counter() - t0
            if sub is not None:
                try:
                    while True:
                        sub.recv(zmq.NOBLOCK)
                except zmq.Again:
                    pass
            sunk.clear()
        results.append(total / READS * 1e6)
    for s in (sub, sock):
        if s is not None:
            s.close(0)
    ctx.term()
    return statistics.median(results), min(results)


def main() -> None:
    for scenario in sys.argv[1:] or list(SCENARIOS):
        median, best = run(scenario)
        print(f"{scenario:11s} flush per read: median {median:6.1f} us  best {best:6.1f} us"
              f"  -> {median / TICKS_PER_READ:.3f} us per tick")


if __name__ == "__main__":
    main()
