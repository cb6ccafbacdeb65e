"""``ibhub record --stats DIR``: what a recording holds, read from the parts' footers
(row counts and sizes) and a scan of the small columns (dates, times, instruments)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq

from ibhub.record import format as fmt
from ibhub.record.spool import spool_dir


def disk_stats(root: Path) -> dict[str, Any]:
    kinds: dict[str, Any] = {}
    for kind in fmt.KINDS:
        files = fmt.parts(root, kind)
        if not files:
            continue
        rows = sum(pq.ParquetFile(p).metadata.num_rows for p in files)
        info: dict[str, Any] = {
            "parts": len(files), "rows": rows, "bytes": sum(p.stat().st_size for p in files),
            "dates": list(fmt.iter_dates(root, kind)),
        }
        ts_col = "detected_ts" if kind == "gaps" else "ts"
        cols = [ts_col, "topic"] + (["count", "reason"] if kind == "gaps" else [])
        table = fmt.read_kind(root, kind, columns=cols)
        if table.num_rows:
            info["first"] = _iso(pc.min(table[ts_col]).value)
            info["last"] = _iso(pc.max(table[ts_col]).value)
            info["topics"] = len(pc.unique(table["topic"].cast("string")))
        if kind == "gaps" and table.num_rows:
            by_reason: dict[str, int] = {}
            for reason, count in zip(table["reason"].to_pylist(), table["count"].to_pylist(),
                                     strict=True):
                by_reason[reason] = by_reason.get(reason, 0) + (count or 0)
            info["missing_events_by_reason"] = by_reason
        kinds[kind] = info
    state_path = spool_dir(root) / "state.json"
    state: dict[str, Any] = {}
    if state_path.exists():
        raw = json.loads(state_path.read_text())
        state = {k: raw.get(k) for k in ("pid", "updated_iso", "clean", "lag_seconds",
                                          "behind", "missed", "buffered", "received")}
    return {"root": str(root), "kinds": kinds, "recorder": state}


def _iso(ts_ns: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts_ns / 1e9, dt.UTC).isoformat(timespec="milliseconds")


def format_stats(stats: dict[str, Any]) -> str:
    lines = [f"recording {stats['root']}"]
    if not stats["kinds"]:
        lines.append("  (no parts yet)")
    for kind, info in stats["kinds"].items():
        span = f"{info.get('first', '?')} .. {info.get('last', '?')}"
        lines.append(f"  {kind:7} {info['rows']:>12,} rows {info['parts']:>5} parts "
                     f"{info['bytes'] / 1e6:>9.2f} MB  {info.get('topics', 0):>4} topics  "
                     f"{span}")
        if "missing_events_by_reason" in info:
            for reason, n in info["missing_events_by_reason"].items():
                lines.append(f"          missing {n:,} event(s): {reason} "
                             f"({fmt.GAP_REASONS.get(reason, '')})")
    rec = stats["recorder"]
    if rec:
        mode = "stopped cleanly" if rec.get("clean") else "running, or killed"
        lines.append(f"  recorder pid {rec.get('pid')} {mode}; last status "
                     f"{rec.get('updated_iso')}, lag {rec.get('lag_seconds')} s, missed "
                     f"{rec.get('missed')}, buffered {rec.get('buffered')}")
    return "\n".join(lines)
