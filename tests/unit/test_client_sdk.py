"""AsyncHub against a fake hub over real ZeroMQ ipc:// sockets.

Covers request/reply matching, timeouts, connect retries, heartbeats, re-hello
after an unknown lease, gap detection and recovery, late-joiner snapshots, the
connect/disconnect handlers, typed errors and robustness to junk events.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator

import pytest

from ibhub.client import AsyncHub, HubError, HubTimeout, Tick
from ibhub.protocol import (
    Error,
    ErrorCode,
    GetSnapshot,
    Goodbye,
    Heartbeat,
    Hello,
    HubStatus,
    Subscribe,
    Subscribed,
    Unsubscribe,
    UpstreamState,
)
from tests.unit.client_fakehub import FakeHub, wait_until

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def ipc_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="ibhub-sdk-")  # short: ipc paths are limited to ~100 bytes
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def endpoints(ipc_dir: str) -> tuple[str, str]:
    return f"ipc://{ipc_dir}/rpc", f"ipc://{ipc_dir}/pub"


@pytest.fixture
async def fake(endpoints: tuple[str, str]) -> AsyncIterator[FakeHub]:
    rpc, pub = endpoints
    async with FakeHub(rpc, pub) as hub:
        yield hub


@pytest.fixture
async def client(fake: FakeHub) -> AsyncIterator[AsyncHub]:
    async with AsyncHub(pub=fake.pub, rpc=fake.rpc, name="t", request_timeout=2.0) as hub:
        yield hub


async def test_hello_lease_and_goodbye(fake: FakeHub) -> None:
    hub = AsyncHub(pub=fake.pub, rpc=fake.rpc, name="script-a")
    await hub.connect()
    assert hub.lease == "L1" and hub.client_id == 1
    assert hub.heartbeat_interval == fake.heartbeat_interval
    assert hub.is_connected()
    hello = fake.of_type(Hello)[0]
    assert isinstance(hello, Hello) and hello.name == "script-a"
    await hub.close()
    assert fake.goodbyes == ["L1"]
    assert not hub.is_connected()
    await hub.close()  # idempotent


async def test_endpoints_come_from_the_environment(
    fake: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IBHUB_RPC", fake.rpc)
    monkeypatch.setenv("IBHUB_PUB", fake.pub)
    async with AsyncHub() as hub:
        assert (hub.rpc_endpoint, hub.pub_endpoint) == (fake.rpc, fake.pub)
        assert hub.lease is not None


async def test_replies_are_matched_by_id_even_out_of_order(client: AsyncHub, fake: FakeHub) -> None:
    fake.delay["contract_details"] = 0.3  # answered after the status request below
    details = asyncio.ensure_future(client.contract_details("MSFT"))
    status = await client.status()
    assert not details.done()
    assert status.state == UpstreamState.CONNECTED
    infos = await details
    assert [i.symbol for i in infos] == ["MSFT"]
    # many concurrent requests each get their own reply
    results = await asyncio.gather(*(client.contract_details(s) for s in "ABCDEFGH"))
    assert [r[0].symbol for r in results] == list("ABCDEFGH")


async def test_timeout_raises_and_a_late_reply_does_not_hurt(
    client: AsyncHub, fake: FakeHub
) -> None:
    fake.delay_once["contract_details"] = 0.5
    client._channel().timeout = 0.2
    with pytest.raises(HubTimeout) as info:
        await client.contract_details("AAPL")
    assert info.value.code == ErrorCode.TIMEOUT
    assert "contract_details" in str(info.value)
    await wait_until(lambda: not fake.delay_once, what="the late reply to go out")
    client._channel().timeout = 2.0
    assert (await client.contract_details("IBM"))[0].symbol == "IBM"


async def test_errors_are_typed(client: AsyncHub, fake: FakeHub) -> None:
    fake.refuse["contract_details"] = Error(
        id=0, code=ErrorCode.UNKNOWN_CONTRACT, message="no such contract NOPE", ib_code=200
    )
    with pytest.raises(HubError) as info:
        await client.contract_details("NOPE")
    assert (info.value.code, info.value.ib_code) == (ErrorCode.UNKNOWN_CONTRACT, 200)
    assert "NOPE" in info.value.message


async def test_requests_round_trip(client: AsyncHub) -> None:
    bars = await client.historical_bars("AAPL", duration="2 D", bar_size="1 hour")
    assert [b.time for b in bars] == [0, 3600]
    raw = await client.lease_client_id("direct-script")
    assert raw == 101
    await client.release_client_id(raw)
    with pytest.raises(TypeError):
        await client.contract_details("AAPL", no_such_field=1)


async def test_connect_gives_up_after_retries(endpoints: tuple[str, str]) -> None:
    rpc, pub = endpoints
    hub = AsyncHub(pub=pub, rpc=rpc, connect_timeout=0.2, connect_retries=2)
    with pytest.raises(HubTimeout) as info:
        await hub.connect()
    assert "after 2 attempt(s)" in str(info.value) and rpc in str(info.value)
    assert hub.lease is None


async def test_connect_retries_until_the_hub_appears(endpoints: tuple[str, str]) -> None:
    rpc, pub = endpoints
    hub = AsyncHub(pub=pub, rpc=rpc, connect_timeout=0.3, connect_retries=20)
    connecting = asyncio.ensure_future(hub.connect())
    await asyncio.sleep(0.5)  # the hub is deliberately late: several attempts time out
    assert not connecting.done()
    async with FakeHub(rpc, pub) as late:
        await connecting
        assert hub.lease in late.leases
        # hellos that timed out while nobody listened were never queued (IMMEDIATE), and
        # one answered too late is given back: the hub ends up with exactly our lease
        assert len(late.of_type(Hello)) <= 2
        await wait_until(lambda: list(late.leases) == [hub.lease], what="no orphan lease")
        await hub.close()


async def test_an_orphan_lease_from_a_timed_out_hello_is_given_back(fake: FakeHub) -> None:
    fake.delay_once["hello"] = 0.5
    async with AsyncHub(pub=fake.pub, rpc=fake.rpc, connect_timeout=0.3, connect_retries=3) as hub:
        await wait_until(lambda: len(fake.goodbyes) == 1, what="goodbye for the orphan lease")
        assert len(fake.of_type(Hello)) == 2
        assert fake.goodbyes[0] != hub.lease
        assert list(fake.leases) == [hub.lease]


async def test_heartbeats_follow_the_hubs_interval(client: AsyncHub, fake: FakeHub) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    await wait_until(lambda: len(fake.of_type(Heartbeat)) >= 5, what="5 heartbeats")
    elapsed = loop.time() - start
    assert 0.6 <= elapsed < 3.0, elapsed  # 5 x 0.2 s, with slack for a busy machine
    assert {hb.lease for hb in fake.of_type(Heartbeat)  # type: ignore[attr-defined]
            } == {client.lease}


async def test_unknown_lease_triggers_rehello_and_resubscribe(
    client: AsyncHub, fake: FakeHub
) -> None:
    sub = await client.subscribe("AAPL")
    await fake.wait_subscribed("tick.AAPL")
    fake.tick("AAPL", 100.0)
    assert (await sub.get(2)).seq == 1
    fake.forget_leases()  # as if the lease expired
    await wait_until(lambda: client.rehellos == 1, what="re-hello")
    assert client.lease == "L2"
    subs = fake.of_type(Subscribe)
    assert [s.lease for s in subs] == ["L1", "L2"]  # type: ignore[attr-defined]
    fake.tick("AAPL", 101.0)
    assert (await sub.get(2)).seq == 2  # the same subscription object keeps flowing
    assert client.is_connected()


async def test_a_request_that_meets_an_unknown_lease_renews_and_retries(
    client: AsyncHub, fake: FakeHub
) -> None:
    fake.forget_leases()
    sub = await client.subscribe("MSFT")
    assert sub.topic == "tick.MSFT"
    assert client.lease == "L2" and client.rehellos == 1


async def test_gap_is_detected_and_recovered_from_a_snapshot(
    client: AsyncHub, fake: FakeHub
) -> None:
    sub = await client.subscribe("AAPL")
    await fake.wait_subscribed("tick.AAPL")
    fake.tick("AAPL", 1.0)
    fake.tick("AAPL", 2.0)
    fake.tick("AAPL", 3.0, send=False)  # dropped at the PUB's high-water mark
    fake.tick("AAPL", 4.0, send=False)
    snapshots_before = len(fake.of_type(GetSnapshot))
    fake.tick("AAPL", 5.0)
    seqs = [(await sub.get(2)).seq for _ in range(3)]
    assert seqs == [1, 2, 5]
    assert sub.gaps == 1 and client.stats["gaps"] == 1
    assert len(fake.of_type(GetSnapshot)) == snapshots_before + 1
    fake.tick("AAPL", 6.0)
    assert (await sub.get(2)).seq == 6


async def test_lost_last_event_is_recovered_from_the_snapshot(
    client: AsyncHub, fake: FakeHub
) -> None:
    sub = await client.subscribe("AAPL")
    await fake.wait_subscribed("tick.AAPL")
    fake.tick("AAPL", 1.0)
    fake.tick("AAPL", 2.0, send=False)
    fake.tick("AAPL", 3.0, send=False)
    fake.tick("AAPL", 4.0)
    fake.tick("AAPL", 5.0, send=False)  # the newest value is only in the hub's cache
    fake.delay_once["snapshot"] = 0.1  # ... until the snapshot answers
    got = [(await sub.get(2)).seq for _ in range(3)]
    assert got == [1, 4, 5]
    assert isinstance(sub.latest, Tick) and sub.latest.last == 5.0


async def test_late_joiner_starts_from_the_snapshot(client: AsyncHub, fake: FakeHub) -> None:
    for price in (10.0, 11.0, 12.0):
        fake.tick("AAPL", price, send=False)  # published before this client subscribed
    sub = await client.subscribe("AAPL")
    first = await sub.get(2)
    assert isinstance(first, Tick) and (first.seq, first.last) == (3, 12.0)
    await fake.wait_subscribed("tick.AAPL")
    fake.tick("AAPL", 13.0)
    assert (await sub.get(2)).seq == 4
    assert sub.gaps == 0


async def test_second_local_subscription_gets_the_latest_value_and_shares_the_topic(
    client: AsyncHub, fake: FakeHub
) -> None:
    first = await client.subscribe("AAPL")
    await fake.wait_subscribed("tick.AAPL")
    fake.tick("AAPL", 1.0)
    await first.get(2)
    seen: list[int] = []
    second = await client.subscribe("AAPL", callback=lambda ev: seen.append(ev.seq))
    assert seen == [1]
    fake.tick("AAPL", 2.0)
    assert (await first.get(2)).seq == 2
    await wait_until(lambda: seen == [1, 2])
    await first.close()
    assert fake.of_type(Unsubscribe) == []  # second still uses the topic
    await second.close()
    await wait_until(lambda: len(fake.of_type(Unsubscribe)) == 1)
    with pytest.raises(StopAsyncIteration):
        await first.get(1)


async def test_async_iteration_ends_when_the_subscription_closes(
    client: AsyncHub, fake: FakeHub
) -> None:
    sub = await client.subscribe("AAPL")
    await fake.wait_subscribed("tick.AAPL")
    for price in (1.0, 2.0, 3.0):
        fake.tick("AAPL", price)
    got = []
    async for event in sub:
        got.append(event.seq)
        if len(got) == 3:
            await sub.close()
    assert got == [1, 2, 3]


async def test_prefix_neighbours_are_filtered(client: AsyncHub, fake: FakeHub) -> None:
    sub = await client.subscribe("AAPL")
    await fake.wait_subscribed("tick.AAPL")
    fake.tick("AAPLX", 1.0)  # matches the ZeroMQ prefix tick.AAPL, but is another topic
    fake.tick("AAPL", 2.0)
    event = await sub.get(2)
    assert isinstance(event, Tick) and event.symbol == "AAPL"


async def test_junk_never_stops_the_receive_loop(
    client: AsyncHub, fake: FakeHub, caplog: pytest.LogCaptureFixture
) -> None:
    sub = await client.subscribe("AAPL")
    await fake.wait_subscribed("tick.AAPL")
    with caplog.at_level(logging.WARNING, logger="ibhub.client"):
        fake.send_raw([b"tick.AAPL", b"\xc1 not msgpack"])
        fake.send_raw([b"tick.AAPL", b"a", b"b"])
        fake.send_raw([b"tick.AAPL", b'\x93\xa5bogus\x01\x02'])  # unknown event tag
        fake.status_event(UpstreamState.CONNECTED)  # fine, but...
        fake.publish(  # ...a status event on a tick topic is unexpected
            "tick.AAPL",
            lambda seq, ts: HubStatus(seq=seq, ts=ts, state="CONNECTED", kind="alert", code=0,
                                      message="", reconnect_count=0),
        )
        fake.tick("AAPL", 3.0)
        event = await sub.get(2)
    assert isinstance(event, Tick) and event.last == 3.0
    assert client.stats["undecodable"] == 3
    assert "unexpected HubStatus event on tick.AAPL" in caplog.text


async def test_callback_exceptions_are_logged_not_fatal(client: AsyncHub, fake: FakeHub) -> None:
    calls: list[int] = []

    def bad(event: object) -> None:
        calls.append(1)
        raise RuntimeError("script bug")

    await client.subscribe("AAPL", callback=bad)
    await fake.wait_subscribed("tick.AAPL")
    fake.tick("AAPL", 1.0)
    fake.tick("AAPL", 2.0)
    await wait_until(lambda: len(calls) == 2)


async def test_disconnect_and_connect_handlers_fire_once_per_outage(
    client: AsyncHub, fake: FakeHub
) -> None:
    down: list[HubStatus] = []
    up: list[HubStatus] = []
    client.add_disconnect_handler(down.append)
    client.add_connect_handler(up.append)
    await fake.wait_subscribed("hub.status")
    # a Gateway restart: several non-connected states, one outage
    for state in ("RECONNECTING", "CONNECTING", "RECONNECTING", "CONNECTING", "CONNECTED"):
        fake.status_event(state)
    await wait_until(lambda: len(up) == 1)
    assert [e.state for e in down] == ["RECONNECTING"]
    assert client.is_connected()
    # IB connectivity lost (1100) and restored with data lost (1101): socket stayed up
    fake.status_event("CONNECTED", kind="ib", code=1100)
    await wait_until(lambda: len(down) == 2)
    assert not client.is_connected()
    fake.status_event("CONNECTED", kind="ib", code=2104)  # farm OK: not a restore
    fake.status_event("CONNECTED", kind="ib", code=1101)
    await wait_until(lambda: len(up) == 2)
    assert len(down) == 2
    assert client.stats["disconnects"] == 2 and client.stats["connects"] == 2


async def test_async_handlers_are_awaited(client: AsyncHub, fake: FakeHub) -> None:
    done = asyncio.Event()

    async def on_down(status: HubStatus) -> None:
        await asyncio.sleep(0)
        done.set()

    client.add_disconnect_handler(on_down)
    await fake.wait_subscribed("hub.status")
    fake.status_event("RECONNECTING")
    await asyncio.wait_for(done.wait(), 2)


async def test_initial_state_is_a_baseline_not_a_transition(fake: FakeHub) -> None:
    fake.state = UpstreamState.RECONNECTING
    async with AsyncHub(pub=fake.pub, rpc=fake.rpc) as hub:
        ups: list[HubStatus] = []
        hub.add_connect_handler(ups.append)
        assert not hub.is_connected() and hub.upstream_state == "RECONNECTING"
        await fake.wait_subscribed("hub.status")
        fake.status_event("CONNECTED")
        await wait_until(lambda: len(ups) == 1)
        assert hub.is_connected()


async def test_hub_restart_resets_sequences_and_resubscribes(endpoints: tuple[str, str]) -> None:
    rpc, pub = endpoints
    first = await FakeHub(rpc, pub).start()
    hub = AsyncHub(pub=pub, rpc=rpc, request_timeout=1.0)
    try:
        await hub.connect()
        sub = await hub.subscribe("AAPL")
        await first.wait_subscribed("tick.AAPL")
        for price in range(5):
            first.tick("AAPL", float(price))
        assert [(await sub.get(2)).seq for _ in range(5)] == [1, 2, 3, 4, 5]
        await first.stop()
        second = await FakeHub(rpc, pub).start()  # same endpoints, fresh state
        try:
            await wait_until(lambda: hub.rehellos == 1, timeout=10, what="re-hello")
            await wait_until(lambda: any(isinstance(r, Subscribe) for r in second.requests))
            await second.wait_subscribed("tick.AAPL")
            second.tick("AAPL", 50.0)
            second.tick("AAPL", 51.0)
            got = [await sub.get(2) for _ in range(2)]
            assert [e.seq for e in got] == [1, 2]  # the new hub counts from 1 again
            assert isinstance(got[1], Tick) and got[1].last == 51.0
        finally:
            await hub.close()
            await second.stop()
    finally:
        await hub.close()


async def test_goodbye_is_sent_on_context_exit_even_after_errors(fake: FakeHub) -> None:
    with pytest.raises(RuntimeError):
        async with AsyncHub(pub=fake.pub, rpc=fake.rpc):
            raise RuntimeError("script failed")
    assert len(fake.of_type(Goodbye)) == 1


async def test_resubscribe_is_retried_while_the_hub_cannot_serve_it(
    client: AsyncHub, fake: FakeHub
) -> None:
    sub = await client.subscribe("AAPL")
    fake.refuse["subscribe"] = Error(id=0, code=ErrorCode.UPSTREAM_DOWN, message="gateway down")
    fake.forget_leases()  # e.g. the hub restarted while the Gateway is down
    await wait_until(lambda: client.rehellos == 1, what="re-hello")
    await wait_until(lambda: len(fake.of_type(Subscribe)) >= 4, what="resubscribe retries")
    assert not sub.closed
    def accepted() -> int:
        return sum(isinstance(r, Subscribed) for r in fake.replies)

    assert accepted() == 1  # the original subscribe only
    del fake.refuse["subscribe"]  # the Gateway is back
    await wait_until(lambda: accepted() == 2, what="a retry the hub accepts")
    await fake.wait_subscribed("tick.AAPL")
    fake.tick("AAPL", 7.0)
    event = await sub.get(2)
    assert isinstance(event, Tick) and event.last == 7.0
    retries = len(fake.of_type(Subscribe))
    beats = len(fake.of_type(Heartbeat))
    await wait_until(lambda: len(fake.of_type(Heartbeat)) >= beats + 3, what="3 more heartbeats")
    assert len(fake.of_type(Subscribe)) == retries  # no more retries once it succeeded


async def test_a_subscription_the_hub_can_no_longer_resolve_ends_with_its_error(
    client: AsyncHub, fake: FakeHub
) -> None:
    sub = await client.subscribe("AAPL")
    fake.refuse["subscribe"] = Error(id=0, code=ErrorCode.UNKNOWN_CONTRACT, message="delisted")
    fake.forget_leases()
    with pytest.raises(StopAsyncIteration):
        while True:
            await sub.get(5)
    assert sub.closed and sub.error is not None and sub.error.code == ErrorCode.UNKNOWN_CONTRACT
    assert client.stats["subscriptions"] == 0


async def test_a_burst_longer_than_a_drain_batch_arrives_complete_and_in_order(
    client: AsyncHub, fake: FakeHub
) -> None:
    from ibhub.client.stream import DRAIN_BATCH

    seen: list[int] = []
    sub = await client.subscribe("AAPL", callback=lambda ev: seen.append(ev.seq))
    await fake.wait_subscribed("tick.AAPL")
    total = DRAIN_BATCH * 5 + 7
    for i in range(total):
        fake.tick("AAPL", float(i))
    await wait_until(lambda: len(seen) == total, 10, f"{total} ticks")
    assert seen == list(range(1, total + 1))
    assert sub.gaps == 0


async def test_requests_wait_for_the_upstream_while_the_hub_says_upstream_down(
    fake: FakeHub,
) -> None:
    fake.state = UpstreamState.CONNECTING  # e.g. the script started together with the hub
    down = Error(id=0, code=ErrorCode.UPSTREAM_DOWN, message="upstream is CONNECTING")
    fake.refuse["subscribe"] = down
    async with AsyncHub(pub=fake.pub, rpc=fake.rpc, request_timeout=5.0) as client:
        assert not client.is_connected()
        pending = asyncio.ensure_future(client.subscribe("AAPL"))
        await wait_until(lambda: len(fake.of_type(Subscribe)) == 1, what="the first attempt")
        waiting = asyncio.ensure_future(client.wait_connected(5))
        await fake.wait_subscribed("hub.status")
        del fake.refuse["subscribe"]
        fake.status_event(UpstreamState.CONNECTED)
        sub = await asyncio.wait_for(pending, 5)
        assert sub.topic == "tick.AAPL" and await waiting
        assert len(fake.of_type(Subscribe)) == 2


async def test_upstream_down_is_raised_after_the_request_timeout(fake: FakeHub) -> None:
    fake.state = UpstreamState.RECONNECTING
    fake.refuse["contract_details"] = Error(id=0, code=ErrorCode.UPSTREAM_DOWN, message="down")
    async with AsyncHub(pub=fake.pub, rpc=fake.rpc, request_timeout=0.3) as client:
        with pytest.raises(HubError) as info:
            await client.contract_details("AAPL")
        assert info.value.code == ErrorCode.UPSTREAM_DOWN
        assert await client.wait_connected(0.05) is False


async def test_upstream_baseline_comes_from_the_status_topic_in_sequence(fake: FakeHub) -> None:
    """A status *reply* may be older than a status event already applied (two sockets,
    no order between them); the baseline is the topic's last value, ordered by seq."""
    fake.status_event(UpstreamState.CONNECTING)
    fake.status_event(UpstreamState.CONNECTED)  # the hub's last hub.status value, seq 2
    fake.state = UpstreamState.CONNECTING  # what a stale status reply would say
    downs: list[HubStatus] = []
    async with AsyncHub(pub=fake.pub, rpc=fake.rpc) as client:
        client.add_disconnect_handler(downs.append)
        assert client.upstream_state == UpstreamState.CONNECTED and client.is_connected()
        assert not [r for r in fake.requests if type(r).__name__ == "GetStatus"]
        await fake.wait_subscribed("hub.status")
        fake.status_event(UpstreamState.RECONNECTING)  # seq 3: a real change
        await wait_until(lambda: len(downs) == 1)
        assert downs[0].seq == 3


async def test_ib_errors_for_this_lease_reach_handlers_and_the_subscription(
    client: AsyncHub, fake: FakeHub
) -> None:
    from ibhub.protocol import ErrorEvent

    sub = await client.subscribe("AAPL")
    seen: list[ErrorEvent] = []
    client.add_error_handler(seen.append)
    topic = f"error.{client.lease}"
    await fake.wait_subscribed(topic)
    fake.publish(topic, lambda seq, ts: ErrorEvent(
        seq=seq, ts=ts, lease=str(client.lease), ib_code=354,
        message="Requested market data is not subscribed", explanation="", topic="tick.AAPL",
    ))
    await wait_until(lambda: len(seen) == 1)
    assert seen[0].ib_code == 354
    assert sub.last_error is not None and sub.last_error.ib_code == 354
    fake.publish("error.someone-else", lambda seq, ts: ErrorEvent(
        seq=seq, ts=ts, lease="x", ib_code=1, message="", explanation=""))
    fake.publish(topic, lambda seq, ts: ErrorEvent(
        seq=seq, ts=ts, lease=str(client.lease), ib_code=200, message="", explanation=""))
    await wait_until(lambda: len(seen) == 2)
    assert [e.ib_code for e in seen] == [354, 200]  # not the other lease's error
