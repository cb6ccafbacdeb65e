"""The recording's on-disk layout and schema (docs/recording.md), in one place.

Layout (hive-style, so DuckDB, polars, pandas and pyarrow read it as one dataset)::

    DIR/kind=<kind>/date=<YYYY-MM-DD>/part-<first ts ns>-<writer id>-<n>.parquet

``kind`` is one measurement: ticks, bars, orders, fills, status, gaps. The instrument
is a column (``symbol``, ``con_id``, ``topic``), not a directory: 41 instruments
rolled every five minutes would be 41x the files, most of them tiny; one part per
kind, date and roll, sorted by (topic, seq), gives row groups whose min/max
statistics on ``topic`` and ``symbol`` let a reader skip the other instruments.
``date`` is the UTC date of the event's hub timestamp. A part is written to
``.<name>.tmp`` in the same directory, fsynced and renamed: a reader sees it whole or
not at all. Timestamps are UTC nanoseconds (``ts``: when the hub decoded the tick or
published the event).

This module imports only pyarrow and the protocol: the simulator's replay reads
recordings through it without the SDK.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

TS = pa.timestamp("ns", tz="UTC")
STR = pa.dictionary(pa.int32(), pa.string())  # repeated names cost an index each
F64, I64, I32 = pa.float64(), pa.int64(), pa.int32()


def _schema(*fields: tuple[str, pa.DataType]) -> pa.Schema:
    return pa.schema([pa.field(name, kind) for name, kind in fields])


_EVENT = (("topic", STR), ("seq", I64), ("ts", TS))

SCHEMAS: dict[str, pa.Schema] = {
    "ticks": _schema(*_EVENT, ("con_id", I64), ("symbol", STR), ("bid", F64), ("ask", F64),
                     ("last", F64), ("bid_size", F64), ("ask_size", F64),
                     ("last_size", F64), ("volume", F64)),
    "bars": _schema(*_EVENT, ("con_id", I64), ("symbol", STR),
                    ("time", pa.timestamp("s", tz="UTC")), ("open", F64), ("high", F64),
                    ("low", F64), ("close", F64), ("volume", F64), ("wap", F64),
                    ("count", I64)),
    "orders": _schema(*_EVENT, ("kind", STR), ("order_id", I64), ("client_order_id", STR),
                      ("owner", STR), ("con_id", I64), ("symbol", STR), ("action", STR),
                      ("status", STR), ("filled", F64), ("remaining", F64),
                      ("avg_fill_price", F64), ("last_fill_qty", F64),
                      ("last_fill_price", F64), ("exec_id", STR), ("commission", F64),
                      ("message", pa.string())),
    "fills": _schema(*_EVENT, ("order_id", I64), ("client_order_id", STR), ("owner", STR),
                     ("con_id", I64), ("symbol", STR), ("action", STR), ("exec_id", STR),
                     ("qty", F64), ("price", F64)),
    "status": _schema(*_EVENT, ("state", STR), ("kind", STR), ("code", I64),
                      ("message", pa.string()), ("reconnect_count", I64)),
    # A range of a topic's sequence numbers this recording does not hold. to_seq is
    # inclusive; null when unknown (the hub restarted: its counting began again at 1).
    "gaps": _schema(("topic", STR), ("from_seq", I64), ("to_seq", I64), ("count", I64),
                    ("reason", STR), ("detected_ts", TS), ("last_ts", TS), ("next_ts", TS)),
}
KINDS = tuple(SCHEMAS)
# Which measurement each topic prefix feeds (order events also feed "fills").
TOPIC_KINDS = {"tick.": "ticks", "bar.": "bars", "order.": "orders", "hub.status": "status"}
GAP_REASONS = {
    "hub_drop": "the hub published them and this recorder never received them (a slow "
                "subscriber at ZeroMQ's high-water mark, or a PUB reconnect)",
    "recorder_down": "published while no recorder was running, or held in the open buffer "
                     "of a recorder that was killed",
    "hub_restart": "the hub restarted and counts from 1 again: what it published between "
                   "the last event recorded and its restart is unknown",
}
_PART = re.compile(r"^part-(\d+)-([0-9a-z]+)-(\d+)\.parquet$")


def kind_dir(root: Path, kind: str) -> Path:
    return root / f"kind={kind}"


def part_path(root: Path, kind: str, date: str, first_ts: int, writer: str, n: int) -> Path:
    return kind_dir(root, kind) / f"date={date}" / f"part-{first_ts:019d}-{writer}-{n}.parquet"


def utc_date(ts_ns: int) -> str:
    return dt.datetime.fromtimestamp(ts_ns / 1e9, dt.UTC).strftime("%Y-%m-%d")


def write_part(path: Path, table: pa.Table) -> int:
    """Write ``table`` to ``path`` complete or not at all: a hidden temp file in the same
    directory, fsynced, renamed over; the directory fsynced. Returns the file's size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp, compression="zstd", row_group_size=64 * 1024)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return path.stat().st_size


def parts(root: Path, kind: str) -> list[Path]:
    """Every complete part of ``kind``, oldest first (temp files are not parts)."""
    base = kind_dir(root, kind)
    if not base.is_dir():
        return []
    found = [p for p in base.glob("date=*/part-*.parquet") if _PART.match(p.name)]
    return sorted(found, key=lambda p: (p.parent.name, p.name))


def leftover_temps(root: Path) -> list[Path]:
    """Temp files of parts a killed writer never finished (never visible as parts)."""
    return sorted(root.glob("kind=*/date=*/.part-*.tmp"))


def read_kind(root: Path, kind: str, columns: Sequence[str] | None = None,
              filters: Any = None) -> pa.Table:
    """All parts of ``kind`` as one table (empty with the schema when there are none)."""
    files = parts(root, kind)
    schema = SCHEMAS[kind]
    if not files:
        empty = schema.empty_table()
        return empty.select(list(columns)) if columns else empty
    import pyarrow.dataset as ds

    dataset = ds.dataset([str(p) for p in files], schema=schema, format="parquet")
    return dataset.to_table(columns=list(columns) if columns else None, filter=filters)


def iter_dates(root: Path, kind: str) -> Iterator[str]:
    base = kind_dir(root, kind)
    if base.is_dir():
        for d in sorted(base.glob("date=*")):
            yield d.name.removeprefix("date=")
