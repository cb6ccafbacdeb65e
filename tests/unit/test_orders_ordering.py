"""Order book on a manual-clock pacer: nothing about an order reaches the Gateway before
the order itself, and back-pressure refuses what could not be sent in time.

The fake upstream logs every call in one list, so the tests see the exact order in
which placeOrder / cancelOrder / reqGlobalCancel were written to the Gateway.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest

from ibhub.orders.manager import MODIFY_WITHDRAWN, NOT_SENT, Caller
from ibhub.orders.port import OrderFields, UpstreamWhatIf
from ibhub.orders.risk import Role
from ibhub.orders.what_if import WhatIfService
from ibhub.protocol import (
    CancelAllOrders,
    CancelOrder,
    CancelRequested,
    ContractSpec,
    GlobalCancel,
    ModifyOrder,
    OrderAccepted,
    OrderRejected,
    RejectReason,
    WhatIfOrder,
)
from ibhub.tws.pacing import ManualClock, Pacer, Priority
from tests.unit.test_orders import ALICE, BOB, FakeUpstream, Harness, place, status
from tests.unit.test_pacing import advance, settle

OPERATOR = Caller("lease-op", "ops", Role.OPERATOR)


@dataclass
class LoggingUpstream(FakeUpstream):
    calls: list[str] = field(default_factory=list)

    def place(self, order_id: int, contract: ContractSpec, fields: OrderFields) -> None:
        super().place(order_id, contract, fields)
        self.calls.append(f"place {order_id}")

    def cancel(self, order_id: int) -> None:
        super().cancel(order_id)
        self.calls.append(f"cancel {order_id}")

    def global_cancel(self) -> None:
        super().global_cancel()
        self.calls.append("global cancel")


class Rig(Harness):
    """The book with the hub's pacing (40/s, burst 5) on a manual clock."""

    up: LoggingUpstream

    def __init__(
        self, data_dir: Path, *, max_queue: int | None = None,
        max_queue_per_owner: int | None = None,
    ) -> None:
        self.clock = ManualClock()
        pacer = Pacer(rate=40.0, burst=5, clock=self.clock, max_queue=max_queue,
                      max_queue_per_owner=max_queue_per_owner)
        super().__init__(data_dir, upstream=LoggingUpstream(), pacer=pacer)
        self.lines: list[int] = []

    async def busy(self) -> None:
        """Use up the budget with other traffic (market-data lines: below orders), so
        orders now wait in the queue."""
        await self.settle()
        while self.pacer.submit(Priority.SUBSCRIPTION, partial(self.lines.append, 1)).done():
            pass

    async def settle(self) -> None:
        """Let queued callbacks run (a placement is queued on the loop's next turn), then
        wait until the pacer can do nothing more without time passing."""
        await asyncio.sleep(0)
        await settle(self.pacer)

    async def run(self, seconds: float = 2.0) -> None:
        await advance(self.clock, self.pacer, seconds)
        await self.flush()

    def rec(self, order_id: int):
        rec = self.book.store.get(order_id)
        assert rec is not None
        return rec


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    r = Rig(tmp_path)
    await r.start()
    yield r
    await r.stop()


def cancel(order_id: int, caller: Caller = ALICE) -> CancelOrder:
    return CancelOrder(id=0, lease=caller.lease, order_id=order_id)


async def accepted(rig: Rig, caller: Caller, coid: str, **kw: object) -> OrderAccepted:
    reply = await rig.book.place(caller, place(coid, **kw))
    assert isinstance(reply, OrderAccepted), reply
    return reply


async def assert_cancelled_unsent(rig: Rig, *order_ids: int) -> None:
    await rig.flush()
    for order_id in order_ids:
        rec = rig.rec(order_id)
        assert rec.status == "Cancelled" and NOT_SENT in rec.message and not rec.sent
    j = rig.journal()
    rows = {r.order_id: r for r in j.orders()}
    j.close()
    assert all(rows[o].status == "Cancelled" and not rows[o].sent for o in order_ids)


# ----------------------------------------------------------------------------- cancel


async def test_cancel_between_the_reply_and_the_send(rig: Rig) -> None:
    """The placement is queued on the loop's next turn, after the reply; a cancel handled
    before that turn (the front door does exactly this) withdraws it all the same."""
    reply = await accepted(rig, ALICE, "w")
    assert rig.book.unsent == [reply.order_id] and rig.pacer.queued == 0  # not queued yet
    done = await rig.book.cancel(ALICE, cancel(reply.order_id))
    assert isinstance(done, CancelRequested) and done.order_ids == [reply.order_id]
    await rig.run()
    assert rig.up.calls == [] and rig.pacer.sent == 0  # nothing ever reached the Gateway
    assert rig.kinds("order.lease-a") == ["acknowledged", "cancelled"]
    ev = rig.order_events("order.lease-a")[-1]
    assert ev.status == "Cancelled" and NOT_SENT in ev.message
    await assert_cancelled_unsent(rig, reply.order_id)
    assert rig.book.unsent == [] and not rig.book.queued
    again = await rig.book.cancel(ALICE, cancel(reply.order_id))
    assert isinstance(again, OrderRejected) and again.reason == RejectReason.ORDER_DONE


async def test_cancel_of_a_queued_placement_withdraws_it(rig: Rig) -> None:
    await rig.busy()
    reply = await accepted(rig, ALICE, "q")
    await rig.settle()
    assert rig.pacer.depth()["order"] == 1  # waiting for the budget
    await rig.book.cancel(ALICE, cancel(reply.order_id))
    assert rig.pacer.depth()["order"] == 0 and rig.pacer.withdrawn == 1
    await rig.run()
    assert rig.up.calls == []
    await assert_cancelled_unsent(rig, reply.order_id)


async def test_a_cancel_of_a_sent_order_goes_after_it(rig: Rig) -> None:
    first = await accepted(rig, ALICE, "s1")
    await rig.settle()  # idle pacer: sent at once
    await rig.busy()
    second = await accepted(rig, ALICE, "s2")  # queued behind the budget
    await rig.settle()
    for order_id in (second.order_id, first.order_id):
        await rig.book.cancel(ALICE, cancel(order_id))
    await rig.run()
    # the cancel of the first jumps the queue (its order is out); the second never goes
    assert rig.up.calls == [f"place {first.order_id}", f"cancel {first.order_id}"]
    await assert_cancelled_unsent(rig, second.order_id)
    assert rig.rec(first.order_id).status == "PendingSubmit"  # until the Gateway says


async def test_bracket_cancel_of_a_queued_parent_takes_its_legs(rig: Rig) -> None:
    await rig.busy()
    reply = await accepted(rig, ALICE, "br", take_profit=195.0, stop_loss=185.0)
    await rig.book.cancel(ALICE, cancel(reply.order_id))
    await rig.run()
    assert rig.up.calls == []
    await assert_cancelled_unsent(rig, reply.order_id, *reply.child_order_ids)


async def test_bracket_cancel_of_a_queued_leg(rig: Rig) -> None:
    await rig.busy()
    reply = await accepted(rig, ALICE, "br", take_profit=195.0, stop_loss=185.0)
    tp, sl = reply.child_order_ids
    await rig.settle()
    before = rig.pacer.expected_delay(Priority.ORDER)
    await rig.book.cancel(ALICE, cancel(sl))
    assert rig.pacer.expected_delay(Priority.ORDER) == pytest.approx(before - 1 / 40)
    await rig.run()
    # the family goes without the stop-loss; the take-profit, now last, transmits it
    assert rig.up.calls == [f"place {reply.order_id}", f"place {tp}"]
    assert [f.transmit for _, _, f in rig.up.placed] == [False, True]
    await assert_cancelled_unsent(rig, sl)


async def test_cancel_all_and_global_cancel_withdraw_what_is_queued(rig: Rig) -> None:
    sent = await accepted(rig, ALICE, "a0")
    await rig.settle()
    await rig.busy()
    a1, a2 = await accepted(rig, ALICE, "a1"), await accepted(rig, ALICE, "a2")
    b1 = await accepted(rig, BOB, "b1")
    done = await rig.book.cancel_all(ALICE, CancelAllOrders(id=0, lease=ALICE.lease))
    assert isinstance(done, CancelRequested)
    assert done.order_ids == [sent.order_id, a1.order_id, a2.order_id]
    await assert_cancelled_unsent(rig, a1.order_id, a2.order_id)
    assert rig.rec(b1.order_id).status == "PendingSubmit"  # bob's: not touched
    g = await rig.book.global_cancel(OPERATOR, GlobalCancel(id=0, lease=OPERATOR.lease))
    assert isinstance(g, CancelRequested) and b1.order_id in g.order_ids
    assert rig.pacer.depth()["cancel"] == 2 and rig.pacer.depth()["order"] == 0
    await rig.run()
    # nothing the hub still held survives the global cancel
    assert rig.up.calls == [f"place {sent.order_id}", f"cancel {sent.order_id}", "global cancel"]
    await assert_cancelled_unsent(rig, b1.order_id)


async def test_cancels_are_never_refused_busy(tmp_path: Path) -> None:
    rig = Rig(tmp_path, max_queue=3)
    await rig.start()
    try:
        ids = [(await accepted(rig, ALICE, f"c{i}")).order_id for i in range(3)]
        await rig.settle()
        await rig.busy()
        for _ in range(3):
            rig.pacer.submit(Priority.QUERY, lambda: None)  # the queue is full
        refused = await rig.book.place(ALICE, place("more"))
        assert isinstance(refused, OrderRejected) and refused.reason == RejectReason.BUSY
        for order_id in ids:
            assert isinstance(await rig.book.cancel(ALICE, cancel(order_id)), CancelRequested)
        await rig.run()
        assert rig.up.cancelled == ids
    finally:
        await rig.stop()


# ----------------------------------------------------------------------------- modify


async def test_modify_of_a_queued_placement_rides_on_it(rig: Rig) -> None:
    await rig.busy()
    reply = await accepted(rig, ALICE, "m")
    oid = reply.order_id
    for change in ({"limit_price": 190.0}, {"quantity": 5.0}):
        moved = await rig.book.modify(ALICE, ModifyOrder(id=0, lease=ALICE.lease, order_id=oid,
                                                         **change))  # type: ignore[arg-type]
        assert isinstance(moved, OrderAccepted)
    assert rig.pacer.depth()["order"] == 1  # still the one placement
    await rig.run()
    assert rig.up.calls == [f"place {oid}"]  # one placeOrder, with the newest fields
    (_, _, fields) = rig.up.placed[0]
    assert (fields.limit_price, fields.quantity, fields.transmit) == (190.0, 5.0, True)
    assert rig.kinds("order.lease-a") == ["acknowledged", "modified", "modified"]
    assert oid not in rig.book.store.modifying  # nothing to restore: IB never saw the old


async def test_queued_modifications_merge_and_a_cancel_withdraws_them(rig: Rig) -> None:
    reply = await accepted(rig, ALICE, "mm")
    oid = reply.order_id
    await rig.settle()
    rig.book.updates.on_order_status(status(oid, "Submitted"))
    await rig.busy()
    for price in (190.0, 190.5):
        moved = await rig.book.modify(ALICE, ModifyOrder(id=0, lease=ALICE.lease, order_id=oid,
                                                         limit_price=price))  # fmt: skip
        assert isinstance(moved, OrderAccepted)
    assert rig.pacer.depth()["order"] == 1  # one modification queued, newest fields
    await rig.book.cancel(ALICE, cancel(oid))
    await rig.run()
    assert rig.up.calls == [f"place {oid}", f"cancel {oid}"]  # the modify never went
    rec = rig.rec(oid)
    assert rec.limit_price == 189.5 and rec.message == MODIFY_WITHDRAWN  # the Gateway's
    assert rig.kinds("order.lease-a")[-1] == "modify_rejected"
    assert rig.order_events("order.lease-a")[-1].message == MODIFY_WITHDRAWN


async def test_a_queued_modification_goes_once_with_the_newest_fields(rig: Rig) -> None:
    reply = await accepted(rig, ALICE, "m2")
    oid = reply.order_id
    await rig.settle()
    rig.book.updates.on_order_status(status(oid, "Submitted"))
    await rig.busy()
    for price in (190.0, 190.5):
        await rig.book.modify(ALICE, ModifyOrder(id=0, lease=ALICE.lease, order_id=oid,
                                                 limit_price=price))  # fmt: skip
    await rig.run()
    assert rig.up.calls == [f"place {oid}", f"place {oid}"]
    assert rig.up.placed[-1][2].limit_price == 190.5
    # IB refuses it: back to what the Gateway had before the first of the two
    rig.book.updates.on_order_error(oid, 201, "refused", False)
    await rig.flush()
    assert rig.rec(oid).limit_price == 189.5


# ----------------------------------------------------------------------------- busy


async def test_an_order_that_would_wait_too_long_is_refused_busy(rig: Rig) -> None:
    await rig.busy()
    for _ in range(76):  # other orders: about 1.9 s of budget ahead
        rig.pacer.submit(Priority.ORDER, lambda: None)
    replies = await asyncio.gather(*(rig.book.place(ALICE, place(f"b{i}")) for i in range(10)))
    ok = [r for r in replies if isinstance(r, OrderAccepted)]
    busy = [r for r in replies if isinstance(r, OrderRejected)]
    # room held while they are journaled: the last that fits waits exactly 2 s
    assert len(ok) == 4 and len(busy) == 6
    assert all(r.reason == RejectReason.BUSY for r in busy)
    assert "max_order_delay=2s" in busy[0].message and "would wait about 2.02s" in busy[0].message
    j = rig.journal()
    assert len(j.orders()) == 4  # a refused order is not journaled
    j.close()
    await rig.flush()
    assert rig.kinds("order.lease-a") == ["acknowledged"] * 4
    # a modify of a sent order needs room too
    await rig.run(2.5)
    rig.book.updates.on_order_status(status(ok[0].order_id, "Submitted"))
    while rig.pacer.expected_delay(Priority.ORDER) <= 2.0:
        rig.pacer.submit(Priority.ORDER, lambda: None)
    moved = await rig.book.modify(ALICE, ModifyOrder(id=0, lease=ALICE.lease,
                                                     order_id=ok[0].order_id, limit_price=190.0))
    assert isinstance(moved, OrderRejected) and moved.reason == RejectReason.BUSY
    assert rig.rec(ok[0].order_id).limit_price == 189.5
    await rig.run(2.5)  # the queue drains: orders are taken again
    assert isinstance(await rig.book.place(ALICE, place("later")), OrderAccepted)
    assert rig.pacer.refused == 7


async def test_one_lease_cannot_take_the_whole_queue(tmp_path: Path) -> None:
    rig = Rig(tmp_path, max_queue_per_owner=3)
    await rig.start()
    try:
        await rig.busy()
        replies = [await rig.book.place(ALICE, place(f"a{i}")) for i in range(4)]
        assert [type(r).__name__ for r in replies] == ["OrderAccepted"] * 3 + ["OrderRejected"]
        assert isinstance(replies[3], OrderRejected) and replies[3].reason == RejectReason.BUSY
        assert "pacer_queue_per_lease=3" in replies[3].message
        assert isinstance(await rig.book.place(BOB, place("b0")), OrderAccepted)
        await rig.run()
        assert len(rig.up.placed) == 4
        assert isinstance(await rig.book.place(ALICE, place("a9")), OrderAccepted)
    finally:
        await rig.stop()


# ----------------------------------------------------------------------------- id order


def placed_ids(rig: Rig) -> list[int]:
    return [int(c.split()[1]) for c in rig.up.calls if c.startswith("place ")]


async def test_placements_reach_the_gateway_in_the_order_of_their_ids(rig: Rig) -> None:
    """TWS refuses an order id below one already used (103, "Duplicate order id"). Here
    the second order's journal insert waits for the turn's group commit while a third,
    started a turn later, is committed at once with it: the third's reply comes back
    first, and its placeOrder must still go after the second's."""
    await accepted(rig, ALICE, "warm")  # the contract is known: placing does not wait
    loop = asyncio.get_running_loop()
    third: list[asyncio.Task[OrderAccepted | OrderRejected]] = []

    def start_third() -> None:
        third.append(loop.create_task(rig.book.place(ALICE, place("c"))))

    a = loop.create_task(rig.book.place(ALICE, place("a")))
    loop.call_soon(start_third)  # its first step runs after "b"'s, on the next turn
    b = loop.create_task(rig.book.place(ALICE, place("b")))
    replies = [*await asyncio.gather(a, b), await third[0]]
    ids = [r.order_id for r in replies if isinstance(r, OrderAccepted)]
    assert len(ids) == 3, replies
    assert ids == sorted(ids)
    await rig.run()
    assert placed_ids(rig)[1:] == ids


async def test_a_burst_from_many_tasks_goes_up_in_id_order(rig: Rig) -> None:
    """Sixty placements started on seeded-random loop turns: every one is sent, and
    in the order of its id."""
    rng = random.Random(20261207)
    await accepted(rig, ALICE, "warm")

    async def one(i: int) -> OrderAccepted | OrderRejected:
        for _ in range(rng.randrange(4)):
            await asyncio.sleep(0)
        return await rig.book.place(ALICE if i % 2 else BOB, place(f"r{i}"))

    replies = await asyncio.gather(*(one(i) for i in range(60)))
    ids = sorted(r.order_id for r in replies if isinstance(r, OrderAccepted))
    assert len(ids) == 60, replies
    await rig.run(5.0)
    assert placed_ids(rig)[1:] == ids


async def test_a_placement_given_up_before_its_commit_holds_up_none_behind_it(rig: Rig) -> None:
    """A placement whose caller is cancelled while its insert waits for the group commit
    (the hub stopping) is never queued; the placements behind it are sent all the same."""
    await accepted(rig, ALICE, "warm")
    loop = asyncio.get_running_loop()
    first = loop.create_task(rig.book.place(ALICE, place("x")))  # committed at once
    given_up = loop.create_task(rig.book.place(ALICE, place("y")))  # waits for the turn's end
    behind = loop.create_task(rig.book.place(ALICE, place("z")))
    while rig.book.store.find(ALICE.owner, "y") is None:  # id allocated, insert queued
        await asyncio.sleep(0)
    given_up.cancel()
    x, z = await asyncio.gather(first, behind)
    assert isinstance(x, OrderAccepted) and isinstance(z, OrderAccepted)
    with pytest.raises(asyncio.CancelledError):
        await given_up
    await rig.run()
    assert placed_ids(rig)[1:] == [x.order_id, z.order_id]


def what_if_service(rig: Rig, answers: list[asyncio.Future[UpstreamWhatIf]]) -> WhatIfService:
    """The rig's book behind a what-if service whose Gateway writes the what-if (logged
    with the placeOrders) and never answers."""

    def start(order_id: int, spec: ContractSpec, fields: OrderFields
              ) -> asyncio.Future[UpstreamWhatIf]:  # fmt: skip
        rig.up.calls.append(f"whatif {order_id}")
        answers.append(asyncio.get_running_loop().create_future())
        return answers[-1]

    return WhatIfService(risk=rig.book.risk, resolver=rig.resolver, pacer=rig.pacer,
                         ask=lambda: start, allocate_id=rig.book.allocate_id,
                         id_line=rig.book.id_line, timeout=0.05)  # fmt: skip


def ask(i: int = 1) -> WhatIfOrder:
    return WhatIfOrder(id=i, lease=ALICE.lease, contract=ContractSpec(symbol="AAPL"),
                       action="BUY", quantity=5.0, order_type="MKT")  # fmt: skip


async def test_a_what_if_nobody_answers_leaves_nothing_behind(rig: Rig) -> None:
    """Written, unanswered within the timeout: refused ``upstream_down``, its answer
    abandoned, no room held in the pacer, nothing left in the id line."""
    answers: list[asyncio.Future[UpstreamWhatIf]] = []
    reply = await what_if_service(rig, answers).check(ALICE, ask())
    assert isinstance(reply, OrderRejected) and reply.reason == RejectReason.UPSTREAM_DOWN
    assert "no what-if answer" in reply.message
    assert rig.up.calls == [f"whatif {rig.book.store.max_id}"]  # the book's newest id
    assert answers[0].cancelled()
    assert rig.pacer.snapshot()["reserved"] == 0 and rig.pacer.queued == 0
    assert len(rig.book.id_line) == 0


async def test_a_what_if_given_up_in_the_id_line_holds_up_nothing(rig: Rig) -> None:
    """A what-if waits behind an order still being journaled (its ticket not ready);
    given up meanwhile (the timeout), it is never written and leaves the line, and the
    order ahead of it and the next one go as usual."""
    answers: list[asyncio.Future[UpstreamWhatIf]] = []
    ahead = rig.book.id_line.join()  # an order taking its id, its insert not committed
    reply = await what_if_service(rig, answers).check(ALICE, ask())
    assert isinstance(reply, OrderRejected) and reply.reason == RejectReason.UPSTREAM_DOWN
    assert rig.up.calls == [] and answers == []  # never written
    assert rig.pacer.snapshot()["reserved"] == 0 and len(rig.book.id_line) == 1
    went: list[str] = []
    rig.book.id_line.ready(ahead, lambda: went.append("ahead"))
    assert went == ["ahead"] and len(rig.book.id_line) == 0
    order = await accepted(rig, ALICE, "next")
    await rig.run()
    assert placed_ids(rig) == [order.order_id]


async def test_a_what_if_cancelled_as_its_turn_comes_abandons_its_answer(rig: Rig) -> None:
    """The line hands the what-if to the pacer (written at once) and its caller is
    cancelled before it runs again: the answer it will never read is cancelled too."""
    answers: list[asyncio.Future[UpstreamWhatIf]] = []
    ahead = rig.book.id_line.join()
    task = asyncio.get_running_loop().create_task(what_if_service(rig, answers).check(ALICE,
                                                                                     ask()))
    while len(rig.book.id_line) < 2:  # the what-if took its id and its place
        await asyncio.sleep(0)
    rig.book.id_line.ready(ahead, lambda: None)  # its turn: written now
    assert len(answers) == 1 and rig.up.calls == [f"whatif {rig.book.store.max_id}"]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert answers[0].cancelled()
    assert rig.pacer.snapshot()["reserved"] == 0 and len(rig.book.id_line) == 0
