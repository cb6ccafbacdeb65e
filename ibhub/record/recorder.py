"""The recorder: SDK taps (``AsyncHub.listen``) -> rows, gaps and a status file.

What it records is chosen by kind (ticks, bars, orders, status; fills come with
orders), symbol and topic pattern (``fnmatch``, e.g. ``tick.A*``). It listens
passively: it records what the hub carries for anyone; ``subscribe`` names
instruments it also holds itself, so the hub streams them with no other script.

Gaps: the tap reports a sequence jump on a topic; the recorder writes it as a row of
``kind=gaps`` (docs/recording.md): ``recorder_down`` for the first jump of a topic
after a restart (the events a killed recorder held in memory and those published
while none ran), ``hub_drop`` for a jump while it ran (the hub's PUB socket dropped
them for this slow subscriber), ``hub_restart`` when a topic counts from 1 again.

Crash safety: ``DIR/_recorder/lock`` (flock) keeps a second recorder off the
directory; ``state.json`` is rewritten each second with what is durable (the last
sequence number per topic on disk), what is buffered and the lag, and marked clean
at a proper stop. The next start reads it: an unclean previous stop is reported
with the size of the buffer it lost, spool segments become parts (spool.py), temp
files of an unfinished part are deleted, and the taps start from the durable
sequence numbers so the loss is recorded as gaps.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import fnmatch
import json
import logging
import os
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from msgspec.structs import astuple

from ibhub.client import AsyncHub, Batch, Tap
from ibhub.protocol import TOPIC_STATUS
from ibhub.record import format as fmt
from ibhub.record.spool import leftover_segments, read_segment, spool_dir
from ibhub.record.writer import PartWriter, write_buffer

log = logging.getLogger(__name__)

PREFIXES = {"ticks": "tick.", "bars": "bar.", "orders": "order.", "status": TOPIC_STATUS}
RECORDABLE = tuple(PREFIXES)
LAG_WARN = 1.0  # seconds between the hub's timestamp and receipt that count as behind


class RecorderBusy(RuntimeError):
    """Another recorder holds the directory."""


@dataclass
class Selection:
    """What to record: kinds, symbols (None: all) and topic patterns (None: all)."""

    kinds: frozenset[str] = frozenset(RECORDABLE)
    symbols: frozenset[str] | None = None
    topics: tuple[str, ...] | None = None
    _topic_ok: dict[str, bool] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        unknown = set(self.kinds) - set(RECORDABLE)
        if unknown:
            raise ValueError(f"unknown kind(s) {sorted(unknown)}: choose from "
                             f"{', '.join(RECORDABLE)} (fills come with orders)")
        if not self.kinds:
            raise ValueError("nothing to record: no kind selected")

    def topic(self, topic: str) -> bool:
        ok = self._topic_ok.get(topic)
        if ok is None:
            ok = self.topics is None or any(fnmatch.fnmatchcase(topic, p) for p in self.topics)
            self._topic_ok[topic] = ok
        return ok

    def symbol(self, symbol: str) -> bool:
        return self.symbols is None or symbol in self.symbols


@dataclass
class Recovery:
    """What the start found of the previous run."""

    unclean: bool = False
    previous: dict[str, Any] = field(default_factory=dict)
    lost_buffered: dict[str, int] = field(default_factory=dict)
    temps_removed: int = 0
    segments_recovered: int = 0
    rows_recovered: int = 0
    since: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        if not self.previous:
            return "new recording"
        if not self.unclean:
            return "the previous recorder stopped cleanly"
        lost = ", ".join(f"{n} {k}" for k, n in self.lost_buffered.items() if n) or "nothing"
        return (f"the previous recorder (pid {self.previous.get('pid')}) stopped without "
                f"flushing (killed?): its open buffer was lost: about {lost} (as of its "
                f"last status, {self.previous.get('updated_iso', '?')}); recorded as "
                f"gaps (reason recorder_down) as each topic's next event arrives; "
                f"{self.segments_recovered} spool segment(s) ({self.rows_recovered} "
                f"order/status/gap rows) recovered, {self.temps_removed} unfinished "
                f"part file(s) removed")


class Recorder:
    """Records what ``hub`` carries into ``root``. ``await start()``, ``await stop()``."""

    def __init__(self, root: str | Path, hub: AsyncHub, selection: Selection | None = None,
                 *, roll_seconds: float = 300.0, roll_mb: float = 64.0,
                 subscribe: Iterable[str] = (), status_interval: float = 1.0) -> None:
        self.root = Path(root)
        self.hub = hub
        self.selection = selection or Selection()
        self.roll_seconds = roll_seconds
        self.roll_bytes = int(roll_mb * 1e6)
        self.hold = list(subscribe)
        self.status_interval = status_interval
        self.writer_id = f"{int(time.time()):x}{secrets.token_hex(2)}"
        self.writer: PartWriter | None = None
        self.recovery = Recovery()
        self.durable: dict[str, int] = {}
        self.received = dict.fromkeys(RECORDABLE, 0)
        self.skipped = 0  # events outside the selection
        self.gap_rows = 0
        self.missed = 0  # events lost, by sequence numbers, since this start
        self.lag = 0.0  # seconds, the largest hub->recorder delay in the last interval
        self.behind = False
        self.flush_errors = 0
        self._lag_window = 0.0
        self._seen: set[str] = set()
        self._taps: list[Tap] = []
        self._subs: list[Any] = []
        self._lock_fd = -1
        self._task: asyncio.Task[None] | None = None
        self._started = time.time()
        self.final: dict[str, Any] = {}  # status() at the clean stop

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> Recovery:
        self.root.mkdir(parents=True, exist_ok=True)
        spool_dir(self.root).mkdir(exist_ok=True)
        self._lock()
        self.recovery = await asyncio.to_thread(self._recover)
        level = logging.WARNING if self.recovery.unclean else logging.INFO
        log.log(level, "recording to %s: %s", self.root, self.recovery.describe())
        self.durable = dict(self.recovery.since)
        self.writer = PartWriter(self.root, self.writer_id, self.roll_seconds,
                                 self.roll_bytes, self._on_durable)
        self._save_state(clean=False)
        for kind in sorted(self.selection.kinds):
            self._taps.append(await self.hub.listen(
                PREFIXES[kind], self._on_batch, since=self.durable, queue_size=1))
        for contract in self.hold:
            self._subs.append(await self.hub.subscribe_batches(contract, callback=_ignore))
        self._task = asyncio.get_running_loop().create_task(self._run(), name="recorder")
        return self.recovery

    async def stop(self) -> None:
        """Stop listening, write every buffer as parts, mark the state clean."""
        for tap in self._taps:
            tap.close()
        self._taps = []
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.close()
        self._subs = []
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.writer is not None:
            await self.writer.flush_all()
            self.writer.close()
            self._save_state(clean=True)
            self.final = self.status()
            self.writer = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _lock(self) -> None:
        fd = os.open(spool_dir(self.root) / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RecorderBusy(f"another recorder is writing to {self.root} "
                               f"(it holds {spool_dir(self.root) / 'lock'})") from None
        self._lock_fd = fd

    # ------------------------------------------------------------------ recovery

    def _recover(self) -> Recovery:
        rec = Recovery()
        state_path = spool_dir(self.root) / "state.json"
        state_mtime = 0.0
        if state_path.exists():
            try:
                rec.previous = json.loads(state_path.read_text())
                state_mtime = state_path.stat().st_mtime
            except (OSError, ValueError) as exc:
                log.warning("unreadable %s (%s): starting from the parts on disk",
                            state_path, exc)
        rec.unclean = bool(rec.previous) and not rec.previous.get("clean", False)
        if rec.unclean:
            rec.lost_buffered = {k: int(v) for k, v in rec.previous.get("buffered", {}).items()
                                 if k not in ("orders", "status", "gaps")}
        since: dict[str, int] = {str(k): int(v) for k, v in
                                 rec.previous.get("durable", {}).items()}
        for temp in fmt.leftover_temps(self.root):
            temp.unlink(missing_ok=True)
            rec.temps_removed += 1
        for kind, writer, n, path in leftover_segments(self.root):
            done = list((fmt.kind_dir(self.root, kind)).glob(f"date=*/part-*-{writer}-{n}.parquet"))
            if not done:
                rows = [tuple(r) for r in read_segment(path)]
                if rows:
                    durable, _ = write_buffer(self.root, kind, [], rows, writer, n)
                    since.update(durable)
                    rec.rows_recovered += len(rows)
                rec.segments_recovered += 1
            path.unlink(missing_ok=True)
        # Parts renamed into place after the last state save hold newer positions.
        for kind in ("ticks", "bars", "orders", "status"):
            for part in fmt.parts(self.root, kind):
                if part.stat().st_mtime >= state_mtime:
                    import pyarrow.parquet as pq

                    table = pq.read_table(part, columns=["topic", "seq"])
                    topics = table["topic"].to_pylist()
                    seqs = table["seq"].to_pylist()
                    for topic, seq in zip(topics, seqs, strict=True):
                        if seq > since.get(topic, 0):
                            since[topic] = seq
        rec.since = since
        return rec

    # ------------------------------------------------------------------ events

    def _on_batch(self, batch: Batch) -> None:
        topic = batch.topic
        events = batch.events
        sel = self.selection
        first_here = topic not in self._seen
        if first_here:
            self._seen.add(topic)
        if batch.missed or batch.restarted:
            self._gap(batch, first_here)
        now = time.time_ns()
        lag = (now - events[-1].ts) / 1e9
        if lag > self._lag_window:
            self._lag_window = lag
        writer = self.writer
        if writer is None or not sel.topic(topic):
            self.skipped += len(events)
            return
        if topic.startswith("tick."):
            kind = "ticks"
        elif topic.startswith("bar."):
            kind = "bars"
        elif topic.startswith("order."):
            kind = "orders"
        else:
            kind = "status"
        if kind in ("ticks", "bars"):
            if sel.symbols is not None and not sel.symbol(events[0].symbol):  # type: ignore[attr-defined]
                self.skipped += len(events)
                return
            writer.add_events(kind, topic, events)
        else:
            for event in events:
                if kind == "orders" and not sel.symbol(event.symbol):  # type: ignore[attr-defined]
                    self.skipped += 1
                    continue
                writer.add_row(kind, (topic, *astuple(event)))
            self.durable[topic] = events[-1].seq  # spooled: durable now
        self.received[kind] += len(events)

    def _gap(self, batch: Batch, first_here: bool) -> None:
        last = batch.first_seq - batch.missed - 1
        if batch.restarted:
            reason, to_seq, count = "hub_restart", None, None
            last = self.durable.get(batch.topic, 0)
        else:
            reason = "recorder_down" if first_here and batch.topic in self.recovery.since \
                else "hub_drop"
            to_seq, count = batch.first_seq - 1, batch.missed
            self.missed += batch.missed
        now = time.time_ns()
        if reason == "hub_drop":
            log.warning("%s: the hub dropped %d event(s) for this recorder (seq %d..%d): "
                        "it is not keeping up; recorded as a gap", batch.topic, batch.missed,
                        last + 1, batch.first_seq - 1)
        else:
            log.info("%s: gap (%s) seq %d..%s recorded", batch.topic, reason, last + 1,
                     "?" if to_seq is None else to_seq)
        if self.writer is not None:
            self.writer.add_row("gaps", (batch.topic, last + 1, to_seq, count, reason, now,
                                         None, batch.events[0].ts))
            self.gap_rows += 1

    def _on_durable(self, durable: dict[str, int]) -> None:
        self.durable.update(durable)

    # ------------------------------------------------------------------ the loop

    async def _run(self) -> None:
        writer = self.writer
        assert writer is not None
        next_status = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(0.25, self.status_interval)):
                    await writer.full.wait()
            writer.full.clear()
            for kind in writer.due():
                try:
                    await writer.flush(kind)
                except Exception:
                    self.flush_errors += 1  # logged by the writer; rows kept, retried
            now = time.monotonic()
            if now >= next_status:
                next_status = now + self.status_interval
                self._update_lag()
                self._save_state(clean=False)

    def _update_lag(self) -> None:
        self.lag, self._lag_window = self._lag_window, 0.0
        behind = self.lag > LAG_WARN
        if behind and not self.behind:
            log.warning("the recorder is behind the hub by %.1f s", self.lag)
        elif self.behind and not behind:
            log.info("the recorder caught up (lag %.3f s)", self.lag)
        self.behind = behind

    def status(self) -> dict[str, Any]:
        writer = self.writer
        now = time.time()
        return {
            "pid": os.getpid(),
            "writer": self.writer_id,
            "started": self._started,
            "updated": now,
            "updated_iso": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "kinds": sorted(self.selection.kinds),
            "received": self.received,
            "skipped": self.skipped,
            "buffered": writer.buffered() if writer else {},
            "rows_written": writer.rows_written if writer else {},
            "parts_written": writer.parts_written if writer else 0,
            "bytes_written": writer.bytes_written if writer else 0,
            "gaps": self.gap_rows,
            "missed": self.missed,
            "lag_seconds": round(self.lag, 6),
            "behind": self.behind,
            "flush_errors": self.flush_errors,
            "durable": self.durable,
        }

    def _save_state(self, clean: bool) -> None:
        state = self.status()
        state["clean"] = clean
        path = spool_dir(self.root) / "state.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
        os.replace(tmp, path)


def _ignore(batch: Batch) -> None:
    """Held subscriptions only keep the hub streaming; the taps record."""

