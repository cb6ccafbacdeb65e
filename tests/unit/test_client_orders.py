"""The SDK's order tracking without sockets: ``Order`` event application, the tracker's
sequence handling and gap recovery from the hub's book (``ibhub/client/orders.py``)."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Coroutine
from typing import Any

import pytest

from ibhub.client.errors import HubError, HubTimeout
from ibhub.client.orders import (
    Order,
    OrderRejectedError,
    OrderTracker,
    new_client_order_id,
    rejected_or,
)
from ibhub.protocol import (
    ContractSpec,
    Event,
    ExecutionInfo,
    OrderAccepted,
    OrderEvent,
    OrderInfo,
    OrderRejected,
    PlaceOrder,
)
from tests.helpers import wait_until

NAN = math.nan


def ev(seq: int, kind: str, order_id: int = 7, *, status: str = "Submitted", filled: float = 0,
       remaining: float = 10, avg: float = 0.0, qty: float = 0, price: float = 0,
       exec_id: str = "", commission: float = NAN, message: str = "") -> OrderEvent:  # fmt: skip
    return OrderEvent(seq=seq, ts=seq * 1000, kind=kind, order_id=order_id,
                      client_order_id=f"c{order_id}", owner="me", con_id=1, symbol="AAPL",
                      action="BUY", status=status, filled=filled, remaining=remaining,
                      avg_fill_price=avg, last_fill_qty=qty, last_fill_price=price,
                      exec_id=exec_id, commission=commission, message=message)  # fmt: skip


def info(order_id: int, status: str, filled: float, commission: float = 0.0) -> OrderInfo:
    return OrderInfo(order_id=order_id, client_order_id=f"c{order_id}", owner="me", con_id=1,
                     symbol="AAPL", sec_type="STK", currency="USD", action="BUY",
                     quantity=10, order_type="MKT", limit_price=None, stop_price=None,
                     tif="DAY", outside_rth=False, account="DU1", status=status,
                     filled=filled, remaining=10 - filled, avg_fill_price=100.0 if filled else 0,
                     commission=commission)  # fmt: skip


def execution(exec_id: str, order_id: int, shares: float, commission: float) -> ExecutionInfo:
    return ExecutionInfo(exec_id=exec_id, order_id=order_id, client_order_id=f"c{order_id}",
                         owner="me", con_id=1, symbol="AAPL", side="BOT", shares=shares,
                         price=100.0, cum_qty=shares, avg_price=100.0, time_ns=1, account="DU1",
                         exchange="SIM", commission=commission)  # fmt: skip


class Fake:
    """The tracker's collaborators: SUB subscriptions, snapshots and the hub's book."""

    def __init__(self) -> None:
        self.subscribed: list[str] = []
        self.last: dict[str, Event] = {}
        self.book: list[OrderInfo] = []
        self.fills: list[ExecutionInfo] = []
        self.refreshes = 0
        self.refusals: list[HubError] = []  # the next refreshes fail with these, in order
        self.tasks: list[asyncio.Task[Any]] = []
        self.tracker = OrderTracker(self.subscribed.append, self.subscribed.remove,
                                    self.snapshot, self.refresh, self.spawn)  # fmt: skip

    async def snapshot(self, topic: str) -> Event | None:
        return self.last.get(topic)

    async def refresh(self) -> tuple[list[OrderInfo], list[ExecutionInfo]]:
        self.refreshes += 1
        if self.refusals:
            raise self.refusals.pop(0)
        return self.book, self.fills

    def spawn(self, coro: Coroutine[Any, Any, Any], what: str) -> None:
        self.tasks.append(asyncio.get_running_loop().create_task(coro))

    async def settle(self) -> None:
        while self.tasks:
            await self.tasks.pop(0)


async def test_events_fill_an_order_with_fills_and_commission() -> None:
    fake = Fake()
    fake.tracker.set_lease("L1")
    await fake.settle()
    assert fake.subscribed == ["order.L1"]
    for event in (ev(1, "acknowledged", status="PendingSubmit"), ev(2, "submitted"),
                  ev(3, "partially_filled", filled=4, remaining=6, avg=100, qty=4, price=100,
                     exec_id="e1"),
                  ev(4, "commission", filled=4, remaining=6, avg=100, exec_id="e1",
                     commission=1.0),
                  ev(5, "filled", status="Filled", filled=10, remaining=0, avg=100.6, qty=6,
                     price=101, exec_id="e2", commission=1.0),
                  ev(6, "commission", status="Filled", filled=10, remaining=0, avg=100.6,
                     exec_id="e2", commission=1.5)):  # fmt: skip
        fake.tracker.on_event(event)
    order = fake.tracker.orders[7]
    assert order.status == "Filled" and order.done and not order.rejected
    assert (order.filled, order.remaining, order.avg_fill_price) == (10, 0, 100.6)
    assert [(f.exec_id, f.shares, f.price, f.commission) for f in order.fills] == [
        ("e1", 4, 100, 1.0), ("e2", 6, 101, 0.5)]
    assert order.commission == 1.5 and len(order.events) == 6
    assert fake.refreshes == 0  # no gap, nothing to recover


async def test_an_event_that_beats_the_reply_keeps_its_progress() -> None:
    fake = Fake()
    fake.tracker.set_lease("L1")
    await fake.settle()
    fake.tracker.on_event(ev(1, "acknowledged", status="PendingSubmit"))
    fake.tracker.on_event(ev(2, "submitted"))
    req = PlaceOrder(id=1, lease="L1", client_order_id="c7", contract=ContractSpec(symbol="AAPL"),
                     action="BUY", quantity=10, order_type="LMT", limit_price=99.5)  # fmt: skip
    reply = OrderAccepted(id=1, order_id=7, client_order_id="c7", status="PendingSubmit",
                          remaining=10)  # fmt: skip
    order = fake.tracker.placed(req, reply)
    assert order is fake.tracker.orders[7]
    assert order.status == "Submitted"  # not taken back by the older reply
    assert order.limit_price == 99.5 and order.order_type == "LMT" and order.quantity == 10


async def test_a_gap_is_recovered_from_the_hubs_book() -> None:
    fake = Fake()
    fake.tracker.set_lease("L1")
    await fake.settle()
    fake.tracker.on_event(ev(1, "acknowledged", order_id=7, status="PendingSubmit"))
    fake.tracker.on_event(ev(2, "acknowledged", order_id=8, status="PendingSubmit"))
    # lost: 3 (order 7 filled), 4 (its commission); the topic's last value is about order 8
    fake.last["order.L1"] = ev(5, "submitted", order_id=8)
    fake.book = [info(7, "Filled", 10, commission=2.0), info(8, "Submitted", 0)]
    fake.fills = [execution("e9", 7, 10, 2.0)]
    fake.tracker.on_event(ev(6, "cancelled", order_id=8, status="Cancelled"))
    await fake.settle()
    seven, eight = fake.tracker.orders[7], fake.tracker.orders[8]
    assert fake.refreshes == 1 and fake.tracker.sequencer.gaps == 1  # type: ignore[union-attr]
    assert seven.status == "Filled" and seven.filled == 10 and seven.commission == 2.0
    assert [(f.exec_id, f.commission) for f in seven.fills] == [("e9", 2.0)]
    assert [e.seq for e in eight.events] == [2, 5, 6]
    assert eight.status == "Cancelled"  # the (older) book did not revive it


async def test_an_empty_topic_counts_a_lost_first_event_as_a_gap() -> None:
    fake = Fake()
    fake.tracker.set_lease("L1")
    await fake.settle()
    fake.tracker.orders[7] = Order(7, "c7")  # placed; its acknowledged event was lost
    fake.last["order.L1"] = ev(2, "submitted")
    fake.book = [info(7, "Submitted", 0)]
    fake.tracker.on_event(ev(2, "submitted"))
    await fake.settle()
    assert fake.tracker.sequencer.gaps == 1 and fake.refreshes == 1  # type: ignore[union-attr]


async def test_a_refused_refresh_is_retried_until_the_hub_answers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A restarted hub refuses ``open_orders`` until its orders are reconciled; the
    tracker asks again (with back-off) instead of leaving the order as it was."""
    monkeypatch.setattr("ibhub.client.orders.REFRESH_RETRY_FIRST", 0.01)
    fake = Fake()
    fake.tracker.set_lease("L1")
    await fake.settle()
    fake.tracker.orders[7] = Order(7, "c7")
    fake.refusals = [HubError("bad_request", "request type 'open_orders' is not served"),
                     HubTimeout("no reply")]
    fake.book = [info(7, "Filled", 10, commission=2.0)]
    fake.tracker.on_event(ev(3, "filled", status="Filled", filled=10))  # 1 and 2 were lost
    await fake.settle()
    assert fake.refreshes == 3 and fake.tracker.recoveries == 1
    assert fake.tracker.orders[7].status == "Filled"


async def test_a_renewed_lease_moves_the_topic() -> None:
    fake = Fake()
    fake.tracker.set_lease("L1")
    fake.tracker.set_lease("L2")
    await fake.settle()
    assert fake.subscribed == ["order.L2"] and fake.tracker.topic == "order.L2"


async def test_a_refused_modification_restores_the_old_values() -> None:
    order = Order(7, "c7")
    order.quantity, order.limit_price = 10, 99.0
    order.set_modified({"quantity": 12.0, "limit_price": 98.0})
    assert (order.quantity, order.limit_price, order.remaining) == (12, 98.0, 12)
    order.apply_event(ev(1, "modify_rejected", message="IB 10147: nope"))
    assert (order.quantity, order.limit_price) == (10, 99.0)
    assert order.message == "IB 10147: nope" and not order.done


async def test_a_rejection_event_ends_the_order_and_wakes_waiters() -> None:
    order = Order(7, "c7")
    waiter = asyncio.create_task(order.wait_done(5.0))
    blocked: list[Order] = []
    thread = threading.Thread(target=lambda: blocked.append(order.wait_done_blocking(5.0)))
    thread.start()
    await asyncio.sleep(0)
    order.apply_event(ev(1, "rejected", status="Cancelled", message="IB 201: no margin"))
    assert await waiter is order
    await asyncio.to_thread(thread.join)
    assert blocked == [order]
    assert order.rejected and order.done and not order.cancelled
    with pytest.raises(HubTimeout, match="still"):
        await Order(8, "c8").wait_done(0.01)


async def test_callbacks_see_every_change() -> None:
    order = Order(7, "c7")
    seen: list[str] = []
    order.callbacks.append(lambda o, e: seen.append(e.kind if e else "merge"))
    order.callbacks.append(lambda o, e: 1 / 0)  # a broken callback does not stop the others
    order.apply_event(ev(1, "submitted"))
    order.apply_info(info(7, "Filled", 10))
    await wait_until(lambda: len(seen) == 2, 1.0, "callbacks")
    assert seen == ["submitted", "merge"] and order.status == "Filled"


def test_refusals_raise_typed_errors() -> None:
    reply = OrderRejected(id=1, client_order_id="x", reason="quantity_limit", message="too big")
    with pytest.raises(OrderRejectedError) as info_:
        rejected_or(reply, OrderAccepted)
    assert info_.value.reason == info_.value.code == "quantity_limit"
    assert info_.value.client_order_id == "x" and "too big" in str(info_.value)


def test_client_order_ids_are_unique_printable_and_short() -> None:
    ids = {new_client_order_id("my script.py[123]" * 5) for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) <= 64 and i.isprintable() and " " not in i for i in ids)
    assert new_client_order_id("").startswith("order-")
