"""TopicSequencer: gap detection and snapshot recovery, as pure logic."""

from __future__ import annotations

import math

from ibhub.client.sequencer import TopicSequencer
from ibhub.protocol import Event, Tick


def tick(seq: int, ts: int | None = None) -> Tick:
    nan = math.nan
    return Tick(seq=seq, ts=seq if ts is None else ts, con_id=1, symbol="X", bid=nan,
                ask=nan, last=float(seq), bid_size=nan, ask_size=nan, last_size=nan, volume=nan)


class Harness:
    def __init__(self) -> None:
        self.delivered: list[int] = []
        self.snapshot_requests: list[str] = []
        self.seq = TopicSequencer("tick.X", self.deliver, self.snapshot_requests.append)

    def deliver(self, event: Event) -> None:
        self.delivered.append(event.seq)

    def feed(self, *seqs: int) -> None:
        for s in seqs:
            self.seq.on_event(tick(s))


def test_consecutive_events_are_delivered_without_snapshots() -> None:
    h = Harness()
    h.feed(5, 6, 7)
    assert h.delivered == [5, 6, 7]
    assert h.seq.gaps == 0 and h.snapshot_requests == []


def test_gap_requests_a_snapshot_and_buffers_until_it_arrives() -> None:
    h = Harness()
    h.feed(1, 2, 5)
    assert h.seq.gaps == 1
    assert h.snapshot_requests == ["tick.X"]
    assert h.delivered == [1, 2]  # 5 waits for the snapshot
    h.feed(6, 7)  # live events keep arriving meanwhile
    assert h.delivered == [1, 2]
    h.seq.on_snapshot(tick(6))  # the hub's last value when it answered
    assert h.delivered == [1, 2, 5, 6, 7]
    h.feed(8)
    assert h.delivered[-1] == 8 and h.seq.gaps == 1


def test_snapshot_newer_than_the_buffer_replaces_it() -> None:
    h = Harness()
    h.feed(1, 4)
    h.seq.on_snapshot(tick(9))
    assert h.delivered == [1, 4, 9]
    h.feed(5, 9)  # older than what was delivered: dropped as stale
    assert h.delivered == [1, 4, 9] and h.seq.stale == 2
    h.feed(10)
    assert h.delivered[-1] == 10


def test_failed_snapshot_still_delivers_the_buffer() -> None:
    h = Harness()
    h.feed(1, 3, 4)
    h.seq.on_snapshot(None)
    assert h.delivered == [1, 3, 4]
    assert not h.seq.recovering


def test_sync_delivers_the_snapshot_first_and_drops_older_live_events() -> None:
    h = Harness()
    h.seq.sync()
    h.feed(41, 42)  # queued in the socket before the snapshot answered
    h.seq.on_snapshot(tick(42))
    assert h.delivered == [41, 42]
    assert h.seq.gaps == 0


def test_sync_on_an_empty_topic_waits_for_live_events() -> None:
    h = Harness()
    h.seq.sync()
    h.seq.on_snapshot(None)
    h.feed(1, 2)
    assert h.delivered == [1, 2]


def test_sequence_restart_at_one_is_a_new_hub_not_a_stale_event() -> None:
    h = Harness()
    h.feed(500, 501)
    h.seq.on_event(tick(1, ts=1_000))  # a restarted hub: stamped after the last one
    h.seq.on_event(tick(2, ts=1_001))
    assert h.delivered == [500, 501, 1, 2]
    assert h.seq.gaps == 0


def test_an_old_first_event_after_a_snapshot_is_stale_not_a_restart() -> None:
    """A script already reading the tick bundle holds a new topic: bundles read before
    still carry the topic's first events, older than the snapshot it started from."""
    h = Harness()
    h.seq.sync()
    h.seq.on_snapshot(tick(8, ts=800))
    for seq in range(1, 8):
        h.seq.on_event(tick(seq, ts=seq * 100))
    h.seq.on_event(tick(9, ts=900))
    assert h.delivered == [8, 9] and h.seq.stale == 7 and h.seq.gaps == 0


def test_reset_forgets_the_baseline() -> None:
    h = Harness()
    h.feed(10, 11)
    h.seq.reset()
    h.feed(3)
    assert h.delivered == [10, 11, 3]


def test_buffer_is_bounded() -> None:
    from ibhub.client import sequencer

    h = Harness()
    h.feed(1, 3)
    for s in range(4, 4 + sequencer.BUFFER_MAX + 10):
        h.feed(s)
    assert len(h.seq.buffer) == sequencer.BUFFER_MAX
    h.seq.on_snapshot(None)
    assert h.delivered[-1] == 3 + sequencer.BUFFER_MAX + 10


def test_a_batch_that_continues_the_sequence_is_delivered_in_one_call() -> None:
    calls: list[list[int]] = []
    h = Harness()
    h.seq = TopicSequencer("tick.X", h.deliver, h.snapshot_requests.append,
                           lambda events: calls.append([e.seq for e in events]))
    h.feed(1)
    h.seq.on_events([tick(2), tick(3), tick(4)])
    assert calls == [[2, 3, 4]] and h.seq.last == 4
    # A batch after a gap goes tick by tick through the rules: one gap, one snapshot.
    h.seq.on_events([tick(7), tick(8)])
    assert h.seq.gaps == 1 and h.snapshot_requests == ["tick.X"] and h.seq.recovering
    h.seq.on_snapshot(tick(7))
    assert h.delivered == [1, 7, 8] and calls == [[2, 3, 4]]
    # Without a batch deliverer, a batch is delivered event by event.
    plain = Harness()
    plain.feed(1)
    plain.seq.on_events([tick(2), tick(3)])
    assert plain.delivered == [1, 2, 3]
    # Before any baseline, a batch is taken as it comes (the first event is the baseline).
    fresh = Harness()
    fresh.seq.on_events([tick(4), tick(5)])
    assert fresh.delivered == [4, 5] and fresh.seq.gaps == 0
