"""Script names are proved, end to end: a name is bound to its first secret (or key).

Real hub, real ZeroMQ sockets, the simulated Gateway. Alice's script (SDK) places a
resting order; mallory says hello as "alice" from a raw DEALER without the secret and
with a wrong one and is refused, and the order keeps working; alice's script restarts
(a new AsyncHub reading the same secret file) and cancels it; the binding holds across
a hub restart; an operator forgets it and a new claimant may take the name. With
CURVE, the name follows the key that claimed it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ibhub.cli import main as ibhub_cli
from ibhub.client import AsyncHub, HubError
from ibhub.hub.server import HubServer
from ibhub.keys import load_public_key
from ibhub.protocol import (
    PROTOCOL_VERSION,
    CancelOrder,
    Error,
    ErrorCode,
    ForgetName,
    GetStatus,
    Hello,
    ListNames,
    OrderRejected,
    RejectReason,
    StatusReply,
    Welcome,
)
from ibhub.sim import SimGateway
from tests.e2e.conftest import HubFactory, RawClient
from tests.e2e.test_identity import order_hub, resting_order
from tests.e2e.test_security import curve_hub, keygen, keys  # noqa: F401 (fixture)
from tests.helpers import wait_until

pytestmark = pytest.mark.timeout(90)

WRONG = "w" * 43


def sdk(hub: HubServer, name: str, names_dir: Path, **kw: Any) -> AsyncHub:
    return AsyncHub(
        pub=hub.pub_endpoint,
        rpc=hub.rpc_endpoint,
        name=name,
        names_dir=str(names_dir),
        request_timeout=5.0,
        **kw,
    )


def hello(c: RawClient, name: str, secret: str = "", **kw: Any) -> Hello:
    return Hello(id=c.next_id(), name=name, protocol=PROTOCOL_VERSION, name_secret=secret, **kw)


async def refused_as(c: RawClient, name: str, secret: str) -> Error:
    reply = await c.request(hello(c, name, secret))
    assert isinstance(reply, Error) and reply.code == ErrorCode.NAME_TAKEN, reply
    return reply


def broker_statuses(hub_sim: SimGateway) -> list[str]:
    return [o.status for o in hub_sim.broker.orders()]


async def test_only_alices_secret_acts_as_alice_across_script_and_hub_restarts(
    make_hub: HubFactory,
    hub_sim: SimGateway,
    clients: Callable[..., RawClient],
    tmp_path: Path,
) -> None:
    secrets_dir = tmp_path / "alice-home"  # alice's ~/.local/state/ibhub/names
    hub = await order_hub(make_hub)
    alice = sdk(hub, "alice", secrets_dir)
    await alice.connect()
    order_id = await resting_order(hub, hub_sim, alice)
    assert (secrets_dir / "alice").stat().st_mode & 0o077 == 0

    # mallory, on her own DEALER, says hello as alice: no secret, a wrong one.
    mallory = clients(hub.rpc_endpoint)
    refusal = await refused_as(mallory, "alice", "")
    assert "ibhub names --forget" in refusal.message and "another name" in refusal.message
    await refused_as(mallory, "alice", WRONG)
    # ... through the SDK with her own secret file: refused at connect
    with pytest.raises(HubError) as err:
        await sdk(hub, "alice", tmp_path / "mallory-home").connect()
    assert err.value.code == ErrorCode.NAME_TAKEN
    # ... as the front door's scripts, or the owner of orders placed outside the hub
    for reserved in ("tws-client-0", "external"):
        await refused_as(mallory, reserved, WRONG)
    # Under her own name she has no power over alice's order.
    await mallory.hello("mallory")
    reply = await mallory.request(
        CancelOrder(id=mallory.next_id(), lease=mallory.lease, order_id=order_id)
    )
    assert isinstance(reply, OrderRejected) and reply.reason == RejectReason.NOT_OWNER
    assert [ls.name for ls in (await alice.status()).leases].count("alice") == 1
    assert broker_statuses(hub_sim) == ["Submitted"]

    # Alice's script restarts while its old lease is still live: the secret file proves
    # the name, the new lease gets the name's order events, the order is hers.
    restarted = sdk(hub, "alice", secrets_dir)
    await restarted.connect()
    await alice.close()
    assert hub.orders.book.store.lease_of_owner["alice"] == restarted.lease

    # The hub restarts on the same data dir: the binding is durable.
    await restarted.close()
    await hub.stop()
    hub = await order_hub(make_hub)
    mallory = clients(hub.rpc_endpoint)
    await refused_as(mallory, "alice", "")
    async with sdk(hub, "alice", secrets_dir) as again:
        await again.cancel_order(order_id)
        await wait_until(
            lambda: broker_statuses(hub_sim) == ["Cancelled"],
            5.0,
            "alice's cancel after both restarts",
        )

    # An operator forgets the binding; then a new script may claim the name.
    token = hub.settings.operator_token_path.read_text().strip()
    async with sdk(hub, "ops", tmp_path / "ops-home", role="operator", operator_token=token) as ops:
        listed = {n.name: n for n in await ops.names()}
        assert "alice" in listed and listed["alice"].live == 0 and listed["ops"].live == 1
        assert listed["alice"].last_seen >= listed["alice"].bound_at > 0
        await ops.forget_name("alice")
        assert "alice" not in {n.name for n in await ops.names()}
        with pytest.raises(HubError) as err:
            await ops.forget_name("alice")
        assert err.value.code == ErrorCode.UNKNOWN_NAME
    newcomer = clients(hub.rpc_endpoint)
    welcome = await newcomer.request(hello(newcomer, "alice"))
    assert isinstance(welcome, Welcome) and len(welcome.name_secret) >= 32  # made by the hub
    await refused_as(mallory, "alice", "")  # the name is bound again, to the newcomer
    await refused_as(mallory, "alice", WRONG)
    again_reply = await newcomer.request(hello(newcomer, "alice", welcome.name_secret))
    assert isinstance(again_reply, Welcome) and again_reply.name_secret == ""
    # and alice's old secret file no longer proves it
    with pytest.raises(HubError) as err:
        await sdk(hub, "alice", secrets_dir).connect()
    assert err.value.code == ErrorCode.NAME_TAKEN


async def test_name_operations_need_the_operator_role(
    make_hub: HubFactory, clients: Callable[..., RawClient], tmp_path: Path
) -> None:
    hub = await make_hub()
    c = clients(hub.rpc_endpoint)
    await c.hello("trader-bob")
    for req in (
        ListNames(id=c.next_id(), lease=c.lease),
        ForgetName(id=c.next_id(), lease=c.lease, name="trader-bob"),
    ):
        reply = await c.request(req)
        assert isinstance(reply, Error) and reply.code == ErrorCode.FORBIDDEN, reply
        assert "operator" in reply.message
    reply = await c.request(ListNames(id=c.next_id(), lease="made-up"))
    assert isinstance(reply, Error) and reply.code == ErrorCode.UNKNOWN_LEASE
    await refused_as(clients(hub.rpc_endpoint), "trader-bob", "")  # still bound


async def test_ibhub_names_cli_lists_and_forgets(
    make_hub: HubFactory, clients: Callable[..., RawClient], tmp_path: Path
) -> None:
    hub = await make_hub()
    carol = clients(hub.rpc_endpoint)
    await carol.request(hello(carol, "carol", "c" * 43))
    ends = ["--pub", hub.pub_endpoint, "--rpc", hub.rpc_endpoint]
    operator = {"IBHUB_OPERATOR_TOKEN_FILE": str(hub.settings.operator_token_path)}

    def ibhub(*args: str, env: dict[str, str] = operator) -> Any:
        # its own thread and loop, like a separate process, while the hub serves here
        return asyncio.to_thread(CliRunner().invoke, ibhub_cli, [*args, *ends], env=env)

    listed = await ibhub("names")
    assert listed.exit_code == 0, listed.output
    assert any(line.split()[0] == "carol" for line in listed.output.splitlines()[1:])
    as_json = await ibhub("names", "--json")
    assert "carol" in {n["name"] for n in json.loads(as_json.output)}
    forgot = await ibhub("names", "--forget", "carol")
    assert forgot.exit_code == 0, forgot.output
    assert "forgot script name 'carol'" in forgot.output and "carol " not in forgot.output
    again = await ibhub("names", "--forget", "carol")
    assert again.exit_code == 1 and "unknown_name" in again.output
    no_token = await ibhub("names", env={"IBHUB_OPERATOR_TOKEN_FILE": str(tmp_path / "no")})
    assert no_token.exit_code == 1 and "forbidden" in no_token.output
    welcome = await carol.request(hello(carol, "carol", "d" * 43))  # free to claim again
    assert isinstance(welcome, Welcome)


async def test_with_curve_a_name_follows_the_key_that_claimed_it(
    make_hub: HubFactory,
    keys: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    bob_pub, bob_sec = keygen(tmp_path / "bob", "bob")
    shutil.copy(bob_pub, keys["allowed"] / bob_pub.name)
    hub = await curve_hub(make_hub, keys)
    server_key = load_public_key(keys["hub_pub"]).decode()
    secret = "s" * 43

    def client(key_file: Path, name_secret: str) -> AsyncHub:
        return AsyncHub(
            pub=hub.pub_endpoint,
            rpc=hub.rpc_endpoint,
            name="desk",
            request_timeout=3.0,
            server_key=server_key,
            client_key_file=str(key_file),
            name_secret=name_secret,
        )

    async with client(keys["client_sec"], secret):
        pass  # alice's key claims "desk"
    with pytest.raises(HubError) as err:  # bob's key, even with the secret
        await client(bob_sec, secret).connect()
    assert err.value.code == ErrorCode.NAME_TAKEN and "another CURVE key" in err.value.message
    async with client(keys["client_sec"], WRONG) as again:  # alice's key proves it alone
        assert again.lease is not None


async def test_a_broken_names_table_refuses_hellos_and_the_hub_serves_on(
    make_hub: HubFactory, clients: Callable[..., RawClient]
) -> None:
    hub = await make_hub()
    c = clients(hub.rpc_endpoint)
    await c.hello("before")
    assert hub.names is not None
    hub.names.close()  # as if the disk had gone away under it
    reply = await c.request(hello(c, "after", "e" * 43))
    assert isinstance(reply, Error) and reply.code == ErrorCode.INTERNAL, reply
    assert "script names" in reply.message
    assert [ls.name for ls in hub.leases.leases()] == ["before"]  # no lease left behind
    assert isinstance(await c.request(GetStatus(id=c.next_id())), StatusReply)
