"""Unit tests for socket security: endpoint classes, the bind rule, key files, the
allow-list, settings and the ``ibhub keys`` command. No socket is bound here."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import zmq
import zmq.auth
from click.testing import CliRunner

from ibhub.cli import main as ibhub_cli
from ibhub.client.curve import ENV_CLIENT_KEY_FILE, ENV_SERVER_KEY, client_curve
from ibhub.config import ConfigError, HubSettings, load_settings
from ibhub.hub.security import AllowList, ServerSecurity, check_bind, classify_endpoint
from ibhub.hub.server import bindable
from ibhub.keys import (
    KeyFileError,
    check_z85_key,
    generate_key_pair,
    load_public_key,
    load_secret_key_file,
    parse_key_or_file,
    public_keys_in,
    secret_file_exposed,
)

pytestmark = pytest.mark.skipif(not zmq.has("curve"), reason="libzmq built without CURVE")


@pytest.mark.parametrize(("endpoint", "kind"), [
    ("tcp://127.0.0.1:5570", "loopback"),
    ("tcp://127.4.5.6:0", "loopback"),
    ("tcp://localhost:5570", "loopback"),
    ("tcp://LOCALHOST:*", "loopback"),
    ("tcp://[::1]:5570", "loopback"),
    ("ipc:///tmp/hub.rpc", "local"),
    ("inproc://hub", "local"),
    ("tcp://0.0.0.0:5570", "remote"),
    ("tcp://*:5570", "remote"),
    ("tcp://[::]:5570", "remote"),
    ("tcp://192.168.1.20:5570", "remote"),
    ("tcp://10.0.0.1:0", "remote"),
    ("tcp://eth0:5570", "remote"),
    ("tcp://hub.example.com:5570", "remote"),
    ("ws://127.0.0.1:5570", "remote"),
])
def test_classify_endpoint(endpoint: str, kind: str) -> None:
    assert classify_endpoint(endpoint) == kind


@pytest.mark.parametrize("endpoint", ["tcp://0.0.0.0:5570", "tcp://*:0", "tcp://192.0.2.1:1",
                                      "tcp://eth0:5570", "tcp://[::]:5570"])
def test_non_loopback_bind_without_curve_is_refused_naming_endpoint_and_fix(
    endpoint: str
) -> None:
    with pytest.raises(ConfigError) as err:
        check_bind("rpc", endpoint, curve=False)
    message = str(err.value)
    assert f"refusing to bind rpc to {endpoint!r}" in message
    assert "ibhub keys generate" in message and "curve_server_secret_key_file" in message
    check_bind("rpc", endpoint, curve=True)  # allowed once CURVE is on
    assert bindable(endpoint, curve=True, setting="rpc").startswith("tcp://")


def test_loopback_and_ipc_binds_need_no_keys() -> None:
    for endpoint in ("tcp://127.0.0.1:0", "tcp://[::1]:0", "ipc:///tmp/x", "inproc://x"):
        check_bind("pub", endpoint, curve=False)
    assert bindable("tcp://127.0.0.1:0") == "tcp://127.0.0.1:*"
    assert bindable("tcp://[::1]:0") == "tcp://[::1]:*"
    assert bindable("tcp://0.0.0.0:0", curve=True) == "tcp://0.0.0.0:*"


# ---------------------------------------------------------------------------- key files


def test_generate_writes_zmq_auth_files_with_restrictive_modes(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    public_path, secret_path = generate_key_pair(directory, "alice")
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(secret_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(public_path.stat().st_mode) == 0o644
    assert not secret_file_exposed(secret_path)
    pub, sec = zmq.auth.load_certificate(secret_path)  # readable by ZeroMQ's own loader
    assert sec is not None and zmq.curve_public(sec) == pub
    assert zmq.auth.load_certificate(public_path) == (pub, None)
    assert "secret-key" not in public_path.read_text()
    assert load_secret_key_file(secret_path) == (pub, sec)
    assert load_public_key(public_path) == load_public_key(secret_path) == pub


def test_generate_never_overwrites_unless_forced(tmp_path: Path) -> None:
    first, _ = generate_key_pair(tmp_path, "hub")
    before = load_public_key(first)
    with pytest.raises(KeyFileError, match="already exists"):
        generate_key_pair(tmp_path, "hub")
    assert load_public_key(first) == before
    generate_key_pair(tmp_path, "hub", force=True)
    assert load_public_key(first) != before
    with pytest.raises(KeyFileError, match="plain file name"):
        generate_key_pair(tmp_path, "../escape")


def test_bad_key_files_are_named(tmp_path: Path) -> None:
    public_path, secret_path = generate_key_pair(tmp_path, "c")
    with pytest.raises(KeyFileError, match="only a public key"):
        load_secret_key_file(public_path)
    with pytest.raises(KeyFileError, match="does not exist"):
        load_public_key(tmp_path / "missing.key")
    junk = tmp_path / "junk.key"
    junk.write_text("hello\n")
    with pytest.raises(KeyFileError, match="no public-key line"):
        load_public_key(junk)
    short = tmp_path / "short.key"
    short.write_text('curve\n    public-key = "abc"\n')
    with pytest.raises(KeyFileError, match="40 Z85 characters"):
        load_public_key(short)
    os.chmod(secret_path, 0o644)
    assert secret_file_exposed(secret_path)


def test_z85_checks_and_key_or_file(tmp_path: Path) -> None:
    public, _ = zmq.curve_keypair()
    assert check_z85_key(public.decode()) == public
    with pytest.raises(KeyFileError, match="40 Z85"):
        check_z85_key("too-short")
    with pytest.raises(KeyFileError, match="not valid Z85"):
        check_z85_key("~" * 40)
    public_path, _ = generate_key_pair(tmp_path, "hub")
    assert parse_key_or_file(public.decode(), "k") == public
    assert parse_key_or_file(str(public_path), "k") == load_public_key(public_path)
    with pytest.raises(KeyFileError, match="neither"):
        parse_key_or_file(str(tmp_path / "nope.key"), "k")


def test_public_keys_in_skips_secret_files(tmp_path: Path) -> None:
    a_pub, _ = generate_key_pair(tmp_path, "a")
    b_pub, _ = generate_key_pair(tmp_path, "b")
    found = public_keys_in(tmp_path)
    assert set(found) == {load_public_key(a_pub), load_public_key(b_pub)}
    assert all(p.suffix == ".key" for p in found.values())
    with pytest.raises(KeyFileError, match="does not exist"):
        public_keys_in(tmp_path / "none")


# ---------------------------------------------------------------------------- allow-list


def test_allow_list_rereads_its_directory_when_it_changes(tmp_path: Path) -> None:
    keys_dir = tmp_path / "allowed"
    keys_dir.mkdir()
    fixed, _ = zmq.curve_keypair()
    allow = AllowList([fixed], keys_dir)
    assert allow.callback("ibhub", fixed)
    bob_pub, _ = generate_key_pair(tmp_path / "bob", "bob")
    bob = load_public_key(bob_pub)
    assert not allow.callback("ibhub", bob)
    (keys_dir / "bob.key").write_bytes(bob_pub.read_bytes())
    os.utime(keys_dir, ns=(1, 1))  # a fresh stamp even on coarse-mtime file systems
    assert allow.callback("ibhub", bob)
    (keys_dir / "bob.key").unlink()
    os.utime(keys_dir, ns=(2, 2))
    assert not allow.callback("ibhub", bob)
    assert (allow.allowed_count, allow.denied_count) == (2, 2)


def test_allow_list_keeps_the_last_good_list_when_the_directory_breaks(tmp_path: Path) -> None:
    keys_dir = tmp_path / "allowed"
    pub_path, _ = generate_key_pair(keys_dir, "alice")
    alice = load_public_key(pub_path)
    allow = AllowList((), keys_dir)
    assert allow.callback("ibhub", alice)
    (keys_dir / "junk.key").write_text("not a key\n")
    os.utime(keys_dir, ns=(3, 3))
    assert allow.callback("ibhub", alice)  # logged, previous list kept


# ---------------------------------------------------------------------------- settings


def _hub_keys(tmp_path: Path) -> tuple[Path, Path, bytes]:
    _, hub_secret = generate_key_pair(tmp_path / "hub", "hub")
    client_pub, _ = generate_key_pair(tmp_path / "clients", "alice")
    return hub_secret, tmp_path / "clients", load_public_key(client_pub)


def test_server_security_from_settings(tmp_path: Path) -> None:
    assert not ServerSecurity.from_settings(HubSettings()).enabled
    hub_secret, clients, alice = _hub_keys(tmp_path)
    sec = ServerSecurity.from_settings(HubSettings(
        curve_server_secret_key_file=hub_secret, curve_authorized_keys_dir=clients))
    assert sec.enabled and sec.allow is not None and alice in sec.allow.keys()
    assert sec.public_key == load_public_key(hub_secret)
    listed = ServerSecurity.from_settings(HubSettings(
        curve_server_secret_key_file=hub_secret, curve_authorized_keys=[alice.decode()]))
    assert listed.allow is not None and listed.allow.keys() == {alice}


@pytest.mark.parametrize(("settings", "match"), [
    (dict(curve_authorized_keys_dir="DIR"), "curve_server_secret_key_file is not"),
    (dict(curve_server_secret_key_file="SECRET"), "no client may connect"),
    (dict(curve_server_secret_key_file="PUBLIC", curve_authorized_keys_dir="DIR"),
     "only a public key"),
    (dict(curve_server_secret_key_file="MISSING", curve_authorized_keys_dir="DIR"),
     "does not exist"),
    (dict(curve_server_secret_key_file="SECRET", curve_authorized_keys=["nope"]),
     "curve_authorized_keys entry"),
    (dict(curve_server_secret_key_file="SECRET", curve_authorized_keys_dir="NODIR"),
     "curve_authorized_keys_dir"),
])
def test_bad_curve_settings_are_config_errors(
    tmp_path: Path, settings: dict[str, object], match: str
) -> None:
    hub_secret, clients, _ = _hub_keys(tmp_path)
    paths = {"DIR": clients, "SECRET": hub_secret, "PUBLIC": hub_secret.with_suffix(".key"),
             "MISSING": tmp_path / "missing.key_secret", "NODIR": tmp_path / "nodir"}
    values = {k: paths.get(v, v) if isinstance(v, str) else v for k, v in settings.items()}
    with pytest.raises(ConfigError, match=match):
        ServerSecurity.from_settings(HubSettings(**values))  # type: ignore[arg-type]


def test_curve_settings_from_environment_and_file(tmp_path: Path) -> None:
    a, _ = zmq.curve_keypair()
    b, _ = zmq.curve_keypair()
    env = {"IBHUB_CURVE_AUTHORIZED_KEYS": f"{a.decode()}, {b.decode()}",
           "IBHUB_CURVE_SERVER_SECRET_KEY_FILE": "/etc/ibhub/hub.key_secret",
           "IBHUB_CURVE_AUTHORIZED_KEYS_DIR": ""}
    s = load_settings(env=env, env_file=None, search=[])
    assert s.curve_authorized_keys == [a.decode(), b.decode()]
    assert s.curve_server_secret_key_file == Path("/etc/ibhub/hub.key_secret")
    assert s.curve_authorized_keys_dir is None
    toml = tmp_path / "ibhub.toml"
    toml.write_text(f'[curve]\nauthorized_keys = ["{a.decode()}"]\n'
                    'authorized_keys_dir = "/etc/ibhub/clients"\n')
    s = load_settings(config=toml, env={}, env_file=None)
    assert s.curve_authorized_keys == [a.decode()]
    assert s.curve_authorized_keys_dir == Path("/etc/ibhub/clients")


# ---------------------------------------------------------------------------- SDK side


def test_client_curve_from_arguments_or_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_SERVER_KEY, raising=False)
    monkeypatch.delenv(ENV_CLIENT_KEY_FILE, raising=False)
    assert client_curve() is None
    hub_pub, _ = generate_key_pair(tmp_path / "hub", "hub")
    _, client_sec = generate_key_pair(tmp_path / "c", "c")
    server = load_public_key(hub_pub)
    curve = client_curve(server.decode(), client_sec)
    assert curve is not None and curve.server_key == server
    assert (curve.public_key, curve.secret_key) == load_secret_key_file(client_sec)
    assert curve.secret_key.decode() not in repr(curve)
    with pytest.raises(KeyFileError, match="IBHUB_CLIENT_KEY_FILE"):
        client_curve(server_key=server)
    monkeypatch.setenv(ENV_SERVER_KEY, str(hub_pub))
    with pytest.raises(KeyFileError, match="IBHUB_CLIENT_KEY_FILE"):
        client_curve()
    monkeypatch.setenv(ENV_CLIENT_KEY_FILE, str(client_sec))
    from_env = client_curve()
    assert from_env is not None and from_env.server_key == server
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    try:
        assert sock.getsockopt(zmq.MECHANISM) == zmq.NULL
        from_env.apply(sock)  # the keys themselves are write-only; the e2e tests use them
        assert sock.getsockopt(zmq.MECHANISM) == zmq.CURVE
        assert not sock.getsockopt(zmq.CURVE_SERVER)
    finally:
        sock.close(0)
        ctx.term()


# ---------------------------------------------------------------------------- CLI


def test_keys_cli_generate_and_show(tmp_path: Path) -> None:
    runner = CliRunner()
    out = runner.invoke(ibhub_cli, ["keys", "generate", "--dir", str(tmp_path), "--name", "hub"])
    assert out.exit_code == 0, out.output
    public = load_public_key(tmp_path / "hub.key").decode()
    assert f"public key  {public}" in out.output
    _, secret = zmq.auth.load_certificate(tmp_path / "hub.key_secret")
    assert secret is not None
    again = runner.invoke(ibhub_cli, ["keys", "generate", "--dir", str(tmp_path), "--name", "hub"])
    assert again.exit_code != 0 and "already exists" in again.output
    shown = runner.invoke(ibhub_cli, ["keys", "show", str(tmp_path / "hub.key_secret"),
                                      "--dir", str(tmp_path)])
    assert shown.exit_code == 0, shown.output
    assert shown.output.count(public) == 2 and secret.decode() not in shown.output
    bad = runner.invoke(ibhub_cli, ["keys", "show", str(tmp_path / "missing.key")])
    assert bad.exit_code == 1 and "does not exist" in bad.output
    none = runner.invoke(ibhub_cli, ["keys", "show"])
    assert none.exit_code == 2


def test_allow_list_refuses_when_its_check_breaks(monkeypatch: pytest.MonkeyPatch) -> None:
    key, _ = zmq.curve_keypair()
    allow = AllowList([key])

    def broken() -> frozenset[bytes]:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(allow, "keys", broken)
    assert allow.callback("ibhub", key) is False  # refused, and the ZAP thread lives on
