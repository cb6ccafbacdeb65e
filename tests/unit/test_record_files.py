"""The recording's files without a hub: parts, the spool's recovery after a kill, the
docs' query examples (run for real), the replay walk and the option parsing."""

from __future__ import annotations

import asyncio
import math
import re
import time
from pathlib import Path
from typing import Any

import pytest

pa = pytest.importorskip("pyarrow")

from ibhub.protocol import HubStatus, OrderEvent, Tick  # noqa: E402
from ibhub.record import format as fmt  # noqa: E402
from ibhub.record.recorder import Recorder, RecorderBusy, Selection  # noqa: E402
from ibhub.record.spool import Spool, leftover_segments  # noqa: E402
from ibhub.record.writer import PartWriter  # noqa: E402
from ibhub.sim.contracts import build_universe  # noqa: E402
from ibhub.sim.market import QUOTE, TRADE  # noqa: E402
from ibhub.sim.replay import ReplayWalk, Tape, parse_speed, parse_time  # noqa: E402

DOCS = Path(__file__).resolve().parents[2] / "docs" / "recording.md"
NAN = math.nan


def tick(seq: int, ts: int, symbol: str = "AAPL", bid: float = 100.0, last: float = NAN,
         volume: float = NAN) -> Tick:
    return Tick(seq, ts, 265598, symbol, bid, bid + 0.01, last, 100.0, 200.0, 1.0, volume)


def order(seq: int, kind: str, exec_id: str = "") -> OrderEvent:
    return OrderEvent(seq, time.time_ns(), kind, 7, "c1", "script", 265598, "AAPL", "BUY",
                      "Filled" if kind == "filled" else "Submitted", 5.0, 0.0, 190.0, 5.0,
                      190.0, exec_id, NAN, "")


async def test_parts_roll_sort_and_read_back(tmp_path: Path) -> None:
    durable: dict[str, int] = {}
    writer = PartWriter(tmp_path, "w1", roll_seconds=60, roll_bytes=10_000,
                        on_durable=durable.update)
    now = time.time_ns()
    writer.add_events("ticks", "tick.MSFT", [tick(1, now, "MSFT"), tick(2, now + 1, "MSFT")])
    writer.add_events("ticks", "tick.AAPL", [tick(5, now + 2), tick(6, now + 3)])
    assert writer.due() == [] and writer.buffered()["ticks"] == 4
    writer.add_events("ticks", "tick.AAPL", [tick(i, now + i) for i in range(7, 200)])
    assert writer.full.is_set() and writer.due() == ["ticks"]  # the size roll
    await writer.flush("ticks")
    writer.add_row("orders", ("order.x", *_fields(order(1, "acknowledged"))))
    await writer.flush_all()
    writer.close()
    table = fmt.read_kind(tmp_path, "ticks", columns=["topic", "seq"])
    pairs = list(zip(table["topic"].to_pylist(), table["seq"].to_pylist(), strict=True))
    assert pairs[:2] == [("tick.AAPL", 5), ("tick.AAPL", 6)] and len(pairs) == 197
    assert pairs[-1] == ("tick.MSFT", 2)  # sorted by (topic, seq)
    assert durable == {"tick.AAPL": 199, "tick.MSFT": 2, "order.x": 1}
    assert fmt.leftover_temps(tmp_path) == [] and leftover_segments(tmp_path) == []
    assert writer.rows_written["ticks"] == 197 and writer.rows_written["orders"] == 1


async def test_a_killed_writers_spool_becomes_parts_once(tmp_path: Path) -> None:
    # What a killed recorder leaves: spooled order events and status, a state file
    # that is not clean, an unfinished temp part.
    spool = Spool(tmp_path, "orders", "dead1")
    events = [order(1, "acknowledged"), order(2, "submitted"),
              order(3, "filled", exec_id="e1")]
    for event in events:
        spool.append(("order.lease1", *_fields(event)))
    status = Spool(tmp_path, "status", "dead1")
    status.append(("hub.status", *_fields(HubStatus(4, time.time_ns(), "CONNECTED", "state",
                                                    0, "up", 0))))
    spool.close()
    status.close()
    (tmp_path / "_recorder" / "state.json").write_text(
        '{"pid": 1, "clean": false, "buffered": {"ticks": 42, "orders": 3}, '
        '"durable": {"tick.AAPL": 10}, "updated_iso": "then"}')
    temp = tmp_path / "kind=ticks" / "date=2026-12-07" / ".part-1-dead1-3.parquet.tmp"
    temp.parent.mkdir(parents=True)
    temp.write_bytes(b"half a file")
    recorder = Recorder(tmp_path, hub=None)  # type: ignore[arg-type]
    recovery = recorder._recover()
    assert recovery.unclean and recovery.lost_buffered == {"ticks": 42}
    assert "about 42 ticks" in recovery.describe() and "killed" in recovery.describe()
    assert (recovery.segments_recovered, recovery.rows_recovered, recovery.temps_removed) == (
        2, 4, 1)
    assert recovery.since == {"tick.AAPL": 10, "order.lease1": 3, "hub.status": 4}
    orders = fmt.read_kind(tmp_path, "orders")
    assert orders["seq"].to_pylist() == [1, 2, 3]
    fills = fmt.read_kind(tmp_path, "fills")
    assert fills["exec_id"].cast("string").to_pylist() == ["e1"] and fills["qty"][0].as_py() == 5
    assert not temp.exists() and leftover_segments(tmp_path) == []
    # a second start finds nothing more to recover and writes nothing twice
    again = Recorder(tmp_path, hub=None)._recover()  # type: ignore[arg-type]
    assert again.segments_recovered == 0 and fmt.read_kind(tmp_path, "orders").num_rows == 3


def test_one_recorder_per_directory(tmp_path: Path) -> None:
    (tmp_path / "_recorder").mkdir()
    first = Recorder(tmp_path, hub=None)  # type: ignore[arg-type]
    first._lock()
    with pytest.raises(RecorderBusy, match="another recorder"):
        Recorder(tmp_path, hub=None)._lock()  # type: ignore[arg-type]


def test_selection_refuses_unknown_kinds_and_matches_patterns() -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        Selection(kinds=frozenset({"ticks", "quotes"}))
    sel = Selection(topics=("tick.A*",), symbols=frozenset({"AAPL"}))
    assert sel.topic("tick.AAPL") and not sel.topic("tick.MSFT") and sel.symbol("AAPL")


def _fields(event: Any) -> tuple[Any, ...]:
    from msgspec.structs import astuple

    return astuple(event)


def _doc_block(title: str) -> str:
    text = DOCS.read_text()
    start = text.index(title)
    match = re.search(r"```python\n(.*?)```", text[start:], re.S)
    assert match is not None
    return match.group(1)


@pytest.mark.parametrize("library", ["DuckDB (tested", "polars:", "pandas:"])
def test_the_docs_query_examples_answer_ticks_per_symbol_in_the_last_five_minutes(
    tmp_path: Path, library: str, capsys: pytest.CaptureFixture[str],
) -> None:
    module = {"DuckDB (tested": "duckdb", "polars:": "polars", "pandas:": "pandas"}[library]
    pytest.importorskip(module)
    now = time.time_ns()
    writer = PartWriter(tmp_path, "w1", 60, 10**9, on_durable=lambda d: None)
    old = now - 600 * 10**9  # ten minutes ago: not counted
    writer.add_events("ticks", "tick.AAPL", [tick(i, old + i) for i in range(1, 4)]
                      + [tick(i, now - 10**9 + i) for i in range(4, 9)])
    writer.add_events("ticks", "tick.MSFT", [tick(1, now - 2 * 10**9, "MSFT"),
                                             tick(2, now - 10**9, "MSFT")])
    asyncio.run(writer.flush_all())
    writer.close()
    code = _doc_block(library).replace('"/data/ibhub-rec"', repr(str(tmp_path)))
    scope: dict[str, Any] = {}
    exec(compile(code, f"docs/recording.md ({module})", "exec"), scope)
    rows = scope["rows"]
    if module == "duckdb":
        got = {r[0]: (r[1], r[2].timestamp()) for r in rows}
    elif module == "polars":
        got = {r[0]: (r[1], r[2].timestamp()) for r in rows.iter_rows()}
    else:
        got = {s: (int(r.ticks), r.latest.timestamp()) for s, r in rows.iterrows()}
    assert {s: n for s, (n, _) in got.items()} == {"AAPL": 5, "MSFT": 2}
    assert got["AAPL"][1] == pytest.approx((now - 10**9 + 8) / 1e9, abs=1e-3)
    assert "AAPL" in capsys.readouterr().out


def test_replay_walk_sends_every_recorded_price_in_order() -> None:
    inst = build_universe().by_con_id(265598)
    assert inst is not None
    t0 = 1_000_000_000
    cols: dict[str, list[Any]] = {"ts": [t0, t0 + 10, t0 + 20, t0 + 30],
            "bid": [190.0, 190.01, 190.01, 190.05], "ask": [190.02, 190.02, 190.02, 190.07],
            "last": [190.0, 190.0, 190.02, 190.06], "bid_size": [1.0, 2.0, 2.0, 3.0],
            "ask_size": [1.0, 1.0, 1.0, 4.0], "last_size": [1.0, 1.0, 3.0, 1.0],
            "volume": [10.0, 10.0, 13.0, 14.0]}
    walk = ReplayWalk(inst, 1, Tape(cols))
    assert walk.price(walk.bid) == 190.0 and walk.due(t0 - 1, 100) == 0
    assert walk.due(t0 + 15, 100) == 2 and walk.due(math.inf, 3) == 3
    seen = []
    while not walk.done or walk._split is not None:
        ev = walk.step()
        seen.append((ev, walk.price(walk.bid), walk.price(walk.ask), walk.price(walk.last)))
    assert seen == [
        (QUOTE, 190.0, 190.02, 190.0), (QUOTE, 190.01, 190.02, 190.0),
        (TRADE, 190.01, 190.02, 190.02),
        (TRADE, 190.01, 190.02, 190.06), (QUOTE, 190.05, 190.07, 190.06),  # split row
    ]
    assert walk.volume == 14 and walk.high >= 190.06 / walk.min_tick - 1


def test_replay_options_are_checked() -> None:
    assert parse_speed("max") == 0 and parse_speed("10") == 10
    with pytest.raises(ValueError, match="speed"):
        parse_speed("fast")
    with pytest.raises(ValueError, match="speed"):
        parse_speed("-1")
    assert parse_time("1970-01-01T00:00:01") == 10**9
    assert parse_time("1970-01-01T01:00:01+01:00") == 10**9
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_time("yesterday")


def test_replay_clock_scales_the_recorded_spacing(monkeypatch: pytest.MonkeyPatch) -> None:
    from ibhub.sim import replay

    now = [100.0]
    monkeypatch.setattr(replay.time, "monotonic", lambda: now[0])
    tape = Tape({name: [0.0] for name in ("bid", "ask", "last", "bid_size", "ask_size",
                                          "last_size", "volume")} | {"ts": [5 * 10**9]})
    clock = replay.ReplayClock({1: tape}, speed=10)
    assert clock.horizon() == -math.inf  # nothing is due before the first subscription
    clock.start()
    now[0] += 0.5  # half a second of wall time = five recorded seconds at speed 10
    assert clock.horizon() == pytest.approx(10 * 10**9)
    assert replay.ReplayClock({1: tape}, speed=0).horizon() == -math.inf
    fast = replay.ReplayClock({1: tape}, speed=0)
    fast.start()
    assert fast.horizon() == math.inf


async def test_gap_rows_name_what_is_missing_and_why(tmp_path: Path) -> None:
    from ibhub.client import Batch

    rec = Recorder(tmp_path, hub=None)  # type: ignore[arg-type]
    rec.recovery.since = {"tick.AAPL": 3}  # what a previous run had on disk
    rec.writer = PartWriter(tmp_path, "w1", 60, 10**9, on_durable=rec._on_durable)
    now = time.time_ns()
    rec._on_batch(Batch("tick.AAPL", [tick(6, now)], missed=2, prev_seq=3))  # while down
    rec._on_batch(Batch("tick.AAPL", [tick(7, now + 1)], prev_seq=6))
    rec._on_batch(Batch("tick.AAPL", [tick(10, now + 2)], missed=2, prev_seq=7))  # a drop
    rec._on_batch(Batch("tick.AAPL", [tick(1, now + 3)], restarted=True, prev_seq=10))
    await rec.writer.flush_all()
    rec.writer.close()
    gaps = fmt.read_kind(tmp_path, "gaps", columns=["topic", "from_seq", "to_seq", "count",
                                                    "reason"]).to_pylist()
    assert [(g["from_seq"], g["to_seq"], g["count"], g["reason"]) for g in gaps] == [
        (4, 5, 2, "recorder_down"), (8, 9, 2, "hub_drop"), (11, None, None, "hub_restart")]
    assert rec.missed == 4 and rec.received["ticks"] == 4
    assert fmt.read_kind(tmp_path, "ticks", columns=["seq"])["seq"].to_pylist() == [
        1, 6, 7, 10]


def test_every_kind_builds_a_table_of_its_schema() -> None:
    from ibhub.protocol import Bar
    from ibhub.record.writer import build_table

    now = time.time_ns()
    bars = build_table("bars", ["bar.AAPL"], [
        Bar(1, now, 265598, "AAPL", 1_796_000_000, 1.0, 2.0, 0.5, 1.5, 100.0, 1.2, 7)])
    assert bars.schema == fmt.SCHEMAS["bars"] and bars["count"][0].as_py() == 7
    status = build_table("status", [], [("hub.status", *_fields(
        HubStatus(1, now, "CONNECTED", "ib", 2104, "farm ok", 0)))])
    assert status.schema == fmt.SCHEMAS["status"] and status["code"][0].as_py() == 2104
    gaps = build_table("gaps", [], [("tick.AAPL", 4, None, None, "hub_restart", now, None,
                                     now)])
    assert gaps.schema == fmt.SCHEMAS["gaps"] and gaps["to_seq"][0].as_py() is None
