"""The NATS bridge's pure parts (issue 17): subject layout, settings, the fan-out tee,
roles of NATS users, the request path shared with the ZeroMQ socket."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
import zmq
from hypothesis import given
from hypothesis import strategies as st

from ibhub import natswire
from ibhub.config import ConfigError, HubSettings, load_settings
from ibhub.hub.fanout import Fanout, TeePublisher
from ibhub.hub.leases import Peer
from ibhub.hub.registry import Registry
from ibhub.hub.requests import RpcServer
from ibhub.hub.security import NATS_PEER, RolePolicy, RoleRefused
from ibhub.protocol import Error, GetStatus, Ok, Reply
from ibhub.wire import decode_event, encode
from tests.unit.test_orders import AAPL


def test_subjects_mirror_topics_and_round_trip() -> None:
    assert natswire.subject_of("paper", "tick.AAPL") == "ibhub.paper.tick.AAPL"
    assert natswire.subject_of("paper", "hub.status") == "ibhub.paper.hub.status"
    assert natswire.subject_of("p", "tick.BRK B") == "ibhub.p.tick.BRK%20B"
    assert natswire.subject_of("p", "tick.a*b>c") == "ibhub.p.tick.a%2Ab%3Ec"
    assert natswire.topic_of("p", "ibhub.p.tick.BRK%20B") == "tick.BRK B"
    assert natswire.topic_of("p", "ibhub.other.tick.X") is None
    assert natswire.filter_of("p", "tick.") == "ibhub.p.tick.>"
    assert natswire.rpc_subject("p", "alice") == "ibhub.p.rpc.alice"
    assert natswire.rpc_filter("p") == "ibhub.p.rpc.*"
    assert natswire.stream_name("p") == "IBHUB_p"
    subjects = natswire.stream_subjects("p")
    assert "ibhub.p.tick.>" in subjects and "ibhub.p.hub.>" in subjects
    assert not any("rpc" in s for s in subjects)  # a stream on rpc would ack requests


@given(st.lists(st.text(min_size=0, max_size=12), min_size=1, max_size=4))
def test_any_topic_round_trips_and_never_makes_a_wildcard(tokens: list[str]) -> None:
    topic = ".".join(tokens)
    subject = natswire.subject_of("h", topic)
    assert natswire.topic_of("h", subject) == topic.encode(errors="replace").decode(
        errors="replace")
    for token in subject.split("."):
        assert token and token not in ("*", ">") and not any(c.isspace() for c in token)


def test_nats_settings_from_flags_env_and_toml(tmp_path: Any) -> None:
    s = HubSettings.model_validate({"nats_urls": "nats://a:4222, nats://b:4222",
                                    "nats_roles": "alice=trader ops=operator"})
    assert s.nats_urls == ["nats://a:4222", "nats://b:4222"]
    assert s.nats_roles == {"alice": "trader", "ops": "operator"}
    toml = tmp_path / "hub.toml"
    toml.write_text('[nats]\nurls = ["nats://n1:4222"]\nhub = "live"\nstream_replicas = 3\n'
                    '[nats_roles]\nbob = "readonly"\n')
    s = load_settings(config=toml, env={}, env_file=None)
    assert (s.nats_hub, s.nats_stream_replicas, s.nats_roles) == ("live", 3, {"bob": "readonly"})
    with pytest.raises(ConfigError, match="is not a NATS URL"):
        load_settings(nats_urls="http://x", env={}, env_file=None)
    with pytest.raises(ConfigError, match="role must be"):
        load_settings(nats_roles="alice=root", env={}, env_file=None)
    with pytest.raises(ConfigError, match="nats_hub"):
        load_settings(nats_hub="a.b", env={}, env_file=None)


def test_nats_roles_come_from_the_config_never_the_claim() -> None:
    policy = RolePolicy(nats_roles={"alice": "trader", "ops": "operator"},
                        nats_default_role="readonly")
    alice, bob, ops = (Peer(key=NATS_PEER + u) for u in ("alice", "bob", "ops"))
    assert policy.grant("trader", alice) == "trader"
    assert policy.grant("readonly", bob) == "readonly"
    assert policy.grant("operator", ops) == "operator"
    with pytest.raises(RoleRefused, match="NATS user 'bob'"):
        policy.grant("trader", bob)
    with pytest.raises(RoleRefused, match="NATS user 'alice'"):
        policy.grant("operator", alice, credential="any operator token")


def test_tee_publisher_sends_on_zeromq_and_keeps_each_message_once() -> None:
    ctx = zmq.Context()
    pub, sub = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
    try:
        pub.bind("inproc://tee")
        sub.connect("inproc://tee")
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        fanout = Fanout(pub)
        wakes: list[int] = []
        tee = fanout.tee(lambda: wakes.append(1))
        assert isinstance(fanout.publisher, TeePublisher)
        info = AAPL
        stream = fanout.tick_stream(fanout.topic_for(info, "ticks"), info)
        stream.price(1, 10.0, 5.0)
        stream.price(2, 10.5, 7.0)
        fanout.flush()  # one Ticks message + the bundle
        fanout.status("CONNECTED", "state", 0, "up", 0)
        taken = tee.take()
        assert wakes == [1] and [t for t, _ in taken] == [b"tick.AAPL", b"bundle.tick",
                                                          b"hub.status"]
        batch = decode_event(taken[0][1])
        assert [t.seq for t in batch.ticks] == [1, 2]  # type: ignore[attr-defined]
        assert sub.poll(1000) and sub.recv_multipart() == list(taken[0])  # same bytes
        assert tee.take() == []
        with pytest.raises(RuntimeError, match="after market-data streams"):
            fanout.tee(lambda: None)
    finally:
        pub.close(0)
        sub.close(0)
        ctx.term()


async def test_serve_payload_is_the_one_dispatch_for_any_transport() -> None:
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    try:
        registry = Registry()
        seen: list[Peer] = []

        def status(req: GetStatus, c: Any) -> Reply:
            seen.append(c.peer)
            return Ok(id=req.id)

        registry.add(GetStatus, status)
        server = RpcServer(router, registry)
        replies: list[Reply] = []
        peer = Peer(b"nats:alice", "nats:alice")
        server.serve_payload(encode(GetStatus(id=7)), peer, replies.append)
        server.serve_payload(b"\xc1 not msgpack", peer, replies.append)
        server.serve_payload(msgspec.msgpack.encode({"type": "nope", "id": 3}), peer,
                             replies.append)
        await asyncio.sleep(0)
        assert replies[0] == Ok(id=7) and seen == [peer]
        assert isinstance(replies[1], Error) and replies[1].code == "bad_request"
        assert isinstance(replies[2], Error) and replies[2].id == 3
        assert server.requests == 3 and server.errors == 2
        await server.close()
    finally:
        router.close(0)
        ctx.term()


def test_hub_and_sdk_run_without_nats_py_installed() -> None:
    """nats-py is an extra: without it the hub and the SDK import and run (no --nats),
    and asking for NATS says which extra to install."""
    code = """
import asyncio, sys
sys.modules["nats"] = None  # as if nats-py were not installed
from ibhub.hub.server import HubServer
from ibhub.client import AsyncHub, HubError
from ibhub.config import ConfigError, HubSettings
from ibhub.hub.nats_bridge import NatsBridge
try:
    NatsBridge(HubSettings(nats_urls=["nats://127.0.0.1:1"]), None, None)
except ConfigError as exc:
    assert "ibhub[nats]" in str(exc), exc
else:
    raise SystemExit("no ConfigError")
async def sdk():
    try:
        await AsyncHub(nats="nats://127.0.0.1:1", name="x").connect()
    except HubError as exc:
        assert "ibhub[nats]" in str(exc), exc
    else:
        raise SystemExit("no HubError")
asyncio.run(sdk())
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


async def test_sdk_gives_up_on_an_unreachable_nats_within_its_timeout() -> None:
    from ibhub.client import AsyncHub, HubTimeout
    from tests.nats_support import free_port

    hub = AsyncHub(nats=f"nats://127.0.0.1:{free_port()}", hub_name="h", name="nobody",
                   connect_timeout=0.5)
    started = asyncio.get_running_loop().time()
    with pytest.raises(HubTimeout, match="cannot connect to NATS"):
        await hub.connect()
    assert asyncio.get_running_loop().time() - started < 3.0


def test_missing_tls_files_fail_the_start_naming_the_setting(tmp_path: Any) -> None:
    from ibhub.hub.nats_bridge import NatsBridge

    settings = HubSettings(nats_urls=["tls://127.0.0.1:1"],
                           nats_tls_ca_file=tmp_path / "missing-ca.pem")
    with pytest.raises(ConfigError, match="nats_tls_"):
        NatsBridge(settings, None, None)  # type: ignore[arg-type]
