"""rpc.decode / validate: every malformed request becomes a BadRequest naming the problem."""

from __future__ import annotations

import msgspec
import pytest

from ibhub import wire
from ibhub.hub.requests import BadRequest, decode
from ibhub.protocol import (
    ContractSpec,
    ErrorCode,
    GetStatus,
    Hello,
    LeaseClientId,
    ReleaseClientId,
    Subscribe,
    Unsubscribe,
)

enc = msgspec.msgpack.encode


def test_valid_requests_decode() -> None:
    for req in (
        Hello(id=1, name="x"),
        Hello(id=1, name="ops", role="operator"),
        GetStatus(id=2),
        Subscribe(id=3, lease="l", contract=ContractSpec(symbol="AAPL")),
        Subscribe(id=3, lease="l", contract=ContractSpec(con_id=5), kind="bars"),
        LeaseClientId(id=4, name="raw", ttl=1.5),
    ):
        assert decode(wire.encode(req)) == req


@pytest.mark.parametrize(
    ("payload", "code", "words"),
    [
        (b"\xc1", ErrorCode.BAD_REQUEST, "not valid msgpack"),
        (b"", ErrorCode.BAD_REQUEST, "not valid msgpack"),
        (enc({"type": "launch", "id": 1}), ErrorCode.BAD_REQUEST, "launch"),
        (enc({"id": 1}), ErrorCode.BAD_REQUEST, "type"),
        (enc({"type": "hello", "id": 1}), ErrorCode.BAD_REQUEST, "name"),
        (enc({"type": "hello", "id": 1.5, "name": "x"}), ErrorCode.BAD_REQUEST, "$.id"),
        (enc({"type": "subscribe", "id": 1, "lease": "l", "contract": "AAPL"}),
         ErrorCode.BAD_REQUEST, "$.contract"),
        (enc({"type": "hello", "id": 1, "name": "x" * 201}), ErrorCode.BAD_REQUEST, "longer"),
        (wire.encode(Hello(id=1, name="x", role="admin")), ErrorCode.BAD_REQUEST, "role"),
        (wire.encode(Subscribe(id=1, lease="l", contract=ContractSpec(symbol=""))),
         ErrorCode.BAD_REQUEST, "symbol or a con_id"),
        (wire.encode(Subscribe(id=1, lease="l", contract=ContractSpec(con_id=-3))),
         ErrorCode.BAD_REQUEST, "con_id must be >= 0"),
        (wire.encode(Unsubscribe(id=1, lease="l", topic="")), ErrorCode.BAD_REQUEST, "topic"),
        (wire.encode(LeaseClientId(id=1, name="x", ttl=float("nan"))), ErrorCode.BAD_REQUEST,
         "ttl"),
        (wire.encode(ReleaseClientId(id=1, client_id=-1)), ErrorCode.BAD_REQUEST, "client_id"),
        (b"\x00" * (wire.MAX_REQUEST_BYTES + 1), ErrorCode.TOO_LARGE, "exceeds the limit"),
    ],
)
def test_bad_requests(payload: bytes, code: str, words: str) -> None:
    with pytest.raises(BadRequest) as info:
        decode(payload)
    assert info.value.code == code
    assert words in str(info.value)
