"""The placeOrder overlaps the journal's fsync; the acknowledgement does not.

An order is handed to the pacer once its insert is committed (in the WAL), and the
fsync thread makes it durable meanwhile: the order reaches the upstream while its
fsync is still held here (a gated fsync), but the reply and the "acknowledged" event
wait for the fsync. A failed fsync after the send never answers the order as refused
(it works at the Gateway); one whose order still waits in the pacer withdraws it.
Either way the journal is marked failed and later orders are refused with the reason.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ibhub.orders.journal import JOURNAL_FILE, Journal
from ibhub.orders.journal_writer import JournalWriter
from ibhub.protocol import CancelOrder, CancelRequested, OrderAccepted, OrderRejected, RejectReason
from tests.helpers import wait_until
from tests.unit.test_journal_sync import GatedJournal
from tests.unit.test_orders import ALICE, place
from tests.unit.test_orders_ordering import Rig

pytestmark = pytest.mark.timeout(30)


class GatedRig(Rig):
    """The ordering rig (fake upstream logging every call, manual-clock pacer) on a
    journal whose fsync waits for ``gate`` (or raises ``fail``)."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir)

        class Gated(GatedJournal):
            gate = threading.Event()
            calls = 0
            fail = None

        self.gated = Gated
        self.writer = JournalWriter(
            lambda: Gated(data_dir / JOURNAL_FILE, synchronous="FULL"), checkpoint_every=0
        )
        self.book.store.writer = self.writer

    async def flush(self) -> None:
        self.gated.gate.set()
        await super().flush()


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[GatedRig]:
    r = GatedRig(tmp_path)
    await r.start()
    yield r
    r.gated.gate.set()
    await r.stop()


async def test_sent_before_the_fsync_acknowledged_after_it(rig: GatedRig) -> None:
    task = asyncio.ensure_future(rig.book.place(ALICE, place("o1")))
    await wait_until(lambda: rig.up.calls != [], 5.0, "the placeOrder upstream")
    (call,) = rig.up.calls
    order_id = int(call.split()[1])
    await wait_until(lambda: rig.gated.calls == 1, 5.0, "the fsync to start")
    # Sent, fsync held: no reply, no acknowledged event, and the row is committed.
    await asyncio.sleep(0.02)
    assert not task.done() and rig.kinds("order.lease-a") == []
    reader = Journal(rig.data_dir / JOURNAL_FILE, readonly=True)
    assert [r.order_id for r in reader.orders()] == [order_id]
    reader.close()
    # The Gateway answers before the ack: its event waits behind the ack (commit order).
    rig.book.updates.apply_status(rig.rec(order_id), "Submitted", None, None, None)
    # A cancel arriving now is decided after the order's journal write, and goes
    # upstream after the placeOrder.
    cancel = asyncio.ensure_future(
        rig.book.cancel(ALICE, CancelOrder(id=0, lease=ALICE.lease, order_id=order_id))
    )
    await asyncio.sleep(0.02)
    assert not cancel.done() and rig.kinds("order.lease-a") == []
    rig.gated.gate.set()
    reply = await asyncio.wait_for(task, 5.0)
    assert isinstance(reply, OrderAccepted) and reply.order_id == order_id
    assert reply.status == "PendingSubmit"  # the order as journaled, not as it is now
    assert isinstance(await asyncio.wait_for(cancel, 5.0), CancelRequested)
    await rig.run()
    assert rig.up.calls == [f"place {order_id}", f"cancel {order_id}"]
    kinds = rig.kinds("order.lease-a")
    assert kinds[:2] == ["acknowledged", "submitted"], kinds
    assert rig.order_events("order.lease-a")[0].status == "PendingSubmit"
    assert rig.writer.failed is None


async def test_failed_fsync_after_the_send_is_accepted_and_stops_new_orders(
    rig: GatedRig,
) -> None:
    rig.gated.fail = OSError(5, "Input/output error")
    rig.gated.gate.set()
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


async def test_failed_fsync_while_queued_in_the_pacer_withdraws_the_order(
    rig: GatedRig,
) -> None:
    await rig.busy()  # the pacer has no budget: the placement waits in its queue
    rig.gated.fail = OSError(28, "No space left on device")
    rig.gated.gate.set()
    reply = await rig.book.place(ALICE, place("o1"))
    assert isinstance(reply, OrderRejected) and reply.reason == RejectReason.INTERNAL
    assert "nothing was sent" in reply.message and "No space left" in reply.message
    rig.gated.fail = None
    await rig.run()
    assert rig.up.calls == [] and rig.pacer.withdrawn == 1
    assert rig.book.unsent == [] and not rig.book.queued
    assert rig.book.store.find(ALICE.owner, "o1") is None
