"""In-memory buffers per measurement, rolled into complete-or-absent Parquet parts.

A buffer rolls when it is ``roll_seconds`` old or holds about ``roll_bytes`` (the
uncompressed size of its rows, estimated per kind), and at a clean stop. The part
is built and written on a worker thread (pyarrow releases the GIL for the encoding,
compression and I/O), so the event loop goes on reading the SUB socket meanwhile;
one flush per kind is in flight at a time. Rows of one part are sorted by
(topic, seq); a buffer that spans midnight UTC becomes one part per date.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from msgspec.structs import astuple

from ibhub.protocol import Event
from ibhub.record import format as fmt
from ibhub.record.spool import SPOOLED, Spool

log = logging.getLogger(__name__)

# Approximate uncompressed bytes per row (for --roll-mb): 8 per number, ~8 per name.
ROW_BYTES = {kind: 8 * len(schema) for kind, schema in fmt.SCHEMAS.items()}
FILL_KINDS = ("partially_filled", "filled")


class Buffer:
    __slots__ = ("first_ts", "rows", "started", "topics")

    def __init__(self) -> None:
        self.topics: list[str] = []
        self.rows: list[Any] = []  # events (ticks, bars) or row tuples (spooled kinds)
        self.started = 0.0  # monotonic time of the first row
        self.first_ts = 0


def build_table(kind: str, topics: Sequence[str], rows: Sequence[Any]) -> pa.Table:
    """Rows of ``kind`` -> a table of its schema. ``rows`` are events (whose fields are
    the schema's after ``topic``) or row tuples that already start with the topic."""
    schema = fmt.SCHEMAS[kind]
    if topics:
        columns: list[Any] = [topics, *zip(*map(astuple, rows), strict=True)]
    else:
        columns = list(zip(*rows, strict=True))
    arrays = [pa.array(col, type=field.type) for col, field in
              zip(columns, schema, strict=True)]
    return pa.Table.from_arrays(arrays, schema=schema)


def fills_of(orders: pa.Table) -> pa.Table:
    """The fills among order events: a fill kind with an execution id."""
    mask = pc.and_(pc.is_in(orders["kind"].cast(pa.string()), pa.array(FILL_KINDS)),
                   pc.not_equal(orders["exec_id"].cast(pa.string()), ""))
    rows = orders.filter(mask)
    schema = fmt.SCHEMAS["fills"]
    picked = {**{n: rows[n] for n in schema.names if n in rows.column_names},
              "qty": rows["last_fill_qty"], "price": rows["last_fill_price"]}
    return pa.Table.from_arrays([picked[n] for n in schema.names], schema=schema)


def by_date(table: pa.Table) -> list[tuple[str, pa.Table]]:
    """Split by the UTC date of ``ts`` (one slice unless the rows span midnight)."""
    ts = table["detected_ts" if "detected_ts" in table.column_names else "ts"]
    first = fmt.utc_date(pc.min(ts).value)
    last = fmt.utc_date(pc.max(ts).value)
    if first == last:
        return [(first, table)]
    dates = pc.strftime(ts, format="%Y-%m-%d")
    return [(d, table.filter(pc.equal(dates, d))) for d in sorted(set(dates.to_pylist()))]


def write_kind(root: Path, kind: str, table: pa.Table, writer: str, n: int) -> int:
    """Sort and write one buffer's table as its part(s); returns the bytes written."""
    if table.num_rows == 0:
        return 0
    if kind != "gaps":
        keys = pa.table({"t": table["topic"].cast(pa.string()), "s": table["seq"]})
        table = table.take(pc.sort_indices(keys, sort_keys=[("t", "ascending"),
                                                            ("s", "ascending")]))
    written = 0
    for date, part in by_date(table):
        ts = part["detected_ts" if kind == "gaps" else "ts"]
        first = pc.min(ts).value
        written += fmt.write_part(fmt.part_path(root, kind, date, first, writer, n), part)
    return written


class PartWriter:
    """The buffers of one recorder run (``writer`` names its parts and spool segments)."""

    def __init__(self, root: Path, writer: str, roll_seconds: float, roll_bytes: int,
                 on_durable: Callable[[dict[str, int]], None]) -> None:
        self.root = root
        self.writer = writer
        self.roll_seconds = roll_seconds
        self.roll_bytes = roll_bytes
        self._on_durable = on_durable  # {topic: last seq} now safely on disk
        self.buffers = {kind: Buffer() for kind in fmt.KINDS if kind != "fills"}
        self.spools = {kind: Spool(root, kind, writer) for kind in SPOOLED}
        self._limits = {kind: max(1, roll_bytes // ROW_BYTES[kind]) for kind in self.buffers}
        self._segments = dict.fromkeys(self.buffers, 0)
        self._locks = {kind: asyncio.Lock() for kind in self.buffers}
        self.full = asyncio.Event()  # a buffer reached its size limit
        self.rows_written = dict.fromkeys(fmt.KINDS, 0)
        self.bytes_written = 0
        self.parts_written = 0

    # ------------------------------------------------------------------ adding rows

    def add_events(self, kind: str, topic: str, events: Sequence[Event]) -> None:
        """Ticks or bars of one batch (kept as events until the flush)."""
        buf = self.buffers[kind]
        if not buf.rows:
            buf.started = time.monotonic()
            buf.first_ts = events[0].ts
        buf.rows.extend(events)
        buf.topics.extend([topic] * len(events))
        if len(buf.rows) >= self._limits[kind]:
            self.full.set()

    def add_row(self, kind: str, row: tuple[Any, ...]) -> None:
        """A spooled kind's row (it starts with the topic): on disk before in memory."""
        self.spools[kind].append(row)
        buf = self.buffers[kind]
        if not buf.rows:
            buf.started = time.monotonic()
        buf.rows.append(row)

    def buffered(self) -> dict[str, int]:
        return {kind: len(buf.rows) for kind, buf in self.buffers.items()}

    def due(self, now: float | None = None) -> list[str]:
        now = time.monotonic() if now is None else now
        return [kind for kind, buf in self.buffers.items() if buf.rows and (
            now - buf.started >= self.roll_seconds or len(buf.rows) >= self._limits[kind])]

    # ------------------------------------------------------------------ flushing

    async def flush(self, kind: str) -> None:
        async with self._locks[kind]:
            buf = self.buffers[kind]
            if not buf.rows:
                return
            self.buffers[kind] = Buffer()
            spool = self.spools.get(kind)
            n = spool.rotate() if spool is not None else self._next(kind)
            try:
                durable, written = await asyncio.to_thread(
                    self._write, kind, buf.topics, buf.rows, n)
            except Exception:
                # Keep the rows: put them back in front of what arrived meanwhile (the
                # spool segment stays on disk for a spooled kind, recovered at restart).
                log.exception("writing a %s part failed; keeping its %d rows buffered",
                              kind, len(buf.rows))
                fresh = self.buffers[kind]
                buf.rows.extend(fresh.rows)
                buf.topics.extend(fresh.topics)
                self.buffers[kind] = buf
                raise
            if spool is not None:
                spool.discard(n)
            self.bytes_written += written
            self._on_durable(durable)

    def _next(self, kind: str) -> int:
        self._segments[kind] += 1
        return self._segments[kind]

    def _write(self, kind: str, topics: list[str], rows: list[Any],
               n: int) -> tuple[dict[str, int], int]:
        return write_buffer(self.root, kind, topics, rows, self.writer, n, self._count)

    def _count(self, kind: str, rows: int) -> None:
        self.rows_written[kind] += rows
        self.parts_written += 1

    async def flush_all(self) -> None:
        for kind in self.buffers:
            await self.flush(kind)

    def close(self) -> None:
        for spool in self.spools.values():
            spool.close()


def write_buffer(root: Path, kind: str, topics: list[str], rows: list[Any], writer: str,
                 n: int, count: Callable[[str, int], None] | None = None,
                 ) -> tuple[dict[str, int], int]:
    """Write one buffer (or a recovered spool segment) as parts; returns the last seq
    per topic it made durable and the bytes written. Orders also give their fills
    (written first: a part for segment n of orders means the fills are there too)."""
    table = build_table(kind, topics, rows)
    written = 0
    if kind == "orders":
        fills = fills_of(table)
        written += write_kind(root, "fills", fills, writer, n)
        if count is not None and fills.num_rows:
            count("fills", fills.num_rows)
    written += write_kind(root, kind, table, writer, n)
    if count is not None:
        count(kind, table.num_rows)
    if kind == "gaps":
        return {}, written
    names = topics if topics else [row[0] for row in rows]
    seqs = [e.seq for e in rows] if topics else [row[1] for row in rows]
    return dict(zip(names, seqs, strict=True)), written
