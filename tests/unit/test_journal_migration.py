"""Order journal schema 2: a journal written by an older hub (schema 1) opens, keeps
every order, gets the new order-attribute columns with their defaults, and then stores
them; a read-only open of an old file (``ibhub orders``) reads it without changing it."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

from ibhub.orders.journal import JOURNAL_FILE, Journal
from tests.unit.test_journal import rec

# The journal as schema 1 wrote it (ibhub before OCA / order ref / algo fields).
SCHEMA_1 = """
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
COLUMNS_1 = (
    "order_id, owner, client_order_id, lease, con_id, symbol, sec_type, exchange, currency, "
    "action, quantity, order_type, limit_price, stop_price, tif, outside_rth, account, "
    "parent_id, status, filled, remaining, avg_fill_price, commission, perm_id, sent, "
    "fingerprint, message, created_ns, updated_ns"
)


def _old_journal(path: Path) -> None:
    db = sqlite3.connect(path)
    db.executescript(SCHEMA_1)
    db.execute("INSERT INTO meta (key, value) VALUES ('schema', '1')")
    db.execute(
        f"INSERT INTO orders ({COLUMNS_1}) VALUES (7, 'alpha', 'c7', 'L1', 265598, 'AAPL', "
        "'STK', 'SMART', 'USD', 'BUY', 10.0, 'LMT', 190.5, NULL, 'DAY', 0, 'DU1234567', 0, "
        "'Submitted', 0.0, 10.0, 0.0, 0.0, 4242, 1, 'fp', '', 1, 2)"
    )
    db.commit()
    db.close()


def test_an_old_journal_opens_read_only_unchanged(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_FILE
    _old_journal(path)
    ro = Journal(path, readonly=True)
    [old] = ro.orders()
    assert (old.order_id, old.perm_id, old.status) == (7, 4242, "Submitted")
    assert (old.order_ref, old.oca_group, old.algo_params) == ("", "", "")
    assert ro.find("alpha", "c7") == old
    assert ro.meta("schema") == "1"
    ro.close()


def test_an_old_journal_is_migrated_and_stores_the_new_fields(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_FILE
    _old_journal(path)
    j = Journal(path)
    assert j.meta("schema") == "3"
    [old] = j.orders()
    assert (old.order_id, old.perm_id, old.fingerprint, old.sent) == (7, 4242, "fp", True)
    assert (old.oca_group, old.oca_type, old.order_ref, old.algo_id) == ("", 0, "", "")
    new = replace(rec(8), oca_group="g", oca_type=2, order_ref="mine", algo_strategy="Adaptive",
                  algo_params='{"adaptivePriority":"Normal"}', algo_id="a1",
                  order_params='{"trailing_percent":1.5}')  # schema 3
    assert old.order_params == ""
    j.insert_order(new)
    j.close()
    again = Journal(path)  # a second open of a migrated file changes nothing
    assert again.orders() == [old, new]
    assert again.find("alpha", "c8") == new
    again.close()
    ro = Journal(path, readonly=True)
    assert ro.orders() == [old, new]
    ro.close()


def test_every_writable_open_of_an_old_file_succeeds(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_FILE
    _old_journal(path)
    first, second = Journal(path), Journal(path)
    assert len(first.orders()) == len(second.orders()) == 1
    first.close()
    second.close()
