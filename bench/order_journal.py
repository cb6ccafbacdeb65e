"""What "journal before reply" costs per order.

Not a test. Runs ``OrderManager.place`` (risk checks, idempotency lookup, journal commit,
pacer hand-off, reply) against a no-op upstream, with the journal on this machine's
disk, for each SQLite ``synchronous`` mode:

* sequential: one order at a time, each awaited (the latency a script sees);
* burst: N orders placed concurrently (group commit: many orders per fsync).

    python bench/order_journal.py [--orders 500] [--interval 0] [--dir /tmp]

``--interval S`` spaces the sequential orders S seconds apart, as ``bench/orders.py``
does (0.06): each order then finds the CPU's caches and the disk idle, as a script's
order does. What it prints for FULL is the floor of the ack a script sees: the hub's
whole ``place`` without its two socket hops.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from ibhub.orders.journal import Journal
from ibhub.orders.journal_writer import JournalWriter
from ibhub.orders.manager import Caller, OrderManager
from ibhub.orders.port import OrderFields
from ibhub.orders.risk import RiskGate, RiskLimits
from ibhub.protocol import ContractInfo, ContractSpec, PlaceOrder
from ibhub.tws.pacing import Pacer

AAPL = ContractInfo(265598, "AAPL", "STK", "SMART", "NASDAQ", "USD", "AAPL", "NMS", "", 0.0, "",
                    "", 0.01, "APPLE INC")  # fmt: skip


class NullUpstream:
    client_id = 0

    def __init__(self) -> None:
        self._next = 1

    def is_connected(self) -> bool:
        return True

    def next_order_id(self) -> int:
        self._next += 1
        return self._next - 1

    def ensure_ids_above(self, order_id: int) -> None:
        self._next = max(self._next, order_id + 1)

    def place(self, order_id: int, contract: ContractSpec, fields: OrderFields) -> None:
        pass

    def cancel(self, order_id: int) -> None:
        pass

    def global_cancel(self) -> None:
        pass


class Resolver:
    async def qualify(self, spec: ContractSpec) -> ContractInfo:
        return AAPL

    def last_price(self, con_id: int) -> float | None:
        return 190.0


def req(i: int) -> PlaceOrder:
    return PlaceOrder(id=i, lease="L", client_order_id=f"b{i}",
                      contract=ContractSpec(symbol="AAPL"), action="BUY", quantity=1.0,
                      order_type="LMT", limit_price=189.0)  # fmt: skip


def disk_alone(n: int, base: Path, interval: float) -> None:
    """The disk's share: one 512-byte write into a preallocated file and its fdatasync
    (what a WAL commit with synchronous=FULL waits for at least), ``interval`` apart."""
    path = Path(tempfile.mkdtemp(dir=base)) / "wal"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.ftruncate(fd, 4 << 20)
        os.fsync(fd)
        lat = []
        for i in range(n):
            if interval:
                time.sleep(interval)
            os.pwrite(fd, os.urandom(512), (i * 4096) % (4 << 20))
            t = time.perf_counter()
            os.fdatasync(fd)
            lat.append(time.perf_counter() - t)
    finally:
        os.close(fd)
    lat.sort()
    print(f"disk    fdatasync  p50 {statistics.median(lat) * 1e3:6.3f} ms  "
          f"p99 {lat[int(len(lat) * 0.99)] * 1e3:6.3f} ms  (a write and its fdatasync alone)")


async def run(mode: str, n: int, base: Path, interval: float) -> None:
    data = Path(tempfile.mkdtemp(dir=base))
    writer = JournalWriter(lambda: Journal.in_dir(data, synchronous=mode))
    pacer = Pacer(rate=1e6, burst=1e6)
    book = OrderManager(upstream=NullUpstream(), writer=writer,
                     risk=RiskGate(RiskLimits(order_rate=0), upstream_port=4002, accounts=["DU1"]),
                     pacer=pacer, resolver=Resolver(), publish=lambda t, e: None)  # fmt: skip
    await writer.start()
    pacer.start()
    caller = Caller("L", "bench")
    lat = []
    for i in range(n):
        if interval:
            await asyncio.sleep(interval)
        t = time.perf_counter()
        await book.place(caller, req(i))
        lat.append(time.perf_counter() - t)
    lat.sort()
    batches0 = writer.batches
    t = time.perf_counter()
    await asyncio.gather(*(book.place(caller, req(n + i)) for i in range(n)))
    burst = time.perf_counter() - t
    commits = writer.batches - batches0
    await pacer.stop()
    await writer.stop()
    print(f"{mode:6}  sequential p50 {statistics.median(lat) * 1e3:6.3f} ms  "
          f"p99 {lat[int(len(lat) * 0.99)] * 1e3:6.3f} ms  |  burst of {n}: {burst * 1e3:7.1f} ms "
          f"({burst / n * 1e6:5.0f} us/order, ~{commits} commits)")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--orders", type=int, default=500)
    ap.add_argument("--interval", type=float, default=0.0,
                    help="seconds between sequential orders (bench/orders.py: 0.06)")
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    args = ap.parse_args()
    disk_alone(args.orders, args.dir, args.interval)
    for mode in ("FULL", "NORMAL"):
        asyncio.run(run(mode, args.orders, args.dir, args.interval))


if __name__ == "__main__":
    main()
