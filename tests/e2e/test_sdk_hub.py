"""The SDK end to end: SimGateway over TCP, HubServer over ZeroMQ ipc, real clients.

Fixtures (``hub_sim``, ``make_hub``, ``hub``) come from tests/e2e/conftest.py: a
seeded simulator ticking at 40 Hz per instrument and a hub with shrunk timings
(heartbeat 0.1 s, back-off 0.05..0.4 s).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
from pathlib import Path

import pytest

from ibhub.client import AsyncHub, Hub, HubError, Subscription, Tick
from ibhub.hub.server import HubServer
from ibhub.protocol import ErrorCode, HubStatus
from ibhub.sim import SimGateway
from tests.e2e.conftest import HubFactory
from tests.helpers import wait_until

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]


def sdk(hub: HubServer, name: str) -> AsyncHub:
    return AsyncHub(pub=hub.pub_endpoint, rpc=hub.rpc_endpoint, name=name, request_timeout=5.0)


def mkt_lines(sim: SimGateway, symbol: str = "AAPL") -> int:
    return sum(1 for s in sim.market_data_subscriptions() if s.symbol == symbol and s.kind == "mkt")


async def collect(sub: Subscription, n: int, timeout: float = 5.0) -> list[Tick]:
    ticks = [await sub.get(timeout) for _ in range(n)]
    assert all(isinstance(t, Tick) for t in ticks)
    return ticks


async def test_two_clients_share_one_upstream_line_and_see_the_same_ticks(
    hub: HubServer, hub_sim: SimGateway
) -> None:
    async with sdk(hub, "a") as a, sdk(hub, "b") as b:
        sub_a = await a.subscribe("AAPL")
        sub_b = await b.subscribe("AAPL")
        assert sub_a.topic == sub_b.topic == "tick.AAPL"
        assert mkt_lines(hub_sim) == 1
        ticks_a = await collect(sub_a, 40)
        await wait_until(lambda: sub_b.latest is not None and sub_b.latest.seq >= ticks_a[-1].seq,
                         5, "b to catch up with a")
        ticks_b = []
        while not sub_b._queue.empty():
            ticks_b.append(await sub_b.get(1))
        by_seq_b = {t.seq: t for t in ticks_b}
        common = [t for t in ticks_a if t.seq in by_seq_b]
        assert len(common) >= 30, (len(common), [t.seq for t in ticks_a])
        for tick in common:
            assert by_seq_b[tick.seq] == tick  # the very same event, field for field
        for ticks in (ticks_a, ticks_b):
            seqs = [t.seq for t in ticks]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
        assert sub_a.gaps == 0 and sub_b.gaps == 0
        assert all(isinstance(t, Tick) and t.symbol == "AAPL" for t in common)

        await sub_a.close()  # one leaves: the upstream line stays for b
        seq_before = sub_b.latest.seq if sub_b.latest else 0
        await wait_until(lambda: sub_b.latest is not None and sub_b.latest.seq > seq_before + 5,
                         5, "ticks to keep flowing to b")
        assert mkt_lines(hub_sim) == 1
        status = await b.status()
        assert [(s.topic, s.subscribers) for s in status.subscriptions] == [("tick.AAPL", 1)]
        await sub_b.close()  # both left: the hub cancels upstream
        await wait_until(lambda: mkt_lines(hub_sim) == 0, 5, "the upstream line to be cancelled")


async def test_late_joiner_starts_from_the_snapshot(hub: HubServer) -> None:
    async with sdk(hub, "early") as early, sdk(hub, "late") as late:
        first = await early.subscribe("MSFT")
        await collect(first, 10)
        seen_by_early = first.latest.seq if first.latest else 0
        second = await late.subscribe("MSFT")
        opening = await second.get(5)
        assert opening.seq >= seen_by_early > 1  # the hub's last value, not seq 1
        following = await second.get(5)
        assert following.seq == opening.seq + 1
        assert second.gaps == 0


async def test_requests_through_the_sdk(hub: HubServer) -> None:
    async with sdk(hub, "req") as client:
        details = await client.contract_details("AAPL")
        assert details and details[0].con_id > 0 and details[0].symbol == "AAPL"
        bars = await client.historical_bars("AAPL", duration="1 D", bar_size="1 hour")
        assert bars and all(b.high >= b.low for b in bars)
        raw = await client.lease_client_id("direct")
        assert raw not in (0, client.client_id)
        assert raw in (await client.status()).raw_client_ids
        await client.release_client_id(raw)
        assert raw not in (await client.status()).raw_client_ids
        assert await client.contract_details("NOSUCHSYMBOLX") == []
        with pytest.raises(HubError) as info:
            await client.subscribe("NOSUCHSYMBOLX")
        assert info.value.code in (ErrorCode.UNKNOWN_CONTRACT, ErrorCode.IB_ERROR)
        assert "NOSUCHSYMBOLX" in str(info.value)


async def test_gateway_restart_ticks_resume_and_handlers_fire_once(
    hub: HubServer, hub_sim: SimGateway
) -> None:
    async with sdk(hub, "restart") as client:
        downs: list[HubStatus] = []
        ups: list[HubStatus] = []
        client.add_disconnect_handler(downs.append)
        client.add_connect_handler(ups.append)
        sub = await client.subscribe("AAPL")
        await collect(sub, 5)
        await hub_sim.restart(0.5)
        await wait_until(lambda: len(downs) == 1, 5, "the disconnect handler")
        await wait_until(lambda: len(ups) == 1, 10, "the connect handler")
        before = sub.received
        await wait_until(lambda: sub.received >= before + 10, 10, "ticks flowing again")
        assert (len(downs), len(ups)) == (1, 1)
        assert client.is_connected() and not sub.closed
        assert mkt_lines(hub_sim) == 1


async def test_connectivity_lost_1101_ticks_resume_and_handlers_fire_once(
    hub: HubServer, hub_sim: SimGateway
) -> None:
    async with sdk(hub, "1101") as client:
        downs: list[HubStatus] = []
        ups: list[HubStatus] = []
        client.add_disconnect_handler(downs.append)
        client.add_connect_handler(ups.append)
        sub = await client.subscribe("AAPL")
        await collect(sub, 5)
        await hub_sim.connectivity_lost("data_lost", after=0.3)
        await wait_until(lambda: len(ups) == 1, 10, "the connect handler")
        before = sub.received
        await wait_until(lambda: sub.received >= before + 10, 10, "ticks flowing again")
        assert (len(downs), len(ups)) == (1, 1)
        assert downs[0].code == 1100
        assert client.is_connected()


async def test_hub_restart_is_transparent_to_subscribers(
    make_hub: HubFactory, ipc_dir: str
) -> None:
    pub, rpc = f"ipc://{ipc_dir}/pub-r", f"ipc://{ipc_dir}/rpc-r"
    endpoints = {"pub": pub, "rpc": rpc}
    first = await make_hub(**endpoints)
    client = AsyncHub(pub, rpc, request_timeout=2.0)
    await client.connect()
    try:
        sub = await client.subscribe("AAPL")
        await collect(sub, 5)
        lease = client.lease
        await first.stop()
        await make_hub(**endpoints)  # a new hub process on the same endpoints
        await wait_until(lambda: client.rehellos == 1, 10, "re-hello to the new hub")
        assert client.lease != lease
        before = sub.received
        await wait_until(lambda: sub.received >= before + 10, 10, "ticks from the new hub")
    finally:
        await client.close()


async def test_blocking_hub_from_a_plain_thread(hub: HubServer) -> None:
    result: dict[str, object] = {}

    def script() -> None:
        with Hub(pub=hub.pub_endpoint, rpc=hub.rpc_endpoint, name="plain") as h:
            result["connected"] = h.is_connected()
            with h.subscribe("AAPL") as sub:
                seqs = []
                for tick in sub:
                    seqs.append(tick.seq)
                    if len(seqs) == 10:
                        break
            result["seqs"] = seqs
            result["thread"] = threading.current_thread().name

    await asyncio.wait_for(asyncio.to_thread(script), 30)
    seqs = result["seqs"]
    assert isinstance(seqs, list) and seqs == list(range(seqs[0], seqs[0] + 10))
    assert result["thread"] != "ibhub-sdk"


async def _run(*args: str, env_extra: dict[str, str] | None = None, timeout: float = 30) -> str:
    env = {**os.environ, **(env_extra or {})}
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=REPO
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"{args} did not finish within {timeout} s") from None
    assert proc.returncode == 0, f"{args} exited {proc.returncode}: {err.decode()}"
    return out.decode()


async def test_raw_subscriber_example_decodes_ticks(hub: HubServer) -> None:
    """The pyzmq + msgspec example holds its own subscription (hello, subscribe, heartbeat)."""
    out = await _run(
        sys.executable, "clients/raw_subscriber.py", "--pub", hub.pub_endpoint,
        "--rpc", hub.rpc_endpoint, "--subscribe", "AAPL", "--count", "20", "tick.AAPL",
    )
    lines = [line for line in out.splitlines() if line.startswith("tick.AAPL #")]
    assert len(lines) == 20, out
    assert all(" AAPL bid " in line for line in lines)
    seqs = [int(line.split()[1][1:]) for line in lines]
    assert seqs == sorted(seqs)


async def test_raw_subscriber_alongside_an_sdk_client(hub: HubServer) -> None:
    async with sdk(hub, "holder") as holder:
        await holder.subscribe("IBM")
        out = await _run(
            sys.executable, "clients/raw_subscriber.py", "--count", "5", "tick.IBM",
            env_extra={"IBHUB_PUB": hub.pub_endpoint, "IBHUB_RPC": hub.rpc_endpoint},
        )
    assert len([line for line in out.splitlines() if " IBM bid " in line]) == 5, out


async def test_cli_status_json_and_tail(hub: HubServer) -> None:
    env = {"IBHUB_PUB": hub.pub_endpoint, "IBHUB_RPC": hub.rpc_endpoint}
    cli = [sys.executable, "-c", "from ibhub.cli import main; main()"]
    async with sdk(hub, "cli-holder") as holder:
        await holder.subscribe("AAPL")
        status = json.loads(await _run(*cli, "status", "--json", env_extra=env))
        assert status["connected"] is True and status["state"] == "CONNECTED"
        assert [s["topic"] for s in status["subscriptions"]] == ["tick.AAPL"]
        assert any(lease["name"] == "cli-holder" for lease in status["leases"])
        human = await _run(*cli, "status", "--rpc", hub.rpc_endpoint)
        assert "upstream CONNECTED" in human and "tick.AAPL" in human
        tail = await _run(*cli, "tail", "tick.AAPL", "--count", "5", "--timeout", "20",
                          env_extra=env)
        lines = tail.splitlines()
        assert len(lines) == 5 and all(" tick.AAPL #" in line and " AAPL bid " in line
                                        for line in lines), tail
        tail_json = await _run(*cli, "tail", "--json", "-n", "3", "-s", "MSFT", "tick.MSFT",
                               "--timeout", "20", env_extra=env)
        events = [json.loads(line) for line in tail_json.splitlines()]
        assert [e["topic"] for e in events] == ["tick.MSFT"] * 3
        assert all(e["type"] == "tick" and e["symbol"] == "MSFT" for e in events)
        leased = (await _run(*cli, "lease", "--name", "cli-test", env_extra=env)).strip()
        assert int(leased) in (await holder.status()).raw_client_ids
        # Without the raw id's token, run as the hub's user: the operator token file.
        ops_env = {**env, "IBHUB_OPERATOR_TOKEN_FILE": str(hub.settings.operator_token_path)}
        await _run(*cli, "lease", "--release", leased, env_extra=ops_env)
        assert int(leased) not in (await holder.status()).raw_client_ids


@pytest.mark.parametrize("mode", ["blocking", "asyncio"])
async def test_example_script_prints_ticks(hub: HubServer, mode: str) -> None:
    extra = ["--asyncio"] if mode == "asyncio" else []
    out = await _run(
        sys.executable, "clients/example_ticks.py", "AAPL", "MSFT", "--count", "5",
        "--pub", hub.pub_endpoint, "--rpc", hub.rpc_endpoint, *extra,
    )
    for symbol in ("AAPL", "MSFT"):
        assert len([x for x in out.splitlines() if x.startswith(f"{symbol:<6} #")]) == 5, out


async def test_a_stalled_script_loses_its_lease_and_the_sdk_recovers_it(
    hub: HubServer, hub_sim: SimGateway
) -> None:
    """A callback that blocks the SDK thread past the lease timeout (0.3 s here): the hub
    expires the lease and releases its line; the SDK re-hellos and resubscribes."""
    stalled = threading.Event()
    seqs: list[int] = []

    def on_tick(tick: object) -> None:
        assert isinstance(tick, Tick)
        seqs.append(tick.seq)
        if len(seqs) == 5 and not stalled.is_set():
            stalled.set()
            threading.Event().wait(1.0)  # the stall under test: no heartbeat for 1 s

    def script() -> tuple[int, str | None, str | None]:
        with Hub(pub=hub.pub_endpoint, rpc=hub.rpc_endpoint, name="stall") as h:
            first_lease = h.lease
            h.subscribe("AAPL", callback=on_tick)
            poll = threading.Event()  # never set: wait(t) is a bounded poll interval
            for _ in range(200):  # up to 10 s, polling the SDK's public state
                if h.stats["rehellos"] >= 1 and len(seqs) >= 20:
                    break
                poll.wait(0.05)
            return h.stats["rehellos"], first_lease, h.lease

    rehellos, first, now = await asyncio.wait_for(asyncio.to_thread(script), 30)
    assert rehellos == 1 and first != now
    assert len(seqs) >= 20
    await wait_until(lambda: mkt_lines(hub_sim) == 0, 5, "the line released after goodbye")


async def test_a_script_started_with_the_hub_waits_for_the_upstream(make_hub: HubFactory) -> None:
    hub = await make_hub(wait_connected=False)  # upstream still CONNECTING
    async with sdk(hub, "early-bird") as client:
        sub = await client.subscribe("AAPL")  # retried until the upstream is up
        assert await client.wait_connected(5)
        tick = await sub.get(5)
        assert isinstance(tick, Tick) and tick.symbol == "AAPL"


async def test_real_time_bars_through_the_sdk(hub: HubServer) -> None:
    """5-second bars: the first one closes at the next 5 s boundary of the clock."""
    from ibhub.client import Bar

    async with sdk(hub, "bars") as client:
        sub = await client.subscribe("AAPL", kind="bars")
        assert sub.topic == "bar.AAPL"
        bar = await sub.get(12)
        assert isinstance(bar, Bar) and bar.symbol == "AAPL" and bar.time % 5 == 0
        assert bar.low <= bar.open <= bar.high and bar.low <= bar.close <= bar.high
