"""Socket security end to end: CURVE on the hub's PUB and ROUTER, the loopback rule.

Keys are made by the real ``ibhub keys generate`` command into temp dirs. Hubs bind
only ``tcp://127.0.0.1`` or ``ipc://``: CURVE is exercised on loopback (ZeroMQ runs
the same handshake whatever the address), and the refusal of a non-loopback bind is
checked to happen before anything is bound, so no test ever listens on 0.0.0.0.
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.asyncio
from click.testing import CliRunner

from ibhub import wire
from ibhub.cli import doctor
from ibhub.cli import main as ibhub_cli
from ibhub.cli.doctor import Diagnosis
from ibhub.cli.top import run_top
from ibhub.client import AsyncHub, HubTimeout, Tick
from ibhub.config import ConfigError, HubSettings
from ibhub.hub.server import HubServer
from ibhub.keys import load_public_key
from ibhub.protocol import TOPIC_STATUS, GetStatus, StatusReply
from ibhub.sim import SimGateway
from tests.e2e.conftest import FAST, HubFactory

pytestmark = pytest.mark.timeout(60)

LOOPBACK_ANY_PORT = "tcp://127.0.0.1:0"
REPO = Path(__file__).resolve().parents[2]


def keygen(directory: Path, name: str) -> tuple[Path, Path]:
    """``ibhub keys generate --dir DIR --name NAME``; returns (public, secret) files."""
    result = CliRunner().invoke(ibhub_cli, ["keys", "generate", "--dir", str(directory),
                                            "--name", name])
    assert result.exit_code == 0, result.output
    return directory / f"{name}.key", directory / f"{name}.key_secret"


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    """A hub pair, an allowed client (its public key in the allow-list dir) and a
    stranger whose key the hub has never seen."""
    hub_pub, hub_sec = keygen(tmp_path / "hub", "hub")
    client_pub, client_sec = keygen(tmp_path / "client", "alice")
    _, stranger_sec = keygen(tmp_path / "stranger", "mallory")
    allowed = tmp_path / "authorized"
    allowed.mkdir()
    shutil.copy(client_pub, allowed / client_pub.name)
    return {"hub_pub": hub_pub, "hub_sec": hub_sec, "client_sec": client_sec,
            "stranger_sec": stranger_sec, "allowed": allowed, "root": tmp_path}


async def curve_hub(make_hub: HubFactory, keys: dict[str, Path]) -> HubServer:
    return await make_hub(pub=LOOPBACK_ANY_PORT, rpc=LOOPBACK_ANY_PORT,
                          curve_server_secret_key_file=keys["hub_sec"],
                          curve_authorized_keys_dir=keys["allowed"])


def sdk(hub: HubServer, **kw: Any) -> AsyncHub:
    return AsyncHub(pub=hub.pub_endpoint, rpc=hub.rpc_endpoint, request_timeout=3.0, **kw)


async def test_listed_client_gets_status_and_ticks_from_a_curve_hub(
    make_hub: HubFactory, keys: dict[str, Path]
) -> None:
    hub = await curve_hub(make_hub, keys)
    server_key = load_public_key(keys["hub_pub"]).decode()
    async with sdk(hub, name="alice", server_key=server_key,
                   client_key_file=str(keys["client_sec"])) as client:
        status = await client.status()
        assert status.connected and [ls.name for ls in status.leases] == ["alice"]
        sub = await client.subscribe("AAPL")
        tick = await sub.get(5.0)
        assert isinstance(tick, Tick) and tick.symbol == "AAPL"
    assert hub._auth is not None and hub._auth.is_alive()


async def test_unlisted_and_plain_clients_get_nothing(
    make_hub: HubFactory, keys: dict[str, Path]
) -> None:
    hub = await curve_hub(make_hub, keys)
    server_key = str(keys["hub_pub"])  # a key file is accepted as well as the Z85 text
    stranger = sdk(hub, name="mallory", server_key=server_key,
                   client_key_file=str(keys["stranger_sec"]),
                   connect_timeout=0.5, connect_retries=1)
    with pytest.raises(HubTimeout, match="refused this client's CURVE key") as err:
        await stranger.connect()
    stranger_key = zmq.auth.load_certificate(keys["stranger_sec"])[0].decode()
    assert stranger_key in str(err.value) and "curve_authorized_keys_dir" in str(err.value)
    plain = sdk(hub, name="plain", connect_timeout=0.5, connect_retries=1)
    with pytest.raises(HubTimeout):
        await plain.connect()
    # the hub keeps serving the listed client
    async with sdk(hub, name="alice", server_key=server_key,
                   client_key_file=str(keys["client_sec"])) as alice:
        assert [ls.name for ls in (await alice.status()).leases] == ["alice"]


async def test_unlisted_subscriber_receives_no_events_while_a_listed_one_does(
    make_hub: HubFactory, keys: dict[str, Path]
) -> None:
    """The PUB socket is a CURVE server too: market data is not readable without a key."""
    hub = await curve_hub(make_hub, keys)
    server_key = load_public_key(keys["hub_pub"])
    ctx = zmq.asyncio.Context()
    socks = {}
    try:
        for who in ("client_sec", "stranger_sec"):
            pub_key, sec_key = zmq.auth.load_certificate(keys[who])
            sock = ctx.socket(zmq.SUB)
            sock.setsockopt(zmq.LINGER, 0)
            sock.curve_serverkey = server_key
            sock.curve_publickey = pub_key
            assert sec_key is not None
            sock.curve_secretkey = sec_key
            sock.subscribe(b"")
            sock.connect(hub.pub_endpoint)
            socks[who] = sock
        async with sdk(hub, name="alice", server_key=server_key,
                       client_key_file=str(keys["client_sec"])) as alice:
            sub = await alice.subscribe("AAPL")  # ticks start flowing on the PUB socket
            await sub.get(5.0)
            listed = 0
            while listed < 20:
                async with asyncio.timeout(5.0):
                    topic, _payload = await socks["client_sec"].recv_multipart()
                listed += topic.startswith(b"tick.AAPL")
            stranger: zmq.Socket[bytes] = zmq.Socket.shadow(socks["stranger_sec"].underlying)
            with pytest.raises(zmq.Again):  # 20+ ticks went out; none reached the stranger
                stranger.recv_multipart(flags=zmq.NOBLOCK)
        allow = hub._auth.credentials_providers["ibhub"] if hub._auth else None
        assert allow is not None and allow.denied_count >= 1
    finally:
        for sock in socks.values():
            sock.close(0)
        ctx.term()


async def test_a_key_added_to_the_directory_is_honoured_without_a_restart(
    make_hub: HubFactory, keys: dict[str, Path]
) -> None:
    hub = await curve_hub(make_hub, keys)
    server_key = load_public_key(keys["hub_pub"]).decode()
    bob_pub, bob_sec = keygen(keys["root"] / "bob", "bob")
    early = sdk(hub, name="bob", server_key=server_key, client_key_file=str(bob_sec),
                connect_timeout=0.5, connect_retries=1)
    with pytest.raises(HubTimeout):
        await early.connect()
    shutil.copy(bob_pub, keys["allowed"] / bob_pub.name)
    async with sdk(hub, name="bob", server_key=server_key,
                   client_key_file=str(bob_sec)) as bob:
        assert (await bob.status()).connected


async def test_raw_pyzmq_subscriber_as_documented(
    make_hub: HubFactory, keys: dict[str, Path]
) -> None:
    """The raw example in docs/operations.md: keys from files, hub.status events."""
    hub = await curve_hub(make_hub, keys)
    ctx = zmq.asyncio.Context()
    sub = ctx.socket(zmq.SUB)
    try:
        sub.setsockopt(zmq.LINGER, 0)
        client_public, client_secret = zmq.auth.load_certificate(keys["client_sec"])
        server_public, _ = zmq.auth.load_certificate(keys["hub_pub"])
        sub.curve_secretkey = client_secret
        sub.curve_publickey = client_public
        sub.curve_serverkey = server_public
        sub.connect(hub.pub_endpoint)
        sub.subscribe(TOPIC_STATUS.encode())
        async with sdk(hub, name="alice", server_key=server_public,
                       client_key_file=str(keys["client_sec"])) as alice:
            sub_aapl = await alice.subscribe("AAPL")
            await sub_aapl.get(5.0)
            await sub_aapl.close()  # the hub publishes nothing on status for this; poke it:
            assert hub.fanout is not None
            hub._status("test", 0, "hello remote subscriber")
            async with asyncio.timeout(5.0):
                while True:
                    topic, payload = await sub.recv_multipart()
                    event = wire.decode_event(payload)
                    if topic == TOPIC_STATUS.encode() and \
                            getattr(event, "message", "") == "hello remote subscriber":
                        break
    finally:
        sub.close(0)
        ctx.term()


async def test_status_cli_reaches_a_curve_hub_through_the_environment(
    make_hub: HubFactory, keys: dict[str, Path]
) -> None:
    hub = await curve_hub(make_hub, keys)
    env = {"IBHUB_SERVER_KEY": load_public_key(keys["hub_pub"]).decode(),
           "IBHUB_CLIENT_KEY_FILE": str(keys["client_sec"])}
    args = ["status", "--rpc", hub.rpc_endpoint, "--timeout", "3", "--json"]
    ok = await asyncio.to_thread(CliRunner().invoke, ibhub_cli, args, env=env)
    assert ok.exit_code == 0, ok.output
    assert '"connected": true' in ok.output
    denied = await asyncio.to_thread(
        CliRunner().invoke, ibhub_cli, [*args[:-3], "--timeout", "0.5"],
        env={**env, "IBHUB_CLIENT_KEY_FILE": str(keys["stranger_sec"])},
    )
    assert denied.exit_code != 0 and "no reply" in denied.output


@pytest.mark.parametrize("endpoint", ["tcp://0.0.0.0:0", "tcp://*:0", "tcp://192.0.2.7:0",
                                      "tcp://[::]:0"])
async def test_non_loopback_bind_without_curve_keys_is_refused_before_binding(
    hub_sim: SimGateway, endpoint: str
) -> None:
    for setting in ("pub", "rpc"):
        values: dict[str, Any] = dict(gateway_host="127.0.0.1", gateway_port=hub_sim.port,
                                      **FAST)
        values[setting] = endpoint
        settings = HubSettings(**values)
        hub = HubServer(settings)
        with pytest.raises(ConfigError) as err:
            await hub.start()
        message = str(err.value)
        assert f"refusing to bind {setting} to {endpoint!r}" in message
        assert "CURVE" in message and "ibhub keys generate" in message
        assert hub._ctx is None and hub._pub is None and hub._router is None  # nothing bound
        assert hub.upstream is None and hub.sim is None


def test_ibhub_run_refuses_a_non_loopback_bind_without_keys(tmp_path: Path) -> None:
    """The command line: exit status 1 and the reason, before the simulator starts."""
    code = "from ibhub.cli import main; main()"
    result = subprocess.run(
        [sys.executable, "-c", code, "run", "--sim", "--http-port", "0",
         "--pub", "tcp://0.0.0.0:5570", "--rpc", "tcp://127.0.0.1:0"],
        capture_output=True, text=True, timeout=30, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "refusing to bind pub to 'tcp://0.0.0.0:5570'" in result.stderr
    assert "simulated Gateway" not in result.stdout


async def test_curve_client_against_a_plain_hub_says_the_handshake_failed(
    make_hub: HubFactory, keys: dict[str, Path]
) -> None:
    hub = await make_hub(pub=LOOPBACK_ANY_PORT, rpc=LOOPBACK_ANY_PORT)  # no CURVE
    client = sdk(hub, name="alice", server_key=str(keys["hub_pub"]),
                 client_key_file=str(keys["client_sec"]), connect_timeout=0.5,
                 connect_retries=1)
    with pytest.raises(HubTimeout, match="CURVE handshake with the hub failed"):
        await client.connect()


@pytest.mark.parametrize("transport", ["tcp-loopback", "ipc"])
async def test_loopback_and_ipc_binds_without_keys_still_work(
    make_hub: HubFactory, ipc_dir: str, transport: str
) -> None:
    if transport == "ipc":
        pub, rpc = f"ipc://{ipc_dir}/plain-pub", f"ipc://{ipc_dir}/plain-rpc"
    else:
        pub = rpc = LOOPBACK_ANY_PORT
    hub = await make_hub(pub=pub, rpc=rpc)
    assert hub._auth is None
    async with sdk(hub, name="plain") as client:
        assert (await client.status()).connected
    ctx = zmq.asyncio.Context()
    try:  # and a hand-written client (no SDK) still gets a reply
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(hub.rpc_endpoint)
        await dealer.send_multipart([b"", wire.encode(GetStatus(id=7))])
        async with asyncio.timeout(5.0):
            reply = wire.decode_reply((await dealer.recv_multipart())[-1])
        assert isinstance(reply, StatusReply) and reply.id == 7
        dealer.close(0)
    finally:
        ctx.term()


async def test_curve_on_ipc_works_too(make_hub: HubFactory, keys: dict[str, Path],
                                      ipc_dir: str) -> None:
    hub = await make_hub(pub=f"ipc://{ipc_dir}/c-pub", rpc=f"ipc://{ipc_dir}/c-rpc",
                         curve_server_secret_key_file=keys["hub_sec"],
                         curve_authorized_keys=_public_of(keys["allowed"]))  # a list, no dir
    assert hub._auth is not None
    async with sdk(hub, name="alice", server_key=str(keys["hub_pub"]),
                   client_key_file=str(keys["client_sec"])) as client:
        assert (await client.status()).connected


def _public_of(directory: Path) -> list[str]:
    return [load_public_key(p).decode() for p in sorted(directory.glob("*.key"))]


async def test_raw_subscriber_example_reaches_a_curve_hub(
    make_hub: HubFactory, keys: dict[str, Path]
) -> None:
    """clients/raw_subscriber.py (no ibhub import) with the two environment variables."""
    hub = await curve_hub(make_hub, keys)
    env = {**os.environ, "IBHUB_PUB": hub.pub_endpoint, "IBHUB_RPC": hub.rpc_endpoint,
           "IBHUB_SERVER_KEY": load_public_key(keys["hub_pub"]).decode(),
           "IBHUB_CLIENT_KEY_FILE": str(keys["client_sec"])}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "clients/raw_subscriber.py", "--subscribe", "AAPL", "--count", "5",
        "tick.AAPL", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=env, cwd=REPO,
    )
    try:
        async with asyncio.timeout(30):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    assert len([ln for ln in out.decode().splitlines() if " AAPL bid " in ln]) == 5, out


async def test_doctor_and_top_reach_a_curve_hub_through_the_environment(
    make_hub: HubFactory, keys: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = await curve_hub(make_hub, keys)
    assert (await doctor.check_hub(hub.rpc_endpoint, timeout=0.5)).diagnosis \
        is Diagnosis.HUB_NOT_ANSWERING  # no keys: the hub never answers
    monkeypatch.setenv("IBHUB_SERVER_KEY", str(keys["hub_pub"]))
    monkeypatch.setenv("IBHUB_CLIENT_KEY_FILE", str(keys["client_sec"]))
    report = await doctor.check_hub(hub.rpc_endpoint, timeout=3.0)
    assert report.diagnosis is Diagnosis.HUB_HEALTHY, report.detail
    out = io.StringIO()
    await run_top(hub.rpc_endpoint, hub.pub_endpoint, 0, 0.2, True, 3.0, out)
    assert "ibhub-top" in out.getvalue()


async def test_ibhub_run_with_curve_prints_the_hub_key_and_serves_listed_clients(
    keys: dict[str, Path], tmp_path: Path
) -> None:
    """A real `ibhub run --sim` with the keys in a TOML config, bound on loopback."""
    config = tmp_path / "ibhub.toml"
    config.write_text(
        'pub = "tcp://127.0.0.1:0"\nrpc = "tcp://127.0.0.1:0"\nhttp_port = 0\n'
        f'data_dir = "{tmp_path / "data"}"\n'  # never the user's: names.db, journal, token
        'sim_control_port = -1\n'  # no fault-control port on the shared 4010
        f'[curve]\nserver_secret_key_file = "{keys["hub_sec"]}"\n'
        f'authorized_keys_dir = "{keys["allowed"]}"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IBHUB_", "IB_"))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from ibhub.cli import main; main()", "run", "--sim",
        "--config", str(config), "--log-level", "WARNING",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        while not any(line.strip().startswith("state") for line in lines):
            raw = await asyncio.wait_for(proc.stdout.readline(), 15.0)
            assert raw, f"ibhub run exited early: {lines}"
            lines.append(raw.decode())
        text = "".join(lines)
        hub_key = load_public_key(keys["hub_pub"]).decode()
        assert f"curve on: 1 client key(s) allowed, hub public key {hub_key}" in text, text
        pub = next(ln.split()[1] for ln in lines if ln.strip().startswith("pub "))
        rpc = next(ln.split()[1] for ln in lines if ln.strip().startswith("rpc "))
        async with AsyncHub(pub, rpc, name="alice", server_key=hub_key,
                            client_key_file=str(keys["client_sec"])) as client:
            assert (await client.status()).connected
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10.0) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_failed_bind_with_curve_stops_the_authenticator(
    make_hub: HubFactory, keys: dict[str, Path], hub_sim: SimGateway
) -> None:
    first = await curve_hub(make_hub, keys)
    threads_before = threading.active_count()
    values: dict[str, Any] = dict(
        gateway_host="127.0.0.1", gateway_port=hub_sim.port, client_id=3,
        pub=LOOPBACK_ANY_PORT, rpc=first.rpc_endpoint,  # already taken
        curve_server_secret_key_file=keys["hub_sec"],
        curve_authorized_keys_dir=keys["allowed"], **FAST,
    )
    settings = HubSettings(**values)
    second = HubServer(settings)
    with pytest.raises(ConfigError, match="cannot bind"):
        await second.start()
    assert second._auth is None and second._ctx is None
    assert threading.active_count() == threads_before  # the ZAP thread was joined
    async with sdk(first, name="alice", server_key=str(keys["hub_pub"]),
                   client_key_file=str(keys["client_sec"])) as alice:
        assert (await alice.status()).connected  # the first hub is unaffected
