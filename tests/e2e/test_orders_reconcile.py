"""The Gateway is the truth: errors on cancels and reconciliation, end to end.

* A cancel answered with 10147 (the cancel reached the Gateway before its order) never
  ends the order: the owner hears of the refusal, and the order's state follows what the
  Gateway then reports (here: it works).
* Reconciliation at hub start corrects a journal that says Cancelled for an order the
  Gateway works (an ``order_corrected`` alert names the order and both states, the
  journal has a note, the SDK's ``Order`` becomes working again), and a journal that
  says Cancelled for an order the Gateway filled.
* Fills made while the hub was disconnected appear in the journal after the reconnect,
  once, however many times it reconnects.
* The same through the TWS front door: an unmodified ib_insync script whose cancel gets
  10147 keeps a working trade.

The simulator is the Gateway over real TCP; scripts use the SDK over real ZeroMQ. The
10147 on a working order is the simulator's ``refuse_cancels`` fault (what a real
Gateway answers when the cancel arrives first); the race itself is reproduced with a
held pacer in :func:`test_cancel_that_overtakes_its_order_leaves_it_working`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ibhub.client import AsyncHub, Order
from ibhub.hub.server import HubServer
from ibhub.orders.journal import Journal, OrderRecord
from ibhub.orders.service import OrderService
from ibhub.protocol import ErrorEvent, OrderAccepted
from ibhub.sim import SimConfig, SimGateway
from ibhub.tws.pacing import ManualClock, Pacer, Priority
from tests.e2e.conftest import HubFactory
from tests.e2e.frontdoor_support import door_of
from tests.e2e.test_orders_upstream import ALICE, Rig, order
from tests.helpers import upstream_of, wait_until
from tests.ibclient import IB, LimitOrder, Stock

pytestmark = pytest.mark.timeout(90)

AAPL = 265598


def sdk(hub: HubServer, name: str) -> AsyncHub:
    return AsyncHub(pub=hub.pub_endpoint, rpc=hub.rpc_endpoint, name=name, request_timeout=5.0)


def resting_price(sim: SimGateway) -> float:
    """A buy limit 5% under the market: rests, inside the hub's 10% price band."""
    return round(sim.broker.price_of(AAPL) * 0.95, 2)


def sim_order(sim: SimGateway, order_id: int) -> Any:
    return next(o for o in sim.broker.orders() if o.order_id == order_id and o.client_id == 0)


def journal_row(data_dir: str | Path, owner: str, coid: str) -> Any:
    j = Journal.in_dir(Path(data_dir))
    try:
        return j.find(owner, coid), j
    except BaseException:
        j.close()
        raise


def corrections(hub: HubServer) -> list[dict[str, Any]]:
    return [a for a in hub.ops.alerts.recent if a["kind"] == "order_corrected"]


async def order_hub(make_hub: HubFactory, **kw: Any) -> tuple[HubServer, OrderService]:
    """A hub whose order service starts with it (as ``ibhub run`` does)."""
    hub = await make_hub(orders=True, **kw)
    svc = hub.orders
    assert svc is not None
    if kw.get("wait_connected", True):
        await wait_until(svc.reconciled.is_set, 10.0, "orders reconciled")
    return hub, svc


async def place_resting(
    client: AsyncHub, sim: SimGateway, coid: str, price: float | None = None
) -> Order:
    o = await client.place_order(
        "AAPL",
        "BUY",
        5,
        order_type="LMT",
        limit_price=price or resting_price(sim),
        client_order_id=coid,
    )
    await o.wait_until(lambda o: o.status == "Submitted", 10.0)
    return o


def near_price(sim: SimGateway) -> float:
    """A buy limit just under the ask: rests while the market stands still (tick rate 0),
    fills after a few steps of the walk (:func:`walk_until_filled`)."""
    sim.set_tick_rate(0.0)
    return round(sim.market.quote(AAPL).ask - 0.03, 2)


def walk_until_filled(sim: SimGateway, order_id: int) -> None:
    entry = sim_order(sim, order_id)
    for _ in range(200_000):
        if entry.status == "Filled":
            return
        sim.market.step(AAPL)
    raise AssertionError(f"order {order_id} did not fill: {entry}")


# --------------------------------------------------------------------------- errors on cancels


@contextlib.asynccontextmanager
async def held_rig(tmp_path: Path) -> AsyncIterator[tuple[Rig, ManualClock]]:
    """The order book on ib_insync and the simulator, with a pacer whose clock moves only
    when the test says: an order placed now waits in it until ``clock.advance``."""
    cfg = SimConfig(host="127.0.0.1", port=0, seed=20240102, tick_rate=0.0, max_order_qty=500)
    async with SimGateway(cfg) as sim:
        rig = Rig(sim, tmp_path)
        clock = ManualClock()
        rig.pacer = Pacer(rate=1.0, burst=1.0, clock=clock)
        rig.book._pacer = rig.pacer
        async with rig:
            rig.pacer.submit(Priority.QUERY, lambda: None)  # spends the only token
            yield rig, clock


async def overtaken(rig: Rig, clock: ManualClock, price: float) -> OrderRecord:
    """Place a LMT at ``price``; while it waits in the pacer, a cancel reaches the Gateway
    first (10147); then the placement goes out. Returns the order's record."""
    sim = rig.sim
    reply = await rig.book.place(ALICE, order("race", order_type="LMT", limit_price=price))
    assert isinstance(reply, OrderAccepted)
    oid = reply.order_id
    await wait_until(lambda: rig.pacer.queued == 1, 5.0, "the placement queued")
    assert sim.request_counts[3] == 0  # not sent yet
    rig.gw.cancel(oid)  # the cancel overtakes its order
    await wait_until(
        lambda: len(rig.kinds("order.lease-a")) >= 2, 5.0, "the owner told of the refused cancel"
    )
    rec = rig.book.store.get(oid)
    assert rec is not None and rec.status == "PendingSubmit", rec
    assert rig.kinds("order.lease-a")[1] == "cancel_rejected"
    assert "IB 10147" in rig.last("order.lease-a").message
    clock.advance(2.0)  # the placement goes out now
    return rec


async def test_cancel_that_overtakes_its_order_leaves_it_working(tmp_path: Path) -> None:
    """The race of the report: the placement waits in the pacer, a cancel reaches the
    Gateway first and gets 10147, then the placement goes out and the Gateway works the
    order. The book must say working (it said Cancelled), and the owner hears of the
    refusal as an event, not as an end."""
    async with held_rig(tmp_path) as (rig, clock):
        sim = rig.sim
        rec = await overtaken(rig, clock, resting_price(sim))
        oid = rec.order_id
        await wait_until(lambda: rec.status == "Submitted", 5.0, "working at the book")
        assert sim_order(sim, oid).status == "Submitted"
        await wait_until(lambda: rig.gw.verifications >= 1, 5.0, "the Gateway asked")
        await rig.writer.write(Journal.note, 0, "flush", {})  # every event published
        kinds = rig.kinds("order.lease-a")
        assert kinds == ["acknowledged", "cancel_rejected", "submitted"], kinds
        await rig.writer.write(Journal.note, 0, "flush", {})
        j = Journal.in_dir(tmp_path)
        row = j.find("alice", "race")
        history = [kind for _, kind, _ in j.history(oid)]
        j.close()
        assert row is not None and row.status == "Submitted"
        assert "ib_error" in history and "cancel_rejected" in history
        # the order is really cancellable now
        rig.gw.cancel(oid)
        await wait_until(lambda: rec.status == "Cancelled", 5.0, "cancelled")
        assert sim_order(sim, oid).status == "Cancelled"


async def test_cancel_that_overtakes_a_marketable_order_reports_its_fill(
    tmp_path: Path,
) -> None:
    """The same race with a marketable limit: the order fills at the Gateway, and the
    book says Filled with the execution (it said Cancelled while the position grew)."""
    async with held_rig(tmp_path) as (rig, clock):
        sim = rig.sim
        rec = await overtaken(rig, clock, round(sim.market.quote(AAPL).ask + 0.05, 2))
        await wait_until(lambda: rec.status == "Filled" and rec.commission > 0, 5.0, "filled")
        assert rec.filled == 10.0 and sim.broker.positions()[AAPL][0] == 10.0
        await rig.writer.write(Journal.note, 0, "flush", {})  # every event published
        kinds = rig.kinds("order.lease-a")
        assert kinds == ["acknowledged", "cancel_rejected", "submitted", "filled",
                         "commission"], kinds  # fmt: skip
        (fill,) = rig.book.store.fills_by_order[rec.order_id]
        assert fill.exec_id == sim.broker.executions()[0].exec_id


@pytest.mark.parametrize("code", [10147, 10148, 161])
async def test_cancel_error_on_a_working_order_is_an_error_not_an_end(
    make_hub: HubFactory, hub_sim: SimGateway, code: int
) -> None:
    hub, svc = await order_hub(make_hub)
    async with sdk(hub, "canceller") as client:
        errors: list[ErrorEvent] = []
        client.add_error_handler(errors.append)
        o = await place_resting(client, hub_sim, f"c{code}")
        hub_sim.broker.refuse_cancels[o.order_id] = code
        await client.cancel_order(o)
        await o.wait_until(lambda o: any(e.kind == "cancel_rejected" for e in o.events), 10.0)
        assert f"IB {code}" in o.message and o.status == "Submitted" and not o.done
        await wait_until(lambda: bool(errors), 5.0, "the error event")
        assert errors[0].ib_code == code
        await wait_until(lambda: svc.gateway.verifications >= 1, 5.0, "the Gateway asked")
        await wait_until(lambda: not svc.gateway._doubts, 5.0, "verified")
        assert svc.book is not None
        rec = svc.book.store.get(o.order_id)
        assert rec is not None and rec.status == "Submitted"
        assert sim_order(hub_sim, o.order_id).status == "Submitted"
        assert not o.done and not corrections(hub)  # the journal was right: nothing to correct
        await client.cancel_order(o)  # and a second cancel is not refused as order_done
        await o.wait_done(10.0)
        assert o.cancelled and sim_order(hub_sim, o.order_id).status == "Cancelled"


# --------------------------------------------------------------------------- reconciliation


async def test_restart_corrects_a_cancelled_journal_for_a_working_order(
    make_hub: HubFactory, hub_sim: SimGateway, ipc_dir: str
) -> None:
    alert_file = Path(ipc_dir) / "alerts.jsonl"
    hub1, _ = await order_hub(make_hub)
    async with sdk(hub1, "alice") as client:
        o = await place_resting(client, hub_sim, "wrong-1")
    oid = o.order_id
    await hub1.stop()
    # The journal says Cancelled (what the hub wrote when a 10147 ended the order).
    j = Journal.in_dir(Path(ipc_dir))
    j.update_order(oid, "status", {"status": "Cancelled", "message": "IB 10147: not found"})
    j.close()
    await hub_sim.close_port()  # the Gateway is down while the hub starts
    hub2, svc2 = await order_hub(make_hub, wait_connected=False, alert_file=alert_file)
    async with sdk(hub2, "alice") as client:
        again = await client.place_order(
            "AAPL", "BUY", 5, order_type="LMT", limit_price=o.limit_price, client_order_id="wrong-1"
        )
        await again.wait_until(lambda o: o.status == "Cancelled", 5.0)  # as journaled
        assert again.done
        await hub_sim.open_port()
        await again.wait_until(lambda o: o.status == "Submitted", 20.0)
        assert not again.done and not again.cancelled
        assert any(e.kind == "corrected" for e in again.events)
        assert "the journal said Cancelled, the Gateway says Submitted" in again.message
        (alert,) = corrections(hub2)
        d = alert["details"]
        assert (d["order_id"], d["owner"], d["client_order_id"]) == (oid, "alice", "wrong-1")
        assert (d["journal_status"], d["gateway_status"]) == ("Cancelled", "Submitted")
        assert str(oid) in alert["message"] and "alice" in alert["message"]
        def corrected_in_file() -> bool:  # the file may exist already (an earlier alert)
            if not alert_file.exists():
                return False
            lines = [json.loads(x) for x in alert_file.read_text().splitlines()]
            return any(a["kind"] == "order_corrected" and a["details"]["order_id"] == oid
                       for a in lines)  # fmt: skip

        await wait_until(corrected_in_file, 5.0, "the correction in the alert file")
        assert [x.status for x in await client.open_orders()] == ["Submitted"]
        row, j = journal_row(ipc_dir, "alice", "wrong-1")
        notes = [data for _, kind, data in j.history(oid) if kind == "reconcile_correction"]
        j.close()
        assert row.status == "Submitted"
        assert notes == [
            {
                "journal_status": "Cancelled",
                "gateway_status": "Submitted",
                "status": "Submitted",
                "message": "it is working there",
            }
        ]
        # working means cancellable
        await client.cancel_order(again)
        await again.wait_done(10.0)
        assert again.cancelled and sim_order(hub_sim, oid).status == "Cancelled"
    assert svc2.corrections[0].order_id == oid


async def test_restart_corrects_a_cancelled_journal_for_a_filled_order(
    make_hub: HubFactory, hub_sim: SimGateway, ipc_dir: str
) -> None:
    """Cancelled in the journal, filled at the Gateway while the hub was down: the
    journal gets the fill and says Filled; the alert names both states."""
    hub1, _ = await order_hub(make_hub)
    async with sdk(hub1, "bob") as client:
        o = await place_resting(client, hub_sim, "filled-away", near_price(hub_sim))
    oid = o.order_id
    await hub1.stop()
    j = Journal.in_dir(Path(ipc_dir))
    j.update_order(oid, "status", {"status": "Cancelled"})
    j.close()
    walk_until_filled(hub_sim, oid)
    hub2, svc2 = await order_hub(make_hub)
    assert svc2.book is not None
    rec = svc2.book.store.get(oid)
    assert rec is not None and rec.status == "Filled" and rec.filled == 5
    assert [f.exec_id for f in svc2.book.store.fills_by_order[oid]] == [
        x.exec_id for x in hub_sim.broker.executions() if x.order_id == oid
    ]
    await wait_until(lambda: bool(corrections(hub2)), 5.0, "the alert")
    (alert,) = corrections(hub2)
    assert (alert["details"]["journal_status"], alert["details"]["gateway_status"]) == (
        "Cancelled", "Filled")  # fmt: skip
    async with sdk(hub2, "bob") as client:
        (done,) = await client.completed_orders()
        assert (done.order_id, done.status, done.filled) == (oid, "Filled", 5)


async def test_fills_made_while_disconnected_are_journaled_once(
    make_hub: HubFactory, hub_sim: SimGateway, ipc_dir: str
) -> None:
    hub, svc = await order_hub(make_hub)
    async with sdk(hub, "carol") as client:
        o = await place_resting(client, hub_sim, "away-1", near_price(hub_sim))
        await hub_sim.close_port()  # the hub loses the Gateway
        await wait_until(lambda: not upstream_of(hub).connected, 5.0, "upstream lost")
        walk_until_filled(hub_sim, o.order_id)
        svc.reconciled.clear()
        await hub_sim.open_port()
        await wait_until(svc.reconciled.is_set, 20.0, "reconciled after the reconnect")
        await o.wait_until(lambda o: o.status == "Filled" and len(o.fills) == 1, 10.0)
        # once more: a second reconnect re-lists the same execution
        await hub_sim.close_port()
        await wait_until(lambda: not upstream_of(hub).connected, 5.0, "upstream lost again")
        svc.reconciled.clear()
        await hub_sim.open_port()
        await wait_until(svc.reconciled.is_set, 20.0, "reconciled again")
        assert svc.writer is not None
        await svc.writer.write(Journal.note, 0, "flush", {})
        j = Journal.in_dir(Path(ipc_dir))
        fills = j.fills(o.order_id)
        row = j.find("carol", "away-1")
        j.close()
        sim_fills = [x.exec_id for x in hub_sim.broker.executions() if x.order_id == o.order_id]
        assert [f.exec_id for f in fills] == sim_fills and len(sim_fills) == 1
        assert row is not None and row.status == "Filled" and row.filled == 5
        assert len(o.fills) == 1 and sum(e.kind == "filled" for e in o.events) == 1
        assert not corrections(hub)  # catching up is not a correction


# --------------------------------------------------------------------------- front door


async def test_front_door_script_keeps_a_working_trade_after_10147(
    make_hub: HubFactory, hub_sim: SimGateway
) -> None:
    """An unmodified ib_insync script: its cancel is answered with 10147 upstream; its
    trade must not end (ib_insync ends a trade on any order error), and it follows the
    order's true state."""
    hub, svc = await order_hub(make_hub, tws_port=0)
    door = door_of(hub)
    ib = IB()
    errors: list[tuple[int, int, str]] = []
    ib.errorEvent += lambda req_id, code, text, _contract: errors.append((req_id, code, text))
    await ib.connectAsync("127.0.0.1", door.tws_port, clientId=7, timeout=10)
    try:
        price = resting_price(hub_sim)
        trade = ib.placeOrder(Stock("AAPL", "SMART", "USD"), LimitOrder("BUY", 3, price))
        await wait_until(lambda: trade.orderStatus.status == "Submitted", 10.0, "working")
        hub_id = next(
            h
            for h, (cid, down) in door.books.owner_of.items()
            if cid == 7 and down == trade.order.orderId
        )
        hub_sim.broker.refuse_cancels[hub_id] = 10147
        ib.cancelOrder(trade.order)
        await wait_until(lambda: any("cancel refused" in text for _, _, text in errors),
                         10.0, "the refusal")  # fmt: skip
        (refusal,) = [e for e in errors if "cancel refused" in e[2]]
        assert refusal[0] == trade.order.orderId and "IB 10147" in refusal[2]
        await wait_until(lambda: trade.orderStatus.status == "Submitted", 10.0, "working")
        await wait_until(lambda: svc.gateway.verifications >= 1 and not svc.gateway._doubts,
                         10.0, "the Gateway asked")  # fmt: skip
        await asyncio.sleep(0)  # nothing scheduled changes it back
        assert trade.orderStatus.status == "Submitted" and not trade.isDone()
        assert sim_order(hub_sim, hub_id).status == "Submitted"
        ib.cancelOrder(trade.order)
        await wait_until(lambda: trade.orderStatus.status == "Cancelled", 10.0, "cancelled")
        assert sim_order(hub_sim, hub_id).status == "Cancelled"
    finally:
        ib.disconnect()


async def test_front_door_script_sees_a_restart_correction(
    make_hub: HubFactory, hub_sim: SimGateway, ipc_dir: str
) -> None:
    """An unmodified ib_insync script whose order the journal wrongly calls Cancelled: after
    the hub restarts and reconciles, the script is told the order works (openOrder and
    orderStatus Submitted) and can cancel it."""
    hub1, _ = await order_hub(make_hub, tws_port=0)
    ib = IB()
    await ib.connectAsync("127.0.0.1", door_of(hub1).tws_port, clientId=7, timeout=10)
    trade = ib.placeOrder(
        Stock("AAPL", "SMART", "USD"), LimitOrder("BUY", 3, resting_price(hub_sim))
    )
    await wait_until(lambda: trade.orderStatus.status == "Submitted", 10.0, "working")
    down_id = trade.order.orderId
    hub_id = next(h for h, (cid, down) in door_of(hub1).books.owner_of.items()
                  if cid == 7 and down == down_id)  # fmt: skip
    ib.disconnect()
    await hub1.stop()
    j = Journal.in_dir(Path(ipc_dir))
    j.update_order(hub_id, "status", {"status": "Cancelled"})
    j.close()
    await hub_sim.close_port()
    hub2, _ = await order_hub(make_hub, wait_connected=False, tws_port=0)
    door2 = door_of(hub2)
    ib2 = IB()
    try:
        # the script connects while the hub has no Gateway: its session starts (the order
        # is Cancelled in the journal, so it gets no id), its start-up sync waits
        connecting = asyncio.ensure_future(
            ib2.connectAsync("127.0.0.1", door2.tws_port, clientId=7, timeout=30)
        )
        await wait_until(lambda: 7 in door2.clients, 10.0, "the script's session")
        assert hub_id not in door2.books.owner_of
        await hub_sim.open_port()
        await connecting

        def found() -> Any:
            return next((t for t in ib2.openTrades() if t.order.orderId == down_id), None)

        await wait_until(lambda: found() is not None, 20.0, "the order told to the script")
        again = found()
        await wait_until(lambda: again.orderStatus.status == "Submitted", 10.0, "working")
        assert again.order.totalQuantity == 3 and again.order.lmtPrice == trade.order.lmtPrice
        assert [a["details"]["order_id"] for a in corrections(hub2)] == [hub_id]
        ib2.cancelOrder(again.order)
        await wait_until(lambda: again.orderStatus.status == "Cancelled", 10.0, "cancelled")
        assert sim_order(hub_sim, hub_id).status == "Cancelled"
    finally:
        ib2.disconnect()
