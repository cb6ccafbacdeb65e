"""Order book: ownership, idempotency, journal-first, upstream updates, restart, reconcile."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ibhub.orders.journal import JOURNAL_FILE, Journal
from ibhub.orders.journal_writer import JournalWriter
from ibhub.orders.manager import Caller, OrderManager, UnknownContract
from ibhub.orders.port import (
    OrderFields,
    UpstreamCommission,
    UpstreamExecution,
    UpstreamOrder,
    UpstreamStatus,
    make_order_ref,
    parse_order_ref,
)
from ibhub.orders.risk import RiskGate, RiskLimits, Role
from ibhub.protocol import (
    CancelAllOrders,
    CancelOrder,
    CancelRequested,
    ContractInfo,
    ContractSpec,
    Event,
    ExecutionsReply,
    GetExecutions,
    GetOpenOrders,
    GlobalCancel,
    ModifyOrder,
    OrderAccepted,
    OrderEvent,
    OrderRejected,
    OrdersReply,
    PlaceOrder,
    RejectReason,
    Reply,
)
from ibhub.tws.pacing import Pacer
from tests.helpers import wait_until

HUB_CLIENT = 0
AAPL = ContractInfo(265598, "AAPL", "STK", "SMART", "NASDAQ", "USD", "AAPL", "NMS", "", 0.0, "",
                    "", 0.01, "APPLE INC")  # fmt: skip
ALICE = Caller(lease="lease-a", owner="alice", role=Role.TRADER)
BOB = Caller(lease="lease-b", owner="bob", role=Role.TRADER)


@dataclass
class FakeUpstream:
    """Records what the book asks of the Gateway; ``connected`` and ``fail`` steer it."""

    client_id: int = HUB_CLIENT
    connected: bool = True
    next_id: int = 1
    fail: Exception | None = None
    placed: list[tuple[int, ContractSpec, OrderFields]] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)
    global_cancels: int = 0
    ids_above: list[int] = field(default_factory=list)

    def is_connected(self) -> bool:
        return self.connected

    def next_order_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def ensure_ids_above(self, order_id: int) -> None:
        self.ids_above.append(order_id)
        self.next_id = max(self.next_id, order_id + 1)

    def place(self, order_id: int, contract: ContractSpec, fields: OrderFields) -> None:
        if self.fail:
            raise self.fail
        self.placed.append((order_id, contract, fields))

    def cancel(self, order_id: int) -> None:
        self.cancelled.append(order_id)

    def global_cancel(self) -> None:
        self.global_cancels += 1


class FakeResolver:
    def __init__(self) -> None:
        self.last: dict[int, float] = {AAPL.con_id: 190.0}
        self.lookups = 0

    async def qualify(self, spec: ContractSpec) -> ContractInfo:
        self.lookups += 1
        await asyncio.sleep(0)  # a real lookup yields to the loop
        if spec.symbol == "AAPL" or spec.con_id == AAPL.con_id:
            return AAPL
        raise UnknownContract(f"no contract matches {spec.symbol!r}")

    def last_price(self, con_id: int) -> float | None:
        return self.last.get(con_id)


class Harness:
    def __init__(
        self,
        data_dir: Path,
        upstream: FakeUpstream | None = None,
        pacer: Pacer | None = None,
        max_order_delay: float | None = 2.0,
    ) -> None:
        self.data_dir = data_dir
        self.up = upstream or FakeUpstream()
        self.resolver = FakeResolver()
        self.events: list[tuple[str, Event]] = []
        self.writer = JournalWriter(lambda: Journal.in_dir(data_dir))
        self.pacer = pacer or Pacer(rate=1000.0, burst=100)
        self.book = OrderManager(
            max_order_delay=max_order_delay,
            upstream=self.up,
            writer=self.writer,
            risk=RiskGate(RiskLimits(), upstream_port=4002, accounts=["DU1234567"]),
            pacer=self.pacer,
            resolver=self.resolver,
            publish=lambda topic, ev: self.events.append((topic, ev)),
        )

    async def start(self) -> None:
        j = Journal.in_dir(self.data_dir)
        self.book.store.restore(j.orders(), j.fills())
        j.close()
        await self.writer.start()
        self.pacer.start()
        self.book.bind_owner(ALICE.owner, ALICE.lease)
        self.book.bind_owner(BOB.owner, BOB.lease)

    async def stop(self) -> None:
        await self.pacer.stop()
        await self.writer.stop()

    def journal(self) -> Journal:
        return Journal(self.data_dir / JOURNAL_FILE, readonly=True)

    def order_events(self, topic: str) -> list[OrderEvent]:
        return [ev for t, ev in self.events if t == topic and isinstance(ev, OrderEvent)]

    def kinds(self, topic: str) -> list[str]:
        return [ev.kind for ev in self.order_events(topic)]

    async def flush(self) -> None:
        """Every journal write so far committed and its event published."""
        await self.writer.write(Journal.note, 0, "flush", {})


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Harness]:
    h = Harness(tmp_path)
    await h.start()
    yield h
    await h.stop()


_REQ = 0


async def handle(book: OrderManager, caller: Caller, req: Any) -> Reply:
    """What the hub's request registry does with an order request (the manager's table)."""
    return await book.handlers()[type(req)](caller, req)


def place(coid: str = "o1", **kw: object) -> PlaceOrder:
    global _REQ
    _REQ += 1
    fields: dict[str, object] = {
        "id": _REQ,
        "lease": "ignored-by-book",
        "client_order_id": coid,
        "contract": ContractSpec(symbol="AAPL"),
        "action": "BUY",
        "quantity": 10.0,
        "order_type": "LMT",
        "limit_price": 189.5,
    }
    fields.update(kw)
    return PlaceOrder(**fields)  # type: ignore[arg-type]


def status(order_id: int, st: str, filled: float = 0.0, remaining: float = 10.0,
           avg: float = 0.0, perm: int = 0) -> UpstreamStatus:  # fmt: skip
    return UpstreamStatus(order_id, HUB_CLIENT, perm or 9000 + order_id, st, filled, remaining, avg)


def execution(order_id: int, exec_id: str, shares: float, cum: float, price: float = 189.4,
              client_id: int = HUB_CLIENT, perm: int = 0) -> UpstreamExecution:  # fmt: skip
    return UpstreamExecution(exec_id, order_id, client_id, perm or 9000 + order_id, AAPL.con_id,
                             "AAPL", "BOT", shares, price, cum, price, 1_700_000_000 * 10**9,
                             "DU1234567", "ISLAND")  # fmt: skip


def open_order(order_id: int, st: str, client_id: int = HUB_CLIENT, perm: int = 0,
               ref: str = "", qty: float = 10.0) -> UpstreamOrder:  # fmt: skip
    return UpstreamOrder(order_id, client_id, perm or 9000 + order_id, AAPL.con_id, "AAPL", "STK",
                         "SMART", "USD", "BUY", qty, "LMT", 189.5, None, "DAY", False,
                         "DU1234567", ref, 0, st)  # fmt: skip


# --------------------------------------------------------------------------- placing


async def test_place_journals_before_reply_and_sends(hub: Harness) -> None:
    reply = await hub.book.place(ALICE, place())
    assert isinstance(reply, OrderAccepted)
    assert reply.status == "PendingSubmit" and not reply.duplicate and reply.order_id == 1
    j = hub.journal()  # committed before the reply came back
    row = j.find("alice", "o1")
    j.close()
    assert row is not None and row.order_id == 1 and row.lease == "lease-a"
    await wait_until(lambda: hub.up.placed, what="placeOrder upstream")
    order_id, spec, fields = hub.up.placed[0]
    assert order_id == 1 and spec.con_id == AAPL.con_id and spec.exchange == "SMART"
    assert (fields.action, fields.quantity, fields.order_type, fields.limit_price) == (
        "BUY", 10.0, "LMT", 189.5)  # fmt: skip
    assert fields.transmit and parse_order_ref(fields.order_ref) == ("alice", "o1")
    assert hub.kinds("order.lease-a") == ["acknowledged"]
    await wait_until(lambda: hub.book.store.get(1).sent, what="sent flag")  # type: ignore[union-attr]


async def test_retry_returns_the_same_order(hub: Harness) -> None:
    first = await hub.book.place(ALICE, place("retry-me"))
    again = await hub.book.place(ALICE, place("retry-me"))
    assert isinstance(first, OrderAccepted) and isinstance(again, OrderAccepted)
    assert again.duplicate and again.order_id == first.order_id
    # concurrent retries (a client that fires the same request several times)
    replies = await asyncio.gather(*(hub.book.place(BOB, place("burst")) for _ in range(5)))
    ids = {r.order_id for r in replies if isinstance(r, OrderAccepted)}
    assert (
        len(ids) == 1 and sum(not r.duplicate for r in replies if isinstance(r, OrderAccepted)) == 1
    )
    await wait_until(lambda: len(hub.up.placed) == 2, what="two placeOrders")
    await hub.flush()
    assert len(hub.up.placed) == 2


async def test_same_client_id_other_fields_is_refused(hub: Harness) -> None:
    first = await hub.book.place(ALICE, place("x"))
    reply = await hub.book.place(ALICE, place("x", quantity=20.0))
    assert isinstance(reply, OrderRejected)
    assert reply.reason == RejectReason.CLIENT_ORDER_ID_REUSED
    assert reply.order_id == first.order_id
    other = await hub.book.place(BOB, place("x"))  # another script's namespace
    assert isinstance(other, OrderAccepted) and not other.duplicate


async def test_refused_orders_never_go_upstream(hub: Harness) -> None:
    cases = [
        (place("q", quantity=0.0), RejectReason.BAD_QUANTITY),
        (place("p", limit_price=500.0), RejectReason.PRICE_BAND),
        (place("c", contract=ContractSpec(symbol="NOPE")), RejectReason.UNKNOWN_CONTRACT),
        (place("t", order_type="LMT", limit_price=None), RejectReason.MISSING_LIMIT_PRICE),
        (place("par", parent_order_id=999), RejectReason.UNKNOWN_ORDER),
    ]
    for req, reason in cases:
        reply = await hub.book.place(ALICE, req)
        assert isinstance(reply, OrderRejected), req
        assert reply.reason == reason and reply.client_order_id == req.client_order_id
    ro = await hub.book.place(Caller("lease-r", "reader", Role.READONLY), place("r"))
    assert isinstance(ro, OrderRejected) and ro.reason == RejectReason.READ_ONLY_LEASE
    hub.up.connected = False
    down = await hub.book.place(ALICE, place("d"))
    assert isinstance(down, OrderRejected) and down.reason == RejectReason.UPSTREAM_DOWN
    assert hub.resolver.lookups == 2  # malformed orders are refused before any lookup
    await hub.flush()
    assert hub.up.placed == [] and hub.events == []
    j = hub.journal()
    assert j.orders() == []
    assert [k for _, k, _ in j.history(0)].count("refused") == 7
    j.close()


async def test_bracket(hub: Harness) -> None:
    reply = await hub.book.place(ALICE, place("br", take_profit=195.0, stop_loss=185.0))
    assert isinstance(reply, OrderAccepted) and reply.child_order_ids == [2, 3]
    await wait_until(lambda: len(hub.up.placed) == 3, what="three placeOrders")
    (p_id, _, p), (tp_id, _, tp), (sl_id, _, sl) = hub.up.placed
    assert (p_id, tp_id, sl_id) == (1, 2, 3)
    assert [f.transmit for f in (p, tp, sl)] == [False, False, True]
    assert (tp.action, tp.order_type, tp.limit_price, tp.parent_id) == ("SELL", "LMT", 195.0, 1)
    assert (sl.action, sl.order_type, sl.stop_price, sl.parent_id) == ("SELL", "STP", 185.0, 1)
    assert hub.book.store.find("alice", "br.sl").order_id == 3  # type: ignore[union-attr]
    again = await hub.book.place(ALICE, place("br", take_profit=195.0, stop_loss=185.0))
    assert isinstance(again, OrderAccepted) and again.duplicate and again.child_order_ids == [2, 3]


async def test_send_failure_becomes_a_rejected_event(hub: Harness) -> None:
    hub.up.fail = ConnectionError("Not connected")
    reply = await hub.book.place(ALICE, place("f"))
    assert isinstance(reply, OrderAccepted)
    await wait_until(lambda: "rejected" in hub.kinds("order.lease-a"), what="rejected event")
    ev = hub.order_events("order.lease-a")[-1]
    assert ev.status == "Inactive" and "Not connected" in ev.message


# --------------------------------------------------------------------------- updates


async def test_lifecycle_events_go_to_the_owner_only(hub: Harness) -> None:
    a = await hub.book.place(ALICE, place("a1"))
    b = await hub.book.place(BOB, place("b1", action="SELL", order_type="MKT", limit_price=None))
    assert isinstance(a, OrderAccepted) and isinstance(b, OrderAccepted)
    up = hub.book.updates
    # the simulator's sequence for a marketable order (tws-protocol.md 5.3)
    up.on_open_order(open_order(b.order_id, "Submitted"))
    up.on_order_status(status(b.order_id, "Submitted"))
    up.on_execution(execution(b.order_id, "e-b1", 10.0, 10.0, price=190.02))
    up.on_order_status(status(b.order_id, "Filled", 10.0, 0.0, 190.02))
    up.on_open_order(open_order(b.order_id, "Filled"))
    up.on_commission(UpstreamCommission("e-b1", 1.0, "USD", None))
    up.on_open_order(open_order(a.order_id, "Submitted"))
    await hub.flush()
    assert hub.kinds("order.lease-b") == ["acknowledged", "submitted", "filled", "commission"]
    assert hub.kinds("order.lease-a") == ["acknowledged", "submitted"]
    assert all(ev.owner == "bob" for ev in hub.order_events("order.lease-b"))
    fill_ev, comm_ev = hub.order_events("order.lease-b")[2:]
    assert (fill_ev.status, fill_ev.filled, fill_ev.remaining) == ("Filled", 10.0, 0.0)
    assert (fill_ev.last_fill_qty, fill_ev.last_fill_price, fill_ev.exec_id) == (
        10.0,
        190.02,
        "e-b1",
    )
    assert math.isnan(fill_ev.commission) and comm_ev.commission == 1.0
    j = hub.journal()
    row = j.find("bob", "b1")
    assert row is not None and (row.status, row.filled, row.commission) == ("Filled", 10.0, 1.0)
    assert j.fills(row.order_id)[0].commission == 1.0
    j.close()
    execs = await handle(hub.book, BOB, GetExecutions(id=5, lease=BOB.lease))
    assert isinstance(execs, ExecutionsReply) and [e.exec_id for e in execs.executions] == ["e-b1"]
    mine = await handle(hub.book, ALICE, GetExecutions(id=6, lease=ALICE.lease))
    assert isinstance(mine, ExecutionsReply) and mine.executions == []


async def test_partial_fills_and_repeats(hub: Harness) -> None:
    a = await hub.book.place(ALICE, place("pf"))
    oid = a.order_id
    up = hub.book.updates
    up.on_order_status(status(oid, "Submitted"))
    assert up.on_execution(execution(oid, "e1", 4.0, 4.0, price=189.0))
    assert not up.on_execution(execution(oid, "e1", 4.0, 4.0, price=189.0))  # repeat
    up.on_order_status(status(oid, "Submitted", 4.0, 6.0, 189.0))
    up.on_commission(UpstreamCommission("e1", 0.5, "USD", None))
    up.on_commission(UpstreamCommission("e1", 0.5, "USD", None))  # repeat
    assert up.on_execution(execution(oid, "e2", 6.0, 10.0, price=189.5))
    up.on_commission(UpstreamCommission("e2", 0.7, "USD", 0.0))
    up.on_order_status(status(oid, "Submitted", 10.0, 0.0, 189.3))  # late echo
    await hub.flush()
    assert hub.kinds("order.lease-a") == [
        "acknowledged", "submitted", "partially_filled", "commission", "filled", "commission",
    ]  # fmt: skip
    last = hub.order_events("order.lease-a")[-1]
    assert last.status == "Filled" and last.commission == pytest.approx(1.2)
    assert hub.book.store.get(oid).status == "Filled"  # type: ignore[union-attr]


async def test_ib_rejection_and_warnings(hub: Harness) -> None:
    a = await hub.book.place(ALICE, place("rj"))
    oid = a.order_id
    assert not hub.book.updates.on_order_error(oid, 399, "Order message: warning", warning=True)
    assert hub.book.updates.on_order_error(oid, 201, "Order rejected - reason: margin", False)
    await hub.flush()
    ev = hub.order_events("order.lease-a")[-1]
    assert ev.kind == "rejected" and ev.status == "Cancelled" and "IB 201" in ev.message
    assert hub.book.store.owner_lease(oid) == "lease-a" and hub.book.store.owner_lease(999) is None
    # an error about a working order (a refused cancel) leaves it working
    b = await hub.book.place(ALICE, place("rj2"))
    hub.book.updates.on_order_status(status(b.order_id, "Submitted"))
    assert not hub.book.updates.on_order_error(b.order_id, 161, "not cancellable", False)


async def test_external_orders(hub: Harness) -> None:
    up = hub.book.updates
    up.on_open_order(open_order(0, "Submitted", client_id=7, perm=555, qty=3.0))
    up.on_execution(execution(12, "ext-e", 3.0, 3.0, client_id=7, perm=555))
    await hub.flush()
    assert hub.kinds("order.external") == ["submitted", "filled"]
    rec = hub.book.store.get(-555)
    assert rec is not None and rec.owner == "external" and rec.status == "Filled"
    assert hub.events and all(t == "order.external" for t, _ in hub.events)
    mine = await handle(hub.book, ALICE, GetOpenOrders(id=1, lease=ALICE.lease, scope="all"))
    assert isinstance(mine, OrderRejected) and mine.reason == RejectReason.FORBIDDEN
    op = Caller("lease-op", "ops", Role.OPERATOR)
    every = await handle(hub.book, op, GetOpenOrders(id=2, lease="lease-op", scope="all"))
    assert isinstance(every, OrdersReply)


# --------------------------------------------------------------------------- cancel / modify


async def test_cancel_modify_and_ownership(hub: Harness) -> None:
    a = await hub.book.place(ALICE, place("m1"))
    oid = a.order_id
    hub.book.updates.on_order_status(status(oid, "Submitted"))
    stolen = await handle(hub.book, BOB, CancelOrder(id=1, lease=BOB.lease, order_id=oid))
    assert isinstance(stolen, OrderRejected) and stolen.reason == RejectReason.NOT_OWNER
    moved = await handle(
        hub.book, ALICE,
        ModifyOrder(id=2, lease=ALICE.lease, client_order_id="m1", limit_price=191.0),
    )
    assert isinstance(moved, OrderAccepted) and moved.order_id == oid
    await wait_until(lambda: len(hub.up.placed) == 2, what="modify sent")
    assert hub.up.placed[1][0] == oid and hub.up.placed[1][2].limit_price == 191.0
    assert hub.up.placed[1][2].transmit
    far = await handle(hub.book, ALICE, ModifyOrder(id=3, lease=ALICE.lease, order_id=oid,
                                                    limit_price=400.0))  # fmt: skip
    assert isinstance(far, OrderRejected) and far.reason == RejectReason.PRICE_BAND
    done = await handle(hub.book, ALICE, CancelOrder(id=4, lease=ALICE.lease, client_order_id="m1"))
    assert isinstance(done, CancelRequested) and done.order_ids == [oid]
    await wait_until(lambda: hub.up.cancelled == [oid], what="cancel sent")
    hub.book.updates.on_order_status(status(oid, "Cancelled"))
    await hub.flush()
    assert hub.kinds("order.lease-a")[-2:] == ["modified", "cancelled"]
    again = await handle(hub.book, ALICE, CancelOrder(id=5, lease=ALICE.lease, order_id=oid))
    assert isinstance(again, OrderRejected) and again.reason == RejectReason.ORDER_DONE
    unknown = await handle(hub.book, ALICE, CancelOrder(id=6, lease=ALICE.lease, order_id=4242))
    assert isinstance(unknown, OrderRejected) and unknown.reason == RejectReason.UNKNOWN_ORDER


async def test_cancel_all_and_global_cancel(hub: Harness) -> None:
    ids = []
    for i in range(3):
        r = await hub.book.place(ALICE, place(f"ca{i}"))
        ids.append(r.order_id)
    b = await hub.book.place(BOB, place("cb"))
    reply = await handle(hub.book, ALICE, CancelAllOrders(id=1, lease=ALICE.lease))
    assert isinstance(reply, CancelRequested) and reply.order_ids == ids
    await wait_until(lambda: sorted(hub.up.cancelled) == ids, what="three cancels")
    assert b.order_id not in hub.up.cancelled
    refused = await handle(hub.book, ALICE, GlobalCancel(id=2, lease=ALICE.lease))
    assert isinstance(refused, OrderRejected) and refused.reason == RejectReason.FORBIDDEN
    op = Caller("lease-op", "ops", Role.OPERATOR)
    g = await handle(hub.book, op, GlobalCancel(id=3, lease="lease-op"))
    assert isinstance(g, CancelRequested) and b.order_id in g.order_ids
    await wait_until(lambda: hub.up.global_cancels == 1, what="global cancel")
    listed = await handle(hub.book, ALICE, GetOpenOrders(id=4, lease=ALICE.lease))
    assert isinstance(listed, OrdersReply) and [o.order_id for o in listed.orders] == ids


# --------------------------------------------------------------------------- restart


async def test_restart_restores_owners_and_idempotency(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    await h.start()
    first = await h.book.place(ALICE, place("keep"))
    await wait_until(lambda: h.up.placed, what="sent")
    await h.flush()
    await h.stop()

    up2 = FakeUpstream(next_id=1)  # a fresh session may start its ids low
    h2 = Harness(tmp_path, up2)
    await h2.start()
    try:
        again = await h2.book.place(ALICE, place("keep"))
        assert isinstance(again, OrderAccepted) and again.duplicate
        assert again.order_id == first.order_id
        new = await h2.book.place(ALICE, place("new"))
        assert isinstance(new, OrderAccepted) and new.order_id > first.order_id
        await wait_until(lambda: len(up2.placed) == 1, what="only the new order is sent")
        rec = h2.book.store.find("alice", "keep")
        assert rec is not None and rec.owner == "alice" and rec.sent
        # a new lease for the same script name gets its events
        h2.book.bind_owner("alice", "lease-a2")
        h2.book.updates.on_order_status(status(first.order_id, "Submitted"))
        await h2.flush()
        assert h2.kinds("order.lease-a2") == ["submitted"]
    finally:
        await h2.stop()


async def test_reconcile_after_restart(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    await h.start()
    filled_while_down = await h.book.place(ALICE, place("fd"))
    cancelled_while_down = await h.book.place(ALICE, place("cd"))
    working = await h.book.place(BOB, place("wk"))
    await wait_until(lambda: len(h.up.placed) == 3, what="sent")
    await h.flush()
    # crash before this one was sent: journaled, never reached the Gateway
    h.up.connected = True
    await h.pacer.stop()
    never_sent = await h.book.place(BOB, place("ns"))
    await h.writer.stop()

    up2 = FakeUpstream()
    h2 = Harness(tmp_path, up2)
    await h2.start()
    try:
        fd, cd, wk = (r.order_id for r in (filled_while_down, cancelled_while_down, working))
        stranger_ref = make_order_ref("carol", "lost-journal")
        report = h2.book.updates.reconcile(
            open_orders=[open_order(wk, "Submitted"),
                         open_order(50, "Submitted", ref=stranger_ref)],
            executions=[execution(fd, "e-fd", 10.0, 10.0)],
            commissions=[UpstreamCommission("e-fd", 1.0, "USD", None)],
            # reqCompletedOrders carries neither order id nor client id: found by orderRef
            completed=[open_order(0, "Filled", perm=7001, ref=make_order_ref("alice", "fd")),
                       open_order(0, "Cancelled", perm=7002, ref=make_order_ref("alice", "cd"))],
        )  # fmt: skip
        await h2.flush()
        assert report.fills_published == 1 and report.adopted == 1
        assert report.lost == [never_sent.order_id]
        assert up2.placed == []  # nothing is ever re-sent
        kinds_a = h2.kinds("order.lease-a")
        assert "filled" in kinds_a and "commission" in kinds_a and "cancelled" in kinds_a
        lost = [ev for ev in h2.order_events("order.lease-b") if ev.kind == "rejected"]
        assert len(lost) == 1 and "not sent" in lost[0].message
        assert h2.book.store.get(cd).status == "Cancelled"  # type: ignore[union-attr]
        assert h2.book.store.get(fd).perm_id == 7001  # type: ignore[union-attr]
        carol = h2.book.store.find("carol", "lost-journal")
        assert carol is not None and carol.order_id == 50
        # reconciling again publishes nothing new
        before = len(h2.events)
        h2.book.updates.reconcile([open_order(wk, "Submitted"), open_order(50, "Submitted")],
                                  [execution(fd, "e-fd", 10.0, 10.0)], completed=[])  # fmt: skip
        await h2.flush()
        assert len(h2.events) == before
    finally:
        await h2.stop()


def test_order_ref_roundtrip() -> None:
    for owner, coid in [("alice", "o1"), ("a:b", "c:d"), ("x", "12"), ("名前", "z")]:
        assert parse_order_ref(make_order_ref(owner, coid)) == (owner, coid)
    assert parse_order_ref("manual") is None
    assert parse_order_ref("ibhub1:9:ab") is None
    assert parse_order_ref("ibhub1:x:ab") is None


async def test_events_are_held_while_the_owner_has_no_lease(hub: Harness) -> None:
    a = await hub.book.place(ALICE, place("held"))
    hub.book.lease_gone(ALICE.lease)  # the script's lease expired
    hub.book.updates.on_order_status(status(a.order_id, "Submitted"))
    hub.book.updates.on_execution(execution(a.order_id, "e-held", 10.0, 10.0))
    await hub.flush()
    assert hub.kinds("order.lease-a") == ["acknowledged"]
    hub.book.bind_owner("alice", "lease-a3")  # back with a new lease
    assert hub.kinds("order.lease-a3") == ["submitted", "filled"]
    hub.book.updates.on_commission(UpstreamCommission("e-held", 1.0, "USD", None))
    await hub.flush()
    assert hub.kinds("order.lease-a3") == ["submitted", "filled", "commission"]


async def test_session_drop_while_resolving_is_upstream_down(hub: Harness) -> None:
    def gone() -> int:
        raise ConnectionError("Not connected")

    hub.up.next_order_id = gone  # type: ignore[method-assign]
    reply = await hub.book.place(ALICE, place("drop"))
    assert isinstance(reply, OrderRejected) and reply.reason == RejectReason.UPSTREAM_DOWN
    assert hub.book.store.find("alice", "drop") is None
    await hub.flush()
    assert hub.up.placed == [] and hub.events == []


async def test_overlapping_reconciliations_unwatch_their_own_set(hub: Harness) -> None:
    """Two reconciliations watching at once (a reconnect during one's completed-orders
    wait) start with equal, empty sets; each unwatch must remove its own set, so the
    other keeps collecting orders that enter flight and its unwatch does not raise."""
    first = hub.book.watch_in_flight()
    second = hub.book.watch_in_flight()
    assert first == second and first is not second
    hub.book.unwatch(second)  # the second finishes first
    reply = await hub.book.place(ALICE, place("while-first-watches"))
    assert isinstance(reply, OrderAccepted)
    assert first == {reply.order_id} and second == set()
    hub.book.unwatch(first)


# ------------------------------------------------------------------ the Gateway is the truth


async def _working(hub: Harness, coid: str) -> int:
    reply = await hub.book.place(ALICE, place(coid))
    assert isinstance(reply, OrderAccepted)
    await wait_until(lambda: reply.order_id not in hub.book.queued, what="sent")
    hub.book.updates.on_order_status(status(reply.order_id, "Submitted"))
    return reply.order_id


@pytest.mark.parametrize("code", [10147, 10148, 161, 136])
async def test_an_error_on_a_cancel_never_ends_an_order(hub: Harness, code: int) -> None:
    doubts: list[int] = []
    hub.book.updates.on_doubt = lambda oid, why: doubts.append(oid)
    reply = await hub.book.place(ALICE, place("c"))
    assert isinstance(reply, OrderAccepted)
    oid = reply.order_id
    # before the Gateway acknowledged the order (the race) and after
    for expected in ("PendingSubmit", "Submitted"):
        ended = hub.book.updates.on_order_error(oid, code, "cancel refused", False)
        await hub.flush()
        rec = hub.book.store.get(oid)
        assert not ended and rec is not None and rec.status == expected
        ev = hub.order_events("order.lease-a")[-1]
        assert ev.kind == "cancel_rejected" and ev.status == expected
        assert ev.message == f"IB {code}: cancel refused"
        hub.book.updates.on_order_status(status(oid, "Submitted"))
    assert doubts == [oid, oid]


async def test_reconcile_corrects_an_ended_journal_the_gateway_contradicts(hub: Harness) -> None:
    found: list[object] = []
    hub.book.updates.on_correction = found.append
    works, filled, quiet = [await _working(hub, c) for c in ("works", "filled", "quiet")]
    store = hub.book.store
    for oid in (works, filled, quiet):  # the journal says they ended (wrongly, for two)
        hub.book.updates.apply_status(store.by_id[oid], "Cancelled", None, None, None)
    report = hub.book.updates.reconcile(
        open_orders=[open_order(works, "Submitted")],
        executions=[execution(filled, "e-1", 10.0, 10.0)],
        completed=[open_order(filled, "Filled"), open_order(quiet, "Inactive")],
    )
    await hub.flush()
    assert store.by_id[works].status == "Submitted"
    assert store.by_id[filled].status == "Filled" and store.by_id[filled].filled == 10.0
    assert store.by_id[quiet].status == "Cancelled"  # Inactive: the same end, no correction
    assert [(c.order_id, c.journal_status, c.gateway_status) for c in report.corrected] == [
        (works, "Cancelled", "Submitted"), (filled, "Cancelled", "Filled")]  # fmt: skip
    assert found == report.corrected
    corrected = [ev for ev in hub.order_events("order.lease-a") if ev.kind == "corrected"]
    assert [(ev.order_id, ev.status) for ev in corrected] == [(works, "Submitted"),
                                                              (filled, "Filled")]  # fmt: skip
    assert "the journal said Cancelled, the Gateway says Submitted" in corrected[0].message
    j = hub.journal()
    notes = [d for _, kind, d in j.history(works) if kind == "reconcile_correction"]
    row = j.find("alice", "works")
    j.close()
    assert notes[0]["journal_status"] == "Cancelled"
    assert row is not None and row.status == "Submitted"
    # a second reconcile with the same picture corrects nothing
    again = hub.book.updates.reconcile([open_order(works, "Submitted")],
                                       [execution(filled, "e-1", 10.0, 10.0)],
                                       completed=[open_order(filled, "Filled")])  # fmt: skip
    assert again.corrected == [] and len(found) == 2


async def test_reconcile_resolves_a_working_order_the_gateway_does_not_know(
    hub: Harness,
) -> None:
    found: list[object] = []
    hub.book.updates.on_correction = found.append
    gone = await _working(hub, "gone")
    parent = await hub.book.place(ALICE, place("br", take_profit=195.0))
    assert isinstance(parent, OrderAccepted)
    await wait_until(lambda: not hub.book.queued, what="sent")
    (child,) = parent.child_order_ids
    # the bracket's child is still on its way: neither it nor its parent is judged
    report = hub.book.updates.reconcile([], [], completed=[], in_flight={child})
    await hub.flush()
    assert report.lost == [gone]
    rec = hub.book.store.get(gone)
    assert rec is not None and rec.status == "Inactive"
    (c,) = found
    assert (c.order_id, c.owner, c.journal_status, c.gateway_status) == (  # type: ignore[attr-defined]
        gone, "alice", "Submitted", "unknown")  # fmt: skip
    ev = hub.order_events("order.lease-a")[-1]
    assert ev.kind == "rejected" and "the Gateway knows nothing of it" in ev.message
    assert hub.book.store.get(parent.order_id).status == "PendingSubmit"  # type: ignore[union-attr]


async def test_a_working_status_for_an_ended_order_is_doubted(hub: Harness) -> None:
    doubts: list[int] = []
    hub.book.updates.on_doubt = lambda oid, why: doubts.append(oid)
    oid = await _working(hub, "d")
    rec = hub.book.store.by_id[oid]
    hub.book.updates.apply_status(rec, "Cancelled", None, None, None)
    hub.book.updates.on_order_status(status(oid, "Submitted"))  # not applied, but doubted
    assert rec.status == "Cancelled" and doubts == [oid]
    filled_id = await _working(hub, "f")
    hub.book.updates.on_execution(execution(filled_id, "e-f", 10.0, 10.0))
    hub.book.updates.on_order_status(status(filled_id, "Submitted", 10.0, 0.0))
    assert doubts == [oid]  # Filled is final: an echo after it is no doubt
