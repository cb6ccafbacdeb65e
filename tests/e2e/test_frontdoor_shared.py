"""Front door: one upstream line serves ZeroMQ subscribers and TWS scripts
alike; bad input on the TWS port costs only that connection."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable

from ibhub.hub.server import HubServer
from ibhub.protocol import Ok, Unsubscribe
from ibhub.sim import SimGateway
from tests.e2e import frontdoor_support
from tests.e2e.conftest import RawClient
from tests.e2e.frontdoor_support import ClientFactory, door_of, quiet_ib_insync
from tests.helpers import wait_until
from tests.ibclient import Stock

# fixtures shared by the front-door tests
door_hub = frontdoor_support.door_hub
ib_clients = frontdoor_support.ib_clients


async def test_zeromq_and_tws_scripts_share_one_line(
    ib_clients: ClientFactory, door_hub: HubServer, hub_sim: SimGateway,
    clients: Callable[..., RawClient],
) -> None:
    quiet_ib_insync()
    zmq_script = clients(door_hub.rpc_endpoint)
    await zmq_script.hello("zmq-script")
    sub = await zmq_script.subscribe("AAPL")
    ib = await ib_clients(81)
    c = Stock("AAPL", "SMART", "USD")
    await ib.qualifyContractsAsync(c)
    strings: list[tuple[int, str]] = []
    original = ib.wrapper.tickString

    def tick_string(req_id: int, tick_type: int, value: str) -> None:
        strings.append((tick_type, value))
        original(req_id, tick_type, value)

    ib.wrapper.tickString = tick_string  # ib_insync drops tick 45; ib_async keeps it
    ticker = ib.reqMktData(c)
    await wait_until(lambda: ticker.bid > 0, 5.0, "TWS script ticks")
    assert len(hub_sim.market_data_subscriptions()) == 1
    line = door_hub.subs.get(c.conId, "ticks")
    assert line is not None and len(line.leases) == 2  # the lease and the TWS request
    # the last-trade timestamp (tickString 45) comes with trades, as from a Gateway
    await wait_until(lambda: any(t == 45 for t, _ in strings), 5.0, "tick 45")
    stamp = int(next(v for t, v in strings if t == 45))
    assert abs(stamp - time.time()) < 60, stamp
    ib.cancelMktData(c)
    await wait_until(lambda: line is not None and len(line.leases) == 1, 5.0, "TWS released")
    assert len(hub_sim.market_data_subscriptions()) == 1  # the ZeroMQ script still holds it
    reply = await zmq_script.request(Unsubscribe(id=zmq_script.next_id(),
                                                 lease=zmq_script.lease, topic=sub.topic))
    assert isinstance(reply, Ok)
    await wait_until(lambda: not hub_sim.market_data_subscriptions(), 5.0, "line cancelled")


async def test_bad_input_costs_only_that_connection(
    ib_clients: ClientFactory, door_hub: HubServer
) -> None:
    quiet_ib_insync()
    good = await ib_clients(91)
    port = door_of(door_hub).tws_port

    async def raw(payload: bytes) -> bytes:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        try:
            w.write(payload)
            async with asyncio.timeout(3):
                return await r.read()  # everything until the hub closes
        finally:
            w.close()

    assert await raw(b"GET / HTTP/1.1\r\n\r\n") == b""  # not a TWS hello: closed
    assert await raw(b"API\0" + struct.pack(">I", 9) + b"v100..150") == b""  # no 176
    hello = b"API\0" + struct.pack(">I", 9) + b"v157..176"
    # an oversize length prefix: the hub closes the socket (raw() reads until EOF)
    assert len(await raw(hello + struct.pack(">I", 1 << 30))) < 100
    # a started client sending nonsense gets errors, not a crash
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        w.write(hello)
        w.write(_framed(["71", "2", "92", ""]))
        w.write(_framed(["1", "11", "notanumber"]))       # bad reqMktData
        w.write(_framed(["xyz"]))                          # bad message id
        w.write(_framed(["3", "5"]))                       # truncated placeOrder
        w.write(_framed(["9999"]))                         # unknown message id
        w.write(_framed(["49", "1"]))                      # then a good request
        await _read(r)  # the handshake answer
        replies: list[list[str]] = []
        while not replies or replies[-1][0] != "49":
            replies.append(await _read(r))
        codes = [m[3] for m in replies if m[0] == "4"]
        assert codes.count("321") == 2 and codes.count("320") == 2, replies
    finally:
        w.close()
    assert good.isConnected()
    assert (await good.reqContractDetailsAsync(Stock("AAPL", "SMART", "USD")))


def _framed(fields: list[str]) -> bytes:
    payload = "".join(f + "\0" for f in fields).encode()
    return len(payload).to_bytes(4, "big") + payload


async def _read(r: asyncio.StreamReader) -> list[str]:
    async with asyncio.timeout(5):
        size = int.from_bytes(await r.readexactly(4), "big")
        data = await r.readexactly(size)
    return data.decode().split("\0")[:-1]
