"""Request/reply edge cases over a real ROUTER: malformed input, contracts, bars, raw ids."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest
import zmq

from ibhub import wire
from ibhub.hub.server import HubServer
from ibhub.protocol import (
    ClientIdLeased,
    ContractDetailsReply,
    ContractSpec,
    Error,
    ErrorCode,
    GetContractDetails,
    GetHistoricalBars,
    GetStatus,
    Hello,
    HistoricalBarsReply,
    LeaseClientId,
    Ok,
    ReleaseClientId,
    StatusReply,
    Subscribe,
)
from ibhub.sim import SimGateway
from tests.e2e.conftest import wait_until


async def still_serves(client) -> None:
    reply = await client.request(GetStatus(id=client.next_id()))
    assert isinstance(reply, StatusReply) and reply.connected


@pytest.mark.parametrize(
    ("payload", "code", "words", "rid"),
    [
        (b"\xc1\xff not msgpack", ErrorCode.BAD_REQUEST, "not valid msgpack", 0),
        (msgspec.msgpack.encode({"type": "nope", "id": 7}), ErrorCode.BAD_REQUEST, "nope", 7),
        (msgspec.msgpack.encode({"type": "heartbeat", "id": 8, "lease": 5}),
         ErrorCode.BAD_REQUEST, "$.lease", 8),
        (msgspec.msgpack.encode({"type": "hello", "id": 9}), ErrorCode.BAD_REQUEST, "name", 9),
        (msgspec.msgpack.encode({"type": "status", "id": "x"}), ErrorCode.BAD_REQUEST,
         "$.id", 0),
        (msgspec.msgpack.encode([1, 2, 3]), ErrorCode.BAD_REQUEST, "invalid request", 0),
        (msgspec.msgpack.encode({"type": "hello", "id": 10, "name": "x", "role": "root"}),
         ErrorCode.BAD_REQUEST, "role", 10),
        (msgspec.msgpack.encode({"type": "hello", "id": 11, "name": "  "}),
         ErrorCode.BAD_REQUEST, "name", 11),
        (msgspec.msgpack.encode({"type": "subscribe", "id": 12, "lease": "l",
                                 "contract": {"sec_type": "STK"}}),
         ErrorCode.BAD_REQUEST, "symbol or a con_id", 12),
        (msgspec.msgpack.encode({"type": "subscribe", "id": 13, "lease": "l",
                                 "contract": {"symbol": "AAPL"}, "kind": "options"}),
         ErrorCode.BAD_REQUEST, "kind", 13),
        (msgspec.msgpack.encode({"type": "lease_client_id", "id": 14, "name": "x",
                                 "ttl": -1.0}), ErrorCode.BAD_REQUEST, "ttl", 14),
        (b"", ErrorCode.BAD_REQUEST, "msgpack", 0),
        (b"\x00" * (wire.MAX_REQUEST_BYTES + 1), ErrorCode.TOO_LARGE, "exceeds", 0),
    ],
    ids=["garbage", "unknown-tag", "wrong-type", "missing-field", "bad-id", "array",
         "bad-role", "blank-name", "no-symbol", "bad-kind", "negative-ttl", "empty",
         "oversized"],
)
async def test_malformed_request_gets_error_and_hub_keeps_serving(
    hub: HubServer, clients, payload: bytes, code: str, words: str, rid: int
) -> None:
    c = clients(hub.rpc_endpoint)
    await c.send_raw(payload)
    reply = await c.recv_reply()
    assert isinstance(reply, Error), reply
    assert reply.code == code
    assert words in reply.message, reply.message
    assert reply.id == rid
    await still_serves(c)


async def test_too_many_frames_and_missing_delimiter(hub: HubServer, clients) -> None:
    c = clients(hub.rpc_endpoint)
    await c.sock.send_multipart([b"x"] * (wire.MAX_REQUEST_FRAMES + 1))
    reply = await c.recv_reply()
    assert isinstance(reply, Error) and reply.code == ErrorCode.BAD_REQUEST
    assert "too many frames" in reply.message
    # A DEALER that forgets the empty delimiter is still answered.
    await c.sock.send_multipart([wire.encode(GetStatus(id=5))])
    reply = await c.recv_reply()
    assert isinstance(reply, StatusReply) and reply.id == 5
    await still_serves(c)


async def test_unsupported_protocol_version(hub: HubServer, clients) -> None:
    c = clients(hub.rpc_endpoint)
    reply = await c.request(Hello(id=3, name="future", protocol=99))
    assert isinstance(reply, Error) and reply.code == ErrorCode.UNSUPPORTED_VERSION
    # A version-1 client cannot read tick batches: told to upgrade, not fed a thinned stream.
    reply = await c.request(Hello(id=4, name="old", protocol=1))
    assert isinstance(reply, Error) and reply.code == ErrorCode.UNSUPPORTED_VERSION
    assert "protocol 1" in reply.message and "upgrade" in reply.message
    # A hello that does not say its version is a version-1 client (that document's
    # default): refused too, rather than fed batches it would skip.
    await c.send_raw(msgspec.msgpack.encode({"type": "hello", "id": 5, "name": "legacy"}))
    reply = await c.recv_reply()
    assert isinstance(reply, Error) and reply.code == ErrorCode.UNSUPPORTED_VERSION
    assert reply.id == 5


async def test_order_requests_not_served_yet_are_refused_cleanly(hub: HubServer,
                                                                 clients) -> None:
    c = clients(hub.rpc_endpoint)
    await c.send_raw(msgspec.msgpack.encode({"type": "positions", "id": 4}))
    reply = await c.recv_reply()
    assert isinstance(reply, Error) and reply.id == 4
    assert "positions" in reply.message
    await still_serves(c)


async def test_garbage_flood_then_normal_client(hub: HubServer, clients) -> None:
    bad = clients(hub.rpc_endpoint)
    for i in range(200):
        await bad.send_raw(bytes([0xC1, i % 256]))
    for _ in range(200):
        assert isinstance(await bad.recv_reply(), Error)
    good = clients(hub.rpc_endpoint, zmq.REQ)
    await still_serves(good)


async def test_contract_details_and_errors(hub: HubServer, clients) -> None:
    c = clients(hub.rpc_endpoint)
    r = await c.request(GetContractDetails(id=1, contract=ContractSpec(symbol="AAPL")))
    assert isinstance(r, ContractDetailsReply), r
    assert [x.symbol for x in r.contracts] == ["AAPL"]
    aapl = r.contracts[0]
    assert aapl.con_id > 0 and aapl.min_tick > 0 and aapl.long_name
    r = await c.request(GetContractDetails(id=2, contract=ContractSpec(con_id=aapl.con_id)))
    assert isinstance(r, ContractDetailsReply) and r.contracts[0].con_id == aapl.con_id
    r = await c.request(GetContractDetails(id=3, contract=ContractSpec(symbol="NOSUCHSYM")))
    assert isinstance(r, ContractDetailsReply) and r.contracts == []

    await c.hello("subscriber")
    r = await c.request(Subscribe(id=c.next_id(), lease=c.lease,
                                  contract=ContractSpec(symbol="NOSUCHSYM")))
    assert isinstance(r, Error) and r.code == ErrorCode.UNKNOWN_CONTRACT, r
    assert "NOSUCHSYM" in r.message


async def test_ambiguous_contract_and_con_id_topic(hub: HubServer, clients) -> None:
    c = clients(hub.rpc_endpoint)
    # An option symbol without expiry/strike/right matches the whole chain.
    spec = ContractSpec(symbol="SPY", sec_type="OPT")
    r = await c.request(GetContractDetails(id=1, contract=spec))
    assert isinstance(r, ContractDetailsReply), r
    assert len(r.contracts) > 1
    await c.hello("amb")
    r2 = await c.request(Subscribe(id=c.next_id(), lease=c.lease, contract=spec))
    assert isinstance(r2, Error) and r2.code == ErrorCode.AMBIGUOUS_CONTRACT, r2
    assert "con_id" in r2.message and "SPY" in r2.message
    # Anything but STK/CASH is published under its conId.
    option = r.contracts[0]
    s = await c.subscribe("", con_id=option.con_id, sec_type="OPT")
    assert s.topic == f"tick.{option.con_id}" and s.contract.right in ("C", "P")


async def test_historical_bars(hub: HubServer, clients) -> None:
    c = clients(hub.rpc_endpoint)
    r = await c.request(GetHistoricalBars(id=1, contract=ContractSpec(symbol="AAPL"),
                                          duration="2 D", bar_size="1 hour"))
    assert isinstance(r, HistoricalBarsReply), r
    assert r.contract.symbol == "AAPL" and len(r.bars) > 5
    times = [b.time for b in r.bars]
    assert times == sorted(times) and times[0] > 1_500_000_000
    assert all(b.low <= min(b.open, b.close) <= max(b.open, b.close) <= b.high for b in r.bars)
    r = await c.request(GetHistoricalBars(id=2, contract=ContractSpec(symbol="AAPL"),
                                          duration="5 D", bar_size="1 day"))
    assert isinstance(r, HistoricalBarsReply) and r.bars
    assert all(b.time % 86400 == 0 for b in r.bars)  # daily bars: 00:00 UTC of the day
    r = await c.request(GetHistoricalBars(id=3, contract=ContractSpec(symbol="AAPL"),
                                          duration="1 D", bar_size="7 parsecs"))
    assert isinstance(r, Error) and r.code == ErrorCode.IB_ERROR and r.ib_code > 0, r
    await still_serves(c)


async def test_identical_historical_requests_are_answered_once(
    hub: HubServer, hub_sim: SimGateway, clients
) -> None:
    """IB forbids an identical historical request within 15 s (the pacer would hold the
    second that long): two at once share one upstream request, one just after reuses the
    answer, a different one asks the Gateway (errors are never reused)."""
    c = clients(hub.rpc_endpoint)

    def bars(i: int, size: str = "1 hour") -> GetHistoricalBars:
        return GetHistoricalBars(id=i, contract=ContractSpec(symbol="MSFT"), duration="1 D",
                                 bar_size=size)

    asked = hub_sim.request_counts[20]  # reqHistoricalData
    first, second = await asyncio.gather(c.request(bars(1)), c.request(bars(2)))
    started = time.monotonic()
    third = await c.request(bars(3))
    assert time.monotonic() - started < 2.0  # not held for IB's 15 s
    assert all(isinstance(r, HistoricalBarsReply) for r in (first, second, third))
    assert first.bars == second.bars == third.bars and first.bars
    assert hub_sim.request_counts[20] == asked + 1
    other = await c.request(bars(4, "30 mins"))
    assert isinstance(other, HistoricalBarsReply) and hub_sim.request_counts[20] == asked + 2
    bad = await c.request(bars(5, "7 parsecs"))  # a refusal is not kept as an answer
    assert isinstance(bad, Error) and bad.code == ErrorCode.IB_ERROR, bad
    assert hub_sim.request_counts[20] == asked + 3


async def test_raw_client_id_leases(make_hub, hub_sim: SimGateway, clients) -> None:
    hub = await make_hub(raw_client_id_range=(0, 3), client_id=0)
    c = clients(hub.rpc_endpoint)
    w = await c.hello("owner")
    got = {w.client_id}
    tokens: dict[int, str] = {}
    for name in ("raw-a", "raw-b"):
        r = await c.request(LeaseClientId(id=c.next_id(), name=name))
        assert isinstance(r, ClientIdLeased), r
        got.add(r.client_id)
        tokens[r.client_id] = r.token
    assert got == {1, 2, 3}  # 0 is the hub's own id and is never handed out
    r = await c.request(LeaseClientId(id=c.next_id(), name="one-too-many"))
    assert isinstance(r, Error) and r.code == ErrorCode.NO_FREE_CLIENT_ID, r
    status = await c.request(GetStatus(id=c.next_id()))
    assert isinstance(status, StatusReply)
    assert len(status.raw_client_ids) == 2 and w.client_id not in status.raw_client_ids

    freed, other = status.raw_client_ids
    # Releasing takes the raw id's own token: not none, not another id's.
    r = await c.request(ReleaseClientId(id=c.next_id(), client_id=freed))
    assert isinstance(r, Error) and r.code == ErrorCode.FORBIDDEN, r
    r = await c.request(ReleaseClientId(id=c.next_id(), client_id=freed, token=tokens[other]))
    assert isinstance(r, Error) and r.code == ErrorCode.UNKNOWN_LEASE, r
    r = await c.request(ReleaseClientId(id=c.next_id(), client_id=freed, token=tokens[freed]))
    assert isinstance(r, Ok), r
    r = await c.request(ReleaseClientId(id=c.next_id(), client_id=freed, token=tokens[freed]))
    assert isinstance(r, Error) and r.code == ErrorCode.UNKNOWN_LEASE

    # ttl: released by expiry; lease-bound: released with its lease.
    r = await c.request(LeaseClientId(id=c.next_id(), name="short", ttl=0.2))
    assert isinstance(r, ClientIdLeased) and 0 < r.expires_in <= 0.2
    short = r.client_id
    await wait_until(lambda: short not in hub.leases.ids_in_use(), 3.0, "ttl expiry")
    r = await c.request(LeaseClientId(id=c.next_id(), name="bound", lease=c.lease))
    assert isinstance(r, ClientIdLeased)
    bound = r.client_id
    await c.stop_heartbeat()
    await wait_until(lambda: bound not in hub.leases.ids_in_use(), 3.0, "bound id release")
    r = await c.request(LeaseClientId(id=c.next_id(), name="x", lease="no-such-lease"))
    assert isinstance(r, Error) and r.code == ErrorCode.UNKNOWN_LEASE


async def test_endpoint_in_use_is_a_clear_error(hub: HubServer, hub_sim: SimGateway) -> None:
    import socket

    from ibhub.config import ConfigError, HubSettings

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        other = HubServer(HubSettings(gateway_port=hub_sim.port, rpc="tcp://127.0.0.1:0",
                                      pub=f"tcp://127.0.0.1:{port}"))
        with pytest.raises(ConfigError, match="cannot bind"):
            await other.start()
        await other.stop()
    with pytest.raises(ConfigError, match="loopback"):
        await HubServer(HubSettings(pub="tcp://0.0.0.0:0")).start()
