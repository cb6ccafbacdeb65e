"""Text fields of requests: control characters and lengths refused at decode, naming
the field; NUL refused again where fields are written to the TWS wire; depth."""

from __future__ import annotations

import time

import msgspec
import pytest

from ibhub import wire
from ibhub.frontdoor.requests import MAX_FIELD, field_problem
from ibhub.hub.requests import BadRequest, check_fields, decode, request_id
from ibhub.protocol import (
    MAX_ACCOUNT,
    MAX_CLIENT_ORDER_ID,
    MAX_CODE,
    MAX_NAME,
    MAX_SYMBOL,
    ContractSpec,
    ErrorCode,
    GetAccountSummary,
    GetContractDetails,
    GetHistoricalBars,
    Hello,
    ModifyOrder,
    PlaceOrder,
)
from ibhub.tws.codec import UnsafeField, frame, holds_nul
from tests.ibclient import Contract, TagValue

AAPL = ContractSpec(symbol="AAPL")


def place(**kw: object) -> PlaceOrder:
    fields: dict[str, object] = dict(id=7, lease="L", client_order_id="c1", contract=AAPL,
                                     action="BUY", quantity=1.0)
    fields.update(kw)
    return PlaceOrder(**fields)  # type: ignore[arg-type]


def refused(payload: bytes) -> BadRequest:
    with pytest.raises(BadRequest) as info:
        decode(payload)
    return info.value


@pytest.mark.parametrize(
    ("req", "path"),
    [
        (place(account="DU1234567\0\0"), "$.account"),
        (place(client_order_id="a\0b"), "$.client_order_id"),
        (place(tif="DAY\n"), "$.tif"),
        (place(order_type="LMT\x00"), "$.order_type"),
        (place(action="BUY\x1b[2J"), "$.action"),
        (place(lease="L\x00"), "$.lease"),
        (place(contract=ContractSpec(symbol="AAPL\0SMART\0USD")), "$.contract.symbol"),
        (place(contract=ContractSpec(symbol="AAPL", primary_exchange="NASDAQ\x85")),
         "$.contract.primary_exchange"),
        (GetContractDetails(id=7, contract=ContractSpec(symbol="ES", right="C\r")),
         "$.contract.right"),
        (GetHistoricalBars(id=7, contract=AAPL, what_to_show="TRADES\0"), "$.what_to_show"),
        (GetHistoricalBars(id=7, contract=AAPL, bar_size="1\thour"), "$.bar_size"),
        (GetHistoricalBars(id=7, contract=AAPL, duration="1 D\0"), "$.duration"),
        (GetHistoricalBars(id=7, contract=AAPL, end="20260101 10:00:00\x7f"), "$.end"),
        (ModifyOrder(id=7, lease="L", client_order_id="x\u2029"), "$.client_order_id"),
        (Hello(id=7, name="bot\nERROR forged log line"), "$.name"),
        (GetAccountSummary(id=7, tags=["NetLiquidation", "Buying\0Power"]), "$.tags[1]"),
    ],
)
def test_control_characters_are_refused_naming_the_field(req: object, path: str) -> None:
    exc = refused(wire.encode(req))
    assert exc.code == ErrorCode.BAD_REQUEST
    assert f"`{path}` contains a control character" in str(exc)
    assert wire.request_id_of(wire.encode(req)) == 7  # the Error reply carries the id


@pytest.mark.parametrize(
    ("req", "path", "limit"),
    [
        (place(contract=ContractSpec(symbol="A" * (MAX_SYMBOL + 1))), "$.contract.symbol",
         MAX_SYMBOL),
        (place(contract=ContractSpec(symbol="A", exchange="E" * (MAX_CODE + 1))),
         "$.contract.exchange", MAX_CODE),
        (place(account="D" * (MAX_ACCOUNT + 1)), "$.account", MAX_ACCOUNT),
        (place(client_order_id="c" * (MAX_CLIENT_ORDER_ID + 1)), "$.client_order_id",
         MAX_CLIENT_ORDER_ID),
        (Hello(id=7, name="n" * (MAX_NAME + 1)), "$.name", MAX_NAME),
        (place(contract=ContractSpec(symbol="A" * 10_000)), "$.contract.symbol", MAX_SYMBOL),
    ],
)
def test_overlong_text_is_refused_naming_the_field(req: object, path: str, limit: int) -> None:
    exc = refused(wire.encode(req))
    assert str(exc).endswith(f"`{path}` is longer than {limit} characters")


@pytest.mark.parametrize(
    "req",
    [
        place(contract=ContractSpec(symbol="A" * MAX_SYMBOL, exchange="E" * MAX_CODE),
              account="D" * MAX_ACCOUNT, client_order_id="c" * MAX_CLIENT_ORDER_ID),
        place(contract=ContractSpec(symbol="NESN", currency="CHF", local_symbol="Nestlé")),
        place(contract=ContractSpec(symbol="700", exchange="SEHK", local_symbol="騰訊")),
        place(order_type="STP LMT", limit_price=1.0, stop_price=1.0),
        Hello(id=7, name="mean-reversion bot #3 (ünïcode ok)"),
    ],
)
def test_real_values_at_the_limits_pass(req: object) -> None:
    assert decode(wire.encode(req)) == req


def test_check_fields_applies_the_same_rules_to_built_requests() -> None:
    check_fields(place())
    with pytest.raises(BadRequest, match=r"`\$.account` contains a control character"):
        check_fields(place(account="DU1\0"))


@pytest.mark.parametrize("depth", [1_000, 5_000, 1_000_000])
def test_deep_nesting_is_too_deep_not_a_recursion_error(depth: int) -> None:
    head = msgspec.msgpack.encode({"type": "status", "id": 3, "x": None})[:-1]
    exc = refused(head + b"\x91" * depth + b"\x01")
    assert exc.code == ErrorCode.TOO_DEEP


@pytest.mark.parametrize(
    ("payload", "rid"),
    [
        (msgspec.msgpack.encode({"id": 7, "type": "status", "x": None})[:-1]
         + b"\x91" * 100_000 + b"\x01", 7),
        (msgspec.msgpack.encode({"type": "status", "x": None, "id": 300})
         .replace(b"\xc0", b"\x81\xa1a" * 50_000 + b"\xc4\x02ab"), 300),
        (b"\x83\xa4type\xa6status\xa1x" + b"\x91" * 100_000, 0),  # truncated: no id
    ],
    ids=["id-first", "id-after-the-nesting", "truncated"],
)
def test_the_error_reply_to_a_too_deep_request_carries_its_id(payload: bytes, rid: int) -> None:
    assert refused(payload).code == ErrorCode.TOO_DEEP
    assert request_id(payload) == rid


def test_shallow_nesting_in_an_unknown_field_is_ignored() -> None:
    head = msgspec.msgpack.encode({"type": "status", "id": 3, "x": None})[:-1]
    assert decode(head + b"\x91" * 50 + b"\x01").id == 3


def test_decode_cost_stays_negligible() -> None:
    """Requests are rare; the checks must still cost microseconds, not milliseconds."""
    payload = wire.encode(place(account="DU1234567", contract=ContractSpec(
        symbol="AAPL", exchange="SMART", currency="USD", primary_exchange="NASDAQ")))
    n = 2000
    t0 = time.perf_counter()
    for _ in range(n):
        decode(payload)
    per = (time.perf_counter() - t0) / n
    print(f"place_order decode + checks: {per * 1e6:.2f} us")
    assert per < 200e-6  # generous: ~3 us measured on a quiet machine


# ------------------------------------------------------------------ the wire


def test_frame_refuses_a_nul_inside_a_field() -> None:
    assert frame([4, 2, -1, 200, "ok"]).endswith(b"ok\0")
    with pytest.raises(UnsafeField, match="field 2 of message 10"):
        frame([10, 3, "AAPL\0SMART", "x"])


def test_holds_nul_sees_strings_contracts_and_tag_values() -> None:
    assert not holds_nul(1) and not holds_nul(1.5) and not holds_nul(None)
    assert holds_nul("a\0") and not holds_nul("abc")
    assert holds_nul(Contract(symbol="A\0B")) and not holds_nul(Contract(symbol="AB"))
    assert holds_nul([TagValue("maxPctVol", "0.1\0")])
    assert holds_nul([TagValue("a\0", "1")]) and not holds_nul([TagValue("a", "1")])


def test_front_door_field_problem() -> None:
    assert field_problem(["9", "8", "3", "0", "AAPL", "STK"]) is None
    problem = field_problem(["9", "8", "3", "0", "AA\x01PL"])
    assert problem is not None and "field 4" in problem and "U+0001" in problem
    problem = field_problem(["9", "8", "3", "0", "A" * (MAX_FIELD + 1)])
    assert problem is not None and "field 4" in problem and "characters long" in problem
    assert field_problem(["1", "x" * MAX_FIELD, "Nestlé"]) is None
