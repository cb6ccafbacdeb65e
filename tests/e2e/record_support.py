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
