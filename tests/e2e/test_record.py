"""``ibhub record`` end to end: a real recorder process on a real hub (ZeroMQ ipc) on
the simulator (TCP), killed with SIGKILL mid-run and restarted; the files are checked
against what the hub published (an in-test tap on the same PUB socket)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ibhub.client import AsyncHub, Batch
from ibhub.hub.server import HubServer
from ibhub.record import format as fmt
from tests.e2e.record_support import REPO, rows, start_recorder, state, stop, wait_written
from tests.e2e.test_sdk_orders import order_hub  # noqa: F401 (fixture)
from tests.helpers import wait_until

pytestmark = pytest.mark.timeout(90)


async def test_record_kill_restart_every_tick_present_or_in_a_gap(
    order_hub: HubServer, tmp_path: Path,  # noqa: F811
) -> None:
    root = tmp_path / "rec"
    log = tmp_path / "recorder.log"
    truth: dict[str, dict[int, object]] = {}

    def keep(batch: Batch) -> None:
        seen = truth.setdefault(batch.topic, {})
        for event in batch.events:
            seen[event.seq] = event

    hub_ep = (order_hub.pub_endpoint, order_hub.rpc_endpoint)
    async with AsyncHub(*hub_ep, name="trader", request_timeout=5.0) as sdk:
        for prefix in ("tick.", "order."):
            await sdk.listen(prefix, keep)
        await sdk.subscribe("AAPL")
        await sdk.subscribe("MSFT")
        proc = start_recorder(*hub_ep, root, "--kinds", "ticks,orders,status", log=log)
        try:
            await wait_written(root, proc, "ticks", 0, "a first ticks part")
            first = await sdk.place_order("AAPL", "BUY", 5)
            await first.wait_until(lambda o: o.status == "Filled", 5.0)
            # Kill -9 with ticks in the open buffer and the order's events (likely) only
            # in the spool: the ticks are lost and become a gap, the order events not.
            await wait_until(lambda: state(root).get("buffered", {}).get("ticks", 0) > 0, 5,
                             "ticks buffered")
            assert await stop(proc, signal.SIGKILL) == -signal.SIGKILL
            killed_at = {t: max(s) for t, s in truth.items() if t.startswith("tick.")}
            await wait_until(lambda: all(max(truth[t]) > killed_at[t] + 3 for t in killed_at),
                             5, "ticks published while no recorder runs")

            proc = start_recorder(*hub_ep, root, "--kinds", "ticks,orders,status", log=log)
            await wait_written(root, proc, "ticks", 0, "ticks after the restart")
            second = await sdk.place_order("MSFT", "SELL", 3)
            await second.wait_until(lambda o: o.status == "Filled", 5.0)
            await wait_until(lambda: state(root).get("received", {}).get("orders", 0) >= 2, 5,
                             "the second order's events at the recorder")
        finally:
            if proc.poll() is None:
                assert await stop(proc) == 0
        last_truth = {t: max(s) for t, s in truth.items()}

    out = log.read_text()
    assert "stopped without flushing" in out, out

    # ------------------------------------------------------------------ ticks
    ticks = fmt.read_kind(root, "ticks")
    gaps = rows(fmt.read_kind(root, "gaps"))
    assert {g["reason"] for g in gaps} >= {"recorder_down"}, gaps
    keys = list(zip(ticks["topic"].to_pylist(), ticks["seq"].to_pylist(), strict=True))
    assert len(keys) == len(set(keys)), "duplicate ticks"
    recorded: dict[str, set[int]] = {}
    for topic, seq in keys:
        recorded.setdefault(topic, set()).add(seq)
    assert set(recorded) == {t for t in truth if t.startswith("tick.")}
    by_key = {(r["topic"], r["seq"]): r for r in rows(ticks)}
    for topic, seqs in recorded.items():
        lo, hi = min(seqs), max(seqs)
        holes = [(g["from_seq"], g["to_seq"]) for g in gaps if g["topic"] == topic]
        for seq in range(lo, hi + 1):
            if seq not in seqs:
                assert any(a <= seq <= b for a, b in holes), (topic, seq, holes)
            else:
                published = truth[topic][seq]
                row = by_key[topic, seq]
                assert (row["bid"], row["ask"], row["last"], row["volume"]) == (
                    published.bid, published.ask, published.last, published.volume)
                assert (row["ts"], row["symbol"]) == (published.ts, published.symbol)
        assert hi >= last_truth[topic] - 50  # the clean stop flushed the tail
        assert sum(b - a + 1 for a, b in holes) >= 3  # the kill's loss is a recorded gap

    # ------------------------------------------------------------------ orders, fills
    orders = rows(fmt.read_kind(root, "orders"))
    published_orders = [(t, s) for t, seqs in truth.items() if t.startswith("order.")
                        for s in seqs]
    assert sorted((o["topic"], o["seq"]) for o in orders) == sorted(published_orders)
    fills = rows(fmt.read_kind(root, "fills"))
    assert sorted((f["order_id"], f["qty"]) for f in fills) == sorted(
        [(first.order_id, 5.0), (second.order_id, 3.0)])
    assert {o["kind"] for o in orders} >= {"acknowledged", "filled"}

    # ------------------------------------------------------------------ --stats
    result = subprocess.run(
        [sys.executable, "-c", "from ibhub.cli import main; main()", "record", str(root),
         "--stats"], capture_output=True, text=True, timeout=30,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert "ticks" in result.stdout and "recorder_down" in result.stdout
    assert "stopped cleanly" in result.stdout
