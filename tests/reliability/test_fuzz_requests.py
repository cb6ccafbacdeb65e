"""Property-based fuzzing of the hub's request socket (hypothesis, derandomized).

Properties, for every input:

* it gets a typed reply (an ``Error`` with a code for anything malformed), or, for
  frames ZeroMQ itself refuses (above the ROUTER's MAXMSGSIZE), no reply and a reset
  connection for that peer only;
* nothing malformed reaches the Gateway (``sim.request_counts`` unchanged);
* the hub keeps serving: a correct request right after each input gets its answer.

Counts per input class are printed and saved (``IBHUB_FUZZ_EXAMPLES`` scales them).
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ibhub import wire
from ibhub.protocol import (
    PROTOCOL_VERSION,
    CancelOrder,
    ContractSpec,
    Error,
    ErrorCode,
    GetAccountSummary,
    GetContractDetails,
    GetHistoricalBars,
    GetOpenOrders,
    GetPositions,
    GetSnapshot,
    GetStatus,
    Heartbeat,
    Hello,
    LeaseClientId,
    ModifyOrder,
    Ok,
    PlaceOrder,
    ReleaseClientId,
    Reply,
    StatusReply,
    Subscribe,
    Unsubscribe,
)
from tests.e2e.test_orders_hub import wire_orders
from tests.reliability import fuzz_support as fz
from tests.reliability.harness import Figures, RawClient, Rig, rig, wait_until

MALFORMED = (ErrorCode.BAD_REQUEST, ErrorCode.TOO_LARGE)


class Target:
    """The hub under fuzz, a script with a lease, and a health check."""

    def __init__(self, r: Rig, client: RawClient) -> None:
        self.r = r
        self.c = client
        self.checked = 0

    def sim_total(self) -> int:
        return sum(self.r.sim.request_counts.values())

    async def settle(self) -> None:
        book = self.r.hub.orders.book
        await wait_until(lambda: not book.queued, 5.0, "order sends done")

    async def send(self, *frames: bytes) -> Reply:
        """One input on the DEALER (delimiter added), its reply."""
        await self.c.send_raw(*frames)
        return await self.c.recv_reply(timeout=10.0)

    async def healthy(self) -> None:
        reply = await self.c.request(Heartbeat(id=self.c.next_id(), lease=self.c.lease))
        assert isinstance(reply, Ok), reply
        self.checked += 1

    def bases(self) -> list[dict[str, Any]]:
        lease = self.c.lease
        aapl = ContractSpec(symbol="AAPL")
        reqs = [
            Hello(id=1, name="fuzz", protocol=PROTOCOL_VERSION), Heartbeat(id=2, lease=lease),
            GetStatus(id=3),
            Subscribe(id=4, lease=lease, contract=aapl), Unsubscribe(id=5, lease=lease,
                                                                   topic="tick.AAPL"),
            GetSnapshot(id=6, topic="tick."), GetContractDetails(id=7, contract=aapl),
            GetHistoricalBars(id=8, contract=aapl), LeaseClientId(id=9, name="raw", ttl=1.0),
            ReleaseClientId(id=10, client_id=5),
            PlaceOrder(id=11, lease=lease, client_order_id="f", contract=aapl, action="BUY",
                       quantity=1.0, order_type="LMT", limit_price=1.0),
            ModifyOrder(id=12, lease=lease, order_id=1, limit_price=2.0),
            CancelOrder(id=13, lease=lease, order_id=1), GetOpenOrders(id=14, lease=lease),
            GetPositions(id=15), GetAccountSummary(id=16, tags=["NetLiquidation"]),
        ]
        return [msgspec.to_builtins(r) for r in reqs]


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    # Long leases: the flood test's clients share this process's loop with the hub,
    # so the fuzzer's own heartbeats may wait behind thousands of requests.
    async with rig(heartbeat_interval=0.5, lease_timeout=20.0) as r:
        await wire_orders(r.hub)
        c = r.client()
        await c.hello("fuzzer")
        yield Target(r, c)
    save()


def save() -> None:
    """Rows for the inputs tried since the last save (one per class)."""
    for name, n in sorted((fz.TRIED - fz.SAVED).items()):
        replies = dict(fz.REPLIES.get(name, Counter()).most_common())
        Figures(f"bad input: {name}", attempts=n, recoveries=n,
                notes={"replies": replies} if replies else {}).save()
    fz.SAVED.update(fz.TRIED - fz.SAVED)
    print("inputs tried:", dict(fz.TRIED))


async def check(t: Target, payload: bytes, what: str) -> Reply:
    before = t.sim_total()
    reply = await t.send(payload)
    assert isinstance(reply, Reply)
    if isinstance(reply, Error) and reply.code in MALFORMED:
        assert t.sim_total() == before, f"{what}: a malformed request reached the Gateway"
        assert reply.message
    fz.TRIED[what] += 1
    kind = reply.code if isinstance(reply, Error) else type(reply).__struct_config__.tag
    fz.REPLIES.setdefault(what, Counter())[str(kind)] += 1
    await t.settle()
    await t.healthy()
    return reply


@fz.FUZZ
@given(payload=st.binary(max_size=4096))
async def test_random_bytes(target: Target, payload: bytes) -> None:
    reply = await check(target, payload, "random bytes")
    assert isinstance(reply, Error) and reply.code == ErrorCode.BAD_REQUEST


@fz.FUZZ
@given(obj=fz.request_like)
async def test_request_shaped_maps(target: Target, obj: dict[str, Any]) -> None:
    """Unknown and missing tags, random fields, wrong types, NaN/inf, huge values."""
    try:
        payload = fz.pack(obj)
    except (OverflowError, msgspec.EncodeError):
        return  # not representable in msgpack: cannot be sent at all
    await check(target, payload, "request-shaped maps (tags, fields, types)")


@fz.FUZZ
@given(data=st.data())
async def test_mutated_valid_requests(target: Target, data: Any) -> None:
    """A real request with one field dropped, retyped, set to NaN/inf/huge, or added."""
    base = data.draw(st.sampled_from(target.bases()))
    obj = fz.mutate(base, data)
    try:
        payload = fz.pack(obj)
    except (OverflowError, msgspec.EncodeError):
        return
    reply = await check(target, payload, "mutated valid requests")
    assert reply.id in (0, obj.get("id", 0)) or not isinstance(obj.get("id"), int)


@fz.FUZZ
@given(frames=st.lists(st.binary(max_size=64), min_size=0, max_size=24))
async def test_many_part_frames(target: Target, frames: list[bytes]) -> None:
    """Any number of frames (the DEALER adds nothing; the ROUTER adds the identity)."""
    before = target.sim_total()
    sock = target.c.sock
    if not frames:
        frames = [b""]
    await sock.send_multipart(frames)
    async with asyncio.timeout(10):
        reply = wire.decode_reply((await sock.recv_multipart())[-1])
    assert isinstance(reply, Error) or len(frames) <= wire.MAX_REQUEST_FRAMES
    if isinstance(reply, Error) and reply.code in MALFORMED:
        assert target.sim_total() == before
    fz.TRIED["many-part and empty frames"] += 1
    kind = reply.code if isinstance(reply, Error) else type(reply).__struct_config__.tag
    fz.REPLIES.setdefault("many-part and empty frames", Counter())[str(kind)] += 1
    await target.healthy()


async def test_oversized_frames(target: Target) -> None:
    """Just above the request limit: ``too_large`` unread. Above the ROUTER's
    MAXMSGSIZE: ZeroMQ cuts that peer off; nobody else notices."""
    limit = wire.MAX_REQUEST_BYTES
    for size in (limit + 1, 2 * limit, 4 * limit):
        reply = await check(target, b"\x81" + b"x" * (size - 1), "oversized frames")
        assert isinstance(reply, Error) and reply.code == ErrorCode.TOO_LARGE
    huge = target.r.client()
    await huge.send_raw(b"\x00" * (4 * limit + 1))  # beyond MAXMSGSIZE: dropped by ZeroMQ
    with pytest.raises(TimeoutError):
        await huge.recv_reply(timeout=0.5)
    fz.TRIED["oversized frames"] += 1
    await target.healthy()


FLOOD = """
import sys, threading, zmq
endpoint, per, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
payloads = [bytes.fromhex(x) for x in sys.argv[4:]]
ctx = zmq.Context()
answered = [0] * n
def run(i):
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)
    def drain(flags):
        try:
            while True:
                s.recv_multipart(flags)
                answered[i] += 1
        except zmq.Again:
            pass
    for k in range(per):
        s.send_multipart([b"", payloads[k % len(payloads)]])
        drain(zmq.NOBLOCK)
    s.setsockopt(zmq.RCVTIMEO, 2000)
    drain(0)
    s.close()
threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
print("GO", flush=True)
for t in threads: t.start()
for t in threads: t.join()
print(sum(answered), flush=True)
ctx.term()
"""


async def test_flood(target: Target) -> None:
    """20,000 requests (a third malformed) from 4 sockets of another process at once:
    every one is answered or its reply counted as dropped (and logged) by the hub, a
    status request from this process meanwhile is answered, nothing reaches the
    Gateway."""
    per, n_clients = 5000, 4
    good = wire.encode(GetStatus(id=1))
    bad = [b"\xc1", fz.pack({"type": "subscribe", "id": 7}), fz.pack({"type": "nope", "id": 8})]
    payloads = [bad[0], good, bad[1], good, bad[2], good]
    rpc = target.r.hub.rpc
    assert rpc is not None
    dropped0, before = rpc.dropped, target.sim_total()
    loop = asyncio.get_running_loop()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FLOOD, target.r.hub.rpc_endpoint, str(per), str(n_clients),
        *(p.hex() for p in payloads), stdout=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert (await asyncio.wait_for(proc.stdout.readline(), 20)).strip() == b"GO"
        started = loop.time()
        await wait_until(lambda: rpc.requests > 2000, 20.0, "flood under way")
        latencies = []
        for _ in range(5):
            t0 = loop.time()
            reply = await target.c.request(GetStatus(id=target.c.next_id()), timeout=5.0)
            latencies.append(loop.time() - t0)
            assert isinstance(reply, StatusReply)
        answered = int(await asyncio.wait_for(proc.stdout.readline(), 60))
        took = loop.time() - started
        await asyncio.wait_for(proc.wait(), 10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    dropped = rpc.dropped - dropped0
    total = per * n_clients
    # Every request answered, or its reply counted and logged as dropped by the hub
    # (the client's queue was full): none vanishes unaccounted.
    assert answered + dropped == total, (answered, dropped)
    assert target.sim_total() == before
    Figures("bad input: flood (4 sockets, 1/2 malformed)", attempts=total,
            recoveries=answered + dropped,
            notes={"requests_per_s": round(total / took), "replies_dropped_logged": dropped,
                   "status_during_flood_ms_max": round(max(latencies) * 1000, 1)}).save()
    print(f"flood: {total} requests in {took:.2f}s ({dropped} replies dropped); "
          f"status during it max {max(latencies) * 1000:.1f} ms")
    await target.healthy()
