"""Recorder throughput and replay rate (docs/performance.md, "Recording and replay").

Not a test. A simulated Gateway in its own process, a hub (``ibhub run --gateway``)
and an ``ibhub record`` process that holds every instrument of the simulator's
universe (``--subscribe``) and records ticks. For each simulator rate it measures a
window: ticks recorded per second, events lost (sequence gaps the recorder
recorded), the recorder's lag, and its CPU per tick. The highest rate with zero
loss and lag under a second is the recorder's sustained rate on this machine.
Then the recording is replayed at ``--speed max`` into a simulator and an
ib_insync / ib_async script counts the ticks it receives per second.

    python bench/record.py [--rates 250,1000,2500,5000] [--window 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import SimProcess, cpu_seconds, free_port, machine

REPO = Path(__file__).resolve().parents[1]
IBLIB = "ib_insync" if sys.version_info < (3, 12) else "ib_async"
CLI = [sys.executable, "-c", "from ibhub.cli import main; main()"]


def state(root: Path) -> dict:
    try:
        return json.loads((root / "_recorder" / "state.json").read_text())
    except (OSError, ValueError):
        return {}


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


def record_cells(rates: list[float], window: float, tmp: Path) -> tuple[list[dict], Path]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    root = tmp / "rec"
    rows = []
    with SimProcess(stamp="slice") as sim:
        pub, rpc = f"ipc://{tmp}/pub", f"ipc://{tmp}/rpc"
        hub = subprocess.Popen([*CLI, "run", "--gateway", f"127.0.0.1:{sim.port}", "--pub", pub,
                                "--rpc", rpc, "--http-port", "off", "--data-dir", str(tmp)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        con_ids = ",".join(str(i.con_id) for i in sim.instruments)
        rec = None
        try:
            time.sleep(1.0)
            rec = subprocess.Popen([*CLI, "record", str(root), "--pub", pub, "--rpc", rpc,
                                    "--kinds", "ticks", "--subscribe", con_ids,
                                    "--roll-seconds", "2"], env=env,
                                   stdout=subprocess.DEVNULL, stderr=(tmp / "rec.log").open("w"))
            wait_for(lambda: state(root).get("pid") == rec.pid, 30, "recorder up")
            n = len(sim.instruments)
            sim.rate(20)  # until every instrument's ticks are on disk (subscribing is paced)
            wait_for(lambda: len(state(root).get("durable", {})) >= n, 60,
                     f"ticks of all {n} instruments recorded")
            ps, hub_ps = psutil.Process(rec.pid), psutil.Process(hub.pid)
            for hz in rates:
                sim.rate(hz)
                time.sleep(1.5)  # warm up
                s0, c0, h0, t0 = state(root), cpu_seconds(ps), cpu_seconds(hub_ps), time.time()
                time.sleep(window)
                s1, c1, h1, t1 = state(root), cpu_seconds(ps), cpu_seconds(hub_ps), time.time()
                got = s1["received"]["ticks"] - s0["received"]["ticks"]
                missed = s1["missed"] - s0["missed"]
                rows.append({"hz": hz, "ticks_s": got / (t1 - t0), "missed": missed,
                             "lag_s": max(s0["lag_seconds"], s1["lag_seconds"]),
                             "rec_cpu_us_tick": (c1 - c0) / max(got, 1) * 1e6,
                             "rec_cpu_pct": (c1 - c0) / (t1 - t0) * 100,
                             "hub_cpu_pct": (h1 - h0) / (t1 - t0) * 100})
                print(f"  {hz:>6,.0f} Hz/instrument: {rows[-1]['ticks_s']:>9,.0f} ticks/s "
                      f"recorded, missed {missed:,}, lag {rows[-1]['lag_s']:.3f} s, "
                      f"recorder {rows[-1]['rec_cpu_us_tick']:.2f} us CPU/tick "
                      f"({rows[-1]['rec_cpu_pct']:.0f}% of a core)", flush=True)
            sim.rate(0)
            if not any(r["ticks_s"] for r in rows):
                print((tmp / "rec.log").read_text()[-3000:])
        finally:
            if rec is not None:
                rec.terminate()
                rec.wait(30)
            hub.terminate()
            hub.wait(30)
    return rows, root


def replay_rate(root: Path, seconds: float) -> tuple[float, float, int]:
    """``ibhub sim --replay ROOT --speed max`` as its own process; a bare TWS socket
    reader (frames only: the floor) and then an ib_insync / ib_async script each
    subscribe every recorded instrument and count tick messages per second."""
    from ibhub.record import format as fmt

    con_ids = sorted(set(fmt.read_kind(root, "ticks", columns=["con_id"])["con_id"]
                         .to_pylist()))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    rates = []
    for reader in (_bare_reader, _ib_reader):
        port = free_port()
        sim = subprocess.Popen([*CLI, "sim", "--replay", str(root), "--speed", "max",
                                "--port", str(port), "--control-port", "-1",
                                "--log-level", "WARNING"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda p=port: _listening(p), 30, "replaying simulator up")
            rates.append(asyncio.run(reader(port, con_ids, seconds)))
        finally:
            sim.terminate()
            sim.wait(30)
    return rates[0], rates[1], len(con_ids)


def offline_capacity(tmp: Path, n: int = 400_000, per_batch: int = 8) -> float:
    """The recorder's own work per tick without a hub or a socket: batches of ticks into
    the recorder's batch callback, then the buffers written as parts (build, zstd,
    fsync). Returns ticks per CPU second (all threads of this process)."""
    from ibhub.client import Batch
    from ibhub.protocol import Tick
    from ibhub.record.recorder import Recorder
    from ibhub.record.writer import PartWriter

    rec = Recorder(tmp / "offline", hub=None)  # type: ignore[arg-type]
    rec.writer = PartWriter(rec.root, "bench", 3600, 10**12, on_durable=rec._on_durable)
    now = time.time_ns()
    batches = []
    for start in range(0, n, per_batch):
        sym = f"S{(start // per_batch) % 41}"
        batches.append(Batch(f"tick.{sym}", [
            Tick(i + 1, now + i, 1000 + i % 41, sym, 100.0 + i % 7, 100.02, 100.01, 300.0,
                 200.0, 100.0, float(i)) for i in range(start, start + per_batch)]))
    cpu = time.process_time()
    for batch in batches:
        rec._on_batch(batch)
    asyncio.run(rec.writer.flush_all())
    rec.writer.close()
    return n / (time.process_time() - cpu)


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def _bare_reader(port: int, con_ids: list[int], seconds: float) -> float:
    import struct

    from ibhub.sim.codec import frame

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"API\0" + struct.pack(">I", 9) + b"v157..176")
    writer.write(frame([71, 2, 1, ""]))
    for req_id, cid in enumerate(con_ids, start=1000):
        writer.write(frame([1, 11, req_id, cid, "", "", "", 0.0, "", "", "", "", "", "",
                            "", 0, "", 0, 0, ""]))
    unpack = struct.Struct(">I").unpack_from
    buf, count, t0, last = b"", 0, 0.0, 0.0
    loop = asyncio.get_running_loop()
    while True:  # until the replay is over (no data for a second) or `seconds` passed
        try:
            async with asyncio.timeout(1.0):
                data = await reader.read(1 << 20)
        except TimeoutError:
            break
        if not data:
            break
        now = loop.time()
        buf = buf + data if buf else data
        pos, n = 0, len(buf)
        while n - pos > 4:
            end = pos + 4 + unpack(buf, pos)[0]
            if end > n:
                break
            if buf[pos + 4:pos + 6] in (b"1\0", b"2\0"):
                if not count:
                    t0 = now
                count += 1
                last = now
            pos = end
        buf = buf[pos:]
        if count and now - t0 >= seconds:
            break
    writer.close()
    return count / (last - t0) if last > t0 else 0.0


async def _ib_reader(port: int, con_ids: list[int], seconds: float) -> float:
    sys.path.insert(0, str(REPO))
    from tests.ibclient import IB, Contract

    count = [0]

    def on_pending(tickers: set) -> None:
        count[0] += sum(len(t.ticks) for t in tickers)

    ib = IB()
    await ib.connectAsync("127.0.0.1", port, clientId=1, timeout=10)
    ib.pendingTickersEvent += on_pending
    for con_id in con_ids:
        ib.reqMktData(Contract(conId=con_id, exchange="SMART"))
    seen: list[tuple[float, int]] = []  # (time, count) once a tick has arrived
    while True:  # until the replay is over (no tick for a second) or `seconds` passed
        await asyncio.sleep(0.05)
        now = time.monotonic()
        if count[0] and (not seen or count[0] != seen[-1][1]):
            seen.append((now, count[0]))
        if seen and (now - seen[-1][0] > 1.0 or now - seen[0][0] >= seconds):
            break
        if not seen and ib.isConnected() is False:
            break
    ib.disconnect()
    if len(seen) < 2:
        return 0.0
    return (seen[-1][1] - seen[0][1]) / (seen[-1][0] - seen[0][0])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="250,1000,2500,5000")
    ap.add_argument("--window", type=float, default=4.0)
    args = ap.parse_args()
    print(f"machine: {machine()}")
    print(f"command: python bench/record.py {' '.join(sys.argv[1:])}")
    with tempfile.TemporaryDirectory(prefix="ibhub-rec-") as tmp:
        rows, root = record_cells([float(r) for r in args.rates.split(",")], args.window,
                                  Path(tmp))
        ok = [r for r in rows if r["missed"] == 0 and r["lag_s"] < 1.0]
        best = max(ok, key=lambda r: r["ticks_s"]) if ok else None
        if best:
            print(f"highest zero-loss rate: {best['ticks_s']:,.0f} ticks/s, recorder "
                  f"{best['rec_cpu_us_tick']:.2f} us CPU per tick")
        capacity = offline_capacity(Path(tmp))
        print(f"recorder's own capacity (no hub, batches of 8 ticks, parts written): "
              f"{capacity:,.0f} ticks per CPU second ({1e6 / capacity:.2f} us per tick)")
        bare, ib, n = replay_rate(root, 3.0)
        size = sum(p.stat().st_size for p in root.rglob("*.parquet"))
        print(f"replay --speed max ({n} instruments, recording {size / 1e6:.1f} MB): "
              f"{bare:,.0f} tick messages/s to a bare TWS socket reader (~2 per recorded "
              f"tick), {ib:,.0f} to one {IBLIB} script")


if __name__ == "__main__":
    main()
