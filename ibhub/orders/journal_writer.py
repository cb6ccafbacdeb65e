"""The order journal's writer: group commit on the event loop; awaited fsyncs there too.

Split from :mod:`ibhub.orders.journal` (the schema and the synchronous ``Journal``),
which re-exports :class:`JournalWriter`. Design notes: the journal module's doc and
the class doc below; measurements: docs/performance.md, section 5.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import sys
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Final, TypeVar

from ibhub.orders.journal import Journal, JournalError

log = logging.getLogger(__name__)

T = TypeVar("T")

CHECKPOINT_EVERY: Final = 100  # commits between background checkpoints (~5 pages each)
BACKSTOP_PAGES: Final = 4_000  # the writer checkpoints itself only past this (~16 MB)
# The fsync thread (commits nobody awaits, journal_sync_updates=FULL) needs the GIL
# back when its fsync returns, to wake the loop; while
# the loop thread runs Python (decoding a Gateway read), CPython hands the GIL over
# only after the switch interval, 5 ms by default, and the order's ack waits for it.
# A started writer lowers it to this (process-wide; the hub's other threads are C:
# ZeroMQ's and libuv's). docs/performance.md, "Orders".
SWITCH_INTERVAL: float = 0.0005


# (fn, args, callback, durable, on_commit): durable ops are awaited by someone (see the
# module doc); on_commit (or None) runs as soon as the op's transaction is committed,
# before its fsync (``write(..., on_commit=)``)
_Op = tuple[
    Callable[..., Any], tuple[Any, ...], Callable[[Any], None], bool, Callable[[Any], None] | None
]


class _Batch:
    """One commit's callbacks, released in commit order once the commit is as durable
    as its writes asked (``synced``)."""

    __slots__ = ("awaited", "callbacks", "synced")

    def __init__(
        self, callbacks: list[tuple[Callable[[Any], None], Any]], synced: bool, awaited: bool
    ) -> None:
        self.callbacks = callbacks
        self.synced = synced
        self.awaited = awaited  # holds a durable write: someone awaits it to reply


class JournalWriter:
    """Journal writes with group commit: SQL and awaited fsyncs on the event loop.

    ``await writer.write(fn, *args)`` runs ``fn(journal, *args)`` (an unbound
    :class:`Journal` method) and returns its result once it is committed *durably*
    (``synchronous``, FULL by default: fsynced), raising ``JournalError`` if it was not.
    ``writer.write_then(fn, args, callback)`` is the callback form for synchronous code
    (upstream event handlers): ``callback(result)`` runs on the event loop once the write
    is committed (at ``updates_synchronous``), in submission order with every other
    write, so events published from callbacks keep their order.

    How (before, one thread ran the SQL and the fsync and woke the loop):

    * Writes queued in one loop turn run in one transaction on the loop itself
      (``loop.call_soon``), committed at ``synchronous=NORMAL``: a WAL append, 20-100 us
      of CPU. A write nobody awaits, with nothing queued before it, commits at once.
      That is the CPU the writer thread spent anyway, holding the GIL; what
      the thread cost on top were two hand-offs (its wake-up, then
      ``call_soon_threadsafe`` back) and a GIL it got only between the loop's Python
      (up to CPython's 5 ms switch interval per statement while the loop decoded the
      Gateway's read): 0.6-1.5 ms at the median from an execution to its commit.
    * A commit someone awaits (an order's insert, a modification) is fsynced on the
      loop right after it (``fdatasync`` of the WAL, what ``synchronous=FULL`` does
      inside the commit; the GIL is released while the disk works), after its
      ``on_commit`` work. The first such write of a loop turn (a lone order) is
      committed and fsynced at once, inside ``write``, so its awaiter runs on without
      giving the loop up: its reply leaves in the same step. Later ones of the same
      turn (a burst read at once) share one commit and one fsync at the turn's end
      (group commit). Before, the ``ibhub-journal-sync`` thread ran it: its two
      wake-ups (to start, and ``call_soon_threadsafe`` back) cost 0.1-0.7 ms, and the
      loop was free meanwhile; now the loop waits the fsync out (0.3-0.6 ms at the
      median here; docs/performance.md, "Order path, hub side" (section 8.3)).
    * Commits nobody awaits that still want an fsync (``updates_synchronous=FULL``)
      are fsynced by the ``ibhub-journal-sync`` thread, one fsync for all queued so
      far; the thread holds no GIL while it waits on the disk.
    * Callbacks are released strictly in commit order: a commit that needs no fsync
      but follows one still waiting for its fsync waits too. One fsync covers every
      commit before it, so an awaited commit's fsync releases those too.
    * A failed fsync fails the writes it covered (their callbacks get a
      ``JournalError``) and sets :attr:`failed` for good.
    """

    def __init__(
        self,
        journal_factory: Callable[[], Journal],
        *,
        max_batch: int = 512,
        checkpoint_every: int = CHECKPOINT_EVERY,
    ) -> None:
        """``checkpoint_every``: commits between background checkpoints (0: none; the
        writer's connection then checkpoints inside commits, SQLite's default)."""
        self._factory = journal_factory
        self._max_batch = max_batch
        self._checkpoint_every = checkpoint_every
        self._journal: Journal | None = None
        self._fsync_needed = {True: False, False: False}
        self._pending: list[_Op] = []
        self._flush_scheduled = False
        self._released: deque[_Batch] = deque()  # committed, callbacks not yet run
        self._releasing = False
        self._deferred = False  # a _release is scheduled: the next turn runs the rest
        self._sync_requests: queue.SimpleQueue[_Batch | None] = queue.SimpleQueue()
        self._syncer: threading.Thread | None = None
        self._checkpointer: threading.Thread | None = None
        self._checkpoint_due = threading.Event()
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self.batches = 0  # commits so far (observability; tests)
        self.ops = 0
        self.fsyncs = 0
        self.checkpoints = 0  # background checkpoints run
        # Why the journal cannot be trusted any more (a failed fsync), or None. A failed
        # fsync may have dropped the dirty pages it covered (Linux marks them clean), so
        # a later fsync's success proves nothing about them: whoever acknowledges work
        # on the journal's word (the order manager) refuses new work once this is set.
        self.failed: str | None = None
        self._since_checkpoint = 0  # commits since the last complete one
        self._durable_this_turn = False  # a durable write was flushed at once this turn

    async def start(self) -> None:
        if SWITCH_INTERVAL and sys.getswitchinterval() > SWITCH_INTERVAL:
            sys.setswitchinterval(SWITCH_INTERVAL)
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._stopping = False
        try:
            journal = await asyncio.to_thread(self._factory)
            if self._checkpoint_every > 0:
                journal.set_autocheckpoint(BACKSTOP_PAGES)
        except (sqlite3.Error, OSError, JournalError) as exc:
            raise JournalError(f"cannot open the order journal: {exc}") from exc
        self._fsync_needed = journal.take_over_fsync()
        self._journal = journal
        self._syncer = threading.Thread(
            target=self._run_syncs, name="ibhub-journal-sync", daemon=True
        )
        self._syncer.start()
        if self._checkpoint_every > 0:
            self._checkpointer = threading.Thread(
                target=self._run_checkpoints, name="ibhub-journal-checkpoint", daemon=True
            )
            self._checkpointer.start()

    async def stop(self) -> None:
        """Finish every queued write (and its fsync), then close the database."""
        if self._journal is None:
            return
        while self._pending:
            self._flush()
        syncer, self._syncer = self._syncer, None
        if syncer is not None:
            self._sync_requests.put(None)
            await asyncio.to_thread(syncer.join)
        while self._released and self._released[0].synced:
            self._deferred = False
            self._release()
        journal, self._journal = self._journal, None
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            self._stopping = True
            self._checkpoint_due.set()
            await asyncio.to_thread(checkpointer.join)
        journal.close()

    def write_then(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        callback: Callable[[T | BaseException], None],
        *,
        durable: bool = False,
        on_commit: Callable[[T], None] | None = None,
    ) -> None:
        """Queue ``fn(journal, *args)``; ``callback(result)`` on the loop once committed.
        Not ``durable`` (the default here): its commit uses ``updates_synchronous``
        (module doc). ``on_commit(result)``: run on the loop as soon as the transaction
        is committed (in the WAL, so in the OS page cache: a crash of the process can no
        longer lose it), before the fsync a ``durable`` write waits for; not run if the
        commit failed (``callback`` gets the error)."""
        if self._journal is None or self._loop is None:
            raise JournalError("the journal writer is not running")
        op: _Op = (fn, args, callback, durable, on_commit)
        if threading.get_ident() != self._loop_thread:
            self._loop.call_soon_threadsafe(self._queue_op, op)
            return
        self._queue_op(op)

    def _queue_op(self, op: _Op) -> None:
        self._pending.append(op)
        if not op[3] and len(self._pending) == 1:
            # Nothing queued before it and no fsync to share: commit now, so an event
            # (a fill) is published before the loop decodes the rest of the Gateway's
            # read (openOrder, commissionReport: 0.3-0.9 ms).
            self._flush()
            return
        if op[3] and not self._durable_this_turn:
            # The first durable write of a loop turn (a lone order): committed and
            # fsynced now, so its awaiter finds it done and runs on without giving the
            # loop up (its reply leaves before the Gateway's answers are decoded). Later
            # durable writes of the same turn (a burst read at once) wait for the turn's
            # end and share one commit and one fsync.
            self._durable_this_turn = True
            assert self._loop is not None
            self._loop.call_soon(self._next_turn)
            self._flush()
            return
        if not self._flush_scheduled:
            self._flush_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._flush)

    async def write(
        self, fn: Callable[..., T], *args: Any, on_commit: Callable[[T], None] | None = None
    ) -> T:
        """``fn(journal, *args)``'s result once committed durably (``synchronous``);
        ``on_commit`` as in :meth:`write_then`: what may start before the fsync."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()

        def done(result: Any) -> None:
            if fut.done():
                return
            if isinstance(result, BaseException):
                fut.set_exception(
                    result if isinstance(result, JournalError) else JournalError(str(result))
                )
            else:
                fut.set_result(result)

        self.write_then(fn, args, done, durable=True, on_commit=on_commit)
        return await fut

    # ---------------------------------------------------------------- on the loop

    def _flush(self) -> None:
        """Commit what was queued (up to ``max_batch``) as one transaction."""
        self._flush_scheduled = False
        journal = self._journal
        if journal is None or not self._pending:
            return
        batch = self._pending[: self._max_batch]
        del self._pending[: self._max_batch]
        if self._pending:  # the rest in the next turn: the loop serves between batches
            self._flush_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._flush)
        durable = any(op[3] for op in batch)
        results: list[Any]
        try:
            results = journal.run_batch([(op[0], op[1]) for op in batch], durable)
        except Exception as exc:  # sqlite3.Error, or a bug in an op: fail the batch
            log.error("order journal commit failed (%d writes lost): %s", len(batch), exc)
            results = [JournalError(f"journal commit failed: {exc}")] * len(batch)
            durable = False  # nothing to make durable
        self.batches += 1
        self.ops += len(batch)
        self._since_checkpoint += 1
        for op, result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("journal %s failed: %s", getattr(op[0], "__name__", op[0]), result)
        entry = _Batch(
            [(op[2], result) for op, result in zip(batch, results, strict=True)],
            synced=not self._fsync_needed[durable],
            awaited=durable,
        )
        self._released.append(entry)
        if not entry.synced and not entry.awaited:
            self._sync_requests.put(entry)  # the fsync thread: nobody waits on it
        for op, result in zip(batch, results, strict=True):
            if op[4] is not None and not isinstance(result, BaseException):
                _run_callbacks([(op[4], result)])  # e.g. the order's placeOrder, now
        if entry.awaited and not entry.synced:  # its fsync now, on the loop, after on_commit
            self._sync_now(entry)
        self._release()
        every = self._checkpoint_every
        if every > 0 and self._since_checkpoint >= every and not self._pending:
            self._checkpoint_due.set()

    def _next_turn(self) -> None:
        self._durable_this_turn = False

    def _sync_now(self, entry: _Batch) -> None:
        """fsync the WAL on the loop for an awaited commit: its ``on_commit`` work (an
        order's placeOrder) is already written, the awaiter waits for nothing else, and
        on a busy 2-core host the fsync thread's wake-ups (to start, and to hand the
        result back with the GIL) cost more than the fsync: docs/performance.md. One
        fsync covers every commit before it."""
        journal = self._journal
        assert journal is not None
        error: BaseException | None = None
        try:
            journal.sync_wal()
            self.fsyncs += 1
        except OSError as exc:
            log.error("order journal fsync failed (a commit a reply waits on): %s", exc)
            error = exc
        self._synced([e for e in self._released if not e.synced], error)

    def _release(self) -> None:
        """Run the callbacks of the oldest commits that are durable enough, in order.
        A callback may write again (committed at once): its callbacks then run after
        the rest of this commit's, from the loop below, not from inside."""
        if self._releasing or self._deferred:
            return
        self._releasing = True
        released = self._released
        try:
            while released and released[0].synced:
                entry = released.popleft()
                _run_callbacks(entry.callbacks)
                if entry.awaited:
                    # The tasks that awaited this commit (an order's placement, a
                    # modification) run first, so their replies go out (and the front
                    # door binds its ids) before the events of later commits: also of
                    # commits made before they run (a Gateway read decoded meanwhile
                    # may answer an order sent at its commit).
                    self._deferred = True
                    assert self._loop is not None
                    self._loop.call_soon(self._release_deferred)
                    break
        finally:
            self._releasing = False

    def _release_deferred(self) -> None:
        self._deferred = False
        self._release()

    def _synced(self, entries: list[_Batch], error: BaseException | None) -> None:
        if error is not None and self.failed is None:
            self.failed = f"the journal's fsync failed: {error}"
        for entry in entries:
            if error is not None:  # committed but not durable: the writers must not ack
                failed = JournalError(f"journal fsync failed: {error}")
                entry.callbacks = [(cb, failed) for cb, _ in entry.callbacks]
            entry.synced = True
        self._release()

    # ---------------------------------------------------------------- fsync thread

    def _run_syncs(self) -> None:
        """fsync the WAL for every commit that asked, one fsync for all queued so far."""
        journal = self._journal
        assert journal is not None and self._loop is not None
        stopping = False
        while not stopping:
            first = self._sync_requests.get()
            entries = [] if first is None else [first]
            stopping = first is None
            while True:
                try:
                    more = self._sync_requests.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                else:
                    entries.append(more)
            if not entries:
                continue
            error: BaseException | None = None
            try:
                journal.sync_wal()
                self.fsyncs += 1
            except OSError as exc:
                log.error("order journal fsync failed (%d commits not durable): %s",
                          len(entries), exc)
                error = exc
            try:
                self._loop.call_soon_threadsafe(self._synced, entries, error)
            except RuntimeError:  # loop closed during shutdown: nobody is waiting any more
                log.debug("journal fsync finished after the event loop closed")
        journal.close_wal()

    # ---------------------------------------------------------------- checkpoint thread

    def _run_checkpoints(self) -> None:
        """PASSIVE checkpoints on a connection of their own, when the writer asks
        (idle, ``checkpoint_every`` commits since the last complete checkpoint)."""
        try:
            journal = self._factory()
        except (sqlite3.Error, OSError, JournalError) as exc:
            log.warning("order journal: no background checkpoints (%s); the writer "
                        "checkpoints past %d WAL pages instead", exc, BACKSTOP_PAGES)
            return
        try:
            while True:
                self._checkpoint_due.wait()
                self._checkpoint_due.clear()
                if self._stopping:
                    return
                try:
                    _busy, frames, copied = journal.checkpoint()
                except sqlite3.Error as exc:  # the writer asks again when next idle
                    log.warning("order journal checkpoint failed: %s", exc)
                    continue
                self.checkpoints += 1
                if copied >= frames:
                    self._since_checkpoint = 0
        finally:
            journal.close()


def _run_callbacks(callbacks: list[tuple[Callable[[Any], None], Any]]) -> None:
    for cb, result in callbacks:
        try:
            cb(result)
        except Exception:  # a failing listener must not starve the ones after it
            log.exception("journal completion callback failed")
