"""Soak: scripts trading and subscribing through one hub while the Gateway misbehaves.

Not a test. For ``--minutes N`` it runs, each in its own process, the hub (with the
order service), ``--subscribers`` SDK subscriber scripts and ``--traders`` SDK trader
scripts, against a simulated Gateway in this process, and injects a random (seeded)
fault every ``--fault-every`` seconds on average: Gateway restart, 1100/1101, 1100/1102,
farm blip, data freeze, stalled handshake, 326 on reconnect, a subscriber frozen
(SIGSTOP: stops reading), and the hub killed -9 and restarted on the same journal.
Then it prints a summary:

    python bench/soak.py --minutes 10 --seed 1

faults injected (per kind), recoveries (hub CONNECTED again and ticks reaching this
process after the fault) with time to recover, orders placed / acknowledged / filled
/ lost / duplicated (journal vs the simulator's book), subscribers' gaps detected and
whether every subscriber was still receiving at the end, and the hub's peak RSS.

Traders retry every unanswered or ``upstream_down`` order with the same client order
id (the hub's idempotency makes that safe), so "lost" means an acknowledged order
that is neither at the Gateway nor reported to its owner as not sent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import zmq
import zmq.asyncio

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ibhub import wire  # noqa: E402
from ibhub.protocol import (  # noqa: E402
    ContractSpec,
    GetStatus,
    OrderAccepted,
    OrderRejected,
    PlaceOrder,
    StatusReply,
)

SYMBOLS = ("AAPL", "MSFT", "TSLA", "NVDA", "AMZN", "GOOGL", "META", "AMD", "NFLX", "JPM")
HUB_SETTINGS: dict[str, Any] = dict(heartbeat_interval=0.5, lease_timeout=6.0, connect_timeout=2.0,
                    reconnect_backoff_initial=0.1, reconnect_backoff_max=1.0,
                    request_timeout=5.0, stale_after=2.0)

# Relative frequency of each fault kind.
FAULT_WEIGHTS = {"restart": 3, "1101": 2, "1102": 2, "farm_blip": 2, "freeze": 2, "stall": 1,
                 "326": 1, "subscriber_stop": 2, "hub_kill": 1}

# ---------------------------------------------------------------------- child roles


async def role_hub(port: int, pub: str, rpc: str, data: str) -> None:
    from ibhub.config import HubSettings
    from ibhub.hub.server import HubServer, attach_orders

    hub = HubServer(HubSettings(gateway_host="127.0.0.1", gateway_port=port, client_id=0,
                                pub=pub, rpc=rpc, data_dir=Path(data), **HUB_SETTINGS))
    await hub.start()
    if getattr(hub, "orders", None) is None:  # the hub wires its own once that lands
        await attach_orders(hub, order_rate=100.0, order_burst=100.0)
    print("READY", flush=True)
    await asyncio.Event().wait()


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    return stop


async def role_subscriber(pub: str, rpc: str, name: str, symbols: list[str]) -> None:
    from ibhub.client import AsyncHub

    stop = _stop_event()
    hub = AsyncHub(pub, rpc, name=name, connect_retries=60)
    await hub.connect()
    last_tick = [time.monotonic()]

    async def consume(sub: Any) -> None:
        async for _tick in sub:
            last_tick[0] = time.monotonic()

    subs = [await hub.subscribe(s) for s in symbols]
    tasks = [asyncio.create_task(consume(s)) for s in subs]
    print("READY", flush=True)
    await stop.wait()
    stats = dict(hub.stats, name=name, quiet_s=round(time.monotonic() - last_tick[0], 2))
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps(stats), flush=True)
    await hub.close()


async def role_trader(pub: str, rpc: str, name: str, rate: float, seed: int) -> None:
    from ibhub.client import AsyncHub, HubError, HubTimeout

    stop = _stop_event()
    rng = random.Random(seed)
    hub = AsyncHub(pub, rpc, name=name, connect_retries=60, request_timeout=3.0)
    await hub.connect()
    print("READY", flush=True)
    outcome: dict[str, Any] = {}  # coid -> order id | refusal reason
    counts: Counter[str] = Counter()
    n = 0
    while not stop.is_set():
        coid = f"{name}-{n}"
        n += 1
        req = PlaceOrder(id=0, lease="", client_order_id=coid,
                         contract=ContractSpec(symbol=rng.choice(SYMBOLS)),
                         action=rng.choice(["BUY", "SELL"]), quantity=float(rng.randint(1, 5)))
        for _attempt in range(100):  # retry with the same id until the hub decides
            try:
                reply = await hub._channel().request(
                    msgspec_replace(req, lease=(hub._keeper.token if hub._keeper else "") or ""))
            except HubTimeout:
                counts["retry_timeout"] += 1
                await asyncio.sleep(0.5)
                continue
            except HubError as exc:
                counts[f"retry_{exc.code}"] += 1
                await asyncio.sleep(0.5)
                continue
            if isinstance(reply, OrderRejected) and reply.reason in ("upstream_down",
                                                                     "unknown_lease", "busy"):
                counts[f"retry_{reply.reason}"] += 1
                await asyncio.sleep(0.5)
                continue
            if isinstance(reply, OrderAccepted):
                outcome[coid] = reply.order_id
                counts["duplicate_replies"] += reply.duplicate
            elif isinstance(reply, OrderRejected):
                outcome[coid] = reply.reason
            break
        else:
            outcome[coid] = "gave_up"
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(rng.expovariate(rate)):
                await stop.wait()
    print(json.dumps({"name": name, "outcome": outcome, "counts": counts}), flush=True)
    await hub.close()


def msgspec_replace(req: PlaceOrder, **fields: Any) -> PlaceOrder:
    import msgspec

    return msgspec.structs.replace(req, **fields)


# ---------------------------------------------------------------------- the conductor


class Child:
    def __init__(self, proc: asyncio.subprocess.Process, what: str) -> None:
        self.proc, self.what = proc, what

    log_path = Path(tempfile.gettempdir()) / "ibhub-soak.log"  # the children's stderr

    @classmethod
    async def start(cls, what: str, *args: str) -> Child:
        with open(cls.log_path, "ab") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(Path(__file__)), "--role", *args,
                stdout=asyncio.subprocess.PIPE, stderr=log, cwd=REPO)
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        if line.strip() != b"READY":
            raise RuntimeError(f"{what} did not start: {line!r}")
        return cls(proc, what)

    async def finish(self, timeout: float = 30.0) -> dict[str, Any]:
        """SIGTERM, then the JSON summary it prints."""
        assert self.proc.stdout is not None
        self.proc.send_signal(signal.SIGTERM)
        out = await asyncio.wait_for(self.proc.stdout.read(), timeout)
        await self.proc.wait()
        return json.loads(out.decode().strip().splitlines()[-1])

    async def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.data = tempfile.mkdtemp(prefix="ibhub-soak-")
        self.pub, self.rpc = f"ipc://{self.data}/pub", f"ipc://{self.data}/rpc"
        self.faults: Counter[str] = Counter()
        self.recover_s: list[float] = []
        self.unrecovered = 0
        self.peak_rss = 0
        self.rss_by_minute: dict[int, int] = {}  # minute -> hub peak RSS in it (growth?)
        self.started = time.monotonic()
        self.hub: Child | None = None
        self.hub_starts = 0
        self.ticks_seen = 0
        self.last_tick = 0.0

    async def start_hub(self) -> None:
        self.hub = await Child.start("hub", "hub", str(self.sim.port), self.pub, self.rpc,
                                     self.data)
        self.hub_starts += 1

    async def watch(self) -> None:
        """Ticks reaching this process, and the hub's RSS, all along."""
        sock = self.ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.pub)
        sock.subscribe(b"tick.")
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await sock.recv_multipart()
                    self.ticks_seen += 1
                    self.last_tick = time.monotonic()
            if self.hub is not None:
                with contextlib.suppress(psutil.NoSuchProcess):
                    rss = psutil.Process(self.hub.proc.pid).memory_info().rss
                    self.peak_rss = max(self.peak_rss, rss)
                    minute = int((time.monotonic() - self.started) // 60)
                    self.rss_by_minute[minute] = max(self.rss_by_minute.get(minute, 0), rss)

    async def status(self) -> StatusReply | None:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.rpc)
        try:
            await sock.send_multipart([b"", wire.encode(GetStatus(id=1))])
            async with asyncio.timeout(1.0):
                reply = wire.decode_reply((await sock.recv_multipart())[-1])
            return reply if isinstance(reply, StatusReply) else None
        except TimeoutError:
            return None
        finally:
            sock.close(0)

    async def recovered(self, since: float, timeout: float = 60.0, record: bool = True) -> None:
        """Hub CONNECTED with its subscriptions and ticks arriving after ``since``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = await self.status()
            if st is not None and st.connected and self.last_tick > since:
                if record:
                    self.recover_s.append(time.monotonic() - since)
                return
            await asyncio.sleep(0.05)
        self.unrecovered += 1
        print(f"  not recovered within {timeout:g}s", file=sys.stderr)

    async def fault(self) -> None:
        sim, rng = self.sim, self.rng
        weights = {k: w for k, w in FAULT_WEIGHTS.items()
                   if not self.args.faults or k in self.args.faults}
        kind = rng.choices(list(weights), weights=list(weights.values()))[0]
        self.faults[kind] += 1
        print(f"  {time.strftime('%H:%M:%S')} fault {kind}", file=sys.stderr)
        if kind == "restart":
            await sim.restart(rng.uniform(0.2, 3.0))
        elif kind in ("1101", "1102"):
            await sim.connectivity_lost("data_lost" if kind == "1101" else "data_kept",
                                        after=rng.uniform(0.2, 2.0))
        elif kind == "farm_blip":
            await sim.farm_blip(rng.uniform(0.2, 3.0))
        elif kind == "freeze":
            await sim.freeze(rng.uniform(1.0, 5.0))
        elif kind == "stall":
            sim.stall_handshakes(True)
            await sim.restart(0.1)
            await asyncio.sleep(rng.uniform(2.0, 6.0))  # the fault's duration
            sim.stall_handshakes(False)
        elif kind == "326":
            sim.hold_client_id(0, rng.uniform(0.5, 3.0))
            await sim.restart(0.1)
        elif kind == "subscriber_stop":
            victim = rng.choice(self.subscribers)
            victim.proc.send_signal(signal.SIGSTOP)
            await asyncio.sleep(rng.uniform(2.0, 8.0))  # stopped: reads nothing
            victim.proc.send_signal(signal.SIGCONT)
        elif kind == "hub_kill":
            assert self.hub is not None
            await self.hub.kill()
            await self.start_hub()
        await self.recovered(time.monotonic())

    async def run(self) -> dict[str, Any]:
        from ibhub.sim import SimConfig, SimGateway

        a = self.args
        self.ctx = zmq.asyncio.Context()
        self.sim = SimGateway(SimConfig(host="127.0.0.1", port=0, seed=a.seed,
                                        tick_rate=a.tick_rate))
        await self.sim.start()
        await self.start_hub()
        watcher = asyncio.create_task(self.watch())
        self.subscribers = [
            await Child.start(f"subscriber {i}", "subscriber", self.pub, self.rpc, f"sub-{i}",
                              *self.rng.sample(SYMBOLS, 3))
            for i in range(a.subscribers)]
        traders = [await Child.start(f"trader {i}", "trader", self.pub, self.rpc,
                                     f"trader-{i}", str(a.order_rate), str(a.seed + i))
                   for i in range(a.traders)]
        started = time.monotonic()
        end = started + a.minutes * 60
        try:
            while time.monotonic() < end:
                await asyncio.sleep(min(end - time.monotonic(),
                                        self.rng.uniform(0.5, 1.5) * a.fault_every))
                if time.monotonic() < end:
                    await self.fault()
            await self.recovered(time.monotonic() - 5.0, record=False)
            sub_stats = [await s.finish() for s in self.subscribers]
            trader_stats = [await t.finish() for t in traders]
            return self.summary(sub_stats, trader_stats, time.monotonic() - started)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            for c in [*self.subscribers, *traders]:
                await c.kill()
            if self.hub is not None:
                await self.hub.kill()
            await self.sim.stop()
            self.ctx.destroy(linger=0)
            if a.keep:
                print(f"data (journal) kept in {self.data}", file=sys.stderr)
            else:
                shutil.rmtree(self.data, ignore_errors=True)

    def summary(self, subs: list[dict[str, Any]], traders: list[dict[str, Any]],
                took: float) -> dict[str, Any]:
        from ibhub.orders.journal import JOURNAL_FILE, Journal
        from ibhub.orders.port import parse_order_ref

        journal = Journal(Path(self.data) / JOURNAL_FILE, readonly=True)
        rows = {r.order_id: r for r in journal.orders()}
        journal.close()
        at_sim = self.sim.broker.orders()
        refs = Counter(o.order_ref for o in at_sim)
        sim_ids = {o.order_id for o in at_sim}
        outcomes = {(t["name"], coid): v for t in traders for coid, v in t["outcome"].items()}
        acked = {k: v for k, v in outcomes.items() if isinstance(v, int)}
        lost = 0
        for (owner, coid), oid in acked.items():
            row = rows.get(oid)
            if row is None or (row.owner, row.client_order_id) != (owner, coid):
                lost += 1
            elif oid not in sim_ids and row.status != "Inactive":
                lost += 1  # neither placed nor reported as not sent
        sim_status = {o.order_id: o.status for o in at_sim}
        # Acknowledged orders whose journal row is not Filled although the Gateway
        # filled them: the hub missed or did not record a fill.
        unfilled = [(oid, rows[oid].status, sim_status.get(oid)) for oid in acked.values()
                    if oid in rows and rows[oid].status != "Filled"]
        unknown_at_sim = sum(1 for o in at_sim if parse_order_ref(o.order_ref) is None)
        rec = self.recover_s
        retries: Counter[str] = Counter()
        for t in traders:
            retries.update({k: v for k, v in t["counts"].items() if k.startswith("retry")})
        return {
            "minutes": round(took / 60, 1),
            "seed": self.args.seed,
            "faults_injected": sum(self.faults.values()),
            "faults": dict(self.faults),
            "recoveries": len(self.recover_s),
            "not_recovered": self.unrecovered,
            "recover_p50_s": round(statistics.median(rec), 2) if rec else None,
            "recover_max_s": round(max(rec), 2) if rec else None,
            "hub_starts": self.hub_starts,
            "orders_placed": len(outcomes),
            "orders_acknowledged": len(acked),
            "orders_refused": dict(Counter(v for v in outcomes.values() if isinstance(v, str))),
            "orders_filled": sum(1 for oid in acked.values()
                                 if rows.get(oid) is not None and rows[oid].status == "Filled"),
            "orders_not_filled_in_journal": len(unfilled),
            "not_filled_examples (id, journal, gateway)": unfilled[:5],
            "orders_reported_not_sent": sum(1 for oid in acked.values() if oid not in sim_ids),
            "orders_lost": lost,
            "orders_duplicated": sum(n - 1 for n in refs.values() if n > 1),
            "orders_at_gateway_unknown_owner": unknown_at_sim,
            "trader_retries": dict(retries),
            "subscriber_events": sum(s["events"] for s in subs),
            "gaps_detected": sum(s["gaps"] for s in subs),
            "subscriber_rehellos": sum(s["rehellos"] for s in subs),
            "subscribers_receiving_at_end": sum(1 for s in subs if s["quiet_s"] < 5.0),
            "subscribers": len(subs),
            "hub_peak_rss_mb": round(self.peak_rss / 2**20, 1),
            "hub_peak_rss_mb_per_minute": [round(self.rss_by_minute[m] / 2**20)
                                           for m in sorted(self.rss_by_minute)],
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--subscribers", type=int, default=4)
    ap.add_argument("--traders", type=int, default=3)
    ap.add_argument("--order-rate", type=float, default=2.0, help="orders/s per trader")
    ap.add_argument("--tick-rate", type=float, default=20.0)
    ap.add_argument("--fault-every", type=float, default=10.0, help="mean seconds")
    ap.add_argument("--faults", nargs="*", choices=sorted(FAULT_WEIGHTS), default=None,
                    help="only these fault kinds (default: all)")
    ap.add_argument("--keep", action="store_true", help="keep the data dir (journal)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--role", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role:
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
        role, *rest = args.role
        if role == "hub":
            asyncio.run(role_hub(int(rest[0]), rest[1], rest[2], rest[3]))
        elif role == "subscriber":
            asyncio.run(role_subscriber(rest[0], rest[1], rest[2], rest[3:]))
        elif role == "trader":
            asyncio.run(role_trader(rest[0], rest[1], rest[2], float(rest[3]), int(rest[4])))
        return
    logging.basicConfig(level=logging.CRITICAL)
    print(f"soak: {args.minutes:g} min, seed {args.seed}, {args.subscribers} subscribers, "
          f"{args.traders} traders, a fault every ~{args.fault_every:g}s; children's logs in "
          f"{Child.log_path}", file=sys.stderr)
    result = asyncio.run(Soak(args).run())
    width = max(len(k) for k in result)
    for k, v in result.items():
        print(f"{k:<{width}}  {v}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
