"""Per-topic sequence checking with snapshot recovery (pure logic, no I/O).

The hub numbers the events of every topic 1, 2, 3, ... A ZeroMQ SUB socket never
reorders or duplicates within one connection, but a PUB socket silently drops
messages for a subscriber at its high-water mark, so a jump in ``seq`` is the only
sign that events were lost. Every tick or bar is a complete state (top of book, a
whole bar), so recovery does not need the missing events themselves: the topic's
last value from a snapshot request (the zguide "Clone" pattern) is enough.

Rules, for an event with sequence ``n`` when ``last`` was delivered:

* no baseline yet (``last is None``): deliver, it becomes the baseline;
* ``n == last + 1``: deliver;
* ``n <= last``: an event older than a snapshot already delivered: drop it, except
  ``n == 1`` stamped later than the last event delivered, which only a restarted hub
  sends: deliver and restart counting (an older ``n == 1`` is stale: a bundle read
  before this topic was held can still carry the topic's first events);
* ``n > last + 1``: a gap. Count it, ask for a snapshot and buffer live events until
  the snapshot arrives; then deliver the snapshot and the buffer in sequence order,
  skipping anything not newer than what was delivered.

A subscription's start uses the same path without counting a gap (``sync()``): the
snapshot is the late joiner's first value.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from ibhub.protocol import Event

log = logging.getLogger(__name__)

BUFFER_MAX = 10_000  # live events kept while a snapshot is outstanding


class TopicSequencer:
    """Sequence state of one topic; ``deliver`` is called with events in order."""

    __slots__ = (
        "buffer",
        "deliver",
        "deliver_all",
        "duplicates",
        "gaps",
        "last",
        "last_ts",
        "offered",
        "recovering",
        "request_snapshot",
        "stale",
        "topic",
    )

    def __init__(
        self,
        topic: str,
        deliver: Callable[[Event], None],
        request_snapshot: Callable[[str], None],
        deliver_all: Callable[[Sequence[Event]], None] | None = None,
    ) -> None:
        self.topic = topic
        self.deliver = deliver
        # Several in-order events at once (a Ticks batch); default: deliver each.
        self.deliver_all = deliver_all or self._deliver_each
        self.request_snapshot = request_snapshot
        self.last: int | None = None
        self.last_ts = 0  # the hub's ts of the last event delivered
        self.gaps = 0
        self.stale = 0  # events dropped because a newer value was already delivered
        self.recovering = False
        self.buffer: list[Event] = []
        # The lane (client/lane.py) offers a second copy of some topics' events: the
        # highest seq it delivered, and the second copies dropped (either channel's).
        self.offered = 0
        self.duplicates = 0

    def on_event(self, event: Event) -> None:
        """Handle one live event from the SUB socket."""
        if self.recovering:
            if len(self.buffer) >= BUFFER_MAX:
                del self.buffer[0]
            self.buffer.append(event)
            return
        last = self.last
        seq = event.seq
        if last is None or seq == last + 1:
            self.last = seq
            self.last_ts = event.ts
            self.deliver(event)
        elif seq <= self.offered:
            self.duplicates += 1  # the lane delivered it first
        elif seq <= last:
            if seq == 1 and event.ts > self.last_ts:
                log.info("%s: sequence restarted at 1 (hub restarted?)", self.topic)
                self.last = 1
                self.last_ts = event.ts
                self.deliver(event)
            else:
                self.stale += 1
        else:
            self.gaps += 1
            log.info(
                "%s: gap, expected seq %d got %d (%d lost); recovering from a snapshot",
                self.topic, last + 1, seq, seq - last - 1,
            )
            self.recovering = True
            self.buffer = [event]
            self.request_snapshot(self.topic)

    def offer(self, event: Event) -> None:
        """An event of this topic from a second, faster channel (the lane) that carries
        the same events and sequence numbers as the SUB socket, which stays the channel
        of record: delivered only when it is the next one; one already delivered, or
        one ahead of the sequence (the lane dropped some for a slow reader), is left to
        the SUB socket, so the lane never causes a gap recovery. While recovering it is
        buffered like a live event (the snapshot's merge drops the copies)."""
        if self.recovering:
            self.on_event(event)
            return
        last = self.last
        seq = event.seq
        if last is not None and seq == last + 1:
            self.last = self.offered = seq
            self.last_ts = event.ts
            self.deliver(event)
        elif last is not None and seq <= last:
            self.duplicates += 1  # SUB delivered it first

    def on_events(self, events: Sequence[Event]) -> None:
        """Handle consecutive live events of one message (``seq``, ``seq + 1``, ...).

        The usual case, a batch that continues the sequence, is checked once and
        delivered in one call; anything else goes event by event through the rules.
        """
        if self.advance(events):
            self.deliver_all(events)
            return
        for event in events:
            self.on_event(event)

    def advance(self, events: Sequence[Event]) -> bool:
        """Take consecutive ``events`` of one message if they continue the sequence (the
        usual case): True, and the caller delivers them; False changes nothing (a gap, a
        duplicate, a restart, a recovery in progress: :meth:`on_events` has the rules)."""
        last = self.last
        if self.recovering or last is None or not events or events[0].seq != last + 1:
            return False
        tail = events[-1]
        self.last = tail.seq
        self.last_ts = tail.ts
        return True

    def _deliver_each(self, events: Sequence[Event]) -> None:
        for event in events:
            self.deliver(event)

    def sync(self, request: bool = True) -> None:
        """Start (or restart) from a snapshot without counting a gap.

        ``request=False``: the caller fetches the snapshot itself and hands it to
        ``on_snapshot``; live events are buffered until then either way.
        """
        if self.recovering:
            return
        self.recovering = True
        self.buffer = []
        if request:
            self.request_snapshot(self.topic)

    def reset(self) -> None:
        """Forget the baseline (new PUB connection: the hub may have restarted)."""
        self.last = None
        self.last_ts = 0
        self.offered = 0
        self.recovering = False
        self.buffer = []

    def on_snapshot(self, event: Event | None) -> None:
        """The snapshot arrived (``None``: the topic has no value yet, or it failed)."""
        if not self.recovering:
            # reset() ran while the request was in flight; still a valid value.
            if event is not None and (self.last is None or event.seq > self.last):
                self.last = event.seq
                self.last_ts = event.ts
                self.deliver(event)
            return
        candidates = self.buffer
        if event is not None:
            candidates.append(event)
        candidates.sort(key=_seq)
        self.recovering = False
        self.buffer = []
        for candidate in candidates:
            if self.last is None or candidate.seq > self.last:
                self.last = candidate.seq
                self.last_ts = candidate.ts
                self.deliver(candidate)


def _seq(event: Event) -> int:
    return event.seq
