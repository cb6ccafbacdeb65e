"""SDK batch delivery end to end (client/batch.py): ``subscribe_batches`` and the
``listen`` tap against a real hub (ZeroMQ ipc) on the simulator (TCP)."""

from __future__ import annotations

import asyncio

import pytest

from ibhub.client import AsyncHub, Batch, Hub, Tick
from ibhub.hub.server import HubServer
from tests.helpers import wait_until

pytestmark = pytest.mark.timeout(60)


def sdk(hub: HubServer, name: str) -> AsyncHub:
    return AsyncHub(pub=hub.pub_endpoint, rpc=hub.rpc_endpoint, name=name, request_timeout=5.0)


def contiguous(batches: list[Batch]) -> list[int]:
    seqs = [e.seq for b in batches for e in b.events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    return seqs


async def test_batches_carry_the_same_ticks_in_order_and_a_tap_sees_every_topic(
    hub: HubServer,
) -> None:
    plain: list[Tick] = []
    batches: list[Batch] = []
    tapped: dict[str, list[Batch]] = {}
    async with sdk(hub, "plain") as one, sdk(hub, "batched") as two, sdk(hub, "tap") as three:
        tap = await three.listen("tick.", lambda b: tapped.setdefault(b.topic, []).append(b))
        await one.subscribe("AAPL", callback=plain.append)
        sub = await two.subscribe_batches("AAPL", callback=batches.append)
        queued = await two.subscribe_batches("MSFT")  # read with async for
        await wait_until(lambda: sum(map(len, batches)) >= 60 and len(plain) >= 60, 15,
                         "60 AAPL ticks each way")
        seqs = contiguous(batches)
        assert all(isinstance(e, Tick) and e.symbol == "AAPL" for b in batches for e in b.events)
        assert all(b.topic == sub.topic and b.missed == 0 for b in batches)
        assert any(len(b) > 1 for b in batches) or len(batches) == len(seqs)
        by_seq = {t.seq: t for t in plain}
        common = [e for b in batches for e in b.events if e.seq in by_seq]
        assert len(common) >= 40 and all(by_seq[e.seq] == e for e in common)
        assert sub.received == len(seqs) and sub.gaps == 0 and sub.latest == batches[-1].events[-1]

        got = []
        async for batch in queued:
            got.append(batch)
            if sum(map(len, got)) >= 10:
                break
        contiguous(got)
        assert {e.symbol for b in got for e in b.events} == {"MSFT"}

        # The tap saw both topics, whoever subscribed them, in order, nothing missed.
        await wait_until(lambda: len(tapped) == 2, 5, "tap on both topics")
        for topic, tb in tapped.items():
            assert topic.startswith("tick.")
            contiguous(tb[1:]) if len(tb) > 1 else None
            assert all(b.missed == 0 and not b.restarted for b in tb)
        assert tap.missed == 0 and tap.received >= 60

        # Seeded with an older position, a new tap reports what it did not see.
        aapl = sub.topic
        seen = tapped[aapl][-1].last_seq
        late: list[Batch] = []
        await three.listen("tick.AAPL", late.append, since={aapl: seen - 5})
        await wait_until(lambda: bool(late), 5, "a batch on the seeded tap")
        assert late[0].missed == late[0].first_seq - (seen - 5) - 1 >= 5

        await sub.close()
        n = len(batches)
        tap.close()
        count = tap.received
        await wait_until(lambda: len(plain) >= len(seqs) + 20, 5, "more plain ticks")
        assert len(batches) == n and tap.received == count
        with pytest.raises(StopAsyncIteration):
            await tap.get(1.0)
        with pytest.raises(ValueError, match="prefix"):
            await three.listen("")


async def test_blocking_hub_batches(hub: HubServer) -> None:
    def script() -> list[Batch]:
        with Hub(pub=hub.pub_endpoint, rpc=hub.rpc_endpoint, name="blocking-batches") as h:
            sub = h.subscribe_batches("IBM")
            got = []
            for batch in sub:
                got.append(batch)
                if sum(map(len, got)) >= 5:
                    break
            sub.close()
            return got

    got = await asyncio.wait_for(asyncio.to_thread(script), 20)
    contiguous(got)
    assert {e.symbol for b in got for e in b.events} == {"IBM"}
