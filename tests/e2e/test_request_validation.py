"""Hostile or careless request fields, end to end: nothing shifted reaches the Gateway.

NUL is the TWS field separator. Text with a NUL (or any control character) and text
longer than its kind allows is refused with a typed error naming the field, over the
SDK, over a raw DEALER socket and through the TWS front door; the simulator (the
Gateway's stand-in, over real TCP) is the witness that nothing was sent. Deeply nested
and oversized requests get a typed reply and the hub keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec
import pytest

from ibhub.client import AsyncHub, HubError, OrderRejectedError
from ibhub.hub.server import HubServer, attach_orders
from ibhub.protocol import (
    ContractSpec,
    Error,
    ErrorCode,
    GetContractDetails,
    GetStatus,
    RejectReason,
    StatusReply,
)
from ibhub.sim import SimGateway
from ibhub.tws.codec import UnsafeField
from tests.e2e.conftest import HubFactory
from tests.e2e.frontdoor_support import ClientFactory, door_hub, ib_clients  # noqa: F401
from tests.e2e.test_orders_hub import PLACE_ORDER, wire_orders
from tests.helpers import wait_until
from tests.ibclient import CLIENT_ONLY_WARNINGS, Contract, Order, Stock

pytestmark = pytest.mark.timeout(60)

CONTRACT_DETAILS = 9  # TWS message id of reqContractDetails (sim.request_counts)


@pytest.fixture
async def order_hub(make_hub: HubFactory) -> HubServer:
    hub = await make_hub()
    svc = await wire_orders(hub)
    await wait_until(svc.reconciled.is_set, 5.0, "orders reconciled")
    return hub


def sdk(hub: HubServer, name: str) -> AsyncHub:
    return AsyncHub(pub=hub.pub_endpoint, rpc=hub.rpc_endpoint, name=name, request_timeout=5.0)


# ------------------------------------------------------------------ SDK / ZeroMQ


async def test_nul_in_account_is_refused_naming_it_and_never_reaches_the_gateway(
    order_hub: HubServer, hub_sim: SimGateway
) -> None:
    async with sdk(order_hub, "nul") as hub:
        with pytest.raises(HubError) as info:
            await hub.place_order("AAPL", "BUY", 1, account="DU1234567\0\0")
        assert info.value.code == ErrorCode.BAD_REQUEST
        assert "`$.account` contains a control character" in info.value.message
        # the hub still takes a good order from the same script
        order = await hub.place_order("AAPL", "BUY", 1)
        await order.wait_until(lambda o: o.status == "Filled", 5.0)
    assert hub_sim.request_counts[PLACE_ORDER] == 1  # the good one only
    assert [o.order_id for o in hub_sim.broker.orders()] == [order.order_id]
    assert all(o.account != "DU1234567\0\0" for o in hub_sim.broker.orders())


async def test_nul_in_symbol_is_refused_naming_contract_symbol(
    hub: HubServer, hub_sim: SimGateway
) -> None:
    before = hub_sim.request_counts[CONTRACT_DETAILS]
    async with sdk(hub, "nul-symbol") as client:
        with pytest.raises(HubError) as info:
            await client.contract_details(ContractSpec(symbol="AAPL\0SMART\0USD"))
        assert info.value.code == ErrorCode.BAD_REQUEST
        assert "`$.contract.symbol`" in info.value.message
        with pytest.raises(HubError) as info:
            await client.contract_details(ContractSpec(symbol="A" * 10_000))
        assert "`$.contract.symbol` is longer than 64 characters" in info.value.message
        assert hub_sim.request_counts[CONTRACT_DETAILS] == before  # nothing went upstream
        found = await client.contract_details("AAPL")
        assert [c.symbol for c in found] == ["AAPL"]


@pytest.mark.parametrize(
    ("field", "value", "path"),
    [
        ("exchange", "SMART\rX", "$.contract.exchange"),
        ("currency", "US\x7fD", "$.contract.currency"),
        ("local_symbol", "AAPL\x9b2J", "$.contract.local_symbol"),  # C1: CSI
        ("trading_class", "NMS\n", "$.contract.trading_class"),  # "$" would let this pass
        ("expiry", "2026\t12", "$.contract.expiry"),
        ("multiplier", "1\u20280", "$.contract.multiplier"),
    ],
)
async def test_control_characters_in_any_contract_field_are_refused(
    hub: HubServer, clients: Any, field: str, value: str, path: str
) -> None:
    c = clients(hub.rpc_endpoint)
    fields: dict[str, Any] = {field: value}
    spec = ContractSpec(symbol="AAPL", **fields)
    reply = await c.request(GetContractDetails(id=c.next_id(), contract=spec))
    assert isinstance(reply, Error) and reply.code == ErrorCode.BAD_REQUEST, reply
    assert f"`{path}` contains a control character" in reply.message


def _nested(depth: int) -> bytes:
    return b"\x81\xa1a" * depth + b"\x01"  # {"a": {"a": ... 1}}


@pytest.mark.parametrize("depth", [1_000, 100_000])
async def test_deeply_nested_request_gets_too_deep_and_hub_keeps_serving(
    hub: HubServer, clients: Any, depth: int, caplog: pytest.LogCaptureFixture
) -> None:
    c = clients(hub.rpc_endpoint)
    head = msgspec.msgpack.encode({"type": "status", "id": 41, "extra": None})[:-1]
    await c.send_raw(b"", head + _nested(depth))  # the nesting sits in an unknown field
    reply = await c.recv_reply()
    assert isinstance(reply, Error), reply
    assert reply.code == ErrorCode.TOO_DEEP
    assert reply.id == 41  # read from the top level without the decoder
    assert "nested too deeply" in reply.message
    assert not [r for r in caplog.records if "Recursion" in r.getMessage()
                or (r.exc_info and r.exc_info[0] is RecursionError)]
    status = await c.request(GetStatus(id=c.next_id()))
    assert isinstance(status, StatusReply) and status.connected


async def test_oversized_request_gets_too_large_at_the_configured_limit(
    make_hub: HubFactory, clients: Any
) -> None:
    hub = await make_hub(max_request_bytes=64 * 1024)
    c = clients(hub.rpc_endpoint)
    big = msgspec.msgpack.encode({"type": "status", "id": 5, "pad": "x" * 100_000})
    await c.send_raw(b"", big)
    reply = await c.recv_reply()
    assert isinstance(reply, Error) and reply.code == ErrorCode.TOO_LARGE, reply
    assert "65536 bytes" in reply.message and "max_request_bytes" in reply.message
    status = await c.request(GetStatus(id=c.next_id()))
    assert isinstance(status, StatusReply)


# ------------------------------------------------------------------ the wire itself


async def test_upstream_send_refuses_a_nul_field_and_sends_nothing(
    hub: HubServer, hub_sim: SimGateway
) -> None:
    """Defence in depth: even a request built inside the hub (bypassing the decoders)
    cannot put a NUL inside a field on the Gateway connection."""
    ib = hub.upstream.ib if hub.upstream is not None else None
    assert ib is not None
    before = hub_sim.request_counts[CONTRACT_DETAILS]
    bad = Contract(symbol="AAPL\0SMART\0USD", secType="STK", exchange="SMART", currency="USD")
    with pytest.raises(UnsafeField, match="holds a NUL"):
        ib.client.reqContractDetails(ib.client.getReqId(), bad)
    with pytest.raises(UnsafeField):
        ib.client.placeOrder(ib.client.getReqId(), Stock("AAPL", "SMART", "USD"),
                             Order(action="BUY", totalQuantity=1, orderType="MKT",
                                   account="DU1234567\0\0"))
    details = await ib.reqContractDetailsAsync(Stock("AAPL", "SMART", "USD"))
    assert details and details[0].contract is not None
    assert details[0].contract.symbol == "AAPL"
    assert hub_sim.request_counts[CONTRACT_DETAILS] == before + 1  # only the good one
    assert hub_sim.request_counts[PLACE_ORDER] == 0


# ------------------------------------------------------------------ quantities


@pytest.mark.parametrize("quantity", [1e-9, 0.5, 10.25])
async def test_fractional_stock_quantity_is_refused_before_the_gateway(
    order_hub: HubServer, hub_sim: SimGateway, quantity: float
) -> None:
    async with sdk(order_hub, "frac") as hub:
        with pytest.raises(OrderRejectedError) as info:
            await hub.place_order("AAPL", "BUY", quantity)
        assert info.value.reason == RejectReason.BAD_QUANTITY
        assert "whole shares" in info.value.message
        # a modify to a fraction is refused by the same rule
        order = await hub.place_order("AAPL", "BUY", 1, order_type="LMT",
                                      limit_price=round(hub_sim.broker.price_of(265598) * 0.95, 2))
        with pytest.raises(OrderRejectedError) as info:
            await hub.modify_order(order, quantity=quantity)
        assert info.value.reason == RejectReason.BAD_QUANTITY
        await hub.cancel_order(order)
    assert hub_sim.request_counts[PLACE_ORDER] == 1  # the whole-share order only


async def test_con_id_only_stock_order_gets_the_stock_rule_after_resolving(
    order_hub: HubServer, hub_sim: SimGateway
) -> None:
    async with sdk(order_hub, "conid") as hub:
        with pytest.raises(OrderRejectedError) as info:
            await hub.place_order(ContractSpec(con_id=265598, sec_type=""), "BUY", 0.5)
        assert info.value.reason == RejectReason.BAD_QUANTITY
        assert "STK" in info.value.message or "whole shares" in info.value.message
    assert hub_sim.request_counts[PLACE_ORDER] == 0


async def test_fractional_shares_setting_allows_fractions_but_not_dust(
    make_hub: HubFactory, hub_sim: SimGateway
) -> None:
    hub = await make_hub()
    svc = await wire_orders(hub, fractional_shares=True)
    await wait_until(svc.reconciled.is_set, 5.0, "orders reconciled")
    async with sdk(hub, "fractions") as client:
        with pytest.raises(OrderRejectedError) as info:
            await client.place_order("AAPL", "BUY", 1e-9)
        assert info.value.reason == RejectReason.BAD_QUANTITY
        order = await client.place_order("AAPL", "BUY", 0.5)
        await order.wait_until(lambda o: o.status == "Filled", 5.0)
        assert order.filled == pytest.approx(0.5)


# ------------------------------------------------------------------ trading-mode log line


@pytest.mark.parametrize(
    ("overrides", "expect", "level"),
    [
        ({}, "trading allowed (paper", logging.INFO),
        ({"allow_live": True, "_port": 4001}, "LIVE trading allowed", logging.WARNING),
        ({"allow_live": False, "_port": 4001}, "live trading is off", logging.WARNING),
    ],
    ids=["paper", "live-allowed", "live-refused"],
)
async def test_trading_mode_log_line_says_live_or_paper(
    make_hub: HubFactory, caplog: pytest.LogCaptureFixture, overrides: dict[str, Any],
    expect: str, level: int
) -> None:
    hub = await make_hub(orders=False)
    port = overrides.pop("_port", None)
    if port is not None:  # the sim listens elsewhere: say the session is on a live port
        hub.upstream.port = port  # type: ignore[union-attr]
    caplog.set_level(logging.INFO, logger="ibhub.orders.service")
    svc = await attach_orders(hub, journal_sync="NORMAL", **overrides)
    try:
        lines = [r for r in caplog.records
                 if r.name == "ibhub.orders.service" and "orders: journal" in r.getMessage()]
        assert len(lines) == 1, [r.getMessage() for r in caplog.records]
        assert expect in lines[0].getMessage(), lines[0].getMessage()
        assert "(paper)" not in lines[0].getMessage() or port is None
        assert lines[0].levelno == level
    finally:
        await svc.stop()


# ------------------------------------------------------------------ front door


async def _refused_details(ib: Any, contract: Any, errors: list[tuple[int, int, str]]) -> None:
    """A contract-details request the front door refuses with 321, as a Gateway would.
    ib_insync ends the request (empty); ib_async calls 321 a warning and leaves its
    request waiting, as it would on a Gateway, so there the error alone is awaited."""
    seen = len(errors)
    request = asyncio.ensure_future(ib.reqContractDetailsAsync(contract))
    await wait_until(lambda: len(errors) > seen, 5.0, "321 from the front door")
    if 321 in CLIENT_ONLY_WARNINGS:
        request.cancel()
    else:
        assert await asyncio.wait_for(request, 5.0) == []


async def test_front_door_refuses_control_characters_and_huge_fields_on_that_request(
    door_hub: HubServer, ib_clients: ClientFactory, hub_sim: SimGateway  # noqa: F811
) -> None:
    ib = await ib_clients(31)
    errors: list[tuple[int, int, str]] = []
    ib.errorEvent += lambda req_id, code, text, _c: errors.append((req_id, code, text))
    before = hub_sim.request_counts[CONTRACT_DETAILS]

    await _refused_details(ib, Stock("AA\x01PL", "SMART", "USD"), errors)
    req_id, code, text = errors[-1]
    assert code == 321 and "control character U+0001" in text
    await _refused_details(ib, Stock("A" * 10_000, "SMART", "USD"), errors)
    assert errors[-1][1] == 321 and "10000 characters" in errors[-1][2]
    assert errors[-1][0] != req_id and errors[-1][0] > 0  # on that request's own id
    assert hub_sim.request_counts[CONTRACT_DETAILS] == before  # nothing passed through

    # market data: a symbol too long for the hub's contract rules (but < 1024)
    # (the client's low-level call: ib_async cannot hash a contract without a conId)
    rid = ib.client.getReqId()
    ib.client.reqMktData(rid, Stock("B" * 100, "SMART", "USD"), "", False, False, [])
    await wait_until(lambda: any("`$.contract.symbol` is longer than 64" in e[2]
                                 for e in errors), 5.0, "321 for the long symbol")
    ib.client.cancelMktData(rid)

    # the session is still usable
    details = await ib.reqContractDetailsAsync(Stock("AAPL", "SMART", "USD"))
    assert details and details[0].contract.symbol == "AAPL"


async def test_front_door_orders_follow_the_same_field_and_quantity_rules(
    door_hub: HubServer, ib_clients: ClientFactory, hub_sim: SimGateway  # noqa: F811
) -> None:
    ib = await ib_clients(32)
    errors: list[tuple[int, int, str]] = []
    ib.errorEvent += lambda req_id, code, text, _c: errors.append((req_id, code, text))
    aapl = Stock("AAPL", "SMART", "USD")

    bad_account = ib.placeOrder(aapl, Order(action="BUY", totalQuantity=1, orderType="MKT",
                                            account="DU1234567\x01"))
    await wait_until(lambda: any(e[0] == bad_account.order.orderId for e in errors), 5.0,
                     "error on the bad-account order")
    half = ib.placeOrder(aapl, Order(action="BUY", totalQuantity=0.5, orderType="MKT"))
    await wait_until(lambda: any(e[0] == half.order.orderId for e in errors), 5.0,
                     "error on the half-share order")
    by_id = {e[0]: e for e in errors}
    assert by_id[bad_account.order.orderId][1] == 321
    assert "control character" in by_id[bad_account.order.orderId][2]
    assert by_id[half.order.orderId][1] == 201
    assert "whole shares" in by_id[half.order.orderId][2]
    assert hub_sim.request_counts[PLACE_ORDER] == 0

    good = ib.placeOrder(aapl, Order(action="BUY", totalQuantity=2, orderType="MKT"))
    await wait_until(lambda: good.orderStatus.status == "Filled", 5.0, "good order filled")
    assert hub_sim.request_counts[PLACE_ORDER] == 1
