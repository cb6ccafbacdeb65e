"""Many leases on every instrument: still one upstream line each, released exactly once."""

from __future__ import annotations

import asyncio

from ibhub.hub.server import HubServer
from ibhub.protocol import GetStatus, Goodbye, Ok, StatusReply
from ibhub.sim import SimGateway
from tests.e2e.conftest import wait_until

LEASES = 50


async def test_fifty_leases_on_every_instrument(make_hub, hub_sim: SimGateway, clients,
                                                listeners) -> None:
    hub: HubServer = await make_hub(heartbeat_interval=0.5)
    # every stock, ETF, FX pair and future, and 10 options (the chains would need more
    # than the hub's 100 lines)
    options = [i for i in hub_sim.universe if i.sec_type == "OPT"][:10]
    instruments = [i for i in hub_sim.universe if i.sec_type not in ("OPT", "FOP")] + options
    cons = [c for c in (clients(hub.rpc_endpoint) for _ in range(LEASES))]
    welcomes = await asyncio.gather(*(c.hello(f"script-{i}") for i, c in enumerate(cons)))
    assert len({w.client_id for w in welcomes}) == LEASES

    async def subscribe_all(c) -> list[str]:
        return [(await c.subscribe("", con_id=i.con_id, sec_type=i.sec_type)).topic
                for i in instruments]

    topics = await asyncio.gather(*(subscribe_all(c) for c in cons))
    assert all(t == topics[0] for t in topics)  # every lease got the same topic names
    assert len(set(topics[0])) == len(instruments)
    # ib_insync paces requests (45/s), so the last lines may still be on their way.
    want = sorted(i.con_id for i in instruments)
    await wait_until(lambda: sorted(s.con_id for s in hub_sim.market_data_subscriptions())
                     == want, 10.0, "one upstream line per instrument")

    status = await cons[0].request(GetStatus(id=cons[0].next_id()))
    assert isinstance(status, StatusReply)
    assert status.lines_used == len(instruments)
    assert {s.subscribers for s in status.subscriptions} == {LEASES}
    assert len(status.leases) == LEASES
    assert {le.subscriptions for le in status.leases} == {len(instruments)}

    lst = listeners(hub.pub_endpoint, "tick.")
    await wait_until(lambda: len(lst.events) >= len(instruments) // 2, 10.0,
                     "ticks on many topics")

    # Half say goodbye: nothing changes upstream.
    replies = await asyncio.gather(*(c.request(Goodbye(id=c.next_id(), lease=c.lease))
                                     for c in cons[: LEASES // 2]))
    assert all(isinstance(r, Ok) for r in replies)
    assert len(hub_sim.market_data_subscriptions()) == len(instruments)
    # The rest go silent and expire: every line is cancelled, once.
    cancels_before = hub_sim.request_counts[2]
    await asyncio.gather(*(c.stop_heartbeat() for c in cons[LEASES // 2:]))
    await wait_until(lambda: not hub_sim.market_data_subscriptions(), 10.0, "all cancelled")
    assert hub_sim.request_counts[2] - cancels_before == len(instruments)
    assert hub.subs.lines_used == 0 and len(hub.leases) == 0
