"""``ibhub run`` at a low open-file limit, flooded with idle connections on every port.

The hub runs as its own process with RLIMIT_NOFILE 256 (soft and hard, so it cannot
raise it) against the simulated Gateway in this process. Idle TCP connections to
the front door and both ZeroMQ ports, more than the limit in all, are held while the
Gateway restarts: the upstream must reconnect, /health must answer, and once the
idle connections are gone a ZeroMQ client and a TWS API script are served.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from collections.abc import AsyncIterator

import aiohttp
import pytest
import zmq

from ibhub.protocol import GetStatus, StatusReply
from ibhub.sim import SimGateway
from tests.e2e.conftest import RawClient
from tests.e2e.frontdoor_support import quiet_ib_insync
from tests.e2e.limits_support import idle_flood
from tests.helpers import wait_until
from tests.ibclient import IB, Stock

NOFILE = 256
CHILD = (
    "import resource, sys\n"
    f"resource.setrlimit(resource.RLIMIT_NOFILE, ({NOFILE}, {NOFILE}))\n"
    "from ibhub.cli import main\n"
    "sys.argv[0] = 'ibhub'\n"
    "main()\n"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def hub_process(hub_sim: SimGateway, ipc_dir: str) -> AsyncIterator[dict[str, str]]:
    http = _free_port()
    env = dict(
        os.environ,
        IBHUB_CONNECT_TIMEOUT="1",
        IBHUB_RECONNECT_BACKOFF_INITIAL="0.05",
        IBHUB_RECONNECT_BACKOFF_MAX="0.4",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        "run",
        "--gateway",
        f"127.0.0.1:{hub_sim.port}",
        "--tws-port",
        "0",
        "--pub",
        "tcp://127.0.0.1:0",
        "--rpc",
        "tcp://127.0.0.1:0",
        "--http-port",
        str(http),
        "--data-dir",
        ipc_dir,
        "--log-level",
        "WARNING",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=ipc_dir,
    )
    info = {"http": f"http://127.0.0.1:{http}"}
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        while not any(line.strip().startswith("state") for line in lines):
            raw = await asyncio.wait_for(proc.stdout.readline(), 20.0)
            if not raw:
                assert proc.stderr is not None
                err = (await proc.stderr.read()).decode()
                raise AssertionError(f"ibhub run exited early: {lines} {err}")
            lines.append(raw.decode())
        for line in lines:
            key, _, value = line.strip().partition(" ")
            if key in ("pub", "rpc", "tws"):
                info[key] = value.strip().split(" ")[0]
        assert "state CONNECTED" in "".join(lines), lines
        yield info
    finally:
        if proc.returncode is None:
            proc.terminate()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10.0):
                    await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        assert proc.stderr is not None
        err = (await proc.stderr.read()).decode()
        print(err[-4000:])
        assert f"open-file limit {NOFILE} is low" in err


async def _health(url: str) -> dict[str, object]:
    async with aiohttp.ClientSession() as session:
        async with asyncio.timeout(3.0):
            async with session.get(url + "/health") as resp:
                return dict(await resp.json())


def _port_of(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


async def test_idle_flood_at_a_low_fd_limit_leaves_the_hub_serving(
    hub_process: dict[str, str], hub_sim: SimGateway, zctx
) -> None:
    quiet_ib_insync()
    tws = int(hub_process["tws"].rsplit(":", 1)[1])
    http = _port_of(hub_process["http"])
    with (
        idle_flood(tws, 300) as door_flood,
        idle_flood(_port_of(hub_process["rpc"]), 150),
        idle_flood(_port_of(hub_process["pub"]), 150),
        idle_flood(http, 100),
    ):
        assert len(door_flood) > 0
        await hub_sim.restart(0.3)
        # the hub's session is back while every listener is flooded
        await wait_until(
            lambda: any(s.client_id == 0 for s in hub_sim.started_sessions()),
            15.0,
            "the hub reconnected upstream during the flood",
        )
    # the session at the simulator comes before the hub's CONNECTED (start-up sync), and
    # the HTTP listener may still count flood connections it has not seen close (503)
    doc: dict[str, object] = {}
    async with asyncio.timeout(15.0):
        while doc.get("status") in (None, "down"):
            with contextlib.suppress(aiohttp.ContentTypeError):
                doc = await _health(hub_process["http"])
            if doc.get("status") in (None, "down"):
                await asyncio.sleep(0.05)
    assert doc["status"] != "down" and doc["reconnect_count"] == 1, doc
    conns = doc["connections"]
    assert isinstance(conns, dict)
    for name in ("tws", "http"):
        stats = conns["listeners"][name]
        assert stats["refused"] > 0 and stats["accepted"] > stats["max"], conns
    assert conns["open_files_max"] == NOFILE
    # the flood is gone: a ZeroMQ client and a TWS API script are served
    client = RawClient(zctx, hub_process["rpc"], zmq.DEALER)
    try:
        reply = await client.request(GetStatus(id=client.next_id()), timeout=10.0)
    finally:
        await client.close()
    assert isinstance(reply, StatusReply) and reply.connected
    ib = IB()
    try:
        await ib.connectAsync("127.0.0.1", tws, clientId=3, timeout=10.0)
        c = Stock("AAPL", "SMART", "USD")
        assert await ib.qualifyContractsAsync(c) == [c]
    finally:
        ib.disconnect()
