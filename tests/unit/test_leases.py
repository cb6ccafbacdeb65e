"""LeaseTable: client-id allocation, heartbeat expiry, raw ids (fake clock)."""

from __future__ import annotations

import pytest

from ibhub.hub.leases import LeaseTable, NoFreeClientId


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def table(lo: int = 0, hi: int = 5, reserved: tuple[int, ...] = (0,), ttl: float = 3.0):
    clock = Clock()
    return LeaseTable(id_range=(lo, hi), reserved=reserved, ttl=ttl, clock=clock), clock


def test_client_ids_unique_never_reserved_and_round_robin() -> None:
    t, _ = table(0, 3)
    a, b, c = t.open("a", "trader"), t.open("b", "trader"), t.open("c", "readonly")
    assert [a.client_id, b.client_id, c.client_id] == [1, 2, 3]
    assert len({a.lease_id, b.lease_id, c.lease_id}) == 3
    with pytest.raises(NoFreeClientId, match="all 3 client ids"):
        t.open("d", "trader")
    t.close(b.lease_id)
    # Round-robin: the freed id comes back only after the ids beyond the cursor.
    assert t.open("e", "trader").client_id == 2


def test_freed_id_not_reused_immediately() -> None:
    t, _ = table(1, 10, reserved=())
    first = t.open("a", "trader")
    t.close(first.lease_id)
    assert t.open("b", "trader").client_id != first.client_id


def test_expiry_by_missed_heartbeats() -> None:
    t, clock = table(ttl=3.0)
    live, dead = t.open("live", "trader"), t.open("dead", "trader")
    clock.t += 2.0
    assert t.touch(live.lease_id) is live
    assert t.expire() == ([], [])
    clock.t += 1.5  # dead: 3.5 s silent; live: 1.5 s
    leases, raws = t.expire()
    assert [x.name for x in leases] == ["dead"] and raws == []
    assert t.get(dead.lease_id) is None and t.touch(dead.lease_id) is None
    assert dead.client_id not in t.ids_in_use()
    assert t.get(live.lease_id) is live


def test_raw_ids_share_the_pool_and_expire() -> None:
    t, clock = table(0, 4)
    owner = t.open("owner", "trader")
    bound = t.lease_raw("bound", owner=owner.lease_id)
    timed = t.lease_raw("timed", ttl=5.0)
    forever = t.lease_raw("forever")
    ids = {owner.client_id, bound.client_id, timed.client_id, forever.client_id}
    assert ids == {1, 2, 3, 4}
    assert timed.expires_in(clock.t) == 5.0 and forever.expires_in(clock.t) == 0.0
    with pytest.raises(NoFreeClientId):
        t.lease_raw("none left")
    with pytest.raises(KeyError):
        t.lease_raw("orphan", owner="no-such-lease")

    clock.t += 2.9
    t.touch(owner.lease_id)
    clock.t += 2.2  # timed: 5.1 s old -> gone; owner touched 2.2 s ago -> alive
    leases, raws = t.expire()
    assert leases == [] and [r.name for r in raws] == ["timed"]

    closed, owned = t.close(owner.lease_id)
    assert closed is owner and [r.name for r in owned] == ["bound"]
    assert [r.name for r in t.raw_leases()] == ["forever"]
    assert t.release_raw(forever.client_id) is forever
    assert t.release_raw(forever.client_id) is None
    assert t.ids_in_use() == set()


def test_expired_owner_takes_its_raw_ids() -> None:
    t, clock = table()
    owner = t.open("owner", "trader")
    raw = t.lease_raw("bound", owner=owner.lease_id)
    clock.t += 10
    leases, raws = t.expire()
    assert leases == [owner] and raws == [raw]
