"""``ibhub doctor`` against the simulated Gateway's fault modes and a hub endpoint.

Every diagnosis is produced by a real peer on a real socket: the simulator (healthy,
stalled handshake, held client id, closed port), a live ib_insync connection that
holds a client id, a port with nothing on it, and a ZeroMQ ROUTER that answers
like a hub. The CLI runs through click's CliRunner in a worker thread (it calls
``asyncio.run`` itself) and once as a real subprocess.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import pytest
import zmq
import zmq.asyncio
from click.testing import CliRunner, Result

from ibhub import protocol, wire
from ibhub.cli import doctor
from ibhub.cli.doctor import Diagnosis
from ibhub.cli.ops import doctor_cmd
from ibhub.sim import SimConfig, SimGateway

pytestmark = pytest.mark.timeout(30)

HOST = "127.0.0.1"


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.01)


def free_port() -> int:
    """A port nothing listens on: bound then released (the kernel will not reuse it soon)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _can_list_connections() -> bool:
    import psutil

    try:
        psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:
        return False
    return True


@pytest.fixture
async def sim() -> AsyncIterator[SimGateway]:
    async with SimGateway(SimConfig(seed=7, tick_rate=0.0)) as gw:
        yield gw


async def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[Result, Any]:
    """Invoke ``ibhub doctor`` in a worker thread; returns (result, parsed JSON or None)."""
    runner = CliRunner()
    result = await asyncio.to_thread(runner.invoke, doctor_cmd, list(args), env=env)
    parsed = json.loads(result.output) if "--json" in args and result.output else None
    return result, parsed


# --------------------------------------------------------------------------- probe stages


async def test_healthy_reports_version_accounts_farms_and_mode(sim: SimGateway) -> None:
    r = await doctor.probe_gateway(HOST, sim.port, timeout=2.0, settle=0.2)
    assert r.diagnosis is Diagnosis.HEALTHY, r.detail
    assert r.exit_code == 0
    assert r.server_version == 176
    assert r.accounts == ["DU1234567"]
    assert r.mode == "paper"
    assert r.next_order_id is not None and r.next_order_id > 0
    assert r.connection_time
    assert {2104, 2106, 2158} <= {m.code for m in r.messages}
    assert all(m.category == "info" for m in r.messages if m.code in (2104, 2106, 2158))
    assert set(r.stage_ms) >= {"tcp", "handshake", "start"}
    # the probe leaves nothing behind on the Gateway
    await wait_until(lambda: doctor.PROBE_CLIENT_ID not in sim.connected_client_ids())


async def test_live_account_is_reported_live() -> None:
    async with SimGateway(SimConfig(accounts=("U7654321",), tick_rate=0.0)) as gw:
        r = await doctor.probe_gateway(HOST, gw.port, timeout=2.0, settle=0.05)
    assert r.diagnosis is Diagnosis.HEALTHY
    assert r.mode == "live"


async def test_nothing_listening() -> None:
    port = free_port()
    r = await doctor.probe_gateway(HOST, port, timeout=1.0)
    assert r.diagnosis is Diagnosis.NOT_LISTENING
    assert r.exit_code == 10
    assert "refused" in r.detail
    assert r.server_version is None


async def test_closed_sim_port_is_nothing_listening(sim: SimGateway) -> None:
    await sim.close_port()
    r = await doctor.probe_gateway(HOST, sim.port, timeout=1.0)
    assert r.diagnosis is Diagnosis.NOT_LISTENING
    await sim.open_port()
    r = await doctor.probe_gateway(HOST, sim.port, timeout=2.0, settle=0.05)
    assert r.diagnosis is Diagnosis.HEALTHY


async def test_stalled_handshake_names_the_settings(sim: SimGateway) -> None:
    sim.stall_handshakes(True)
    t0 = time.monotonic()
    r = await doctor.probe_gateway(HOST, sim.port, timeout=0.4)
    elapsed = time.monotonic() - t0
    assert r.diagnosis is Diagnosis.HANDSHAKE_STALLED
    assert r.exit_code == 11
    assert 0.35 <= elapsed < 2.0  # its own stage timeout, not some library default
    hints = " ".join(r.hints)
    for setting in ("Enable ActiveX and Socket Clients", "Trusted IPs", "Socket port"):
        assert setting in hints
    assert "Accept incoming connection" in hints and "hidden" in hints
    sim.stall_handshakes(False)
    r = await doctor.probe_gateway(HOST, sim.port, timeout=2.0, settle=0.05)
    assert r.diagnosis is Diagnosis.HEALTHY


async def test_half_open_socket_holding_the_id_gives_326(sim: SimGateway) -> None:
    sim.hold_client_id(42, 30)
    r = await doctor.probe_gateway(HOST, sim.port, client_id=42, timeout=2.0)
    assert r.diagnosis is Diagnosis.CLIENT_ID_IN_USE
    assert r.exit_code == 12
    assert r.server_version == 176  # the handshake itself worked
    assert [m.code for m in r.messages] == [326]
    assert "ibhub lease" in " ".join(r.hints)
    # the sim's "half-open socket" is no local process, and the probe leaves itself out
    assert not any(h.startswith("Local processes with a connection") for h in r.hints)
    # another id on the same Gateway is fine
    r = await doctor.probe_gateway(HOST, sim.port, client_id=43, timeout=2.0, settle=0.05)
    assert r.diagnosis is Diagnosis.HEALTHY


async def test_live_ib_insync_connection_holding_the_id_gives_326(sim: SimGateway) -> None:
    from tests.ibclient import IB

    ib = IB()
    await ib.connectAsync(HOST, sim.port, clientId=5, timeout=5, readonly=True)
    try:
        r = await doctor.probe_gateway(HOST, sim.port, client_id=5, timeout=2.0)
        assert r.diagnosis is Diagnosis.CLIENT_ID_IN_USE, r.detail
        assert ib.isConnected()  # the probe did not disturb the real client
        if _can_list_connections():  # the holder is named: this very test process
            (peers,) = [h for h in r.hints if h.startswith("Local processes with a connection")]
            assert f"pid {os.getpid()} " in peers
            assert peers.count("pid ") == 1  # ib_insync's socket only, not the probe's
        r = await doctor.probe_gateway(HOST, sim.port, client_id=6, timeout=2.0, settle=0.05)
        assert r.diagnosis is Diagnosis.HEALTHY
    finally:
        ib.disconnect()


async def test_peer_closing_during_handshake_is_refused() -> None:
    """What TWS does to an untrusted address: accept, then close without a word."""

    async def slam(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(64)
        writer.close()

    server = await asyncio.start_server(slam, HOST, 0)
    try:
        port = server.sockets[0].getsockname()[1]
        r = await doctor.probe_gateway(HOST, port, timeout=2.0)
    finally:
        server.close()
        await server.wait_closed()
    assert r.diagnosis is Diagnosis.HANDSHAKE_REFUSED
    assert r.exit_code == 13
    assert "Trusted IPs" in " ".join(r.hints)


async def test_overall_code_prefers_healthy_then_most_informative(sim: SimGateway) -> None:
    closed = free_port()
    reports = await doctor.probe_ports(HOST, [closed, sim.port], timeout=1.0, settle=0.05)
    assert [r.diagnosis for r in reports] == [Diagnosis.NOT_LISTENING, Diagnosis.HEALTHY]
    assert doctor.overall_gateway_code(reports) == 0
    sim.stall_handshakes(True)
    reports = await doctor.probe_ports(HOST, [closed, sim.port], timeout=0.3)
    assert doctor.overall_gateway_code(reports) == 11


# --------------------------------------------------------------------------- CLI


async def test_cli_json_shape_and_exit_code_healthy(sim: SimGateway) -> None:
    result, out = await run_cli("--port", str(sim.port), "--timeout", "2", "--json")
    assert result.exit_code == 0, result.output
    assert set(out) == {"host", "client_id", "timeout", "exit_code", "ports", "hub"}
    assert out["exit_code"] == 0 and out["hub"] is None
    (port,) = out["ports"]
    assert set(port) >= {
        "host", "port", "client_id", "diagnosis", "exit_code", "detail", "hints", "product",
        "expected_mode", "server_version", "connection_time", "accounts", "mode",
        "next_order_id", "messages", "stage_ms",
    }  # fmt: skip
    assert port["diagnosis"] == "healthy" and port["accounts"] == ["DU1234567"]
    assert port["client_id"] == doctor.PROBE_CLIENT_ID
    assert {"code", "message", "category"} == set(port["messages"][0])


@pytest.mark.parametrize(
    ("fault", "expected"),
    [("none", 0), ("closed", 10), ("stall", 11), ("hold", 12)],
)
async def test_cli_exit_code_per_diagnosis(sim: SimGateway, fault: str, expected: int) -> None:
    port = sim.port
    if fault == "closed":
        port = free_port()
    elif fault == "stall":
        sim.stall_handshakes(True)
    elif fault == "hold":
        sim.hold_client_id(77, 30)
    result, out = await run_cli(
        "--port", str(port), "--client-id", "77", "--timeout", "0.5", "--json"
    )
    assert result.exit_code == expected, result.output
    assert out["exit_code"] == expected
    assert out["ports"][0]["exit_code"] == expected


async def test_cli_default_ports_include_ib_port(sim: SimGateway) -> None:
    result, out = await run_cli("--timeout", "0.5", "--json", env={"IB_PORT": str(sim.port)})
    probed = [p["port"] for p in out["ports"]]
    assert probed == [7497, 7496, 4002, 4001, sim.port]
    assert out["ports"][-1]["diagnosis"] == "healthy"
    assert result.exit_code == 0  # any healthy port is enough


async def test_cli_human_output(sim: SimGateway) -> None:
    sim.hold_client_id(3, 30)
    result, _ = await run_cli("--port", str(sim.port), "--client-id", "3", "--timeout", "1")
    assert result.exit_code == 12
    assert "[CLIENT ID IN USE]" in result.output
    assert "326" in result.output
    assert "Result: NOT healthy (exit 12" in result.output


async def test_cli_as_subprocess(sim: SimGateway) -> None:
    """The installed entry point, start to finish, in its own process."""
    closed = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from ibhub.cli import main; main()", "doctor",
        "--port", str(closed), "--port", str(sim.port), "--timeout", "2", "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, stderr.decode()
    out = json.loads(stdout)
    assert [p["diagnosis"] for p in out["ports"]] == ["not_listening", "healthy"]


async def test_cli_rejects_no_gateway_without_hub() -> None:
    result, _ = await run_cli("--no-gateway")
    assert result.exit_code == 2
    assert "--hub" in result.output


# --------------------------------------------------------------------------- hub check


def _status(connected: bool, state: str) -> protocol.StatusReply:
    return protocol.StatusReply(
        id=1, connected=connected, state=state, host=HOST, port=4002, client_id=0,
        server_version=176 if connected else 0, accounts=["DU1234567"] if connected else [],
        uptime_seconds=12.5, reconnect_count=2, connected_at=None, last_tick_at=None,
        leases=[], subscriptions=[], lines_used=0, lines_max=100,
    )  # fmt: skip


@pytest.fixture
async def fake_hub() -> AsyncIterator[tuple[str, Callable[[Any], None]]]:
    """A ROUTER that answers each request with the reply set by the test."""
    ctx = zmq.asyncio.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port(f"tcp://{HOST}")
    answer: dict[str, Any] = {}

    async def serve() -> None:
        while True:
            frames = await router.recv_multipart()
            envelope, payload = wire.split_envelope(frames)
            req = wire.decode_request(payload)
            reply = answer["reply"]
            if isinstance(reply, bytes):
                data = reply
            else:
                data = wire.encode(msgspec.structs.replace(reply, id=req.id))
            await router.send_multipart([*envelope, data])

    task = asyncio.create_task(serve())
    try:
        yield f"tcp://{HOST}:{port}", lambda r: answer.__setitem__("reply", r)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        router.close(linger=0)
        ctx.term()


async def test_hub_not_answering() -> None:
    endpoint = f"tcp://{HOST}:{free_port()}"
    t0 = time.monotonic()
    h = await doctor.check_hub(endpoint, timeout=0.3)
    assert time.monotonic() - t0 < 2.0
    assert h.diagnosis is Diagnosis.HUB_NOT_ANSWERING
    assert h.exit_code == 20


async def test_cli_hub_only_not_answering_exits_20() -> None:
    endpoint = f"tcp://{HOST}:{free_port()}"
    result, out = await run_cli("--no-gateway", "--hub", endpoint, "--timeout", "0.3", "--json")
    assert result.exit_code == 20, result.output
    assert out["ports"] == [] and out["hub"]["diagnosis"] == "hub_not_answering"


async def test_hub_states(fake_hub: tuple[str, Callable[[Any], None]]) -> None:
    endpoint, set_reply = fake_hub
    set_reply(_status(True, protocol.UpstreamState.CONNECTED))
    h = await doctor.check_hub(endpoint, timeout=2.0)
    assert h.diagnosis is Diagnosis.HUB_HEALTHY and h.exit_code == 0
    assert h.status is not None and h.status["accounts"] == ["DU1234567"]

    set_reply(_status(False, protocol.UpstreamState.RECONNECTING))
    h = await doctor.check_hub(endpoint, timeout=2.0)
    assert h.diagnosis is Diagnosis.HUB_UPSTREAM_DOWN and h.exit_code == 21
    assert "RECONNECTING" in h.detail

    set_reply(protocol.Error(id=1, code=protocol.ErrorCode.FORBIDDEN, message="no"))
    h = await doctor.check_hub(endpoint, timeout=2.0)
    assert h.diagnosis is Diagnosis.HUB_REFUSED and h.exit_code == 22

    set_reply(b"\xc1 not msgpack")
    h = await doctor.check_hub(endpoint, timeout=2.0)
    assert h.diagnosis is Diagnosis.HUB_REFUSED


async def test_cli_gateway_failure_outranks_hub(
    sim: SimGateway, fake_hub: tuple[str, Callable[[Any], None]]
) -> None:
    endpoint, set_reply = fake_hub
    set_reply(_status(False, protocol.UpstreamState.RECONNECTING))
    result, out = await run_cli("--port", str(sim.port), "--hub", endpoint, "--json")
    assert result.exit_code == 21, result.output  # gateway healthy -> hub's code
    sim.stall_handshakes(True)
    result, out = await run_cli(
        "--port", str(sim.port), "--hub", endpoint, "--timeout", "0.3", "--json"
    )
    assert result.exit_code == 11
    assert out["hub"]["exit_code"] == 21


def test_exit_codes_are_distinct() -> None:
    failing = [c for d, c in doctor.EXIT_CODES.items() if c != 0]
    assert len(failing) == len(set(failing))
    assert doctor.EXIT_CODES[Diagnosis.HEALTHY] == 0


def test_hello_is_the_ib_insync_handshake() -> None:
    assert doctor.hello_bytes() == b"API\x00\x00\x00\x00\x09v157..176"


def test_most_informative_failure_wins() -> None:
    def rep(d: Diagnosis) -> doctor.PortReport:
        return doctor.PortReport(host=HOST, port=1, client_id=1, diagnosis=d, detail="")

    order = [
        Diagnosis.NOT_LISTENING,
        Diagnosis.UNREACHABLE,
        Diagnosis.HANDSHAKE_STALLED,
        Diagnosis.HANDSHAKE_REFUSED,
        Diagnosis.START_STALLED,
        Diagnosis.CLIENT_ID_IN_USE,
    ]
    for i, best in enumerate(order):
        reports = [rep(d) for d in order[: i + 1]]
        assert doctor.overall_gateway_code(list(reversed(reports))) == doctor.EXIT_CODES[best]
    assert doctor.overall_gateway_code([rep(Diagnosis.NOT_LISTENING), rep(Diagnosis.HEALTHY)]) == 0


async def test_real_hub_healthy_then_upstream_down(sim: SimGateway) -> None:
    """The real HubServer over the simulator: 0 while connected, 21 once the Gateway goes."""
    from ibhub.config import HubSettings
    from ibhub.hub.server import HubServer

    settings = HubSettings(
        gateway_host=HOST,
        gateway_port=sim.port,
        client_id=0,
        pub=f"tcp://{HOST}:0",
        rpc=f"tcp://{HOST}:0",
        reconnect_backoff_initial=0.1,
        reconnect_backoff_max=0.2,
    )
    async with HubServer(settings) as hub:
        reports: list[doctor.HubReport] = []

        async def check() -> doctor.HubReport:
            rep = await doctor.check_hub(hub.rpc_endpoint, timeout=2.0)
            reports.append(rep)
            return rep

        async def until(diag: Diagnosis, timeout: float = 10.0) -> doctor.HubReport:
            deadline = time.monotonic() + timeout
            while (rep := await check()).diagnosis is not diag:
                assert time.monotonic() < deadline, f"last: {rep.diagnosis} {rep.detail}"
                await asyncio.sleep(0.05)
            return rep

        rep = await until(Diagnosis.HUB_HEALTHY)
        assert rep.status is not None and rep.status["accounts"] == ["DU1234567"]
        assert f"{HOST}:{sim.port}" in rep.detail
        # a probe with another id does not disturb the hub's own connection (id 0)
        gw = await doctor.probe_gateway(HOST, sim.port, timeout=2.0, settle=0.05)
        assert gw.diagnosis is Diagnosis.HEALTHY
        assert 0 in sim.connected_client_ids()
        # and the hub's id is reported as taken
        gw = await doctor.probe_gateway(HOST, sim.port, client_id=0, timeout=2.0)
        assert gw.diagnosis is Diagnosis.CLIENT_ID_IN_USE

        await sim.close_port()
        rep = await until(Diagnosis.HUB_UPSTREAM_DOWN)
        assert rep.exit_code == 21
        await sim.open_port()
        await until(Diagnosis.HUB_HEALTHY)


async def test_hub_front_door_is_checked_like_a_gateway(sim: SimGateway) -> None:
    """The hub's TWS-protocol front door answers the same probe, 326 included."""
    from ibhub.config import HubSettings
    from ibhub.frontdoor import FrontDoor
    from ibhub.hub.server import HubServer
    from tests.ibclient import IB

    settings = HubSettings(
        gateway_host=HOST,
        gateway_port=sim.port,
        pub=f"tcp://{HOST}:0",
        rpc=f"tcp://{HOST}:0",
        tws_port=0,
    )
    async with HubServer(settings) as hub:
        deadline = time.monotonic() + 10
        while (await doctor.check_hub(hub.rpc_endpoint, timeout=2.0)).exit_code != 0:
            assert time.monotonic() < deadline, "hub never connected upstream"
            await asyncio.sleep(0.05)
        (door,) = [s for s in hub.services if isinstance(s, FrontDoor)]
        r = await doctor.probe_gateway(HOST, door.tws_port, client_id=11, timeout=3.0)
        assert r.diagnosis is Diagnosis.HEALTHY, r.detail
        assert r.accounts == ["DU1234567"]
        await wait_until(lambda: 11 not in door.clients)

        before = await doctor.probe_gateway(HOST, door.tws_port, client_id=12, timeout=3.0)
        assert before.diagnosis is Diagnosis.HEALTHY  # id 12 is free until ib_insync takes it
        ib = IB()
        await ib.connectAsync(HOST, door.tws_port, clientId=12, timeout=5, readonly=True)
        try:
            r = await doctor.probe_gateway(HOST, door.tws_port, client_id=12, timeout=3.0)
            assert r.diagnosis is Diagnosis.CLIENT_ID_IN_USE, r.detail
        finally:
            ib.disconnect()
