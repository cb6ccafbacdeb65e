"""Client identity end to end: lease tokens, roles from configuration, client-id pools.

Real hub, real ZeroMQ sockets, the simulated Gateway. A script places an order through
the SDK; an attacker on a raw DEALER tries everything ``status`` shows and a leaked
token, and can neither modify nor cancel it. Roles: ``operator`` only with the local
token file or a CURVE key the config lists. Raw client ids: a flood of ``ibhub lease``
requests hits its own cap, names who holds the ids, and leaves scripts their ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
import zmq
import zmq.asyncio
import zmq.auth

from ibhub import wire
from ibhub.client import AsyncHub, HubError
from ibhub.hub.server import HubServer, attach_orders
from ibhub.protocol import (
    PROTOCOL_VERSION,
    CancelOrder,
    ClientIdLeased,
    Error,
    ErrorCode,
    GetStatus,
    GlobalCancel,
    Heartbeat,
    Hello,
    LeaseClientId,
    ModifyOrder,
    OrderRejected,
    RejectReason,
    StatusReply,
)
from ibhub.sim import SimGateway
from tests.e2e.conftest import HubFactory, RawClient
from tests.e2e.test_security import curve_hub, keygen, keys  # noqa: F401 (fixture)
from tests.helpers import wait_until

pytestmark = pytest.mark.timeout(60)

AAPL = 265598


async def order_hub(make_hub: HubFactory, **settings: Any) -> HubServer:
    hub = await make_hub(**settings)
    svc = getattr(hub, "orders", None) or await attach_orders(hub)
    await wait_until(svc.reconciled.is_set, 5.0, "orders reconciled")
    return hub


def sdk(hub: HubServer, name: str, **kw: Any) -> AsyncHub:
    return AsyncHub(
        pub=hub.pub_endpoint, rpc=hub.rpc_endpoint, name=name, request_timeout=5.0, **kw
    )


async def resting_order(hub: HubServer, hub_sim: SimGateway, alice: AsyncHub) -> int:
    """Alice's LMT BUY below the market, working at the Gateway; its order id."""
    sub = await alice.subscribe("AAPL")
    await sub.get(5.0)  # the hub knows a last price (price band)
    price = round(hub_sim.broker.price_of(AAPL) * 0.95, 2)
    order = await alice.place_order("AAPL", "BUY", 5, order_type="LMT", limit_price=price)
    await wait_until(
        lambda: [o.status for o in hub_sim.broker.orders()] == ["Submitted"],
        5.0,
        "alice's order working at the Gateway",
    )
    return order.order_id


async def test_nothing_status_shows_lets_another_script_touch_her_order(
    make_hub: HubFactory, hub_sim: SimGateway, clients: Callable[..., RawClient]
) -> None:
    hub = await order_hub(make_hub)
    async with sdk(hub, "alice") as alice:
        order_id = await resting_order(hub, hub_sim, alice)
        keeper = alice._keeper
        assert keeper is not None and keeper.token and keeper.token != alice.lease

        mallory = clients(hub.rpc_endpoint)
        await mallory.hello("mallory")
        status = await mallory.request(GetStatus(id=mallory.next_id()))
        assert isinstance(status, StatusReply)
        raw_status = msgspec.msgpack.encode(status)
        assert keeper.token.encode() not in raw_status  # no usable token anywhere in it
        shown = {ls.name: ls.lease for ls in status.leases}
        assert shown["alice"] == alice.lease  # the public handle only

        # Everything status shows, and alice's real token leaked to another connection.
        for stolen in [*shown.values(), keeper.token]:
            for req in (
                CancelOrder(id=mallory.next_id(), lease=stolen, order_id=order_id),
                ModifyOrder(id=mallory.next_id(), lease=stolen, order_id=order_id, limit_price=1.0),
                Heartbeat(id=mallory.next_id(), lease=stolen),
            ):
                reply = await mallory.request(req)
                assert isinstance(reply, Error) and reply.code == ErrorCode.UNKNOWN_LEASE, reply
                assert "alice" not in reply.message and stolen not in reply.message
        # Her own lease gives mallory nothing over alice's order either.
        reply = await mallory.request(
            CancelOrder(id=mallory.next_id(), lease=mallory.lease, order_id=order_id)
        )
        assert isinstance(reply, OrderRejected) and reply.reason == RejectReason.NOT_OWNER
        reply = await mallory.request(GlobalCancel(id=mallory.next_id(), lease=mallory.lease))
        assert isinstance(reply, OrderRejected) and reply.reason == RejectReason.FORBIDDEN

        assert [o.status for o in hub_sim.broker.orders()] == ["Submitted"]
        assert alice.rehellos == 0
        await alice.cancel_order(order_id)  # and she still can
        await wait_until(
            lambda: [o.status for o in hub_sim.broker.orders()] == ["Cancelled"],
            5.0,
            "alice's own cancel",
        )


async def test_operator_is_refused_without_proof_and_granted_with_the_token_file(
    make_hub: HubFactory,
    clients: Callable[..., RawClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hub = await make_hub()
    token_file = hub.settings.operator_token_path
    assert token_file.stat().st_mode & 0o077 == 0  # created private at start

    c = clients(hub.rpc_endpoint)
    for credential in ("", "not-the-token"):
        reply = await c.request(
            Hello(
                id=c.next_id(),
                name="claims-operator",
                role="operator",
                protocol=PROTOCOL_VERSION,
                credential=credential,
            )
        )
        assert isinstance(reply, Error) and reply.code == ErrorCode.FORBIDDEN, reply
        assert str(token_file) in reply.message  # says how to get the role
    assert len(hub.leases) == 0

    welcome = await c.hello("ops", role="operator", credential=token_file.read_text().strip())
    assert welcome.role == "operator"
    assert hub.leases.get(welcome.lease).role == "operator"  # type: ignore[union-attr]
    ro = clients(hub.rpc_endpoint)
    assert (await ro.hello("viewer", role="readonly")).role == "readonly"  # always granted

    # The SDK reads the token file itself when asked for operator (same user).
    monkeypatch.setenv("IBHUB_OPERATOR_TOKEN_FILE", str(token_file))
    async with sdk(hub, "sdk-ops", role="operator") as ops:
        assert hub.leases.get(ops.lease).role == "operator"  # type: ignore[arg-type, union-attr]
    monkeypatch.setenv("IBHUB_OPERATOR_TOKEN_FILE", str(token_file.parent / "missing"))
    with pytest.raises(HubError) as exc:
        async with sdk(hub, "sdk-wannabe", role="operator", connect_retries=1):
            pass
    assert exc.value.code == ErrorCode.FORBIDDEN


async def test_with_curve_only_a_listed_key_may_be_operator(
    make_hub: HubFactory,
    keys: dict[str, Path],  # noqa: F811
) -> None:
    ops_pub, ops_sec = keygen(keys["root"] / "ops", "ops")
    shutil.copy(ops_pub, keys["allowed"] / ops_pub.name)
    hub = await make_hub(
        pub="tcp://127.0.0.1:0",
        rpc="tcp://127.0.0.1:0",
        curve_server_secret_key_file=keys["hub_sec"],
        curve_authorized_keys_dir=keys["allowed"],
        curve_operator_keys=[str(ops_pub)],
    )
    server_key = keys["hub_pub"].read_text()
    server_public = zmq.auth.load_certificate(keys["hub_pub"])[0]
    # The local token file does not make an allowed but unlisted key an operator.
    token = hub.settings.operator_token_path.read_text().strip()
    with pytest.raises(HubError) as exc:
        async with sdk(
            hub,
            "alice",
            role="operator",
            server_key=server_public,
            client_key_file=str(keys["client_sec"]),
            operator_token=token,
            connect_retries=1,
        ):
            pass
    assert exc.value.code == ErrorCode.FORBIDDEN and "curve_operator_keys" in exc.value.message
    assert server_key  # (the file is readable; the SDK took the key itself)

    async with (
        sdk(
            hub, "ops", role="operator", server_key=server_public, client_key_file=str(ops_sec)
        ) as ops,
        sdk(
            hub, "alice", server_key=server_public, client_key_file=str(keys["client_sec"])
        ) as alice,
    ):
        assert hub.leases.get(ops.lease).role == "operator"  # type: ignore[arg-type, union-attr]
        assert hub.leases.get(alice.lease).role == "trader"  # type: ignore[arg-type, union-attr]
        # Alice's token presented over a connection authenticated with the ops key.
        assert alice._keeper is not None and alice._keeper.token
        ctx = zmq.asyncio.Context()
        sock = ctx.socket(zmq.DEALER)
        try:
            sock.setsockopt(zmq.LINGER, 0)
            public, secret = zmq.auth.load_certificate(ops_sec)
            sock.curve_publickey, sock.curve_secretkey = public, secret
            sock.curve_serverkey = server_public
            sock.connect(hub.rpc_endpoint)
            await sock.send_multipart(
                [b"", wire.encode(Heartbeat(id=7, lease=alice._keeper.token))]
            )
            async with asyncio.timeout(5.0):
                reply = wire.decode_reply((await sock.recv_multipart())[-1])
            assert isinstance(reply, Error) and reply.code == ErrorCode.UNKNOWN_LEASE, reply
        finally:
            sock.close(0)
            ctx.term()


async def test_a_flood_of_raw_leases_leaves_scripts_their_client_ids(
    make_hub: HubFactory, clients: Callable[..., RawClient]
) -> None:
    hub = await make_hub()  # default range 1..999, raw_lease_max 400, lease_max 500
    c = clients(hub.rpc_endpoint)
    granted: list[ClientIdLeased] = []
    refusals: list[Error] = []
    for i in range(1000):
        reply = await c.request(LeaseClientId(id=c.next_id(), name="flood" if i % 4 else "cron"))
        if isinstance(reply, ClientIdLeased):
            granted.append(reply)
        else:
            assert isinstance(reply, Error) and reply.code == ErrorCode.NO_FREE_CLIENT_ID, reply
            refusals.append(reply)
    assert len(granted) == hub.settings.raw_lease_max == 400
    assert len(refusals) == 600
    message = refusals[-1].message
    assert "'flood' x300" in message and "'cron' x100" in message and "raw_lease_max" in message
    # Each raw id has the default time to live, and its own secret token.
    assert all(0 < g.expires_in <= hub.settings.raw_lease_ttl for g in granted)
    assert len({g.token for g in granted}) == 400

    async with sdk(hub, "late-script") as script:
        assert script.client_id is not None and script.client_id not in {
            g.client_id for g in granted
        }


class Forwarder:
    """A TCP relay to the hub whose connections the test can cut (a network blip)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.accepted = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [writer, up_writer]
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        dst.close()

    def cut(self) -> None:
        writers, self._writers = self._writers, []
        for w in writers:
            w.close()

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def test_the_sdk_keeps_its_lease_across_its_own_reconnect(
    make_hub: HubFactory,
) -> None:
    hub = await make_hub(rpc="tcp://127.0.0.1:0")
    port = int(hub.rpc_endpoint.rsplit(":", 1)[1])
    relay = Forwarder(port)
    await relay.start()
    try:
        async with AsyncHub(
            pub=hub.pub_endpoint,
            rpc=f"tcp://127.0.0.1:{relay.port}",
            name="blip",
            request_timeout=5.0,
        ) as script:
            lease = script.lease
            relay.cut()  # the DEALER reconnects (same socket, new TCP connection)
            await wait_until(lambda: relay.accepted >= 2, 5.0, "the SDK reconnected")
            sub = await script.subscribe("AAPL")  # a lease request after the reconnect
            await sub.get(5.0)
            assert script.lease == lease and script.rehellos == 0  # same lease, no re-hello
            assert [ls.lease_id for ls in hub.leases.leases()] == [lease]
    finally:
        await relay.stop()
