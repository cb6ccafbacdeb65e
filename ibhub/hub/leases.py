"""The lease table: who is connected to the hub, with which client id, until when.

A *lease* is a script's session with the hub (hello → heartbeats → goodbye or
expiry). A *raw lease* is a bare TWS client id handed to a script that must open
its own Gateway connection. Both draw from one pool of client ids so that an id is
never held twice, and the hub's own upstream id is never in the pool; each kind has
its own cap (``lease_max``, ``raw_max``), so a pile of forgotten raw ids cannot take
the ids new scripts need, and the other way round.

A lease is a capability (docs/security.md). It has two names:

* ``lease_id``, the public *handle*: 16 hex characters, shown by ``status``, in
  logs and in the lease's PUB topics (``order.<handle>``, ``error.<handle>``).
  Knowing it grants nothing: requests never accept it.
* ``token``, the secret: 256 random bits (:func:`secrets.token_urlsafe`), given
  only in the Welcome to the connection that said hello, and carried in the
  ``lease`` field of that client's requests. :meth:`LeaseTable.resolve` finds a lease
  by token (a dict lookup: no byte-by-byte comparison to time) and also checks that
  the request came over the connection (ZeroMQ routing identity) and, with CURVE,
  the client key that opened the lease; a token presented from anywhere else is
  "unknown", exactly like a made-up one, so a refusal tells nothing about whose it is.

Raw leases get a token too; releasing or renewing one takes it.

Ids are allocated round-robin (the next free id after the last one handed out)
rather than lowest-free: a script that just released id 7 may still have a socket
to the Gateway closing with it, and immediate reuse would hit IB error 326.

Pure bookkeeping, no I/O; the clock is injectable so expiry is unit-testable.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

TOKEN_BYTES = 32  # 256 bits: unguessable, and nothing on the wire ever reveals one
HOLDERS_SHOWN = 10  # names listed in a no_free_client_id message (the rest are counted)


class NoFreeClientId(Exception):
    """No client id can be handed out: the range is full or this kind's cap is reached."""


@dataclass(frozen=True, slots=True)
class Peer:
    """Where a request came from: the ZeroMQ routing envelope (one per connection) and,
    with CURVE on, the client's authenticated public key (Z85; "" without CURVE)."""

    route: bytes = b""
    key: str = ""


LOCAL = Peer()  # in-process callers (the TWS front door, tests)


@dataclass(slots=True)
class Lease:
    lease_id: str  # the public handle
    name: str
    role: str
    client_id: int
    created: float
    last_seen: float
    topics: set[str] = field(default_factory=set)  # subscriptions held (maintained by the hub)
    token: str = field(default="", repr=False)  # the secret the holder's requests carry
    peer: Peer = LOCAL  # the connection (and key) that opened it
    gaps: int = 0  # sequence gaps the client reported (heartbeat): it fell behind
    lag_ms: float = 0.0  # how far behind the hub it says it is
    # Lane connections attached to this lease (ibhub.hub.lane): hub-made random routes
    # that count as the lease's connection too (a LaneTicket proved the holder).
    lanes: set[bytes] = field(default_factory=set)


@dataclass(slots=True)
class RawLease:
    client_id: int
    name: str
    owner: str  # lease id whose life bounds this raw id, or ""
    created: float
    expires_at: float | None  # monotonic deadline; None = until released
    token: str = field(default="", repr=False)  # needed to release or renew it

    def expires_in(self, now: float) -> float:
        return 0.0 if self.expires_at is None else max(0.0, self.expires_at - now)


def _holders(names: Iterable[str], kind: str) -> str:
    counts = Counter(names).most_common()
    shown = ", ".join(f"{name[:40]!r} x{n}" for name, n in counts[:HOLDERS_SHOWN])
    more = len(counts) - HOLDERS_SHOWN
    return f"{kind}: {shown}" + (f" and {more} more name(s)" if more > 0 else "")


class LeaseTable:
    """Live leases and raw client-id leases.

    ``ttl`` is how long a lease lives without a heartbeat (seconds). ``lease_max`` and
    ``raw_max`` cap how many ids each kind may hold at once (None: the whole range);
    ``raw_ttl`` is the life of a raw id leased without a ``ttl`` and the longest one
    may ask for (0: no limit).
    """

    def __init__(
        self,
        *,
        id_range: tuple[int, int],
        reserved: Iterable[int] = (),
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
        lease_max: int | None = None,
        raw_max: int | None = None,
        raw_ttl: float = 0.0,
    ) -> None:
        lo, hi = id_range
        self._reserved = frozenset(reserved)
        self._pool = [i for i in range(lo, hi + 1) if i not in self._reserved]
        self._cursor = 0
        self.ttl = ttl
        self.lease_max = lease_max
        self.raw_max = raw_max
        self.raw_ttl = raw_ttl
        self._clock = clock
        self._leases: dict[str, Lease] = {}
        self._by_token: dict[str, Lease] = {}
        self._raw: dict[int, RawLease] = {}
        self._ids_in_use: set[int] = set()

    # ------------------------------------------------------------------ client ids

    def _who(self) -> str:
        parts = []
        if self._leases:
            parts.append(_holders((ls.name for ls in self._leases.values()), "SDK leases"))
        if self._raw:
            parts.append(_holders((r.name for r in self._raw.values()), "raw ids"))
        return "; ".join(parts) or "nobody"

    def _check_cap(self, kind: str, held: int, cap: int | None, setting: str) -> None:
        if cap is not None and held >= cap:
            raise NoFreeClientId(
                f"the cap of {cap} {kind} is reached ({setting}); held by {self._who()}. "
                f"Release some (`ibhub lease --release ID --token T`, or end the scripts) "
                f"or raise {setting}"
            )

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
            f"({len(self._leases)} leases, {len(self._raw)} raw ids); held by {self._who()}. "
            "Release some or widen raw_client_id_range"
        )

    def ids_in_use(self) -> set[int]:
        return set(self._ids_in_use)

    def _new_token(self) -> str:
        return secrets.token_urlsafe(TOKEN_BYTES)

    # ------------------------------------------------------------------ leases

    def open(self, name: str, role: str, peer: Peer = LOCAL) -> Lease:
        """A new lease with a fresh handle and token and a client id unique among live
        leases, bound to ``peer``."""
        self._check_cap("SDK leases", len(self._leases), self.lease_max, "lease_max")
        cid = self._allocate()
        now = self._clock()
        lease_id = secrets.token_hex(8)
        while lease_id in self._leases:  # pragma: no cover - 64 random bits
            lease_id = secrets.token_hex(8)
        token = self._new_token()
        lease = Lease(lease_id, name, role, cid, now, now, token=token, peer=peer)
        self._leases[lease_id] = lease
        self._by_token[token] = lease
        return lease

    def get(self, lease_id: str) -> Lease | None:
        return self._leases.get(lease_id)

    def resolve(self, token: str, peer: Peer) -> Lease | None:
        """The live lease whose token is ``token`` if ``peer`` is the connection and key
        that opened it; None otherwise (unknown token and foreign peer look the same)."""
        lease = self._by_token.get(token)
        if lease is None:
            return None
        bound = lease.peer
        if not (
            (hmac.compare_digest(bound.route, peer.route) or peer.route in lease.lanes)
            and hmac.compare_digest(bound.key.encode(), peer.key.encode())
        ):
            return None
        return lease

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
        self._by_token.pop(lease.token, None)
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

    def _raw_deadline(self, now: float, ttl: float, owner: str) -> float | None:
        """``ttl`` 0: the default life (``raw_ttl``), or the owner's life when tied to a
        lease; a ``ttl`` above ``raw_ttl`` is cut to it."""
        if ttl <= 0:
            if owner or self.raw_ttl <= 0:
                return None
            return now + self.raw_ttl
        if self.raw_ttl > 0:
            ttl = min(ttl, self.raw_ttl)
        return now + ttl

    def lease_raw(self, name: str, ttl: float = 0.0, owner: str = "") -> RawLease:
        """Hand out a raw client id (see :meth:`_raw_deadline` for its life)."""
        if owner and owner not in self._leases:
            raise KeyError(owner)
        self._check_cap("raw client ids", len(self._raw), self.raw_max, "raw_lease_max")
        cid = self._allocate()
        now = self._clock()
        raw = RawLease(
            cid, name, owner, now, self._raw_deadline(now, ttl, owner), token=self._new_token()
        )
        self._raw[cid] = raw
        return raw

    def raw_by_token(self, token: str) -> RawLease | None:
        for raw in self._raw.values():
            if token and hmac.compare_digest(raw.token.encode(), token.encode()):
                return raw
        return None

    def renew_raw(self, token: str, ttl: float = 0.0) -> RawLease | None:
        """Extend the raw lease ``token`` names by ``ttl`` (0: the default) from now."""
        raw = self.raw_by_token(token)
        if raw is None:
            return None
        raw.expires_at = self._raw_deadline(self._clock(), ttl, raw.owner)
        return raw

    def release_raw(self, client_id: int, token: str | None = None) -> RawLease | None:
        """End raw lease ``client_id``; with ``token`` only if it is that lease's token."""
        raw = self._raw.get(client_id)
        if raw is None:
            return None
        if token is not None and not hmac.compare_digest(raw.token.encode(), token.encode()):
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
