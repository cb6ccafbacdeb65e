"""Order attributes: which placeOrder fields the front door refuses, the SDK-side checks
of the honoured ones, and the fingerprint of orders journaled before they existed."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import msgspec
import pytest

from ibhub.frontdoor.order_fields import refusal_for, unhonoured
from ibhub.orders.manager import fingerprint
from ibhub.orders.port import make_oca_group, make_order_ref, parse_order_ref
from ibhub.orders.risk import check_order_attributes
from ibhub.protocol import ContractSpec, OrderAccepted, PlaceOrder, RejectReason
from ibhub.sim.orders import parse_place_order
from tests.helpers import wait_until
from tests.ibclient import (
    LimitOrder,
    MarketOrder,
    Order,
    PriceCondition,
    Stock,
    StopLimitOrder,
    StopOrder,
    TagValue,
)
from tests.sim.broker_support import place_order_fields
from tests.unit.test_orders import ALICE, Harness, open_order
from tests.unit.test_orders import place as book_place

AAPL = Stock("AAPL", "SMART", "USD")


def _walk(order: Order, contract: Stock = AAPL) -> list[str]:
    return unhonoured(parse_place_order(place_order_fields(contract, order, 9)))


@pytest.mark.parametrize("order", [
    MarketOrder("BUY", 1), LimitOrder("SELL", 3, 10.5, tif="GTC", outsideRth=True),
    StopOrder("SELL", 2, 9.0), StopLimitOrder("BUY", 2, 11.0, 10.5),
    LimitOrder("BUY", 1, 10.0, orderRef="r", ocaGroup="g", ocaType=1, account="DU1",
               algoStrategy="Adaptive", algoParams=[TagValue("adaptivePriority", "Normal")],
               algoId="x", transmit=False, parentId=4),
    Order(action="SELL", totalQuantity=1, orderType="TRAIL", trailingPercent=1.0,
          trailStopPrice=9.5),
    Order(action="BUY", totalQuantity=1, orderType="TRAIL LIMIT", auxPrice=0.5,
          lmtPriceOffset=0.1),
    Order(action="BUY", totalQuantity=1, orderType="LIT", lmtPrice=10.0, auxPrice=9.9),
    Order(action="BUY", totalQuantity=1, orderType="REL", auxPrice=0.01, lmtPrice=10.0),
    LimitOrder("BUY", 1, 10.0, tif="GTD", goodTillDate="20300101 10:00:00 UTC"),
], ids=["mkt", "lmt", "stp", "stp-lmt", "honoured-attributes", "trail", "trail-limit", "lit",
        "rel", "gtd"])  # fmt: skip
def test_what_ib_insync_sends_for_supported_orders_passes(order: Order) -> None:
    assert _walk(order) == []


@pytest.mark.parametrize(("changes", "named"), [
    ({"hedgeType": "D", "hedgeParam": "0.5"}, "hedgeType"),
    ({"deltaNeutralOrderType": "LMT"}, "deltaNeutralOrderType"),
    ({"scaleInitLevelSize": 100, "scaleSubsLevelSize": 50}, "scaleInitLevelSize"),
    ({"scalePriceIncrement": 0.05}, "scalePriceIncrement"),
    ({"adjustedOrderType": "STP", "triggerPrice": 9.0}, "adjustedOrderType"),
    ({"goodAfterTime": "20300101 10:00:00 UTC"}, "goodAfterTime"),
    ({"hidden": True}, "hidden"), ({"displaySize": 100}, "displaySize"),
    ({"allOrNone": True}, "allOrNone"), ({"minQty": 10}, "minQty"),
    ({"faGroup": "grp"}, "faGroup"), ({"cashQty": 1000.0}, "cashQty"),
    ({"notHeld": True}, "notHeld"),
    ({"origin": 1}, "origin"), ({"openClose": "C"}, "openClose"),
    ({"eTradeOnly": True}, "eTradeOnly"), ({"sweepToFill": True}, "sweepToFill"),
    ({"orderMiscOptions": [TagValue("a", "b")]}, "orderMiscOptions"),
    ({"activeStartTime": "20300101 10:00:00 UTC"}, "activeStartTime"),
    ({"mifid2DecisionMaker": "me"}, "mifid2DecisionMaker"),
    ({"usePriceMgmtAlgo": True}, "usePriceMgmtAlgo"), ({"duration": 30}, "duration"),
    ({"lmtPrice": 10.0}, "lmtPrice"),  # on a MKT order: not used, so not dropped silently
    ({"auxPrice": 1.0}, "auxPrice"),
])  # fmt: skip
def test_each_unhonoured_attribute_is_named(changes: dict[str, object], named: str) -> None:
    order = MarketOrder("BUY", 1)
    for name, value in changes.items():
        setattr(order, name, value)
    bad = _walk(order)
    assert named in bad, bad


def test_conditions_and_contract_by_security_id_are_named() -> None:
    order = MarketOrder("BUY", 1)
    order.conditions = [PriceCondition(conId=1, exch="SMART", price=10.0)]
    assert _walk(order) == ["conditions"]
    by_isin = Stock("", "SMART", "USD")
    by_isin.secIdType, by_isin.secId = "ISIN", "US0378331005"
    assert _walk(MarketOrder("BUY", 1), by_isin) == ["secIdType", "secId"]


def test_the_refusal_uses_ibs_code_where_ib_has_one() -> None:
    assert refusal_for(["firmQuoteOnly"]) == (
        10269, "The 'firmQuoteOnly' order attribute is not supported.")
    code, text = refusal_for(["hedgeType", "conditions"])
    assert code == 320
    assert "'hedgeType' (hedge orders), 'conditions' (order conditions)" in text


def _place(**kw: object) -> PlaceOrder:
    return PlaceOrder(id=1, lease="L", client_order_id="c1", contract=ContractSpec("AAPL"),
                      action="BUY", quantity=1.0, **kw)  # type: ignore[arg-type]


def test_fingerprint_of_an_order_without_the_new_fields_is_unchanged() -> None:
    before = msgspec.json.encode({
        "type": "place_order", "lease": "", "client_order_id": "c1",
        "contract": {"symbol": "AAPL"}, "action": "BUY", "quantity": 1.0,
        "order_type": "MKT", "limit_price": None, "stop_price": None, "tif": "DAY",
        "outside_rth": False, "account": "", "take_profit": None, "stop_loss": None,
        "parent_order_id": 0, "id": 0,
    }).decode()  # what the hub journaled before these fields existed
    assert fingerprint(_place()) == before
    assert fingerprint(_place(order_ref="x")) != before
    assert fingerprint(_place(oca_group="g")) != fingerprint(_place(oca_group="h"))


@pytest.mark.parametrize(("kw", "word"), [
    ({"oca_type": 4, "oca_group": "g"}, "oca_type"), ({"oca_type": 2}, "oca_group"),
    ({"algo_id": "x"}, "algo_strategy"), ({"order_ref": "r" * 65}, "order_ref"),
    ({"oca_group": "a\tb"}, "oca_group"),
    ({"algo_strategy": "A", "algo_params": {"": "v"}}, "tag"),
    ({"algo_strategy": "A", "algo_params": {f"k{i}": "v" for i in range(33)}}, "algo_params"),
])  # fmt: skip
def test_malformed_honoured_attributes_are_refused(kw: dict[str, object], word: str) -> None:
    refusal = check_order_attributes(_place(**kw))
    assert refusal is not None and refusal.reason == RejectReason.BAD_ORDER_ATTRIBUTE
    assert word in refusal.message


def test_well_formed_attributes_pass() -> None:
    assert check_order_attributes(_place(oca_group="g", oca_type=3, order_ref="mine",
                                         algo_strategy="Adaptive",
                                         algo_params={"adaptivePriority": "Normal"},
                                         algo_id="a")) is None


# --------------------------------------------------------------------------- the order manager


async def test_the_book_sends_journals_and_restores_the_attributes(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    await h.start()
    try:
        reply = await h.book.place(ALICE, book_place(
            "a1", oca_group="exit", oca_type=2, order_ref="mine", algo_strategy="Adaptive",
            algo_params={"adaptivePriority": "Normal"}, algo_id="x1", take_profit=200.0))
        assert isinstance(reply, OrderAccepted)
        await wait_until(lambda: len(h.up.placed) == 2, what="parent and child sent")
        (_, _, parent), (_, _, child) = h.up.placed
        assert parent.oca_group == make_oca_group("alice", "exit") and parent.oca_type == 2
        assert (parent.algo_strategy, parent.algo_params, parent.algo_id) == (
            "Adaptive", (("adaptivePriority", "Normal"),), "x1")
        assert parse_order_ref(parent.order_ref) == ("alice", "a1")  # the hub's own ref
        assert (child.oca_group, child.algo_strategy) == ("", "")  # the parent's, not the leg's
        [info, leg] = h.book.store.orders("alice", working=True)
        assert (info.order_ref, info.oca_group, info.oca_type, info.algo_params) == (
            "mine", "exit", 2, {"adaptivePriority": "Normal"})
        assert leg.order_ref == "mine" and leg.oca_group == ""
        # the Gateway reduces the order (its OCA group filled elsewhere): the book follows
        h.book.updates.on_open_order(open_order(reply.order_id, "Submitted", qty=4.0))
        assert h.book.store.get(reply.order_id).quantity == 4.0  # type: ignore[union-attr]
        await h.flush()
    finally:
        await h.stop()
    h2 = Harness(tmp_path)  # a restart restores them from the journal
    await h2.start()
    try:
        [info, _] = h2.book.store.orders("alice", working=True)
        assert (info.order_ref, info.oca_group, info.algo_id, info.quantity) == (
            "mine", "exit", "x1", 4.0)
    finally:
        await h2.stop()


async def test_an_order_adopted_after_losing_the_journal_keeps_its_group(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path)
    await h.start()
    try:
        found = replace(open_order(50, "Submitted", ref=make_order_ref("carol", "c9")),
                        oca_group=make_oca_group("carol", "exit"), oca_type=1,
                        algo_strategy="Twap", algo_params=(("startTime", "09:30"),))
        h.book.updates.reconcile(open_orders=[found], executions=[], commissions=[])
        await h.flush()
        rec = h.book.store.find("carol", "c9")
        assert rec is not None and (rec.oca_group, rec.oca_type) == ("exit", 1)
        assert h.book.store.info(rec).algo_params == {"startTime": "09:30"}
    finally:
        await h.stop()


def test_a_zero_price_is_no_price() -> None:
    order = MarketOrder("BUY", 1)
    order.lmtPrice = 0.0
    order.auxPrice = 0.0
    assert _walk(order) == []
    order.lmtPrice = 10.0
    assert refusal_for(_walk(order))[1].count("a limit price on an order type without one") == 1
