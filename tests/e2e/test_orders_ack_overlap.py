"""Durability end to end (SDK over ZeroMQ, simulator over TCP, the hub's FULL journal):

* with ``order_send_at_commit`` an order reaches the Gateway while its fsync has not
  completed, and its acknowledgement waits for the fsync (the simulator runs in a
  thread of its own here, so it serves while the hub's loop is inside the fsync);
* an order the Gateway has but the journal lacks (what an OS crash between the commit
  and its fsync can leave: here its row is deleted before a restart) is adopted at
  reconciliation as its owner's, by the orderRef the hub put on it, so a retry with the
  same client_order_id is answered with it, not placed twice.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from ibhub.orders.journal import JOURNAL_FILE, Journal
from ibhub.sim import SimConfig, SimGateway
from ibhub.tws.pacing import Priority
from tests.e2e.conftest import SEED, HubFactory
from tests.e2e.test_orders_reconcile import order_hub, place_resting, sdk
from tests.helpers import wait_until

pytestmark = pytest.mark.timeout(60)


def sim_orders(sim: Any, ref_part: str) -> list[Any]:
    return [o for o in sim.broker.orders() if o.client_id == 0 and ref_part in o.order_ref]


async def test_order_reaches_the_gateway_before_its_fsync_ack_after(
    make_hub: HubFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SimGateway.in_thread(SimConfig(host="127.0.0.1", port=0, seed=SEED,
                                        tick_rate=4.0)) as sim:  # fmt: skip
        hub, svc = await order_hub(make_hub, gateway_port=sim.port, order_send_at_commit=True)
        sync_wal = Journal.sync_wal
        # per attempt: (orders at the Gateway, reply arrived) when its fsync started;
        # -1: the order still waited in the pacer (its budget in use by other requests)
        seen: dict[str, tuple[int, bool]] = {}
        replied: set[str] = set()
        coid = [""]

        def watched(self: Journal) -> None:  # the hub's fsync of the order's insert
            assert svc.book is not None
            ref = coid[0]
            if not ref or ref in seen or svc.book.store.find("alice", ref) is None:
                sync_wal(self)  # another awaited commit (not the order's)
                return
            if svc.book.unsent:
                seen[ref] = (-1, ref in replied)
                sync_wal(self)
                return
            deadline = time.monotonic() + 5.0
            while not sim.call(sim_orders, sim, ref) and time.monotonic() < deadline:
                time.sleep(0.002)  # the hub's loop is in here: only the sim thread runs
            seen[ref] = (len(sim.call(sim_orders, sim, ref)), ref in replied)
            sync_wal(self)

        async with sdk(hub, "alice") as client:
            price = round(sim.call(sim.broker.price_of, 265598) * 0.95, 2)
            pacer, up = hub.pacer, hub.upstream
            assert pacer is not None and up is not None
            monkeypatch.setattr(Journal, "sync_wal", watched)
            for attempt in range(3):
                # an idle pacer, so the send is written at the commit rather than queued
                await wait_until(lambda: up.connected and pacer.queued == 0
                                 and pacer.expected_delay(Priority.ORDER) == 0, 10.0,
                                 "a connected, idle pacer")  # fmt: skip
                coid[0] = f"overlap-{attempt}"
                o = await client.place_order(
                    "AAPL", "BUY", 5, order_type="LMT", limit_price=price, client_order_id=coid[0]
                )
                replied.add(coid[0])
                if seen[coid[0]][0] != -1:
                    break
            monkeypatch.setattr(Journal, "sync_wal", sync_wal)
            # At the Gateway before its fsync ended, and no reply yet; an attempt that
            # found the pacer busy was written later (never: sent and lost).
            assert seen[coid[0]] == (1, False), seen
            assert all(v in ((1, False), (-1, False)) for v in seen.values()), seen
            (at_gw,) = sim.call(sim_orders, sim, coid[0])
            assert o.order_id == at_gw.order_id
            await o.wait_until(lambda o: o.status == "Submitted", 10.0)
            assert next(e.kind for e in o.events) == "acknowledged"
        assert svc.writer is not None and svc.writer.failed is None
        await hub.stop()


async def test_gateway_order_missing_from_the_journal_is_adopted_by_its_owner(
    make_hub: HubFactory, hub_sim: SimGateway, ipc_dir: str
) -> None:
    hub1, _ = await order_hub(make_hub)
    async with sdk(hub1, "alice") as client:
        o = await place_resting(client, hub_sim, "lost-1")
    oid, price = o.order_id, o.limit_price
    await hub1.stop()
    # What an OS crash between the commit and its fsync can leave: no row.
    db = sqlite3.connect(Path(ipc_dir) / JOURNAL_FILE)
    with db:
        assert db.execute("DELETE FROM orders WHERE order_id = ?", (oid,)).rowcount == 1
    db.close()
    hub2, svc2 = await order_hub(make_hub)
    assert svc2.book is not None
    rec = svc2.book.store.find("alice", "lost-1")
    assert rec is not None and rec.order_id == oid and rec.status == "Submitted"
    async with sdk(hub2, "alice") as client:
        again = await client.place_order("AAPL", "BUY", 5, order_type="LMT", limit_price=price,
                                         client_order_id="lost-1")  # fmt: skip
        assert again.order_id == oid  # answered with the adopted order
        assert len(sim_orders(hub_sim, "lost-1")) == 1  # not placed twice
        assert [x.order_id for x in await client.open_orders()] == [oid]
        await client.cancel_order(again)
        await again.wait_done(10.0)
        assert again.cancelled
    j = Journal.in_dir(Path(ipc_dir))
    row = j.find("alice", "lost-1")
    j.close()
    assert row is not None and row.order_id == oid and row.status == "Cancelled"
