"""The reliability table: every fault and bad-input class, with measured figures.

Not a test. Runs the scenarios of ``tests/reliability`` (the same code the CI tests
run, with bigger counts) against the simulated Gateway, then the hypothesis fuzz
tests with ``IBHUB_FUZZ_EXAMPLES`` examples each, and prints one markdown table
(the one in docs/reliability.md):

    python bench/faults.py                     # published run: 100 restarts, 1000 examples
    python bench/faults.py --quick             # CI-sized counts, ~1 minute
    python bench/faults.py --json results.json # rows as JSON as well

Columns: attempts, recoveries, lost (subscriptions not re-established, orders gone
without a word), duplicated (orders twice at the Gateway), time to recover p50/max.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.reliability import client_faults as cf  # noqa: E402
from tests.reliability import order_faults as of  # noqa: E402
from tests.reliability import upstream_faults as uf  # noqa: E402
from tests.reliability.harness import RESULTS_ENV, Figures, rig  # noqa: E402


async def scenarios(n: dict[str, Any]) -> list[Figures]:
    """Each scenario on a fresh simulator and hub; returns the rows in table order."""
    rows: list[Figures] = []

    async def run(name: str, coro_factory: Any, **hub: Any) -> None:
        started = time.monotonic()
        if hub.pop("no_rig", False):
            fig = await coro_factory(None)
        else:
            async with rig(**hub) as r:
                fig = await coro_factory(r)
        print(f"  {name}: {time.monotonic() - started:.1f}s  {fig.row()}", file=sys.stderr)
        rows.append(fig)

    await run("restart", lambda r: uf.restart_loop(r, n["restarts"]))
    await run("1101", lambda r: uf.connectivity_loop(r, n["cycles"], "data_lost"))
    await run("1102", lambda r: uf.connectivity_loop(r, n["cycles"], "data_kept"))
    await run("farm", lambda r: uf.farm_blip_loop(r, n["cycles"]))
    await run("freeze", lambda r: uf.freeze_loop(r, n["slow_cycles"]), stale_after=0.3)
    await run("stall", lambda r: uf.stalled_handshake_loop(r, n["slow_cycles"]),
              connect_timeout=0.3)
    await run("326", lambda r: uf.client_id_held_loop(r, n["slow_cycles"]), connect_timeout=3.0)
    await run("slow subscriber", lambda r: cf.slow_subscriber(r, stall=n["stall_s"]),
              tick_rate=500.0, heartbeat_interval=0.5, lease_timeout=20.0)
    await run("script kill", lambda r: cf.script_killed(r, n["kills"]))
    await run("hub kill", lambda _r: of.hub_killed_cycles(n["hub_kills"]), no_rig=True)
    await run("outage", lambda r: of.outage_orders(r, n["cycles"], per_round=10))
    await run("in flight", lambda r: of.drop_mid_burst(r, 200))
    await run("through restarts", lambda r: of.orders_through_restarts(r, n["cycles"]))
    return rows


def fuzz(examples: int) -> list[Figures]:
    """The hypothesis tests with ``examples`` each; rows from their results file."""
    with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as out:
        env = dict(os.environ, IBHUB_FUZZ_EXAMPLES=str(examples), **{RESULTS_ENV: out.name})
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             "tests/reliability/test_fuzz_requests.py", "tests/reliability/test_fuzz_sim_wire.py"],
            cwd=REPO, env=env, capture_output=True, text=True, check=False)
        print(f"  fuzz: {time.monotonic() - started:.1f}s, "
              f"{proc.stdout.strip().splitlines()[-1]}", file=sys.stderr)
        rows = [json.loads(line) for line in out.read().splitlines() if line.strip()]
    figs = []
    for row in rows:
        fig = Figures(row["fault"], row["attempts"], row["recoveries"], row["lost"],
                      row["duplicated"], notes=row["notes"])
        if row.get("recover_p50_s") is not None:
            fig.recover_s = [row["recover_p50_s"]]
        figs.append(fig)
    if proc.returncode != 0:
        print(proc.stdout[-4000:], file=sys.stderr)
        figs.append(Figures("bad input: FUZZ TESTS FAILED", lost=1))
    return figs


def fmt(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}"


def table(rows: list[Figures]) -> str:
    out = ["| fault / input | attempts | recovered | lost | duplicated | recover p50 s "
           "| recover max s | details |",
           "|---|---:|---:|---:|---:|---:|---:|---|"]
    for f in rows:
        details = "; ".join(f"{k} {v}" for k, v in f.notes.items())
        out.append(f"| {f.fault} | {f.attempts:,} | {f.recoveries:,} | {f.lost} | {f.duplicated} "
                   f"| {fmt(f.p50)} | {fmt(f.max)} | {details} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CI-sized counts")
    ap.add_argument("--restarts", type=int, default=None)
    ap.add_argument("--fuzz-examples", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.CRITICAL)  # the scenarios' faults log loudly
    quick = dict(restarts=10, cycles=3, slow_cycles=2, stall_s=3.0, kills=2, hub_kills=2)
    full = dict(restarts=100, cycles=20, slow_cycles=10, stall_s=10.0, kills=10, hub_kills=10)
    n: dict[str, Any] = quick if args.quick else full
    if args.restarts is not None:
        n["restarts"] = args.restarts
    examples = args.fuzz_examples or (60 if args.quick else 1000)
    if args.quick:  # a short stall must still overflow the PUB high-water mark
        import ibhub.hub.server

        ibhub.hub.server.PUB_SNDHWM = 2000  # type: ignore[misc]
    started = time.monotonic()
    rows = asyncio.run(scenarios(n))
    rows += fuzz(examples)
    took = time.monotonic() - started
    print(f"python bench/faults.py{' --quick' if args.quick else ''}: "
          f"{platform.python_version()}, {psutil.cpu_count()} cores, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {took:.0f}s\n")
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps([f.row() for f in rows], indent=1))


if __name__ == "__main__":
    main()
