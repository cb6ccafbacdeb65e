"""With ``order_send_at_commit`` the placeOrder overlaps the journal's fsync; the
acknowledgement does not.

An order is handed to the pacer once its insert is committed (in the WAL) and, with
room in the pacer, written upstream before the fsync that makes it durable; the reply
and the "acknowledged" event wait for the fsync. A failed fsync after the send never
answers the order as refused (it works at the Gateway); one whose order still waits in
the pacer withdraws it. Either way the journal is marked failed and later orders are
refused with the reason.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from ibhub.orders.journal import JOURNAL_FILE, Journal
from ibhub.orders.journal_writer import JournalWriter
from ibhub.protocol import (
    CancelOrder,
    CancelRequested,
    GlobalCancel,
    OrderAccepted,
    OrderRejected,
    RejectReason,
)
from tests.unit.test_journal_sync import GatedJournal
from tests.unit.test_orders import ALICE, place
from tests.unit.test_orders_ordering import OPERATOR, Rig

pytestmark = pytest.mark.timeout(30)


class GatedRig(Rig):
    """The ordering rig (fake upstream logging every call, manual-clock pacer) on a
    journal whose fsync can fail and lets the test look at the world as it starts."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir)

        class Gated(GatedJournal):
            gate = threading.Event()
            calls = 0
            fail: OSError | None = None
            log: list[str] = []
            on_sync: list[Callable[[], None]] = []

        self.gated = Gated
        def factory() -> Journal:
            return Gated(data_dir / JOURNAL_FILE, synchronous="FULL", updates_synchronous="NORMAL")

        self.writer = JournalWriter(factory, checkpoint_every=0)
        self.book.store.writer = self.writer
        self.book.send_at_commit = True  # the order_send_at_commit setting


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[GatedRig]:
    r = GatedRig(tmp_path)
    await r.start()
    yield r
    r.gated.gate.set()
    await r.stop()


async def test_sent_before_the_fsync_acknowledged_after_it(rig: GatedRig) -> None:
    at_fsync: list[tuple[list[str], list[str], list[int]]] = []

    def look() -> None:  # the moment the order's fsync starts
        reader = Journal(rig.data_dir / JOURNAL_FILE, readonly=True)
        rows = [r.order_id for r in reader.orders()]
        reader.close()
        at_fsync.append((list(rig.up.calls), rig.kinds("order.lease-a"), rows))

    rig.gated.on_sync.append(look)
    reply = await rig.book.place(ALICE, place("o1"))
    assert isinstance(reply, OrderAccepted) and reply.status == "PendingSubmit"
    oid = reply.order_id
    # At the fsync: written upstream, committed (another connection reads the row),
    # not acknowledged yet.
    assert at_fsync == [([f"place {oid}"], [], [oid])]
    # The reply comes first; the "acknowledged" event is queued for the loop's next
    # callback (OrderStore.deliver_soon), so one loop turn publishes it.
    assert rig.kinds("order.lease-a") == []
    await asyncio.sleep(0)
    assert rig.kinds("order.lease-a") == ["acknowledged"]
    # A burst read at once: the first order fsyncs alone, the rest share one fsync;
    # every one is written upstream before its own fsync.
    at_fsync.clear()
    replies = await asyncio.gather(*(rig.book.place(ALICE, place(f"b{i}")) for i in range(4)))
    ids = [r.order_id for r in replies if isinstance(r, OrderAccepted)]
    assert len(ids) == 4 and rig.writer.fsyncs == 3
    first, rest = at_fsync
    assert f"place {ids[0]}" in first[0] and all(f"place {i}" in rest[0] for i in ids)
    assert rig.kinds("order.lease-a") == ["acknowledged"] * 5
    assert rig.writer.failed is None


async def test_a_cancel_after_the_reply_follows_the_placement_upstream(rig: GatedRig) -> None:
    reply = await rig.book.place(ALICE, place("w"))
    assert isinstance(reply, OrderAccepted) and reply.status == "PendingSubmit"
    oid = reply.order_id
    assert rig.up.calls == [f"place {oid}"] and rig.book.unsent == []  # written already
    done = await rig.book.cancel(ALICE, CancelOrder(id=0, lease=ALICE.lease, order_id=oid))
    assert isinstance(done, CancelRequested) and done.order_ids == [oid]
    await rig.run()
    assert rig.up.calls == [f"place {oid}", f"cancel {oid}"]  # never instead of it
    assert rig.kinds("order.lease-a")[0] == "acknowledged"


async def test_failed_fsync_by_default_refuses_the_order_and_the_next(tmp_path: Path) -> None:
    """Without ``send_at_commit`` nothing is sent before the fsync: a failed fsync
    refuses the order (nothing sent), and every later one with the reason."""
    r = GatedRig(tmp_path)
    r.book.send_at_commit = False
    await r.start()
    try:
        r.gated.fail = OSError(5, "Input/output error")
        reply = await r.book.place(ALICE, place("o1"))
        assert isinstance(reply, OrderRejected) and reply.reason == RejectReason.INTERNAL
        assert "nothing was sent" in reply.message and "Input/output error" in reply.message
        r.gated.fail = None
        again = await r.book.place(ALICE, place("o2"))
        assert isinstance(again, OrderRejected) and "fsync failed" in again.message
        await r.run()
        assert r.up.calls == [] and r.book.unsent == [] and not r.book.queued
    finally:
        r.gated.gate.set()
        await r.stop()


async def test_failed_fsync_after_the_send_is_accepted_and_stops_new_orders(
    rig: GatedRig,
) -> None:
    rig.gated.fail = OSError(5, "Input/output error")
    reply = await rig.book.place(ALICE, place("o1"))
    # It works at the Gateway: never answered as refused.
    assert isinstance(reply, OrderAccepted), reply
    assert rig.up.calls == [f"place {reply.order_id}"]
    (ack,) = rig.order_events("order.lease-a")
    assert ack.kind == "acknowledged" and "could not make it durable" in ack.message
    assert "Input/output error" in ack.message
    assert rig.writer.failed is not None and "fsync failed" in rig.writer.failed
    # Later orders: refused with the reason, nothing sent.
    rig.gated.fail = None
    again = await rig.book.place(ALICE, place("o2"))
    assert isinstance(again, OrderRejected) and again.reason == RejectReason.INTERNAL
    assert "fsync failed" in again.message and "restarted" in again.message
    assert rig.up.calls == [f"place {reply.order_id}"]
    # A retry of the first order is still answered with it (a duplicate, not refused).
    retry = await rig.book.place(ALICE, place("o1"))
    assert isinstance(retry, OrderAccepted) and retry.duplicate
    assert retry.order_id == reply.order_id
    # Taking risk off still works: the order's cancel and an operator's global cancel go up.
    oid = reply.order_id
    done = await rig.book.cancel(ALICE, CancelOrder(id=0, lease=ALICE.lease, order_id=oid))
    assert isinstance(done, CancelRequested) and done.order_ids == [oid]
    g = await rig.book.global_cancel(OPERATOR, GlobalCancel(id=0, lease=OPERATOR.lease))
    assert isinstance(g, CancelRequested)
    await rig.run()
    assert rig.up.calls == [f"place {oid}", f"cancel {oid}", "global cancel"]


async def test_failed_fsync_while_queued_in_the_pacer_withdraws_the_order(
    rig: GatedRig,
) -> None:
    await rig.busy()  # the pacer has no budget: the placement waits in its queue
    rig.gated.fail = OSError(28, "No space left on device")
    reply = await rig.book.place(ALICE, place("o1"))
    assert isinstance(reply, OrderRejected) and reply.reason == RejectReason.INTERNAL
    assert "nothing was sent" in reply.message and "No space left" in reply.message
    rig.gated.fail = None
    await rig.run()
    assert rig.up.calls == [] and rig.pacer.withdrawn == 1
    assert rig.book.unsent == [] and not rig.book.queued
    assert rig.book.store.find(ALICE.owner, "o1") is None
