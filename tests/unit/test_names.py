"""Script-name bindings (ibhub.hub.names) and the SDK's secret files (ibhub.client.names)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from ibhub.client.names import NameSecretError, load_name_secret, secret_path
from ibhub.hub.names import (
    MIN_SECRET,
    SEEN_EVERY,
    NameBindings,
    NameRefused,
    new_secret,
    secret_hash,
)

ALICE = "a" * 43
OTHER = "b" * 43
KEY1 = "k" * 40
KEY2 = "z" * 40


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def names(tmp_path: Path, clock: Clock) -> Iterator[NameBindings]:
    store = NameBindings(tmp_path / "names.db", ttl=100.0, clock=clock)
    yield store
    store.close()


def test_first_hello_binds_and_only_the_same_secret_passes(names: NameBindings) -> None:
    assert names.check("alice", ALICE, "") is None  # unbound: anyone may claim it
    names.bind("alice", ALICE, "")
    assert names.check("alice", ALICE, "") is not None
    with pytest.raises(NameRefused, match="bound to another name secret"):
        names.check("alice", OTHER, "")
    with pytest.raises(NameRefused, match="carries none") as refused:
        names.check("alice", "", "")
    assert "ibhub names --forget" in str(refused.value)  # says how to proceed
    assert names.check("bob", OTHER, "") is None  # other names are not affected


def test_only_a_hash_is_stored_and_the_file_is_private(names: NameBindings) -> None:
    names.bind("alice", ALICE, "")
    binding = names.get("alice")
    assert binding is not None and binding.secret_hash == secret_hash(ALICE)
    assert ALICE.encode() not in names.path.read_bytes()
    assert stat.S_IMODE(names.path.stat().st_mode) == 0o600


def test_bindings_survive_a_restart(tmp_path: Path, clock: Clock) -> None:
    first = NameBindings(tmp_path / "names.db", clock=clock)
    first.bind("alice", ALICE, "")
    first.close()
    again = NameBindings(tmp_path / "names.db", clock=clock)
    try:
        assert again.check("alice", ALICE, "") is not None
        with pytest.raises(NameRefused):
            again.check("alice", OTHER, "")
    finally:
        again.close()


def test_curve_binding_follows_the_key(names: NameBindings) -> None:
    names.bind("desk", ALICE, KEY1)
    assert names.check("desk", "", KEY1) is not None  # the bound key needs no secret
    with pytest.raises(NameRefused, match="another CURVE key"):
        names.check("desk", ALICE, KEY2)  # another key, even with the secret
    # CURVE turned off later: the secret still proves the name
    assert names.check("desk", ALICE, "") is not None
    # bound on loopback, then CURVE on: the secret proves it from any allowed key
    names.bind("local", OTHER, "")
    assert names.check("local", OTHER, KEY2) is not None
    with pytest.raises(NameRefused):
        names.check("local", "", KEY2)


def test_reserved_names_and_short_secrets_are_refused(names: NameBindings) -> None:
    for name in ("tws-client-7", "external"):
        with pytest.raises(NameRefused, match="reserved"):
            names.check(name, ALICE, "")
    with pytest.raises(NameRefused, match=f"fewer than {MIN_SECRET}"):
        names.check("alice", "short", "")
    assert len(new_secret()) >= MIN_SECRET


def test_a_race_between_two_binders_keeps_the_first(
    names: NameBindings, tmp_path: Path, clock: Clock
) -> None:
    other_hub = NameBindings(tmp_path / "names.db", clock=clock)
    try:
        assert names.check("alice", ALICE, "") is None
        assert other_hub.check("alice", OTHER, "") is None
        other_hub.bind("alice", OTHER, "")
        with pytest.raises(NameRefused):
            names.bind("alice", ALICE, "")
        assert names.check("alice", OTHER, "") is not None
    finally:
        other_hub.close()


def test_forget_and_list(names: NameBindings) -> None:
    names.bind("bob", OTHER, "")
    names.bind("alice", ALICE, KEY1)
    assert [(b.name, b.key) for b in names.all()] == [("alice", KEY1), ("bob", "")]
    assert names.forget("alice") is True
    assert names.forget("alice") is False
    assert names.check("alice", OTHER, "") is None  # free again: a new claimant binds it
    assert len(names) == 1


def test_last_seen_and_prune(names: NameBindings, clock: Clock) -> None:
    names.bind("old", ALICE, "")
    names.bind("busy", ALICE, "")
    names.bind("fresh", ALICE, "")
    clock.now += 60
    binding = names.check("fresh", ALICE, "")
    assert binding is not None
    names.seen(binding)
    fresh = names.get("fresh")
    assert fresh is not None and fresh.last_seen == clock.now
    clock.now += SEEN_EVERY / 2
    names.seen(fresh)  # within a minute: not rewritten
    assert names.get("fresh") == fresh
    clock.now += 50  # old and busy: unseen for 110 s > ttl 100; fresh for 80 s
    assert names.prune(keep={"busy"}) == ["old"]
    assert sorted(b.name for b in names.all()) == ["busy", "fresh"]
    names.ttl = 0  # 0: kept until an operator forgets them
    clock.now += 10_000
    assert names.prune() == []


def test_sdk_secret_file_is_made_once_private(tmp_path: Path) -> None:
    first = load_name_secret("alice", tmp_path)
    assert load_name_secret("alice", tmp_path) == first  # a restarted script
    path = secret_path("alice", tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_name_secret("bob", tmp_path) != first
    # any name is one file inside the directory
    odd = secret_path("../x/y", tmp_path)
    assert odd.parent == tmp_path and odd.name.startswith("%2E")
    load_name_secret("../x/y", tmp_path)
    assert not (tmp_path.parent / "x").exists()


def test_sdk_refuses_a_secret_file_others_can_read(tmp_path: Path) -> None:
    load_name_secret("alice", tmp_path)
    path = secret_path("alice", tmp_path)
    os.chmod(path, 0o644)
    with pytest.raises(NameSecretError, match="chmod 600"):
        load_name_secret("alice", tmp_path)
    os.chmod(path, 0o600)
    path.write_text("short\n")
    with pytest.raises(NameSecretError, match="not a secret"):
        load_name_secret("alice", tmp_path)


def test_sdk_names_dir_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IBHUB_NAMES_DIR", str(tmp_path / "n"))
    assert secret_path("alice") == tmp_path / "n" / "alice"
    monkeypatch.delenv("IBHUB_NAMES_DIR")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert secret_path("alice") == tmp_path / "state" / "ibhub" / "names" / "alice"
