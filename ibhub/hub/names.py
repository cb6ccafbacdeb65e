"""Script names bound to a secret or a key: trust on first use, like SSH host keys.

Orders belong to a script's *name* (a restarted script finds its orders, and
``client_order_id`` idempotency holds across restarts), so the name is what a
script must prove. The first hello with a name binds it:

* to the SHA-256 of the name secret the hello carried (the SDK keeps one random
  secret per name in a 0600 file; a raw client that sent none gets one made by the
  hub in its Welcome), and
* with CURVE, to the client's authenticated public key as well.

A later hello with a bound name is accepted when it comes from the bound CURVE key,
or (no key on either side, or a binding made without CURVE) carries the secret.
Anything else is refused with ``name_taken`` (:class:`NameRefused`). An operator
forgets a binding (``ibhub names --forget NAME``); the next hello binds it anew.

Only hashes are stored: the secrets are 256 random bits, so a plain SHA-256 cannot
be reversed, and a copy of the file lets no one claim a name. The table lives in
``DATA_DIR/names.db`` (SQLite: every change is one atomic, durable transaction, and
a second hub process on the same data dir sees the same bindings). Hellos are rare
(connects and re-hellos), so the few-millisecond commit of a new binding on the
hub's loop costs nothing that matters; ``last_seen`` is written at most once a
minute per name.

Bindings nobody has claimed for ``ttl`` seconds are pruned (default 30 days: the
SDK's default names carry the process id, so each run of a script that did not
choose a name binds a new one), except names with a live lease or working orders.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import sqlite3
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

NAMES_FILE = "names.db"
SECRET_BYTES = 32  # of a secret the hub makes (token_urlsafe: 43 characters)
MIN_SECRET = 32  # characters: a secret shorter than this is refused, not bound
SEEN_EVERY = 60.0  # seconds: last_seen is rewritten at most this often per name
DEFAULT_TTL = 30 * 86400.0

# Owners the hub gives out itself: the TWS front door's scripts (by client id, as a
# Gateway does) and orders placed outside the hub. No hello may take them.
RESERVED_PREFIX = "tws-client-"
RESERVED_NAMES = frozenset({"external"})


class NameRefused(Exception):
    """A hello may not use this name; the message says how to proceed."""


@dataclass(frozen=True, slots=True)
class Binding:
    name: str
    secret_hash: str  # hex SHA-256 of the secret ("" if bound by key alone)
    key: str  # Z85 CURVE key, "" without CURVE
    bound_at: float  # epoch seconds
    last_seen: float  # epoch seconds


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return secrets.token_urlsafe(SECRET_BYTES)


def reserved(name: str) -> bool:
    """True for the owners no hello may use (front-door scripts, external orders)."""
    return name.startswith(RESERVED_PREFIX) or name in RESERVED_NAMES


class NameBindings:
    """The bindings table (``DATA_DIR/names.db``); the clock is injectable for tests."""

    def __init__(
        self, path: Path | str, *, ttl: float = DEFAULT_TTL, clock: Callable[[], float] = time.time
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.ttl = ttl
        self._clock = clock
        # isolation_level=None: autocommit; every write below is one statement, hence
        # one transaction. timeout: another hub on the same data dir may be writing.
        self._db = sqlite3.connect(
            self.path, timeout=5.0, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS names (name TEXT PRIMARY KEY, secret_hash TEXT NOT "
            "NULL, key TEXT NOT NULL, bound_at REAL NOT NULL, last_seen REAL NOT NULL)"
        )
        self.path.chmod(0o600)

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------------ queries

    def get(self, name: str) -> Binding | None:
        row = self._db.execute(
            "SELECT name, secret_hash, key, bound_at, last_seen FROM names WHERE name = ?", (name,)
        ).fetchone()
        return None if row is None else Binding(*row)

    def all(self) -> list[Binding]:
        rows = self._db.execute(
            "SELECT name, secret_hash, key, bound_at, last_seen FROM names ORDER BY name"
        )
        return [Binding(*row) for row in rows]

    def __len__(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM names").fetchone()[0])

    # ------------------------------------------------------------------ hello

    def check(self, name: str, secret: str, key: str) -> Binding | None:
        """The binding ``name`` has if this hello may use it, None if it is unbound;
        :class:`NameRefused` when the name is reserved or bound to another secret/key,
        or the secret is too short to bind."""
        if reserved(name):
            raise NameRefused(
                f"script name {name!r} is reserved: names starting {RESERVED_PREFIX!r} belong "
                "to the TWS front door's scripts (by client id) and 'external' to orders "
                "placed outside the hub; pick another name"
            )
        if secret and len(secret) < MIN_SECRET:
            raise NameRefused(
                f"name_secret holds {len(secret)} characters, fewer than {MIN_SECRET}: use "
                "256 random bits (e.g. secrets.token_urlsafe(32)), or send none and keep the "
                "one the welcome returns"
            )
        binding = self.get(name)
        if binding is None:
            return None
        if binding.key and key:
            if hmac.compare_digest(binding.key.encode(), key.encode()):
                return binding
            why = f"bound to another CURVE key ({binding.key[:8]}...)"
        elif (
            secret
            and binding.secret_hash
            and hmac.compare_digest(secret_hash(secret).encode(), binding.secret_hash.encode())
        ):
            return binding
        else:
            why = (
                "bound to a name secret, and this hello carries none"
                if not secret
                else "bound to another name secret"
            )
        raise NameRefused(
            f"script name {name!r} is {why}: a script name is claimed by the first hello "
            "that uses it, and orders belong to it. Run the script as the user that claimed "
            "it (the SDK keeps the secret in ~/.local/state/ibhub/names/, or "
            "$IBHUB_NAMES_DIR), or send the secret its first welcome gave; or pick another "
            "name; or have the hub's operator forget the binding (`ibhub names --forget "
            "NAME`, docs/security.md)"
        )

    def bind(self, name: str, secret: str, key: str) -> Binding:
        """Bind the unbound ``name`` to ``secret`` (and ``key``); :class:`NameRefused` if
        another hub process bound it since :meth:`check`."""
        now = self._clock()
        cur = self._db.execute(
            "INSERT OR IGNORE INTO names (name, secret_hash, key, bound_at, last_seen) "
            "VALUES (?, ?, ?, ?, ?)",
            (name, secret_hash(secret) if secret else "", key, now, now),
        )
        if cur.rowcount != 1:
            found = self.check(name, secret, key)
            assert found is not None  # a row exists now
            return found
        log.info("script name %r bound%s", name, f" to CURVE key {key}" if key else "")
        return Binding(name, secret_hash(secret) if secret else "", key, now, now)

    def seen(self, binding: Binding) -> None:
        """Record an accepted hello (written at most once a minute per name)."""
        now = self._clock()
        if now - binding.last_seen >= SEEN_EVERY:
            self._db.execute("UPDATE names SET last_seen = ? WHERE name = ?", (now, binding.name))

    # ------------------------------------------------------------------ operator

    def forget(self, name: str) -> bool:
        """Drop ``name``'s binding; False if it had none."""
        cur = self._db.execute("DELETE FROM names WHERE name = ?", (name,))
        if cur.rowcount:
            log.warning("script name %r forgotten: the next hello with it binds it anew", name)
        return cur.rowcount > 0

    def prune(self, keep: Collection[str] = ()) -> list[str]:
        """Forget bindings not claimed for ``ttl`` seconds (0: never), except ``keep``
        (names with a live lease or working orders). Returns the names dropped."""
        if self.ttl <= 0:
            return []
        cutoff = self._clock() - self.ttl
        old = [
            row[0]
            for row in self._db.execute("SELECT name FROM names WHERE last_seen < ?", (cutoff,))
        ]
        dropped = [name for name in old if name not in keep]
        if dropped:
            self._db.executemany(
                "DELETE FROM names WHERE name = ? AND last_seen < ?",
                [(name, cutoff) for name in dropped],
            )
            log.info(
                "forgot %d script name(s) unused for %.0f days", len(dropped), self.ttl / 86400
            )
        return dropped
