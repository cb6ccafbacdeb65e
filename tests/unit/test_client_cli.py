"""ibhub status / tail / lease against the fake hub (click's CliRunner in a thread,
because each command runs its own event loop)."""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator

import msgspec
import pytest
from click.testing import CliRunner, Result

from ibhub.cli import main
from ibhub.cli.client import format_event, format_status
from ibhub.protocol import (
    Bar,
    ErrorEvent,
    HubStatus,
    LeaseClientId,
    ReleaseClientId,
    StatusReply,
    Tick,
)
from tests.unit.client_fakehub import FakeHub

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def ipc_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="ibhub-cli-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def fake(ipc_dir: str) -> AsyncIterator[FakeHub]:
    async with FakeHub(f"ipc://{ipc_dir}/rpc", f"ipc://{ipc_dir}/pub") as hub:
        yield hub


async def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    runner = CliRunner()
    return await asyncio.to_thread(runner.invoke, main, list(args), env=env)


async def test_status_json_and_human(fake: FakeHub) -> None:
    result = await invoke("status", "--json", "--rpc", fake.rpc)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["state"] == "CONNECTED" and data["lines_max"] == 100
    result = await invoke("status", env={"IBHUB_RPC": fake.rpc})
    assert result.exit_code == 0, result.output
    assert "upstream CONNECTED" in result.output and "lines: 0/100" in result.output


async def test_status_without_a_hub_fails_clearly(ipc_dir: str) -> None:
    result = await invoke("status", "--rpc", f"ipc://{ipc_dir}/none", "--timeout", "0.2")
    assert result.exit_code == 1
    assert "no reply to 'status'" in result.output and "ibhub run" in result.output


async def test_lease_and_release(fake: FakeHub) -> None:
    result = await invoke("lease", "--name", "direct", "--ttl", "30", "--rpc", fake.rpc)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "101"
    request = fake.of_type(LeaseClientId)[0]
    assert isinstance(request, LeaseClientId) and (request.name, request.ttl) == ("direct", 30.0)
    result = await invoke("lease", "--release", "101", "--token", "T", "--rpc", fake.rpc)
    assert result.exit_code == 0, result.output
    release = fake.of_type(ReleaseClientId)[0]
    assert isinstance(release, ReleaseClientId) and (release.client_id, release.token) == (101, "T")


async def test_tail_prints_events_and_stops_after_count(fake: FakeHub) -> None:
    tail = asyncio.ensure_future(invoke("tail", "tick.AAPL", "hub.status", "--count", "3",
                                        "--pub", fake.pub, "--timeout", "10"))
    await fake.wait_subscribed("hub.status")
    await fake.wait_subscribed("tick.AAPL")
    fake.tick("AAPL", 190.5)
    fake.tick("AAPL", 190.6, send=False)  # a gap tail reports
    fake.tick("AAPL", 190.7)
    fake.status_event("RECONNECTING")
    result = await asyncio.wait_for(tail, 10)
    assert result.exit_code == 0, result.output
    lines = [x for x in result.output.splitlines() if not x.startswith(("tailing", "--"))]
    assert " tick.AAPL #1 AAPL bid 190.49" in lines[0]
    assert " tick.AAPL #3 " in lines[1]
    assert "hub.status #1 RECONNECTING state" in lines[2]
    assert "gap on tick.AAPL: 1 event(s) lost" in result.output


async def test_tail_json_subscribes_through_the_hub(fake: FakeHub) -> None:
    tail = asyncio.ensure_future(invoke("tail", "--json", "-n", "1", "-s", "MSFT", "tick.MSFT",
                                        "--pub", fake.pub, "--rpc", fake.rpc, "--timeout", "10"))
    # two SUB sockets want tick.MSFT: the SDK's (for -s MSFT) and the tail's own
    await fake.wait_subscribed("tick.MSFT", sockets=2)
    fake.tick("MSFT", 400.0)
    result = await asyncio.wait_for(tail, 10)
    assert result.exit_code == 0, result.output
    event = json.loads(result.output.splitlines()[-1])
    assert event["topic"] == "tick.MSFT" and event["type"] == "tick" and event["last"] == 400.0
    assert event["volume"] is None  # NaN becomes null in JSON
    assert fake.goodbyes  # the tail's own lease was given back


def test_format_event_covers_every_event_kind() -> None:
    nan = math.nan
    tick = Tick(seq=1, ts=0, con_id=1, symbol="A", bid=1.25, ask=nan, last=2.0, bid_size=100.0,
                ask_size=nan, last_size=nan, volume=nan)
    assert "bid 1.25 x 100  ask - x -" in format_event("tick.A", tick)
    bar = Bar(seq=2, ts=0, con_id=1, symbol="A", time=60, open=1.0, high=2.0, low=0.5,
              close=1.5, volume=10.0, wap=1.2, count=3)
    assert "bar 60 o 1 h 2 l 0.5 c 1.5 v 10" in format_event("bar.A", bar)
    status = HubStatus(seq=3, ts=0, state="CONNECTED", kind="ib", code=1101, message="back",
                       reconnect_count=1)
    assert "CONNECTED ib 1101: back" in format_event("hub.status", status)
    error = ErrorEvent(seq=4, ts=0, lease="L", ib_code=200, message="no such", explanation="")
    assert "IB error 200: no such" in format_event("error.L", error)


async def test_tail_timeout_without_enough_events_fails(fake: FakeHub) -> None:
    result = await invoke("tail", "tick.NONE", "-n", "2", "--timeout", "0.3", "--pub", fake.pub)
    assert result.exit_code == 1
    assert "only 0 of 2 event(s) within 0.3 s" in result.output
    result = await invoke("tail", "--timeout", "0.2", "--pub", fake.pub)  # a bounded tail
    assert result.exit_code == 0, result.output


def test_status_shows_the_order_delay_and_back_pressure() -> None:
    reply = StatusReply(
        id=1, connected=True, state="CONNECTED", host="127.0.0.1", port=4002, client_id=0,
        server_version=176, accounts=[], uptime_seconds=1.0, reconnect_count=0,
        connected_at=None, last_tick_at=None, leases=[], subscriptions=[], lines_used=0,
        lines_max=100, expected_order_delay=1.234, max_order_delay=2.0, upstream_queued=50,
        upstream_queue_max=1000, upstream_queue_per_lease=50, busy_refusals=7,
        order_wait_max=1.9,
    )  # fmt: skip
    assert ("order delay: 1.23 s expected now (limit 2 s), longest wait 1.90 s; waiting "
            "50/1000 (per lease 50); refused busy 7") in format_status(reply, "ipc://x")
    older = msgspec.structs.replace(reply, upstream_queue_max=0)  # a hub without the fields
    assert "order delay" not in format_status(older, "ipc://x")
