"""Order book + ib_insync adapter against the simulated Gateway (no hub, no ZeroMQ).

Exercises the real TWS order messages end to end: placeOrder -> openOrder/orderStatus/
execDetails/commissionReport -> journaled OrderEvents, idempotent retries, refusals that
never reach the Gateway, IB rejections, cancels, and reconciliation after a restart with
a fill that happened while the book was away.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ibhub.ib.orders import IbOrderGateway
from ibhub.orders.account import AccountBook
from ibhub.orders.journal import Journal
from ibhub.orders.journal_writer import JournalWriter
from ibhub.orders.manager import Caller, OrderManager, UnknownContract
from ibhub.orders.risk import RiskGate, RiskLimits
from ibhub.orders.what_if import WhatIfService
from ibhub.protocol import (
    CancelOrder,
    CancelRequested,
    ContractInfo,
    ContractSpec,
    Event,
    GetPositions,
    ModifyOrder,
    OrderAccepted,
    OrderEvent,
    OrderRejected,
    PlaceOrder,
    PositionEvent,
    PositionsReply,
    RejectReason,
    WhatIfOrder,
    WhatIfReply,
)
from ibhub.sim import SimConfig, SimGateway
from ibhub.tws.pacing import Pacer
from tests.helpers import wait_until
from tests.ibclient import IB

SEED = 20240102
ALICE = Caller("lease-a", "alice")
BOB = Caller("lease-b", "bob")


class SimResolver:
    """Qualifies through the session (reqContractDetails); last price from the sim."""

    def __init__(self, ib: IB, sim: SimGateway) -> None:
        self.ib, self.sim = ib, sim

    async def qualify(self, spec: ContractSpec) -> ContractInfo:
        from tests.ibclient import Stock

        details = await self.ib.reqContractDetailsAsync(Stock(spec.symbol, "SMART", "USD"))
        if len(details) != 1:
            raise UnknownContract(f"{spec.symbol!r} matches {len(details)} contracts")
        c = details[0].contract
        assert c is not None
        return ContractInfo(c.conId, c.symbol, c.secType, "SMART", c.primaryExchange, c.currency,
                            c.localSymbol, c.tradingClass, "", 0.0, "", "", 0.01, "")  # fmt: skip

    def last_price(self, con_id: int) -> float | None:
        return self.sim.broker.price_of(con_id)


class Rig:
    """A session (client 0) with the order manager, journal, pacer and account cache."""

    def __init__(self, sim: SimGateway, data_dir: Path) -> None:
        self.sim, self.data_dir = sim, data_dir
        self.ib = IB()
        self.events: list[tuple[str, Event]] = []
        self.writer = JournalWriter(lambda: Journal.in_dir(data_dir))
        self.pacer = Pacer(rate=40.0, burst=5)
        self.gw = IbOrderGateway(self.ib, client_id=0, connected=self.ib.isConnected)
        publish = self.events.append
        self.book = OrderManager(
            upstream=self.gw,
            writer=self.writer,
            risk=RiskGate(
                RiskLimits(max_quantity=1000), upstream_port=4002, accounts=["DU1234567"]
            ),
            pacer=self.pacer,
            resolver=SimResolver(self.ib, sim),
            publish=lambda topic, ev: publish((topic, ev)),
        )
        self.account = AccountBook(lambda topic, ev: publish((topic, ev)))

    async def __aenter__(self) -> Rig:
        j = Journal.in_dir(self.data_dir)
        self.book.store.restore(j.orders(), j.fills())
        j.close()
        await self.writer.start()
        self.pacer.start()
        self.gw.attach(self.book, self.account)
        await self.ib.connectAsync("127.0.0.1", self.sim.port, clientId=0, timeout=5)
        await self.gw.reconcile()
        await self.writer.write(Journal.note, 0, "flush", {})  # reconciled events committed
        self.book.bind_owner(ALICE.owner, ALICE.lease)  # the scripts say Hello after that
        self.book.bind_owner(BOB.owner, BOB.lease)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.gw.detach()
        self.ib.disconnect()
        await self.pacer.stop()
        await self.writer.stop()

    def kinds(self, topic: str) -> list[str]:
        return [ev.kind for t, ev in self.events if t == topic and isinstance(ev, OrderEvent)]

    def last(self, topic: str) -> OrderEvent:
        return [ev for t, ev in self.events if t == topic and isinstance(ev, OrderEvent)][-1]


def order(coid: str, **kw: object) -> PlaceOrder:
    fields: dict[str, object] = {"id": 1, "lease": "x", "client_order_id": coid,
                                 "contract": ContractSpec(symbol="AAPL"), "action": "BUY",
                                 "quantity": 10.0, "order_type": "MKT"}  # fmt: skip
    fields.update(kw)
    return PlaceOrder(**fields)  # type: ignore[arg-type]


@pytest.fixture
async def sim() -> AsyncIterator[SimGateway]:
    print(f"sim seed {SEED}")
    cfg = SimConfig(host="127.0.0.1", port=0, seed=SEED, tick_rate=0.0, max_order_qty=500)
    async with SimGateway(cfg) as gateway:
        yield gateway


async def test_market_order_fills_with_commission(sim: SimGateway, tmp_path: Path) -> None:
    async with Rig(sim, tmp_path) as rig:
        reply = await rig.book.place(ALICE, order("mkt-1"))
        assert isinstance(reply, OrderAccepted) and reply.status == "PendingSubmit"
        await wait_until(lambda: "commission" in rig.kinds("order.lease-a"), what="commission")
        assert rig.kinds("order.lease-a") == ["acknowledged", "submitted", "filled", "commission"]
        ev = rig.last("order.lease-a")
        (sim_exec,) = sim.broker.executions()
        assert ev.status == "Filled" and ev.filled == 10.0 and ev.remaining == 0.0
        assert ev.commission == pytest.approx(sim_exec.commission) and ev.commission > 0
        assert ev.exec_id == sim_exec.exec_id and ev.avg_fill_price == pytest.approx(sim_exec.price)
        (sim_order,) = sim.broker.orders()
        assert sim_order.order_id == reply.order_id and sim_order.client_id == 0
        assert sim_order.order_ref.endswith("alice" + "mkt-1")
        assert rig.kinds("order.lease-b") == []  # bob sees nothing of alice's order
        # the account side followed the fill
        await wait_until(lambda: any(isinstance(e, PositionEvent) and e.position == 10.0
                                     for _, e in rig.events), what="position event")  # fmt: skip
        pos = rig.account.get_positions(GetPositions(id=2))
        assert isinstance(pos, PositionsReply) and pos.positions[0].position == 10.0
        j = Journal.in_dir(tmp_path)
        row = j.find("alice", "mkt-1")
        assert row is not None and row.status == "Filled" and row.commission == ev.commission
        j.close()


async def test_retry_and_refusals_reach_the_gateway_once(sim: SimGateway, tmp_path: Path) -> None:
    async with Rig(sim, tmp_path) as rig:
        first, _second = await asyncio.gather(
            rig.book.place(BOB, order("same", order_type="LMT", limit_price=1.0, action="BUY")),
            rig.book.place(BOB, order("same", order_type="LMT", limit_price=1.0, action="BUY")),
        )
        # limit 1.0 is far outside the band: both refused, nothing sent
        assert isinstance(first, OrderRejected) and first.reason == RejectReason.PRICE_BAND
        placed_before = sim.request_counts[3]
        bad = [order("q0", quantity=0.0), order("lmt", order_type="LMT"),
               order("big", quantity=5000.0), order("act", action="HOLD")]  # fmt: skip
        for req in bad:
            refused = await rig.book.place(BOB, req)
            assert isinstance(refused, OrderRejected), req
        assert sim.request_counts[3] == placed_before == 0
        replies = await asyncio.gather(*(rig.book.place(BOB, order("dup")) for _ in range(3)))
        assert len({r.order_id for r in replies}) == 1
        await wait_until(lambda: "filled" in rig.kinds("order.lease-b"), what="fill")
        again = await rig.book.place(BOB, order("dup"))
        assert isinstance(again, OrderAccepted) and again.duplicate and again.status == "Filled"
        assert sim.request_counts[3] == 1 and len(sim.broker.orders()) == 1


async def test_limit_rests_then_cancel(sim: SimGateway, tmp_path: Path) -> None:
    async with Rig(sim, tmp_path) as rig:
        price = round(sim.broker.price_of(265598) * 0.95, 2)
        reply = await rig.book.place(ALICE, order("rest", order_type="LMT", limit_price=price))
        assert isinstance(reply, OrderAccepted)
        await wait_until(lambda: "submitted" in rig.kinds("order.lease-a"), what="submitted")
        cancel = await rig.book.cancel(ALICE, CancelOrder(id=3, lease="x", client_order_id="rest"))
        assert isinstance(cancel, CancelRequested) and cancel.order_ids == [reply.order_id]
        await wait_until(lambda: "cancelled" in rig.kinds("order.lease-a"), what="cancelled")
        assert rig.last("order.lease-a").status == "Cancelled"
        assert [o.status for o in sim.broker.orders()] == ["Cancelled"]


async def test_ib_rejection_is_a_rejected_event(sim: SimGateway, tmp_path: Path) -> None:
    async with Rig(sim, tmp_path) as rig:
        # the hub allows 1000, the simulated Gateway only 500: IB answers error 201
        reply = await rig.book.place(ALICE, order("too-big", quantity=800.0))
        assert isinstance(reply, OrderAccepted)
        await wait_until(lambda: "rejected" in rig.kinds("order.lease-a"), what="rejected")
        ev = rig.last("order.lease-a")
        assert ev.status == "Cancelled" and "IB 201" in ev.message


async def test_restart_reconciles_a_fill_made_while_away(sim: SimGateway, tmp_path: Path) -> None:
    con_id = 265598
    async with Rig(sim, tmp_path) as rig:
        ask = sim.market.quote(con_id).ask
        reply = await rig.book.place(ALICE, order("away", order_type="LMT", limit_price=ask - 0.02))
        assert isinstance(reply, OrderAccepted)
        await wait_until(lambda: "submitted" in rig.kinds("order.lease-a"), what="resting")
    # the book is gone; the market walks until the resting order fills
    for _ in range(20_000):
        if sim.broker.orders()[0].status == "Filled":
            break
        sim.market.step(con_id)
    assert sim.broker.orders()[0].status == "Filled"
    async with Rig(sim, tmp_path) as rig2:
        # reconciled at connect, held until alice's script is back, then delivered
        rec = rig2.book.store.find("alice", "away")
        assert rec is not None and rec.status == "Filled" and rec.filled == 10.0
        await wait_until(lambda: "commission" in rig2.kinds("order.lease-a"), what="held fill")
        assert rig2.kinds("order.lease-a") == ["filled", "commission"]
        assert rig2.last("order.lease-a").client_order_id == "away"
        assert len(sim.broker.orders()) == 1  # nothing re-sent


async def test_modify_and_a_modify_ib_refuses(sim: SimGateway, tmp_path: Path) -> None:
    async with Rig(sim, tmp_path) as rig:
        price = round(sim.broker.price_of(265598) * 0.95, 2)
        r = await rig.book.place(ALICE, order("mod", order_type="LMT", limit_price=price))
        assert isinstance(r, OrderAccepted)
        await wait_until(lambda: "submitted" in rig.kinds("order.lease-a"), what="resting")
        ok = await rig.book.modify(ALICE, ModifyOrder(id=5, lease="x", order_id=r.order_id,
                                                      limit_price=price + 0.5))  # fmt: skip
        assert isinstance(ok, OrderAccepted)
        await wait_until(lambda: sim.broker.orders()[0].lmt_price == price + 0.5, what="moved")
        # the hub allows 800, the Gateway only 500: IB refuses, the order works on unchanged
        big = await rig.book.modify(ALICE, ModifyOrder(id=6, lease="x", order_id=r.order_id,
                                                       quantity=800.0))  # fmt: skip
        assert isinstance(big, OrderAccepted)
        await wait_until(lambda: "modify_rejected" in rig.kinds("order.lease-a"), what="refused")
        ev = rig.last("order.lease-a")
        assert ev.status == "Submitted" and "IB 201" in ev.message
        rec = rig.book.store.get(r.order_id)
        assert rec is not None and rec.quantity == 10.0 and rec.limit_price == price + 0.5
        assert (
            sim.broker.orders()[0].total_qty == 10.0
            and sim.broker.orders()[0].status == "Submitted"
        )
        j = Journal.in_dir(tmp_path)
        row = j.find("alice", "mod")
        j.close()
        assert row is not None and row.quantity == 10.0


async def test_a_burst_with_what_ifs_goes_up_in_id_order(sim: SimGateway, tmp_path: Path) -> None:
    """The Gateway refuses a new order id below one already used (103). Forty orders from
    two scripts and four what-ifs, started on seeded-random loop turns: every order is
    at the Gateway, no order and no what-if is refused, and the Gateway got the
    placeOrders in the order of their ids."""
    rng = random.Random(SEED)
    async with Rig(sim, tmp_path) as rig:
        what_if = WhatIfService(
            risk=rig.book.risk, resolver=SimResolver(rig.ib, sim), pacer=rig.pacer,
            ask=lambda: rig.gw.start_what_if, allocate_id=rig.book.allocate_id,
            id_line=rig.book.id_line,
        )  # fmt: skip
        await rig.book.place(ALICE, order("warm", quantity=1.0))  # the contract is known

        async def one(i: int) -> object:
            for _ in range(rng.randrange(4)):
                await asyncio.sleep(0)
            if i % 11 == 5:
                ask = WhatIfOrder(id=i, lease="x", contract=ContractSpec(symbol="AAPL"),
                                  action="BUY", quantity=5.0, order_type="MKT")  # fmt: skip
                return await what_if.check(ALICE, ask)
            return await rig.book.place(ALICE if i % 2 else BOB, order(f"b{i}", quantity=1.0))

        replies = await asyncio.gather(*(one(i) for i in range(44)))
        accepted = [r for r in replies if isinstance(r, OrderAccepted)]
        answers = [r for r in replies if isinstance(r, WhatIfReply)]
        assert len(accepted) == 40 and len(answers) == 4, replies
        ids = {r.order_id for r in accepted}
        await wait_until(lambda: ids <= {o.order_id for o in sim.broker.orders()}, 10.0,
                         "every order at the Gateway")  # fmt: skip
        ended = [ev for _, ev in rig.events
                 if isinstance(ev, OrderEvent) and ev.kind in ("rejected", "cancelled")]
        assert ended == []
        at_gateway = [o.order_id for o in sim.broker.orders()]  # in the order it took them
        assert at_gateway == sorted(at_gateway)
