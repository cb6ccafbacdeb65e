"""The SDK's ``tick_bundle`` mode end to end: ticks through ``bundle.tick``, one message
per Gateway read, against a real hub (ZeroMQ ipc) and the simulator (TCP)."""

from __future__ import annotations

import pytest

from ibhub.client import AsyncHub, Subscription, Tick
from ibhub.hub.server import HubServer
from tests.e2e.conftest import HubFactory
from tests.helpers import wait_until

pytestmark = pytest.mark.timeout(60)


def sdk(pub: str, rpc: str, name: str, bundle: bool) -> AsyncHub:
    return AsyncHub(pub=pub, rpc=rpc, name=name, request_timeout=5.0, tick_bundle=bundle)


def seqs_in_order(sub: Subscription, ticks: list[Tick]) -> None:
    seqs = [t.seq for t in ticks]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), (sub.topic, seqs)


async def test_bundled_and_per_topic_clients_see_the_same_ticks(hub: HubServer) -> None:
    got: dict[tuple[str, str], list[Tick]] = {}

    def recorder(who: str, symbol: str):
        return lambda tick: got.setdefault((who, symbol), []).append(tick)

    ep = (hub.pub_endpoint, hub.rpc_endpoint)
    async with sdk(*ep, "bundled", True) as bundled, sdk(*ep, "plain", False) as plain, \
            sdk(*ep, "other", False) as other:
        subs = {}
        for who, client in (("bundled", bundled), ("plain", plain)):
            for symbol in ("AAPL", "MSFT"):
                subs[who, symbol] = await client.subscribe(symbol,
                                                           callback=recorder(who, symbol))
        ibm = await other.subscribe("IBM")  # streamed by the hub, not wanted by `bundled`
        await wait_until(lambda: all(len(got.get(k, [])) >= 60 for k in subs), 15,
                         "60 ticks on every subscription")
        await wait_until(lambda: ibm.received >= 5, 5, "IBM ticks")
        for symbol in ("AAPL", "MSFT"):
            b, p = got["bundled", symbol], got["plain", symbol]
            seqs_in_order(subs["bundled", symbol], b)
            seqs_in_order(subs["plain", symbol], p)
            assert all(t.symbol == symbol for t in b)
            by_seq = {t.seq: t for t in p}
            common = [t for t in b if t.seq in by_seq]
            assert len(common) >= 40
            assert all(by_seq[t.seq] == t for t in common)  # the same events, field for field
            assert subs["bundled", symbol].gaps == 0
        # Only its own topics reach the bundled client's subscriptions.
        assert {k for k in got if k[0] == "bundled"} == {("bundled", "AAPL"), ("bundled", "MSFT")}
        assert bundled.stats["undecodable"] == 0

        # Closing a subscription stops its ticks; the other one keeps flowing.
        await subs["bundled", "MSFT"].close()
        msft_seen = len(got["bundled", "MSFT"])
        aapl_seen = len(got["bundled", "AAPL"])
        await wait_until(lambda: len(got["bundled", "AAPL"]) >= aapl_seen + 20, 5,
                         "AAPL ticks after MSFT closed")
        assert len(got["bundled", "MSFT"]) == msft_seen


async def test_a_restarted_hub_is_transparent_to_a_bundled_client(
    make_hub: HubFactory, ipc_dir: str
) -> None:
    endpoints = {"pub": f"ipc://{ipc_dir}/pub-b", "rpc": f"ipc://{ipc_dir}/rpc-b"}
    first = await make_hub(**endpoints)
    client = sdk(endpoints["pub"], endpoints["rpc"], "bundled", True)
    await client.connect()
    try:
        sub = await client.subscribe("AAPL")
        for _ in range(5):
            assert isinstance(await sub.get(5.0), Tick)
        await first.stop()
        await make_hub(**endpoints)  # sequence numbers (bundles' and ticks') restart at 1
        await wait_until(lambda: client.rehellos == 1, 10, "re-hello to the new hub")
        before = sub.received
        await wait_until(lambda: sub.received >= before + 10, 10, "ticks from the new hub")
    finally:
        await client.close()
