"""Journal writer (issue 19): SQL on the loop, the fsync on a thread, only where a reply
waits on it; callbacks strictly in commit order; a failed fsync fails the write."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest

from ibhub.orders.journal import JOURNAL_FILE, Journal, JournalError
from ibhub.orders.journal_writer import JournalWriter
from tests.helpers import wait_until
from tests.unit.test_journal import rec


def _seen(seen: list[str], what: str, _result: object) -> None:
    seen.append(what)


class GatedJournal(Journal):
    """A journal whose WAL fsync raises ``fail`` if set. On the fsync thread (commits
    nobody awaits, e.g. ``journal_sync_updates=FULL``) it first waits for ``gate``; on
    the loop (a commit a reply waits on) it runs ``on_sync`` hooks, which see the
    world at the moment of the fsync, and logs "fsync" in ``log``."""

    gate: threading.Event
    fail: OSError | None = None
    calls = 0
    log: list[str]
    on_sync: list[Callable[[], None]]

    def sync_wal(self) -> None:
        type(self).calls += 1
        if threading.current_thread().name == "ibhub-journal-sync":
            if not self.gate.wait(10):
                raise OSError("test gate never opened")
        else:
            for hook in self.on_sync:
                hook()
        self.log.append("fsync")
        if self.fail is not None:
            raise self.fail
        super().sync_wal()


def _gated(
    tmp_path: Path, synchronous: str = "FULL", updates_synchronous: str | None = None
) -> tuple[type[GatedJournal], JournalWriter]:
    class Gated(GatedJournal):
        gate = threading.Event()
        calls = 0
        log: list[str] = []
        on_sync: list[Callable[[], None]] = []

    def factory() -> Journal:
        return Gated(tmp_path / JOURNAL_FILE, synchronous=synchronous,
                     updates_synchronous=updates_synchronous)

    return Gated, JournalWriter(factory, checkpoint_every=0)


def test_batch_sync_levels(tmp_path: Path) -> None:
    j = Journal.in_dir(tmp_path, synchronous="FULL", updates_synchronous="NORMAL")
    level = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}

    def now() -> str:
        return level[j._db.execute("PRAGMA synchronous").fetchone()[0]]

    j.run_batch([(Journal.insert_order, (rec(1),))], durable=False)
    assert now() == "NORMAL"
    j.run_batch([(Journal.insert_order, (rec(2),))], durable=True)
    assert now() == "FULL"
    # The writer fsyncs itself: every commit at NORMAL, and it is told which need one.
    assert j.take_over_fsync() == {True: True, False: False}
    j.run_batch([(Journal.insert_order, (rec(3),))], durable=True)
    assert now() == "NORMAL"
    j.sync_wal()
    j.close()
    with pytest.raises(ValueError, match="updates synchronous must be FULL, NORMAL or EXTRA"):
        Journal.in_dir(tmp_path, updates_synchronous="OFF")
    plain = Journal.in_dir(tmp_path, synchronous="NORMAL")
    assert plain.take_over_fsync() == {True: False, False: False}
    plain.close()


async def test_fsync_only_where_a_reply_waits_and_in_order(tmp_path: Path) -> None:
    cls, writer = _gated(tmp_path, synchronous="FULL", updates_synchronous="NORMAL")
    await writer.start()
    seen: list[str] = []
    try:
        cls.gate.set()
        # Writes nobody awaits: committed at once, no fsync.
        for i in range(1, 6):
            writer.write_then(Journal.insert_order, (rec(i),), partial(_seen, seen, f"u{i}"))
        assert seen == ["u1", "u2", "u3", "u4", "u5"]  # nothing queued before: at once
        assert cls.calls == 0 and writer.fsyncs == 0
        # 20 concurrent awaited writes share the fsyncs (group commit).
        await asyncio.gather(*(writer.write(Journal.insert_order, rec(i)) for i in range(10, 30)))
        assert 1 <= writer.fsyncs < 20
        # A durable write (an order) alone in its loop turn: committed, its on_commit
        # work run (the placeOrder), fsynced on the loop, its callback run, all before
        # write_then returns: the awaiter never gives the loop up.
        cls.log.clear()
        fsyncs = writer.fsyncs
        writer.write_then(Journal.insert_order, (rec(40),), lambda _r: cls.log.append("durable"),
                          durable=True, on_commit=lambda _r: cls.log.append("send"))
        assert cls.log == ["send", "fsync", "durable"] and writer.fsyncs == fsyncs + 1
        # Gateway echoes may be fsynced too (journal_sync_updates=FULL).
    finally:
        cls.gate.set()
        await writer.stop()
    reader = Journal(tmp_path / JOURNAL_FILE, readonly=True)
    assert len(reader.orders()) == 26
    reader.close()


async def test_failed_fsync_fails_the_awaited_write(tmp_path: Path) -> None:
    cls, writer = _gated(tmp_path)
    await writer.start()
    try:
        cls.fail = OSError(5, "Input/output error")
        cls.gate.set()
        with pytest.raises(JournalError, match=r"fsync failed.*Input/output error"):
            await writer.write(Journal.insert_order, rec(1))
        cls.fail = None
        await writer.write(Journal.insert_order, rec(2))  # the writer goes on
    finally:
        await writer.stop()


async def test_updates_full_fsyncs_every_commit(tmp_path: Path) -> None:
    cls, writer = _gated(tmp_path, synchronous="FULL", updates_synchronous="FULL")
    cls.gate.set()
    await writer.start()
    try:
        done = asyncio.Event()
        writer.write_then(Journal.insert_order, (rec(1),), lambda _r: done.set())
        await asyncio.wait_for(done.wait(), 5)
        assert writer.fsyncs == 1
    finally:
        await writer.stop()


async def test_a_durable_commit_fsyncs_what_the_thread_still_holds(tmp_path: Path) -> None:
    """Echoes fsynced by the thread (journal_sync_updates=FULL) release in commit order;
    a durable commit's fsync on the loop covers them: all released, in order, at once."""
    cls, writer = _gated(tmp_path, synchronous="FULL", updates_synchronous="FULL")
    await writer.start()
    seen: list[str] = []
    try:
        writer.write_then(Journal.insert_order, (rec(1),), partial(_seen, seen, "echo"))
        await wait_until(lambda: cls.calls == 1, 5.0, "the thread's fsync to start")
        assert seen == []  # held: its fsync waits for the gate
        await writer.write(Journal.insert_order, rec(2), on_commit=partial(_seen, seen, "sent"))
        assert seen == ["sent", "echo"]  # the echo first (commit order), then the awaiter
        assert cls.log == ["fsync"]  # the loop's; the thread's still waits
    finally:
        cls.gate.set()
        await writer.stop()
    assert writer.failed is None


async def test_burst_of_durable_writes_shares_one_fsync(tmp_path: Path) -> None:
    """The first durable write of a turn is fsynced at once; the rest of the turn's share
    one commit and one fsync at its end (group commit)."""
    _cls, writer = _gated(tmp_path)
    await writer.start()
    try:
        sent: list[int] = []

        def committed(i: int, _result: object) -> None:
            sent.append(i)

        await asyncio.gather(*(
            writer.write(Journal.insert_order, rec(i), on_commit=partial(committed, i))
            for i in range(1, 11)
        ))  # fmt: skip
        assert sorted(sent) == list(range(1, 11))
        assert writer.fsyncs == 2 and writer.batches == 2
    finally:
        await writer.stop()
