#!/usr/bin/env python3
"""Micro-benchmark of the hub's tick publish path, in one process: ``TickStream.price``
for every tick and ``Fanout.flush`` (one msgpack encode, two ``send()`` calls) every 10
ticks, on a PUB socket nobody reads. Prints the best of 9 runs in CPU ns per tick
(process time: robust to other load on a shared machine). Compare trees with
``PYTHONPATH=<tree> python bench/tick_publish.py``.
"""

from __future__ import annotations

import time

import zmq

from ibhub.hub.fanout import Fanout
from ibhub.protocol import ContractInfo

N = 200_000
FLUSH_EVERY = 10


def main() -> None:
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.bind("inproc://tick-publish")
    fan = Fanout(pub)
    info = ContractInfo(con_id=1, symbol="AAPL", sec_type="STK", exchange="SMART",
                        primary_exchange="", currency="USD", local_symbol="AAPL",
                        trading_class="", expiry="", strike=0.0, right="", multiplier="",
                        min_tick=0.01, long_name="")
    stream = fan.tick_stream("tick.AAPL", info)
    best = float("inf")
    for _ in range(9):
        t0 = time.process_time_ns()
        for i in range(N):
            stream.price(1 + (i & 1), 190.0 + (i % 7) * 0.01, 100.0)
            if i % FLUSH_EVERY == FLUSH_EVERY - 1:
                fan.flush()
        best = min(best, (time.process_time_ns() - t0) / N)
    pub.close(0)
    ctx.term()
    print(f"{best:.0f} ns/tick (CPU, best of 9; price() per tick, flush() per {FLUSH_EVERY})")


if __name__ == "__main__":
    main()
