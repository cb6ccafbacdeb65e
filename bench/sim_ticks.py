"""How many ticks per second the simulator delivers to ONE unmodified ib_insync client.

Not a test. Starts the simulator in a separate process (a real Gateway is another
process too, and sharing the GIL would halve both sides), connects one ib_insync
client, subscribes it to many instruments, and counts the price/size ticks
ib_insync decodes (``ticker.ticks``), at several configured rates and flat out.

    python bench/sim_ticks.py [--seconds 3] [--instruments 28] [--rates 4,100,500,1000]

"sim sent/s" is the simulator's own count of streamed messages; "client got/s" is
what reached the client's tickers. Flat out means a rate far above what the
client can decode: the simulator then runs under flow control (it steps an
instrument only while some reader's socket has room), so the figure is the
client's ceiling. The last row replaces ib_insync by a raw socket reader that only
splits frames, which shows the simulator's own ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing as mp
import struct
import time
from multiprocessing.connection import Connection

from ibhub.ib.lib import IB, Contract
from ibhub.sim import SimConfig, SimGateway
from ibhub.sim.codec import frame

FLAT_OUT = 20_000.0  # events/s per instrument: ~1.1 M msgs/s offered to one client


def _serve(rate: float, conn: Connection) -> None:
    async def run() -> None:
        cfg = SimConfig(seed=1, tick_rate=rate, max_msg_rate=10_000.0)
        async with SimGateway(cfg) as sim:
            # stocks, ETFs and each future's front month: 28 instruments, as measured
            # before ES listed its quarterly cycle
            fronts = {i.symbol: i.con_id for i in reversed(list(sim.universe))
                      if i.sec_type == "FUT"}
            ids = [i.con_id for i in sim.universe if i.sec_type == "STK"] + list(fronts.values())
            conn.send((sim.port, ids))
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, conn.recv)  # "reset"
            base = sim.streams.messages
            conn.send("ok")
            await loop.run_in_executor(None, conn.recv)  # "stop"
            conn.send(sim.streams.messages - base)

    logging.basicConfig(level=logging.WARNING)
    import uvloop
    uvloop.run(run())


async def measure(rate: float, n: int, seconds: float) -> tuple[float, float]:
    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(target=_serve, args=(rate, child), daemon=True)
    proc.start()
    loop = asyncio.get_running_loop()
    port, ids = await loop.run_in_executor(None, parent.recv)
    ib = IB()
    try:
        await ib.connectAsync("127.0.0.1", port, clientId=1, timeout=10)
        for con_id in ids[:n]:
            ib.reqMktData(Contract(conId=con_id, exchange="SMART"))
        received = 0

        def on_pending(tickers: set) -> None:
            nonlocal received
            for t in tickers:
                received += len(t.ticks)

        ib.pendingTickersEvent += on_pending
        await asyncio.sleep(1.0)  # warm-up: initial blocks, steady state
        parent.send("reset")
        await loop.run_in_executor(None, parent.recv)
        received = 0
        t0 = time.perf_counter()
        await asyncio.sleep(seconds)
        elapsed = time.perf_counter() - t0
        got = received
        ib.disconnect()
        parent.send("stop")
        sent = await loop.run_in_executor(None, parent.recv)
        return sent / elapsed, got / elapsed
    finally:
        ib.disconnect()
        proc.join(5)
        if proc.is_alive():
            proc.terminate()


async def measure_raw(rate: float, n: int, seconds: float) -> tuple[float, float]:
    """Like measure() but the reader only counts frames (no ib_insync decoding)."""
    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(target=_serve, args=(rate, child), daemon=True)
    proc.start()
    loop = asyncio.get_running_loop()
    port, ids = await loop.run_in_executor(None, parent.recv)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"API\0" + struct.pack(">I", 9) + b"v157..176")
        writer.write(frame([71, 2, 1, ""]))
        for req_id, con_id in enumerate(ids[:n], start=1000):
            writer.write(frame([1, 11, req_id, con_id, "", "", "", 0.0, "", "", "SMART", "",
                                "", "", "", 0, "", 0, 0, ""]))
        buf = b""
        count = 0
        counting = False
        t0 = deadline = 0.0
        warm = loop.time() + 1.0
        while True:
            data = await reader.read(1 << 20)
            if not data:
                raise ConnectionError("simulator closed the benchmark socket")
            buf += data
            pos = 0
            while len(buf) - pos >= 4:
                (size,) = struct.unpack_from(">I", buf, pos)
                if len(buf) - pos - 4 < size:
                    break
                pos += 4 + size
                count += 1
            buf = buf[pos:]
            now = loop.time()
            if not counting and now >= warm:
                parent.send("reset")
                await loop.run_in_executor(None, parent.recv)
                counting, count, t0, deadline = True, 0, time.perf_counter(), now + seconds
            elif counting and now >= deadline:
                break
        elapsed = time.perf_counter() - t0
        parent.send("stop")
        sent = await loop.run_in_executor(None, parent.recv)
        return sent / elapsed, count / elapsed
    finally:
        writer.close()
        proc.join(5)
        if proc.is_alive():
            proc.terminate()


async def main_async(args: argparse.Namespace) -> None:
    print(f"one ib_insync client, {args.instruments} instruments, {args.seconds:g} s per rate")
    print(f"{'events/s/instr':>15} {'offered msgs/s':>15} {'sim sent/s':>12} {'client got/s':>13}")
    for rate in [*args.rates, FLAT_OUT]:
        sent, got = await measure(rate, args.instruments, args.seconds)
        label = "flat out" if rate == FLAT_OUT else f"{rate:g}"
        offered = f"~{2 * rate * args.instruments:,.0f}"
        print(f"{label:>15} {offered:>15} {sent:>12,.0f} {got:>13,.0f}")
    sent, got = await measure_raw(FLAT_OUT, args.instruments, args.seconds)
    print(f"{'flat out, raw':>15} {'reader':>15} {sent:>12,.0f} {got:>13,.0f}")


def main() -> None:
    p = argparse.ArgumentParser(description="ticks/s from the simulator to one ib_insync client")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--instruments", type=int, default=28)
    p.add_argument("--rates", type=lambda s: [float(x) for x in s.split(",")],
                   default=[4.0, 100.0, 500.0, 1000.0])
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
