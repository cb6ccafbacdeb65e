"""The lease table: who is connected to the hub, with which client id, until when.

A *lease* is a script's session with the hub (hello → heartbeats → goodbye or
expiry). A *raw lease* is a bare TWS client id handed to a script that must open
its own Gateway connection. Both draw from one pool of client ids so that an id is
never held twice, and the hub's own upstream id is never in the pool.

Ids are allocated round-robin (the next free id after the last one handed out)
rather than lowest-free: a script that just released id 7 may still have a socket
to the Gateway closing with it, and immediate reuse would hit IB error 326.

Pure bookkeeping, no I/O; the clock is injectable so expiry is unit-testable.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field


class NoFreeClientId(Exception):
    """Every client id in the configured range is held."""


@dataclass(slots=True)
class Lease:
    lease_id: str
    name: str
    role: str
    client_id: int
    created: float
    last_seen: float
    topics: set[str] = field(default_factory=set)  # subscriptions held (maintained by the hub)


@dataclass(slots=True)
class RawLease:
    client_id: int
    name: str
    owner: str  # lease id whose life bounds this raw id, or ""
    created: float
    expires_at: float | None  # monotonic deadline; None = until released

    def expires_in(self, now: float) -> float:
        return 0.0 if self.expires_at is None else max(0.0, self.expires_at - now)


class LeaseTable:
    """Live leases and raw client-id leases.

    ``ttl`` is how long a lease lives without a heartbeat (seconds).
    """

    def __init__(
        self,
        *,
        id_range: tuple[int, int],
        reserved: Iterable[int] = (),
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        lo, hi = id_range
        self._reserved = frozenset(reserved)
        self._pool = [i for i in range(lo, hi + 1) if i not in self._reserved]
        self._cursor = 0
        self.ttl = ttl
        self._clock = clock
        self._leases: dict[str, Lease] = {}
        self._raw: dict[int, RawLease] = {}
        self._ids_in_use: set[int] = set()

    # ------------------------------------------------------------------ client ids

    def _allocate(self) -> int:
        n = len(self._pool)
        for step in range(n):
            idx = (self._cursor + step) % n
            cid = self._pool[idx]
            if cid not in self._ids_in_use:
                self._cursor = (idx + 1) % n
                self._ids_in_use.add(cid)
                return cid
        raise NoFreeClientId(
            f"all {n} client ids in the configured range are held "
            f"({len(self._leases)} leases, {len(self._raw)} raw ids); release some or widen "
            "raw_client_id_range"
        )

    def ids_in_use(self) -> set[int]:
        return set(self._ids_in_use)

    # ------------------------------------------------------------------ leases

    def open(self, name: str, role: str) -> Lease:
        """A new lease with a fresh id and a client id unique among live leases."""
        cid = self._allocate()
        now = self._clock()
        lease_id = secrets.token_hex(8)
        while lease_id in self._leases:  # pragma: no cover - 64 random bits
            lease_id = secrets.token_hex(8)
        lease = Lease(lease_id, name, role, cid, now, now)
        self._leases[lease_id] = lease
        return lease

    def get(self, lease_id: str) -> Lease | None:
        return self._leases.get(lease_id)

    def touch(self, lease_id: str) -> Lease | None:
        """Record a sign of life; returns None if the lease is unknown or expired."""
        lease = self._leases.get(lease_id)
        if lease is not None:
            lease.last_seen = self._clock()
        return lease

    def close(self, lease_id: str) -> tuple[Lease | None, list[RawLease]]:
        """End a lease (goodbye or expiry); also ends the raw ids it owns."""
        lease = self._leases.pop(lease_id, None)
        if lease is None:
            return None, []
        self._ids_in_use.discard(lease.client_id)
        owned = [r for r in self._raw.values() if r.owner == lease_id]
        for raw in owned:
            self._drop_raw(raw.client_id)
        return lease, owned

    def leases(self) -> list[Lease]:
        return list(self._leases.values())

    def __len__(self) -> int:
        return len(self._leases)

    # ------------------------------------------------------------------ raw ids

    def lease_raw(self, name: str, ttl: float = 0.0, owner: str = "") -> RawLease:
        """Hand out a raw client id. ``ttl`` 0 = until released or ``owner`` ends."""
        if owner and owner not in self._leases:
            raise KeyError(owner)
        cid = self._allocate()
        now = self._clock()
        raw = RawLease(cid, name, owner, now, now + ttl if ttl > 0 else None)
        self._raw[cid] = raw
        return raw

    def release_raw(self, client_id: int) -> RawLease | None:
        if client_id not in self._raw:
            return None
        return self._drop_raw(client_id)

    def _drop_raw(self, client_id: int) -> RawLease:
        raw = self._raw.pop(client_id)
        self._ids_in_use.discard(client_id)
        return raw

    def raw_leases(self) -> list[RawLease]:
        return list(self._raw.values())

    def now(self) -> float:
        return self._clock()

    # ------------------------------------------------------------------ expiry

    def expire(self) -> tuple[list[Lease], list[RawLease]]:
        """Remove and return leases silent for longer than ``ttl`` and timed-out raw ids.

        Raw ids owned by an expired lease are included in the second list.
        """
        now = self._clock()
        dead = [lease for lease in self._leases.values() if now - lease.last_seen > self.ttl]
        gone_leases: list[Lease] = []
        gone_raw: list[RawLease] = []
        for lease in dead:
            closed, owned = self.close(lease.lease_id)
            if closed is not None:
                gone_leases.append(closed)
            gone_raw.extend(owned)
        for raw in list(self._raw.values()):
            if raw.expires_at is not None and now >= raw.expires_at:
                gone_raw.append(self._drop_raw(raw.client_id))
        return gone_leases, gone_raw
