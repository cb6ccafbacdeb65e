"""Order journal: durability, idempotency lookup, group commit, kill -9 safety, CLI."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from functools import partial
from pathlib import Path

import pytest
from click.testing import CliRunner

from ibhub.cli.orders import orders as orders_cmd
from ibhub.orders.journal import (
    JOURNAL_FILE,
    FillRecord,
    Journal,
    JournalError,
    OrderRecord,
)
from ibhub.orders.journal_writer import JournalWriter
from tests.helpers import wait_until


def rec(order_id: int, owner: str = "alpha", coid: str | None = None, **kw: object) -> OrderRecord:
    fields: dict[str, object] = {
        "order_id": order_id,
        "owner": owner,
        "client_order_id": coid if coid is not None else f"c{order_id}",
        "lease": "L1",
        "con_id": 265598,
        "symbol": "AAPL",
        "sec_type": "STK",
        "exchange": "SMART",
        "currency": "USD",
        "action": "BUY",
        "quantity": 10.0,
        "order_type": "LMT",
        "limit_price": 190.5,
        "stop_price": None,
        "tif": "DAY",
        "outside_rth": False,
        "account": "DU1234567",
        "remaining": 10.0,
        "created_ns": 1,
        "updated_ns": 1,
    }
    fields.update(kw)
    return OrderRecord(**fields)  # type: ignore[arg-type]


def fill(exec_id: str, order_id: int, shares: float = 10.0) -> FillRecord:
    return FillRecord(exec_id, order_id, 265598, "AAPL", "BOT", shares, 190.4, shares, 190.4,
                      1_700_000_000_000_000_000, "DU1234567", "ISLAND")  # fmt: skip


def test_roundtrip_and_reopen(tmp_path: Path) -> None:
    j = Journal.in_dir(tmp_path)
    assert j._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert j._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    j.insert_order(rec(1))
    j.insert_order(rec(2, owner="beta", coid="c1", outside_rth=True))
    j.update_order(1, "status", {"status": "Submitted", "perm_id": 77, "sent": True})
    assert j.insert_fill(fill("e1", 1))
    assert not j.insert_fill(fill("e1", 1))  # same exec id: ignored
    assert j.set_commission("e1", 1.25, "USD", None)
    assert not j.set_commission("nope", 1.0, "USD", None)
    j.close()

    j = Journal.in_dir(tmp_path)
    orders = j.orders()
    assert [(o.order_id, o.owner, o.client_order_id) for o in orders] == [
        (1, "alpha", "c1"),
        (2, "beta", "c1"),
    ]
    assert orders[0].status == "Submitted" and orders[0].sent is True and orders[0].perm_id == 77
    assert orders[1].outside_rth is True and orders[1].stop_price is None
    found = j.find("alpha", "c1")
    assert found is not None and found.order_id == 1
    assert j.find("alpha", "nope") is None
    fills = j.fills(1)
    assert len(fills) == 1 and fills[0].commission == 1.25
    assert j.max_order_id() == 2
    kinds = [kind for _, kind, _ in j.history(1)]
    assert kinds == ["request", "status", "fill", "commission"]
    j.close()


def test_constraints(tmp_path: Path) -> None:
    j = Journal.in_dir(tmp_path)
    j.insert_order(rec(1))
    with pytest.raises(sqlite3.IntegrityError):
        j.insert_order(rec(2, coid="c1"))  # same owner + client order id
    with pytest.raises(sqlite3.IntegrityError):
        j.insert_order(rec(1, coid="other"))  # same order id
    # external orders have no client order id: any number of them
    j.insert_order(rec(-5001, owner="external", coid=None))
    j.insert_order(rec(-5002, owner="external", coid=None))
    with pytest.raises(ValueError, match="cannot update"):
        j.update_order(1, "bad", {"owner": "mallory"})
    with pytest.raises(KeyError, match="not in the journal"):
        j.update_order(99, "status", {"status": "Filled"})
    j.close()


def test_bad_synchronous(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="FULL, NORMAL or EXTRA"):
        Journal.in_dir(tmp_path, synchronous="OFF")


def _record(seen: list[int], i: int, _result: object) -> None:
    seen.append(i)


async def test_writer_group_commit_and_order(tmp_path: Path) -> None:
    writer = JournalWriter(lambda: Journal.in_dir(tmp_path))
    await writer.start()
    try:
        # 200 concurrent writes complete in far fewer commits than writes.
        await asyncio.gather(*(writer.write(Journal.insert_order, rec(i)) for i in range(1, 201)))
        assert writer.ops == 200
        assert writer.batches < 200
        # A failing op fails only its own future; the others in its batch commit.
        results = await asyncio.gather(
            writer.write(Journal.insert_order, rec(500)),
            writer.write(Journal.insert_order, rec(501, coid="c1")),  # duplicate key
            writer.write(Journal.insert_order, rec(502)),
            return_exceptions=True,
        )
        assert results[0] is None and results[2] is None
        assert isinstance(results[1], JournalError) and "UNIQUE" in str(results[1])
        # Callbacks run on the loop in submission order.
        seen: list[int] = []
        for i in range(600, 650):
            writer.write_then(Journal.insert_order, (rec(i),), partial(_record, seen, i))
        await writer.write(Journal.note, 0, "marker", {})
        assert seen == list(range(600, 650))
    finally:
        await writer.stop()
    reader = Journal(tmp_path / JOURNAL_FILE, readonly=True)
    ids = [o.order_id for o in reader.orders()]
    reader.close()
    assert len(ids) == 252 and 501 not in ids


async def test_writer_checkpoints_off_the_commit_path(tmp_path: Path) -> None:
    """The writer's connection leaves checkpoints to a thread of its own (a checkpoint
    inside a commit made that commit, often an order's, 5-14 ms); the WAL still restarts
    from its beginning, so it stays the size of a few batches."""
    opened: list[Journal] = []

    def factory() -> Journal:
        opened.append(Journal.in_dir(tmp_path))
        return opened[-1]

    writer = JournalWriter(factory, checkpoint_every=10)
    await writer.start()
    try:
        assert opened[0]._db.execute("PRAGMA wal_autocheckpoint").fetchall()[0][0] == 4_000
        wal = tmp_path / (JOURNAL_FILE + "-wal")
        for burst in range(30):  # bursts of one-commit writes, as orders come
            done = writer.checkpoints
            for i in range(burst * 10 + 1, burst * 10 + 11):
                await writer.write(Journal.insert_order, rec(i))
            await wait_until(partial(lambda d: writer.checkpoints > d, done), 5.0, "a checkpoint")
        # Without restarts: 300 commits x ~4 pages x 4 KB = ~5 MB of WAL.
        assert wal.stat().st_size < 1_000_000, wal.stat().st_size
    finally:
        await writer.stop()
    assert writer.batches == 300
    reader = Journal(tmp_path / JOURNAL_FILE, readonly=True)
    assert len(reader.orders()) == 300
    reader.close()
    # Without background checkpoints the writer's connection keeps SQLite's default.
    plain = JournalWriter(factory, checkpoint_every=0)
    await plain.start()
    try:
        assert opened[-1]._db.execute("PRAGMA wal_autocheckpoint").fetchall()[0][0] == 1000
        await plain.write(Journal.insert_order, rec(301))
    finally:
        await plain.stop()
    assert plain.checkpoints == 0


async def test_writer_refuses_when_not_started(tmp_path: Path) -> None:
    writer = JournalWriter(lambda: Journal.in_dir(tmp_path))
    with pytest.raises(JournalError, match="not running"):
        await writer.write(Journal.insert_order, rec(1))
    bad = JournalWriter(lambda: Journal(tmp_path / "missing" / "x.db", readonly=True))
    with pytest.raises(JournalError, match="cannot open"):
        await bad.start()


def test_readonly_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no order journal"):
        Journal(tmp_path / JOURNAL_FILE, readonly=True)


# --------------------------------------------------------------------------- kill -9

_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from ibhub.orders.journal import Journal, OrderRecord
    from ibhub.orders.journal_writer import JournalWriter

    def rec(order_id, coid):
        return OrderRecord(order_id=order_id, owner="burst", client_order_id=coid, lease="L",
            con_id=1, symbol="AAPL", sec_type="STK", exchange="SMART", currency="USD",
            action="BUY", quantity=1.0, order_type="MKT", limit_price=None, stop_price=None,
            tif="DAY", outside_rth=False, account="DU1", remaining=1.0)

    async def main(data_dir, count):
        writer = JournalWriter(lambda: Journal.in_dir(data_dir))
        await writer.start()
        lookup = Journal.in_dir(data_dir)  # the idempotency index a restarted hub loads
        next_id = lookup.max_order_id() + 1
        async def place(i):
            nonlocal next_id
            coid = f"c{i}"
            if lookup.find("burst", coid) is not None:
                print(f"DUP {i}", flush=True)
                return
            order_id, next_id = next_id, next_id + 1
            await writer.write(Journal.insert_order, rec(order_id, coid))
            print(f"ACK {i} {order_id}", flush=True)  # the "reply", after the commit
        for start in range(0, count, 16):
            await asyncio.gather(*(place(i) for i in range(start, min(start + 16, count))))
        await writer.stop()
        print("DONE", flush=True)

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)


def _child(data_dir: Path, count: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(data_dir), str(count)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )


def test_sigkill_mid_burst_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    proc = _child(tmp_path, 1_000_000)
    acked: dict[int, int] = {}
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while len(acked) < 400:
        line = proc.stdout.readline()
        assert line, f"child exited early (rc={proc.poll()})"
        assert time.monotonic() < deadline, "child too slow"
        if line.startswith("ACK"):
            _, coid_n, oid_text = line.split()
            acked[int(coid_n)] = int(oid_text)
    os.kill(proc.pid, signal.SIGKILL)  # mid-burst: more writes are queued and in flight
    proc.wait(timeout=10)
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL

    j = Journal.in_dir(tmp_path)
    assert j._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = {o.client_order_id: o for o in j.orders()}
    for n, order_id in acked.items():  # everything acknowledged survived, as acknowledged
        row = rows.get(f"c{n}")
        assert row is not None, f"acknowledged order c{n} lost"
        assert row.order_id == order_id and row.owner == "burst"
    j.close()

    # Restart and retry the whole burst (clients re-send what they did not see acked):
    # the idempotency lookup finds every journaled order; nothing is inserted twice.
    total = max(acked) + 50
    proc = _child(tmp_path, total)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out.rstrip().endswith("DONE")
    dups = {int(line.split()[1]) for line in out.splitlines() if line.startswith("DUP")}
    assert set(acked) <= dups
    j = Journal.in_dir(tmp_path)
    coids = [o.client_order_id for o in j.orders()]
    ids = [o.order_id for o in j.orders()]
    j.close()
    assert len(coids) == len(set(coids)) == total
    assert len(ids) == len(set(ids))


# --------------------------------------------------------------------------- CLI


def test_orders_cli(tmp_path: Path) -> None:
    j = Journal.in_dir(tmp_path)
    j.insert_order(rec(7, owner="alpha", coid="buy-1"))
    j.insert_order(rec(8, owner="beta", coid="sell-1", action="SELL", status="Filled", filled=10.0,
                       remaining=0.0, avg_fill_price=190.4))  # fmt: skip
    j.close()
    runner = CliRunner()
    result = runner.invoke(orders_cmd, ["--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:3] == ["ORDER", "OWNER", "CLIENT_ID"]
    assert "alpha" in lines[1] and "buy-1" in lines[1] and "PendingSubmit" in lines[1]
    assert "beta" in lines[2] and "Filled" in lines[2] and "190.4" in lines[2]

    result = runner.invoke(orders_cmd, ["--data-dir", str(tmp_path), "--json", "--working"])
    data = json.loads(result.output)
    assert [(d["order_id"], d["owner"], d["client_order_id"]) for d in data] == [
        (7, "alpha", "buy-1")
    ]
    result = runner.invoke(orders_cmd, ["--json", "--owner", "beta"],
                           env={"IBHUB_DATA_DIR": str(tmp_path)})  # fmt: skip
    assert [d["status"] for d in json.loads(result.output)] == ["Filled"]

    result = runner.invoke(orders_cmd, ["--data-dir", str(tmp_path / "none")])
    assert result.exit_code != 0 and "no order journal" in result.output


def test_orders_cli_history(tmp_path: Path) -> None:
    j = Journal.in_dir(tmp_path)
    j.insert_order(rec(7, owner="alpha", coid="buy-1"))
    j.update_order(7, "status", {"status": "Submitted"})
    j.close()
    runner = CliRunner()
    result = runner.invoke(orders_cmd, ["--data-dir", str(tmp_path), "--history", "7"])
    assert result.exit_code == 0, result.output
    kinds = [line.split()[2] for line in result.output.splitlines()]
    assert kinds == ["request", "status"] and "status=Submitted" in result.output
    data = json.loads(
        runner.invoke(orders_cmd, ["--data-dir", str(tmp_path), "--history", "7", "--json"]).output
    )
    assert [d["kind"] for d in data] == ["request", "status"]
    missing = runner.invoke(orders_cmd, ["--data-dir", str(tmp_path), "--history", "99"])
    assert missing.exit_code != 0 and "nothing about order 99" in missing.output
