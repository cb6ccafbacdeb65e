"""The tap's sequence rules (client/batch.py): gaps reported, restarts, duplicates."""

from __future__ import annotations

from typing import Any

from ibhub.client.batch import Batch, Tap
from ibhub.protocol import Bundle, Tick, Ticks


def tick(seq: int, symbol: str = "AAPL") -> Tick:
    return Tick(seq, 0, 1, symbol, 1.0, 2.0, 1.5, 1, 1, 1, 10)


def make_tap(prefix: str = "tick.", **kw: Any) -> tuple[Tap, list[Batch]]:
    got: list[Batch] = []
    tap = Tap(prefix, got.append, 10, spawn=lambda c, w: None, close=lambda t: None, **kw)
    return tap, got


def test_tap_reports_gaps_restarts_and_drops_duplicates() -> None:
    tap, got = make_tap()
    tap.on_message("tick.AAPL", tick(1))
    tap.on_message("tick.AAPL", Ticks(2, 0, [tick(2), tick(3)]))
    tap.on_message("tick.AAPL", tick(7))  # 4..6 lost
    tap.on_message("tick.AAPL", Ticks(6, 0, [tick(6), tick(7), tick(8)]))  # 6,7 again
    # the hub restarted: from 1 again, stamped later than what was delivered
    tap.on_message("tick.AAPL", Tick(1, 5, 1, "AAPL", 1.0, 2.0, 1.5, 1, 1, 1, 10))
    tap.on_message("bar.AAPL", tick(1))  # not under the prefix
    assert [(b.first_seq, b.last_seq, b.missed, b.restarted, b.prev_seq) for b in got] == [
        (1, 1, 0, False, None), (2, 3, 0, False, 1), (7, 7, 3, False, 3),
        (8, 8, 0, False, 7), (1, 1, 0, True, 8)]
    assert (tap.received, tap.missed, tap.restarts, tap.stale, tap.gaps) == (6, 3, 1, 2, 1)
    assert "missed=3" in repr(got[2]) and len(got[1]) == 2


def test_tap_expands_bundles_and_honours_since() -> None:
    tap, got = make_tap("tick.A", since={"tick.AAPL": 4})
    bundle = Bundle(1, 0, [("tick.AAPL", Ticks(5, 0, [tick(5), tick(6)])),
                           ("tick.MSFT", tick(1, "MSFT")), ("tick.AMD", tick(9, "AMD"))])
    tap.on_message("bundle.tick", bundle)
    assert [(b.topic, b.first_seq, b.missed) for b in got] == [
        ("tick.AAPL", 5, 0), ("tick.AMD", 9, 0)]
    seeded, got2 = make_tap(since={"tick.AAPL": 2})
    seeded.on_message("tick.AAPL", tick(5))  # 3, 4 lost while away: missed, not a gap
    seeded.on_message("tick.AAPL", tick(8))  # 6, 7 lost while listening: a gap
    assert [b.missed for b in got2] == [2, 2] and (seeded.missed, seeded.gaps) == (4, 1)
    tap._end()
    tap.on_message("tick.AAPL", tick(7))
    assert len(got) == 2 and tap.closed
