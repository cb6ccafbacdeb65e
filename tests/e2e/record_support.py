"""Helpers for the recorder tests: the recorder as a real child process, the truth
(what the hub published, from an in-test tap) and reading a recording back."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa

from tests.helpers import wait_until

REPO = Path(__file__).resolve().parents[2]


def start_recorder(hub_pub: str, hub_rpc: str, root: Path, *extra: str,
                   log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-c", "from ibhub.cli import main; main()", "record", str(root),
             "--pub", hub_pub, "--rpc", hub_rpc, "--roll-seconds", "0.3", *extra],
            env=env, stdout=out, stderr=subprocess.STDOUT)


def rows(table: pa.Table) -> list[dict[str, Any]]:
    """Rows as dicts, timestamps as integer nanoseconds (no pandas needed)."""
    cols = {name: (table[name].cast(pa.int64()) if pa.types.is_timestamp(table[name].type)
                   else table[name]) for name in table.column_names}
    return pa.table(cols).to_pylist()


def state(root: Path) -> dict[str, Any]:
    try:
        return json.loads((root / "_recorder" / "state.json").read_text())
    except (OSError, ValueError):
        return {}


async def wait_written(root: Path, proc: subprocess.Popen[bytes], kind: str, more_than: int,
                       what: str) -> None:
    def ok() -> bool:
        assert proc.poll() is None, f"the recorder exited with {proc.returncode}"
        s = state(root)  # this process's (a killed one's may still be there)
        return s.get("pid") == proc.pid and s.get("rows_written", {}).get(kind, 0) > more_than
    await wait_until(ok, 15, what, interval=0.05)


async def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    proc.send_signal(sig)
    return await asyncio.wait_for(asyncio.to_thread(proc.wait), 15)


def dedup(values: list[float]) -> list[float]:
    """Consecutive repeats removed (a top-of-book field's sequence of changes)."""
    out: list[float] = []
    for v in values:
        if v == v and (not out or out[-1] != v):  # NaN (not known yet) is skipped
            out.append(v)
    return out


async def replay_as_ib_script(root: Path, symbol: str, expect: dict[str, int],
                              speed: float = 0.0) -> dict[str, list[float]]:
    """Replay ``root`` in a fresh simulator; an unmodified ib_insync / ib_async script
    subscribes ``symbol`` and collects every tick until each field (bid, ask, last) has
    changed ``expect[field]`` times;
    returns each field's sequence of changes (bid, ask, last)."""
    from ibhub.sim import SimConfig, SimGateway
    from ibhub.sim.replay import ReplaySpec
    from tests.ibclient import IB, Stock

    seen: dict[int, list[float]] = {1: [], 2: [], 4: []}

    def on_pending(tickers: set[Any]) -> None:
        for ticker in tickers:
            for tick in ticker.ticks:
                if tick.tickType in seen:
                    seen[tick.tickType].append(tick.price)

    config = SimConfig(seed=7, replay=ReplaySpec(str(root), speed=speed))
    async with SimGateway(config) as sim:
        ib = IB()
        try:
            await ib.connectAsync("127.0.0.1", sim.port, clientId=1, timeout=5)
            contract = Stock(symbol, "SMART", "USD")
            await ib.qualifyContractsAsync(contract)
            ib.pendingTickersEvent += on_pending
            ib.reqMktData(contract)
            types = {"bid": 1, "ask": 2, "last": 4}
            await wait_until(lambda: all(len(dedup(seen[types[f]])) >= n
                                         for f, n in expect.items()), 15,
                             f"{expect} replayed price changes of {symbol}")
        finally:
            ib.disconnect()
    return {"bid": dedup(seen[1]), "ask": dedup(seen[2]), "last": dedup(seen[4])}
