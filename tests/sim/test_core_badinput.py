"""Pacing and bad input: answered like the Gateway, never a crash, others unaffected."""

from __future__ import annotations

import asyncio
import random
import struct

from ibhub.sim import SimConfig, SimGateway
from ibhub.sim.codec import frame
from tests.sim.core_support import RawClient, connected


async def still_serves(sim: SimGateway) -> None:
    """A healthy ib_insync client on the same simulator still gets answers."""
    async with connected(sim, client_id=99) as ib:
        assert (await asyncio.wait_for(ib.reqCurrentTimeAsync(), 2)) is not None


async def test_pacing_error_100_drops_the_message() -> None:
    async with SimGateway(SimConfig(seed=1, max_msg_rate=10)) as sim:
        raw = await RawClient.open(sim.port, client_id=3)
        for _ in range(30):
            raw.send(49, 1)  # reqCurrentTime
        times, paced = 0, 0
        while times + paced < 30:
            msg = await raw.recv()
            if msg[0] == "49":
                times += 1
            elif msg[0] == "4" and msg[3] == "100":
                paced += 1
                assert msg[4].startswith("Max rate of messages per second has been exceeded")
        assert 8 <= times <= 12 and paced == 30 - times
        await raw.close()
        await still_serves(sim)


async def test_pacing_error_carries_the_request_id() -> None:
    async with SimGateway(SimConfig(seed=1, max_msg_rate=2)) as sim:
        raw = await RawClient.open(sim.port, client_id=3)
        c12 = [0, "AAPL", "STK", "", 0.0, "", "", "SMART", "", "USD", "", ""]
        for req_id in (1, 2, 3):
            raw.send(9, 8, req_id, *c12, 0, "", "", "")
        err = await raw.recv_until(lambda m: m[0] == "4" and m[3] == "100")
        assert err[2] == "3" and len(err) == 6
        await raw.close()


async def test_bad_length_prefix_closes_only_that_socket(sim: SimGateway) -> None:
    async with connected(sim, client_id=1) as ib:
        for bad in (struct.pack(">I", 0), struct.pack(">I", 0xFFFFFFF0) + b"x" * 10):
            raw = await RawClient.open(sim.port, client_id=5)
            await raw.recv_until(lambda m: m[0] == "15")
            raw.send_bytes(bad)
            assert await raw.closed_by_server()
            await raw.close()
        assert ib.isConnected()
        assert (await asyncio.wait_for(ib.reqCurrentTimeAsync(), 2)) is not None


async def test_oversize_frame_is_refused() -> None:
    async with SimGateway(SimConfig(seed=1, max_frame=4096)) as sim:
        raw = await RawClient.open(sim.port, client_id=5)
        raw.send_bytes(struct.pack(">I", 10_000) + b"1\0" * 5000)
        assert await raw.closed_by_server()
        await raw.close()
        await still_serves(sim)


async def test_bad_hello_is_closed(sim: SimGateway) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    writer.write(b"GET / HTTP/1.1\r\n\r\n")
    assert await asyncio.wait_for(reader.read(), 2) == b""
    writer.close()
    await writer.wait_closed()
    await still_serves(sim)


async def test_garbage_fields_get_errors_on_the_request_id(sim: SimGateway) -> None:
    raw = await RawClient.open(sim.port, client_id=5)
    await raw.recv_until(lambda m: m[0] == "15")
    # conId that is not a number, in reqContractDetails with reqId 41
    raw.send(9, 8, 41, "abc", "AAPL", "STK", "", "", "", "", "SMART", "", "USD", "", "", 0)
    err = await raw.recv_until(lambda m: m[0] == "4" and m[3] not in ("2104", "2106", "2158"))
    assert err[2] == "41" and err[3] == "321" and "conId" in err[4]
    # a truncated reqMktData (reqId 42): the Gateway answers on the id it can read
    raw.send(1, 11, 42, 0, "AAPL")
    err = await raw.recv_until(lambda m: m[0] == "4")
    assert err[2] == "42" and err[3] == "321"
    # unknown message id and a non-numeric id: error 320, the socket stays up
    raw.send(555, 1, 2, 3)
    err = await raw.recv_until(lambda m: m[0] == "4")
    assert err[2] == "-1" and err[3] == "320"
    raw.send("zzz", 1)
    err = await raw.recv_until(lambda m: m[0] == "4")
    assert err[3] == "320"
    # a known request the simulator does not implement (reqHistogramData, reqId 43)
    raw.send(88, 43, 265598, "AAPL", "STK", "", 0.0, "", "", "SMART", "", "USD", "", "",
             1, "3 days")
    err = await raw.recv_until(lambda m: m[0] == "4")
    assert err[2] == "43" and err[3] == "321"
    # invalid UTF-8 inside a field
    raw.send_bytes(struct.pack(">I", 6) + b"49\x00\xff\xfe\x00")
    msg = await raw.recv_until(lambda m: m[0] in ("49", "4"))
    assert msg[0] == "49"
    raw.send(49, 1)
    assert (await raw.recv_until(lambda m: m[0] == "49"))[0] == "49"
    await raw.close()
    await still_serves(sim)


async def test_requests_before_start_api(sim: SimGateway) -> None:
    raw = await RawClient.open(sim.port, client_id=None)
    assert (await raw.recv())[0] == "176"
    raw.send(49, 1)
    err = await raw.recv()
    assert err[0] == "4" and err[3] == "321"
    raw.send(71, 2, "notanumber", "")
    assert await raw.closed_by_server()
    await raw.close()


async def test_fuzzed_frames_never_crash() -> None:
    rng = random.Random(1234)  # seeded: the same garbage every run
    async with SimGateway(SimConfig(seed=1, max_msg_rate=100_000)) as sim:
        async with connected(sim, client_id=1) as ib:
            for _ in range(4):
                raw = await RawClient.open(sim.port, client_id=rng.randrange(100, 1000))
                for _ in range(150):
                    msg_id = rng.choice([1, 2, 3, 4, 7, 9, 20, 25, 50, 59, 61, 62, 87, 97,
                                         rng.randrange(0, 300)])
                    fields = [msg_id] + [
                        rng.choice(["", "0", "-1", "1", "AAPL", "STK", "x" * rng.randrange(50),
                                    "1e308", "nan", str(rng.randrange(-9, 10**12)), "\u00e9"])
                        for _ in range(rng.randrange(0, 40))]
                    raw.send_bytes(frame(fields))
                raw.send(49, 1)
                try:
                    await raw.recv_until(lambda m: m[0] == "49", timeout=3)
                except EOFError:
                    pass  # closing a hopeless client is a Gateway answer too
                await raw.close()
            assert ib.isConnected()
            assert (await asyncio.wait_for(ib.reqCurrentTimeAsync(), 2)) is not None
        assert sim.listening
