"""``ibhub run --sim --replay DIR``: the hub's embedded simulator streams a recording to
SDK scripts (real ZeroMQ sockets, real TCP to the simulator); the replay options'
errors are clear."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

pytest.importorskip("pyarrow")

from ibhub.cli import main
from ibhub.client import AsyncHub, Tick
from ibhub.config import HubSettings
from ibhub.hub.server import HubServer
from ibhub.record.writer import PartWriter
from tests.e2e.conftest import FAST
from tests.e2e.record_support import dedup
from tests.helpers import wait_until

pytestmark = pytest.mark.timeout(60)
AAPL = 265598


async def test_a_hub_on_a_replaying_simulator_streams_the_recorded_prices(
    tmp_path: Path, ipc_dir: str,
) -> None:
    root = tmp_path / "rec"
    writer = PartWriter(root, "t1", 60, 10**9, on_durable=lambda d: None)
    t0 = time.time_ns() - 3600 * 10**9
    bids = [round(190 + 0.01 * ((i * 7) % 13), 2) for i in range(60)]
    writer.add_events("ticks", "tick.AAPL", [
        Tick(i + 1, t0 + i * 10_000_000, AAPL, "AAPL", bid, bid + 0.02, bid + 0.01, 100.0 + i,
             200.0, 1.0, 1000.0 + i) for i, bid in enumerate(bids)])
    await writer.flush_all()
    writer.close()
    values: dict[str, Any] = {**FAST, "sim": True, "sim_replay": str(root),
                              "sim_replay_speed": 10.0, "pub": f"ipc://{ipc_dir}/pub",
                              "rpc": f"ipc://{ipc_dir}/rpc", "data_dir": ipc_dir}
    hub = HubServer(HubSettings(**values))
    await hub.start()
    try:
        got: list[Any] = []
        async with AsyncHub(hub.pub_endpoint, hub.rpc_endpoint, name="replayed") as client:
            await client.wait_connected(5)
            # a tap first: a subscription starts from the topic's last value, and the
            # replay starts with the first subscription, so its first ticks could
            # precede the subscription's own SUB filter
            await client.listen("tick.", lambda batch: got.extend(batch.events))
            await client.subscribe("AAPL")
            expected = dedup(bids)
            await wait_until(lambda: dedup([t.bid for t in got]) == expected, 10,
                             "the recorded bids through the hub")
            assert dedup([t.ask for t in got]) == dedup([round(b + 0.02, 2) for b in bids])
            assert max(t.volume for t in got if t.volume == t.volume) == 1059.0  # not NaN
    finally:
        await hub.stop()


def test_replay_option_errors_are_clear(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["sim", "--from", "2026-12-07T14:30"])
    assert result.exit_code == 2 and "need --replay" in result.output
    result = runner.invoke(main, ["sim", "--replay", str(tmp_path), "--speed", "fast"])
    assert result.exit_code == 2 and "--speed" in result.output
    result = runner.invoke(main, ["sim", "--replay", str(tmp_path), "--port", "0",
                                  "--control-port", "-1"])
    assert result.exit_code == 1 and "holds no recorded ticks" in result.output
    result = runner.invoke(main, ["run", "--replay", str(tmp_path)])
    assert result.exit_code == 2 and "--replay needs --sim" in result.output
