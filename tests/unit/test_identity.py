"""Lease tokens, role grants and raw-lease limits as pure bookkeeping (fake clock).

The end-to-end side (real sockets, SDK, CURVE) is tests/e2e/test_identity.py.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ibhub.config import ConfigError, HubSettings
from ibhub.hub.leases import LeaseTable, NoFreeClientId, Peer
from ibhub.hub.security import RolePolicy, RoleRefused, ensure_operator_token
from ibhub.keys import operator_token_path, read_operator_token

pytestmark = pytest.mark.timeout(10)

ALICE = Peer(b"alice-conn", "")
MALLORY = Peer(b"mallory-conn", "")
KEY_A = "A" * 40
KEY_B = "B" * 40


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def table(**kw: object) -> tuple[LeaseTable, Clock]:
    clock = Clock()
    values: dict[object, object] = dict(id_range=(1, 50), reserved=(0,), ttl=3.0, clock=clock)
    values.update(kw)
    return LeaseTable(**values), clock  # type: ignore[arg-type]


# ---------------------------------------------------------------- tokens


def test_a_token_is_secret_long_and_distinct_from_the_handle() -> None:
    t, _ = table()
    lease = t.open("alice", "trader", ALICE)
    assert len(lease.token) >= 43  # 256 bits in base64url: at least 128 required
    assert lease.token != lease.lease_id and lease.lease_id not in lease.token
    assert lease.token not in repr(lease)  # never in a log line that prints the lease
    assert t.open("bob", "trader", ALICE).token != lease.token


def test_a_token_resolves_only_from_the_connection_and_key_that_opened_it() -> None:
    t, _ = table()
    lease = t.open("alice", "trader", ALICE)
    assert t.resolve(lease.token, ALICE) is lease
    assert t.resolve(lease.token, MALLORY) is None  # stolen token, other connection
    assert t.resolve(lease.lease_id, ALICE) is None  # the public handle grants nothing
    assert t.resolve("", ALICE) is None
    keyed = t.open("remote", "trader", Peer(b"conn", KEY_A))
    assert t.resolve(keyed.token, Peer(b"conn", KEY_A)) is keyed
    assert t.resolve(keyed.token, Peer(b"conn", KEY_B)) is None  # same route, other key
    t.close(lease.lease_id)
    assert t.resolve(lease.token, ALICE) is None  # gone with its lease


# ---------------------------------------------------------------- raw leases


def test_raw_lease_gets_the_default_ttl_and_expires_by_the_clock() -> None:
    t, clock = table(raw_ttl=100.0)
    raw = t.lease_raw("ibhub lease")  # no ttl asked: the default, not "forever"
    assert raw.expires_in(clock.t) == 100.0
    longer = t.lease_raw("greedy", ttl=10_000.0)
    assert longer.expires_in(clock.t) == 100.0  # cut to raw_ttl
    short = t.lease_raw("short", ttl=5.0)
    clock.t += 5.0
    assert [r.name for r in t.expire()[1]] == ["short"]
    clock.t += 94.0
    assert t.expire() == ([], [])
    clock.t += 1.0
    assert sorted(r.name for r in t.expire()[1]) == ["greedy", "ibhub lease"]
    assert t.ids_in_use() == set()
    assert short.client_id not in t.ids_in_use()


def test_a_raw_lease_is_renewed_and_released_with_its_token_only() -> None:
    t, clock = table(raw_ttl=100.0)
    raw = t.lease_raw("job")
    other = t.lease_raw("other")
    clock.t += 90.0
    assert t.renew_raw("not-the-token") is None
    renewed = t.renew_raw(raw.token)
    assert renewed is raw and raw.expires_in(clock.t) == 100.0
    clock.t += 50.0
    assert [r.name for r in t.expire()[1]] == ["other"]  # the renewed one lives on
    assert t.release_raw(raw.client_id, other.token) is None
    assert t.release_raw(raw.client_id, "") is None
    assert t.release_raw(raw.client_id, raw.token) is raw


def test_raw_tied_to_a_lease_lives_as_long_as_the_lease() -> None:
    t, clock = table(raw_ttl=100.0)
    owner = t.open("owner", "trader", ALICE)
    tied = t.lease_raw("tied", owner=owner.lease_id)
    assert tied.expires_at is None
    clock.t += 2.0
    t.touch(owner.lease_id)
    clock.t += 2.0
    assert t.expire() == ([], [])


def test_separate_caps_keep_ids_for_scripts_and_name_the_holders() -> None:
    t, _ = table(id_range=(1, 20), lease_max=15, raw_max=5)
    for i in range(5):
        t.lease_raw("nightly-job" if i < 3 else "backfill")
    with pytest.raises(NoFreeClientId) as exc:
        t.lease_raw("one-more")
    text = str(exc.value)
    assert "raw_lease_max" in text and "'nightly-job' x3" in text and "'backfill' x2" in text
    # The raw cap leaves the scripts their ids.
    for i in range(15):
        t.open(f"script-{i % 2}", "trader", ALICE)
    with pytest.raises(NoFreeClientId) as exc:
        t.open("sixteenth", "trader", ALICE)
    assert "lease_max" in str(exc.value) and "'script-0' x8" in str(exc.value)


def test_holder_list_is_bounded() -> None:
    t, _ = table(id_range=(1, 30), raw_max=30)
    for i in range(30):
        t.lease_raw(f"name-{i:02d}-" + "x" * 100)
    with pytest.raises(NoFreeClientId) as exc:
        t.lease_raw("late")
    text = str(exc.value)
    assert "and 20 more name(s)" in text and len(text) < 1200


# ---------------------------------------------------------------- roles


def policy(tmp_path: Path, **kw: object) -> RolePolicy:
    settings = HubSettings(data_dir=tmp_path, **kw)  # type: ignore[arg-type]
    return RolePolicy.from_settings(
        settings,
        curve=bool(
            kw.get("curve_operator_keys")
            or kw.get("curve_trader_keys")
            or kw.get("curve_readonly_keys")
        ),
    )


def test_operator_token_file_is_created_private_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "data" / "operator.token"
    token = ensure_operator_token(path)
    assert len(token) >= 43 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_operator_token(path) == token  # kept across restarts
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match=r"accessible by other users.*chmod 600"):
        ensure_operator_token(path)


def test_the_sdk_finds_the_token_where_the_hub_keeps_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IBHUB_OPERATOR_TOKEN_FILE", raising=False)
    monkeypatch.setenv("IBHUB_DATA_DIR", str(tmp_path))
    hub_side = HubSettings(data_dir=tmp_path).operator_token_path
    assert operator_token_path() == hub_side
    token = ensure_operator_token(hub_side)
    assert read_operator_token() == token
    monkeypatch.setenv("IBHUB_OPERATOR_TOKEN_FILE", str(tmp_path / "nowhere"))
    assert read_operator_token() is None


def test_loopback_roles_come_from_config_not_from_the_claim(tmp_path: Path) -> None:
    p = policy(tmp_path)
    assert p.grant("trader", ALICE) == "trader"
    assert p.grant("readonly", ALICE) == "readonly"
    with pytest.raises(RoleRefused, match=r"operator\.token"):
        p.grant("operator", ALICE)
    with pytest.raises(RoleRefused, match="wrong operator token"):
        p.grant("operator", ALICE, "guess")
    assert p.grant("operator", ALICE, p.operator_token) == "operator"
    ro = policy(tmp_path, local_role="readonly")
    with pytest.raises(RoleRefused, match="local_role"):
        ro.grant("trader", ALICE)
    assert ro.grant("readonly", ALICE) == "readonly"


def test_curve_roles_are_per_key_and_the_token_does_not_count(tmp_path: Path) -> None:
    p = policy(tmp_path, curve_operator_keys=[KEY_A], curve_default_role="readonly")
    assert p.grant("operator", Peer(b"c", KEY_A)) == "operator"
    assert p.grant("trader", Peer(b"c", KEY_A)) == "trader"
    with pytest.raises(RoleRefused, match="curve_operator_keys"):
        p.grant("operator", Peer(b"c", KEY_B), p.operator_token)
    with pytest.raises(RoleRefused, match="curve_trader_keys"):
        p.grant("trader", Peer(b"c", KEY_B))
    assert p.grant("readonly", Peer(b"c", KEY_B)) == "readonly"
