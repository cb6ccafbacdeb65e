"""The order journal: an embedded SQLite database that outlives the hub process.

Every order request, acknowledgement, status change and fill is written here *before*
the hub replies or publishes the matching event, so after ``kill -9`` the hub knows
every order it ever acknowledged: its owner, its client order id and its latest state.

Design decisions:

* **WAL + ``synchronous=FULL`` by default.** In WAL mode a commit is one append to the
  WAL; ``FULL`` adds an fsync per commit, which makes a commit survive a power cut or a
  kernel crash, not only a killed process (``NORMAL`` survives ``kill -9`` but can lose
  the last commits on power loss). Orders are money, and group commit (below) makes the
  fsync cost per *batch*, not per order, so FULL is affordable. Configurable.
* **Group commit, SQL and awaited fsyncs on the loop.** :class:`JournalWriter` runs
  everything queued in one loop turn as one transaction on the loop (a WAL append
  without fsync, tens of us) and fsyncs a commit someone awaits right after it, on the
  loop: the loop waits the fsync out (~0.5 ms, ticks wait too), which cost less than
  the fsync thread's wake-ups did on a busy 2-vCPU host (docs/performance.md, "Order
  path, hub side" (section 8.3)). One fsync covers every commit before it, so orders of
  one loop turn share it. Commits nobody awaits that want an fsync go to a thread. It
  resolves the waiting futures on the loop *in submission order*. Callers ``await``
  the write before replying, so "journal before reply" holds.
* **The fsync where a reply waits on it, not on the Gateway's echoes**.
  ``synchronous`` (``journal_sync``, FULL by default) applies to every commit that holds
  a write someone awaits (:meth:`JournalWriter.write`: a new order before its
  ``order_accepted``, a modification before its reply). Writes nobody waits on
  (:meth:`JournalWriter.write_then`: the Gateway's order status, fills and commissions,
  "sent" markers, audit notes) commit with ``updates_synchronous`` (``NORMAL`` by
  default): in WAL mode that survives ``kill -9`` (the WAL is in the OS's page cache);
  a power cut can lose the last such commits, never a prefix in between (WAL frames
  are checksummed in sequence) and never an acknowledged order (its FULL commit
  fsyncs the WAL, and with it every frame before it). What a power cut can lose is
  the Gateway's to tell again: reconciliation at start-up reads open and completed
  orders and the day's executions back (docs/orders.md). On the fill path this took
  two to three fsyncs (the "sent" marker, the Submitted status, the fill itself:
  0.6-2 ms each on this disk) off the time from the Gateway's execution to the
  script's ``filled`` event (docs/performance.md). ``journal_sync_updates=FULL``
  restores an fsync per commit.
* **Each operation in its own SAVEPOINT**, so one failing operation (a constraint) fails
  only its own future, not the batch.
* **Checkpoints off the commit path.** SQLite's automatic checkpoint runs inside the
  commit that takes the WAL past 1,000 pages (about every 200 commits here): that
  commit, often an order's, took 5-14 ms instead of 0.3-1 ms
  (docs/performance.md). The writer's connection only checkpoints as a backstop
  (``BACKSTOP_PAGES``); a second thread with its own connection runs a PASSIVE
  checkpoint once ``checkpoint_every`` commits have accumulated and the writer is idle,
  concurrently with the writer (WAL lets a checkpoint and a writer run at once). The
  WAL restarts from its beginning at the first write after a checkpoint that copied
  everything; one that could not (writes kept coming) is retried at the next idle
  moment, and under writes without pause the backstop keeps the WAL bounded.
* An append-only ``log`` table keeps the history (audit); ``orders`` and ``fills`` hold
  the latest state, which is what a restart restores.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from operator import attrgetter
from pathlib import Path
from typing import Any, Final, TypeVar

log = logging.getLogger(__name__)

JOURNAL_FILE: Final = "orders.sqlite3"
SCHEMA_VERSION: Final = 3
T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS orders (
    order_id INTEGER PRIMARY KEY,
    owner TEXT NOT NULL,
    client_order_id TEXT,            -- NULL for external orders
    lease TEXT NOT NULL,
    con_id INTEGER NOT NULL,
    symbol TEXT NOT NULL,
    sec_type TEXT NOT NULL,
    exchange TEXT NOT NULL,
    currency TEXT NOT NULL,
    action TEXT NOT NULL,
    quantity REAL NOT NULL,
    order_type TEXT NOT NULL,
    limit_price REAL,
    stop_price REAL,
    tif TEXT NOT NULL,
    outside_rth INTEGER NOT NULL,
    account TEXT NOT NULL,
    parent_id INTEGER NOT NULL,
    status TEXT NOT NULL,
    filled REAL NOT NULL,
    remaining REAL NOT NULL,
    avg_fill_price REAL NOT NULL,
    commission REAL NOT NULL,
    perm_id INTEGER NOT NULL,
    sent INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    message TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    updated_ns INTEGER NOT NULL,
    oca_group TEXT NOT NULL DEFAULT '',
    oca_type INTEGER NOT NULL DEFAULT 0,
    order_ref TEXT NOT NULL DEFAULT '',
    algo_strategy TEXT NOT NULL DEFAULT '',
    algo_params TEXT NOT NULL DEFAULT '',
    algo_id TEXT NOT NULL DEFAULT '',
    order_params TEXT NOT NULL DEFAULT '',
    UNIQUE (owner, client_order_id)
);
CREATE TABLE IF NOT EXISTS fills (
    exec_id TEXT PRIMARY KEY,
    order_id INTEGER NOT NULL,
    con_id INTEGER NOT NULL,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL,
    shares REAL NOT NULL,
    price REAL NOT NULL,
    cum_qty REAL NOT NULL,
    avg_price REAL NOT NULL,
    time_ns INTEGER NOT NULL,
    account TEXT NOT NULL,
    exchange TEXT NOT NULL,
    commission REAL,
    commission_currency TEXT NOT NULL,
    realized_pnl REAL
);
CREATE INDEX IF NOT EXISTS fills_by_order ON fills (order_id);
CREATE TABLE IF NOT EXISTS log (
    id INTEGER PRIMARY KEY,
    ts_ns INTEGER NOT NULL,
    order_id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS log_by_order ON log (order_id);
"""

# Columns added after schema 1, as ``ALTER TABLE orders ADD COLUMN`` clauses: a journal
# written by an older hub gets them (with their defaults) when a writable Journal opens
# it; a read-only open reads the columns that exist and defaults the rest.
_ADDED_ORDER_COLUMNS: Final = (
    ("oca_group", "TEXT NOT NULL DEFAULT ''"),
    ("oca_type", "INTEGER NOT NULL DEFAULT 0"),
    ("order_ref", "TEXT NOT NULL DEFAULT ''"),
    ("algo_strategy", "TEXT NOT NULL DEFAULT ''"),
    ("algo_params", "TEXT NOT NULL DEFAULT ''"),
    ("algo_id", "TEXT NOT NULL DEFAULT ''"),
    ("order_params", "TEXT NOT NULL DEFAULT ''"),  # schema 3
)


def default_data_dir() -> Path:
    """``$IBHUB_DATA_DIR``, else ``~/.local/share/ibhub`` (the same default as HubSettings)."""
    env = os.environ.get("IBHUB_DATA_DIR")
    return Path(env) if env else Path.home() / ".local" / "share" / "ibhub"


@dataclass(slots=True)
class OrderRecord:
    """An order's latest state: the journal row and the order manager's in-memory record."""

    order_id: int
    owner: str
    client_order_id: str | None
    lease: str
    con_id: int
    symbol: str
    sec_type: str
    exchange: str
    currency: str
    action: str
    quantity: float
    order_type: str
    limit_price: float | None
    stop_price: float | None
    tif: str
    outside_rth: bool
    account: str
    parent_id: int = 0
    status: str = "PendingSubmit"
    filled: float = 0.0
    remaining: float = 0.0
    avg_fill_price: float = 0.0
    commission: float = 0.0
    perm_id: int = 0
    sent: bool = False  # handed to the upstream socket (best effort; see orders.reconcile)
    fingerprint: str = ""  # identifies the original request, to tell a retry from a reuse
    message: str = ""
    created_ns: int = 0
    updated_ns: int = 0
    # schema 2: order attributes the hub honours besides the basic fields
    oca_group: str = ""  # as the script named it; upstream it carries the owner prefix
    oca_type: int = 0
    order_ref: str = ""  # the script's own label; the upstream orderRef is the hub's
    algo_strategy: str = ""
    algo_params: str = ""  # JSON object of tag -> value ("" = none)
    algo_id: str = ""
    # schema 3: trailing / offset / GTD fields of the order type (JSON, order_types.py)
    order_params: str = ""


@dataclass(slots=True)
class FillRecord:
    exec_id: str
    order_id: int
    con_id: int
    symbol: str
    side: str
    shares: float
    price: float
    cum_qty: float
    avg_price: float
    time_ns: int
    account: str
    exchange: str
    commission: float | None = None
    commission_currency: str = ""
    realized_pnl: float | None = None


_ORDER_COLUMNS: Final = tuple(f.name for f in fields(OrderRecord))
_FILL_COLUMNS: Final = tuple(f.name for f in fields(FillRecord))
# A row's values read in one C call, and its INSERT text made once: ``asdict`` copied
# every field recursively (~100 us per order on a cold CPU, the order's ack waits for
# it); the fields are all scalars, so the values and the log's dict are the same.
_ORDER_VALUES: Final = attrgetter(*_ORDER_COLUMNS)
_FILL_VALUES: Final = attrgetter(*_FILL_COLUMNS)
_INSERT_ORDER: Final = (f"INSERT INTO orders ({', '.join(_ORDER_COLUMNS)}) "
                        f"VALUES ({', '.join('?' * len(_ORDER_COLUMNS))})")
_INSERT_FILL: Final = (f"INSERT OR IGNORE INTO fills ({', '.join(_FILL_COLUMNS)}) "
                       f"VALUES ({', '.join('?' * len(_FILL_COLUMNS))})")
_BOOL_COLUMNS: Final = tuple(_ORDER_COLUMNS.index(c) for c in ("outside_rth", "sent"))
# Columns an update may change (everything but the identity of the order).
_MUTABLE: Final = frozenset(_ORDER_COLUMNS) - {"order_id", "owner", "client_order_id", "created_ns"}


class JournalError(RuntimeError):
    """The journal could not record something; the hub must not reply as if it had."""


class Journal:
    """Synchronous access to one journal file. Not thread-safe: one instance per thread.

    :class:`JournalWriter` owns the instance that writes; the ``ibhub orders`` command and
    the hub's start-up restore use their own (reads see every committed write: WAL).
    """

    def __init__(
        self,
        path: Path | str,
        *,
        synchronous: str = "FULL",
        updates_synchronous: str | None = None,
        readonly: bool = False,
    ) -> None:
        """``synchronous``: the commits of durable batches (see :meth:`run_batch`);
        ``updates_synchronous``: the others (None: the same)."""
        for name, level in (("", synchronous), ("updates ", updates_synchronous)):
            if level is not None and level.upper() not in ("FULL", "NORMAL", "EXTRA"):
                raise ValueError(
                    f"journal {name}synchronous must be FULL, NORMAL or EXTRA, not {level!r}"
                )
        self._sync = {True: synchronous.upper(),
                      False: (updates_synchronous or synchronous).upper()}
        self._sync_now = synchronous.upper()
        self._wal_fd: int | None = None
        self.path = Path(path)
        if readonly:
            if not self.path.exists():
                raise FileNotFoundError(f"no order journal at {self.path}")
            uri = f"file:{self.path}?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA busy_timeout=5000")
            present = self._order_table_columns()
            self._columns = tuple(c for c in _ORDER_COLUMNS if c in present)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout=5000")
        mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise JournalError(f"{self.path}: cannot switch SQLite to WAL mode (got {mode!r})")
        self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        self._db.executescript(_SCHEMA)
        self._db.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),)
        )
        self._migrate()
        self._columns = _ORDER_COLUMNS

    def _order_table_columns(self) -> set[str]:
        return {row[1] for row in self._db.execute("PRAGMA table_info(orders)")}

    def _migrate(self) -> None:
        """Bring a journal written by an older hub to ``SCHEMA_VERSION`` (in one
        transaction, so two connections opening the same old file cannot both alter it)."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            present = self._order_table_columns()
            added = [name for name, _ in _ADDED_ORDER_COLUMNS if name not in present]
            for name, decl in _ADDED_ORDER_COLUMNS:
                if name in added:
                    db.execute(f"ALTER TABLE orders ADD COLUMN {name} {decl}")
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('schema', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
                " WHERE CAST(value AS INTEGER) < CAST(excluded.value AS INTEGER)",
                (str(SCHEMA_VERSION),),
            )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        if added:
            log.info("%s: order journal upgraded to schema %d (added %s)", self.path,
                     SCHEMA_VERSION, ", ".join(added))

    @classmethod
    def in_dir(cls, data_dir: Path | str, **kwargs: Any) -> Journal:
        return cls(Path(data_dir) / JOURNAL_FILE, **kwargs)

    def close(self) -> None:
        self.close_wal()
        self._db.close()

    def take_over_fsync(self) -> dict[bool, bool]:
        """From now on commit at ``NORMAL`` (no fsync inside the commit); returns, for
        durable and other batches, whether the caller must make the commit durable
        itself with :meth:`sync_wal` (``JournalWriter``: the fsync off the loop)."""
        need = {d: self._sync[d] in ("FULL", "EXTRA") for d in (True, False)}
        self._sync = {True: "NORMAL", False: "NORMAL"}
        return need

    def sync_wal(self) -> None:
        """fdatasync the WAL file (what SQLite does inside a commit with
        ``synchronous=FULL`` on Linux): every commit made before the call survives a
        power cut. Thread-safe against the connection's writes (a descriptor of its own,
        opened once: SQLite keeps the WAL file while a connection is open; the fsync
        thread then needs the GIL only to wake and to report)."""
        fd = self._wal_fd
        if fd is None:
            fd = self._wal_fd = os.open(f"{self.path}-wal", os.O_RDONLY)
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)  # the WAL file's directory entry, once
            finally:
                os.close(dir_fd)
        _datasync(fd)

    def close_wal(self) -> None:
        fd, self._wal_fd = self._wal_fd, None
        if fd is not None:
            os.close(fd)

    def set_autocheckpoint(self, pages: int) -> None:
        """Checkpoint inside a commit only once the WAL holds ``pages`` pages (0: never)."""
        self._db.execute(f"PRAGMA wal_autocheckpoint={int(pages)}")

    def checkpoint(self) -> tuple[int, int, int]:
        """One PASSIVE checkpoint (never waits for, or blocks, a writer):
        (busy, frames in the WAL, frames checkpointed), as ``PRAGMA wal_checkpoint``."""
        # fetchall: a statement left unfinished would hold a read snapshot open, and
        # the writer could then never restart the WAL from its beginning.
        ((busy, frames, done),) = self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        return int(busy), int(frames), int(done)

    # ---------------------------------------------------------------- transactions

    def run_batch(
        self, ops: list[tuple[Callable[..., Any], tuple[Any, ...]]], durable: bool = True
    ) -> list[Any]:
        """Run ``ops`` (``fn(self, *args)``: unbound ``Journal`` methods) in one transaction
        (one commit; with ``durable``, at ``synchronous``: one fsync with FULL; else at
        ``updates_synchronous``). Returns one result per op:
        its return value, or the exception it raised (that op's changes are rolled back)."""
        results: list[Any] = []
        db = self._db
        level = self._sync[durable]
        if level != self._sync_now:  # a connection setting, outside any transaction
            db.execute(f"PRAGMA synchronous={level}")
            self._sync_now = level
        db.execute("BEGIN IMMEDIATE")
        try:
            if len(ops) == 1:  # the usual case: one op, its own transaction, no SAVEPOINT
                fn, args = ops[0]
                try:
                    results.append(fn(self, *args))
                except (sqlite3.Error, ValueError, KeyError) as exc:
                    db.execute("ROLLBACK")
                    return [exc]
                db.execute("COMMIT")
                return results
            for fn, args in ops:
                db.execute("SAVEPOINT op")
                try:
                    results.append(fn(self, *args))
                except (sqlite3.Error, ValueError, KeyError) as exc:
                    db.execute("ROLLBACK TO op")
                    results.append(exc)
                db.execute("RELEASE op")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return results

    def note(self, order_id: int, kind: str, data: dict[str, Any]) -> None:
        """Append one entry to the history log (requests, refusals, sends, errors)."""
        self._db.execute(
            "INSERT INTO log (ts_ns, order_id, kind, data) VALUES (?, ?, ?, ?)",
            (time.time_ns(), order_id, kind, json.dumps(data, default=str)),
        )

    # ---------------------------------------------------------------- operations
    # Called inside run_batch (the writer) or directly in autocommit mode (tests, tools).

    def insert_order(self, rec: OrderRecord, kind: str = "request") -> None:
        """Record a new order. Raises ``sqlite3.IntegrityError`` for a taken order id or
        (owner, client_order_id)."""
        values = list(_ORDER_VALUES(rec))
        for i in _BOOL_COLUMNS:
            values[i] = int(values[i])
        self._db.execute(_INSERT_ORDER, values)
        self.note(rec.order_id, kind, dict(zip(_ORDER_COLUMNS, values, strict=True)))

    def update_order(self, order_id: int, kind: str, changes: dict[str, Any]) -> None:
        """Apply ``changes`` (column -> value) to an order and log them as ``kind``."""
        bad = set(changes) - _MUTABLE
        if bad:
            raise ValueError(f"cannot update order column(s) {sorted(bad)}")
        values = {k: int(v) if isinstance(v, bool) else v for k, v in changes.items()}
        if values:
            assignments = ", ".join(f"{k} = ?" for k in values)
            cur = self._db.execute(
                f"UPDATE orders SET {assignments} WHERE order_id = ?", [*values.values(), order_id]
            )
            if cur.rowcount != 1:
                raise KeyError(f"order {order_id} is not in the journal")
        self.note(order_id, kind, values)

    def insert_fill(self, fill: FillRecord) -> bool:
        """Record a fill; False (and nothing written) if ``exec_id`` is already known."""
        values = _FILL_VALUES(fill)
        cur = self._db.execute(_INSERT_FILL, values)
        if cur.rowcount == 0:
            return False
        self.note(fill.order_id, "fill", dict(zip(_FILL_COLUMNS, values, strict=True)))
        return True

    def set_commission(
        self, exec_id: str, commission: float, currency: str, realized_pnl: float | None
    ) -> bool:
        """Attach a commission report to its fill; False if the fill is unknown."""
        cur = self._db.execute(
            "UPDATE fills SET commission = ?, commission_currency = ?, realized_pnl = ?"
            " WHERE exec_id = ?",
            (commission, currency, realized_pnl, exec_id),
        )
        if cur.rowcount == 0:
            return False
        order_id = self._db.execute(
            "SELECT order_id FROM fills WHERE exec_id = ?", (exec_id,)
        ).fetchone()[0]
        self.note(order_id, "commission", {"exec_id": exec_id, "commission": commission})
        return True

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # ---------------------------------------------------------------- reads

    def orders(self) -> list[OrderRecord]:
        cur = self._db.execute(f"SELECT {', '.join(self._columns)} FROM orders ORDER BY order_id")
        return [_order_from_row(r, self._columns) for r in cur]

    def find(self, owner: str, client_order_id: str) -> OrderRecord | None:
        """The order a script placed under ``client_order_id`` (the idempotency key)."""
        cur = self._db.execute(
            f"SELECT {', '.join(self._columns)} FROM orders"
            " WHERE owner = ? AND client_order_id = ?",
            (owner, client_order_id),
        )
        row = cur.fetchone()
        return _order_from_row(row, self._columns) if row else None

    def fills(self, order_id: int | None = None) -> list[FillRecord]:
        sql = f"SELECT {', '.join(_FILL_COLUMNS)} FROM fills"
        args: tuple[Any, ...] = ()
        if order_id is not None:
            sql += " WHERE order_id = ?"
            args = (order_id,)
        cur = self._db.execute(sql + " ORDER BY time_ns, exec_id", args)
        return [FillRecord(*r) for r in cur]

    def history(self, order_id: int) -> list[tuple[int, str, dict[str, Any]]]:
        cur = self._db.execute(
            "SELECT ts_ns, kind, data FROM log WHERE order_id = ? ORDER BY id", (order_id,)
        )
        return [(ts, kind, json.loads(data)) for ts, kind, data in cur]

    def meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def max_order_id(self) -> int:
        row = self._db.execute("SELECT MAX(order_id) FROM orders").fetchone()
        return int(row[0] or 0)


def _order_from_row(row: Iterable[Any], columns: tuple[str, ...] = _ORDER_COLUMNS) -> OrderRecord:
    rec = OrderRecord(**dict(zip(columns, row, strict=True)))
    rec.outside_rth = bool(rec.outside_rth)
    rec.sent = bool(rec.sent)
    return rec


_datasync: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)  # macOS: no fdatasync
