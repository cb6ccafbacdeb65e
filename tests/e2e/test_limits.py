"""Connection caps and the descriptor reserve (ibhub.hub.limits) on real loopback sockets.

Small caps (20) and twice as many idle TCP connections stand in for the thousand
idle connections that once left new clients unanswered and the upstream unable to
reconnect; tests/e2e/test_limits_process.py runs a hub process at a low open-file
limit.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial

import pytest

from ibhub.hub import limits as limits_mod
from ibhub.hub.leases import LOCAL
from ibhub.hub.ops.health import health_report
from ibhub.hub.registry import Context
from ibhub.hub.status import StatusRequests
from ibhub.protocol import GetStatus, StatusReply
from ibhub.sim import SimGateway
from tests.e2e.conftest import HubFactory
from tests.e2e.frontdoor_support import door_of, quiet_ib_insync
from tests.e2e.limits_support import closed_by_peer, idle_flood
from tests.helpers import wait_until
from tests.ibclient import IB, Stock

CAP = 20
FLOOD = 40


def _port(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


async def _connect_ib(port: int, client_id: int) -> tuple[IB, list[tuple[int, str]]]:
    ib = IB()
    errors: list[tuple[int, str]] = []
    ib.errorEvent += lambda _rid, code, msg, _c: errors.append((code, msg))
    await ib.connectAsync("127.0.0.1", port, clientId=client_id, timeout=5.0)
    return ib, errors


async def test_front_door_refuses_beyond_its_cap_and_serves_once_idle_ones_go(
    make_hub: HubFactory, hub_sim: SimGateway
) -> None:
    quiet_ib_insync()
    hub = await make_hub(tws_port=0, max_tws_connections=CAP)
    door = door_of(hub)
    stats = hub.limits.stats("tws")  # type: ignore[union-attr]
    with idle_flood(door.tws_port, FLOOD) as socks:
        await wait_until(lambda: stats.accepted >= FLOOD, 5.0, "every connection seen")
        assert len(door.sessions) == CAP
        assert stats.refused == FLOOD - CAP
        # the refused ones are closed (after their grace, as they never say hello)
        await wait_until(
            lambda: sum(closed_by_peer(s) for s in socks) >= FLOOD - CAP,
            5.0,
            "refused connections closed",
        )
        # a TWS API script is told why (it logs the 502) and its connect fails at once
        # (ConnectionError on its first start-up request), not at its time-out
        ib = IB()
        errors: list[tuple[int, str]] = []
        ib.errorEvent += lambda _rid, code, msg, _c: errors.append((code, msg))
        started = time.monotonic()
        with pytest.raises(ConnectionError):
            await ib.connectAsync("127.0.0.1", door.tws_port, clientId=5, timeout=3.0)
        assert time.monotonic() - started < 1.5
        assert errors[0][0] == 502 and "max_tws_connections 20" in errors[0][1], errors
        ib.disconnect()
        status = StatusRequests(hub).status(GetStatus(id=1), Context(LOCAL))
        assert isinstance(status, StatusReply)
        assert status.connections["tws"]["open"] == CAP
        assert status.connections["tws"]["refused"] == FLOOD - CAP + 1
        from ibhub.cli.client import format_status

        text = format_status(status, hub.rpc_endpoint)
        assert f"connections: tws {CAP}/{CAP} ({FLOOD - CAP + 1} refused)" in text, text
    # the idle connections went: a script is served again
    await wait_until(lambda: len(door.sessions) == 0, 5.0, "idle sessions gone")
    ib, errors = await _connect_ib(door.tws_port, 6)
    try:
        c = Stock("AAPL", "SMART", "USD")
        assert await ib.qualifyContractsAsync(c) == [c]
    finally:
        ib.disconnect()
    assert hub.ops is not None
    text = hub.ops.metrics.render().decode()
    assert f'ibhub_connections_refused_total{{listener="tws"}} {FLOOD - CAP + 1}.0' in text
    assert f'ibhub_connections_max{{listener="tws"}} {CAP}.0' in text


async def test_front_door_closes_connections_that_never_start(
    make_hub: HubFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("ibhub.frontdoor.server.TWS_HANDSHAKE_TIMEOUT", 0.3)
    hub = await make_hub(tws_port=0, max_tws_connections=CAP)
    door = door_of(hub)
    with idle_flood(door.tws_port, CAP) as socks:
        await wait_until(
            lambda: all(closed_by_peer(s) for s in socks), 5.0, "idle connections closed by the hub"
        )
    assert not door.sessions


async def test_zmq_request_port_sheds_an_idle_flood_and_serves_new_clients(
    make_hub: HubFactory, ipc_dir: str, clients, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits_mod, "REBIND_HOLD", 0.3)
    hub = await make_hub(
        rpc="tcp://127.0.0.1:0",
        pub="tcp://127.0.0.1:0",
        max_rpc_connections=CAP,
        max_pub_connections=CAP,
    )
    assert hub.limits is not None
    rpc_stats = hub.limits.stats("rpc")
    port = _port(hub.rpc_endpoint)
    with idle_flood(port, FLOOD) as socks:
        await wait_until(lambda: rpc_stats.refused >= 1, 5.0, "the listener stops accepting")
        # the peers it held were dropped with the listener
        await wait_until(
            lambda: sum(closed_by_peer(s) for s in socks) >= CAP,
            5.0,
            "held idle connections dropped",
        )
        await wait_until(lambda: not rpc_stats.refusing, 5.0, "listening again")
        # while the rest of the flood is still open on our side, a client is served
        client = clients(hub.rpc_endpoint)
        reply = await client.request(GetStatus(id=client.next_id()), timeout=5.0)
        assert isinstance(reply, StatusReply)
        assert reply.connections["rpc"]["refused"] >= 1
        assert reply.connections["rpc"]["max"] == CAP
    health_doc = health_report(hub)[0]
    assert health_doc["connections"]["listeners"]["rpc"]["refused"] >= 1


async def test_zmq_peers_that_never_greet_are_dropped(
    make_hub: HubFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits_mod, "ZMQ_HANDSHAKE_IVL", 0.3)
    hub = await make_hub(rpc="tcp://127.0.0.1:0", pub="tcp://127.0.0.1:0")
    assert hub.limits is not None
    for name, endpoint in (("rpc", hub.rpc_endpoint), ("pub", hub.pub_endpoint)):
        stats = hub.limits.stats(name)
        with idle_flood(_port(endpoint), 5) as socks:
            await wait_until(lambda st=stats: st.accepted >= 5, 5.0, f"{name} peers counted")  # type: ignore[misc]
            await wait_until(
                partial(lambda ss: all(closed_by_peer(s) for s in ss), socks),
                5.0,
                f"{name} idle peers dropped",
            )
        await wait_until(lambda st=stats: st.open == 0, 5.0, f"{name} count back to 0")  # type: ignore[misc]
        assert stats.refused == 0


async def test_upstream_reconnects_while_the_front_door_is_flooded(
    make_hub: HubFactory, hub_sim: SimGateway
) -> None:
    quiet_ib_insync()
    hub = await make_hub(tws_port=0, max_tws_connections=CAP)
    up = hub.upstream
    assert up is not None
    with idle_flood(door_of(hub).tws_port, FLOOD):
        count = up.reconnect_count
        await hub_sim.restart(0.2)
        await wait_until(
            lambda: up.reconnect_count > count and up.connected,
            10.0,
            "upstream back while the flood is held",
        )
    await asyncio.sleep(0)


def test_limits_derive_caps_from_the_open_file_limit() -> None:
    from ibhub.config import HubSettings

    limits = limits_mod.Limits.from_settings(HubSettings(), soft=1024)
    share = (1024 - 64 - limits_mod.BASELINE_FDS) // 3
    assert {n: s.cap for n, s in limits.listeners.items()} == {
        "tws": share,
        "rpc": share,
        "pub": share,
        "http": limits_mod.HTTP_MAX_CONNECTIONS,
    }
    # the caps and the reserve fit in the limit with room for the hub itself
    clients = sum(s.cap for n, s in limits.listeners.items() if n != "http")
    assert clients + 64 + limits_mod.BASELINE_FDS <= 1024
    assert limits_mod.HTTP_MAX_CONNECTIONS < 64  # /health lives in the reserve
    set_ = limits_mod.Limits.from_settings(HubSettings(max_tws_connections=7), soft=1024)
    assert set_.stats("tws").cap == 7 and set_.stats("rpc").cap == share


async def test_health_server_caps_its_connections(make_hub: HubFactory) -> None:
    hub = await make_hub(http_port=_free_port())
    assert hub.ops is not None and hub.ops.http_port
    port = hub.ops.http_port
    cap = limits_mod.HTTP_MAX_CONNECTIONS
    with idle_flood(port, cap + 4) as socks:
        # the connections over the cap are answered 503 and closed at once
        await wait_until(
            lambda: sum(closed_by_peer(s) for s in socks) >= 4,
            5.0,
            "connections over the cap closed",
        )
        stats = hub.limits.stats("http")  # type: ignore[union-attr]
        assert stats.refused >= 4
    # the idle ones are gone (closed by us): /health is served again
    await wait_until(lambda: hub.limits.stats("http").open == 0, 5.0, "idle closed")  # type: ignore[union-attr]
    assert await _get_health(port) == 200


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _get_health(port: int) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        async with asyncio.timeout(3.0):
            status_line = await reader.readline()
        return int(status_line.split()[1])
    finally:
        writer.close()
        await writer.wait_closed()


def test_the_reserve_line_is_seen_before_the_limit() -> None:
    import socket

    used = limits_mod.open_fds()
    assert used is not None
    limits = limits_mod.Limits(soft=used + 16 + 3, reserve=16)
    assert not limits.fds_low()
    extra = [socket.socket() for _ in range(4)]
    try:
        assert limits.fds_low()  # near the line every check counts again
        assert not limits.fds_recovered()
    finally:
        for s in extra:
            s.close()
    # far under the line again: a refusing listener may accept
    assert limits_mod.Limits(soft=(used + 16) * 2, reserve=16).fds_recovered()
