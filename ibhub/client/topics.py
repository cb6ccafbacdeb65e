"""Every topic one client listens to, and the routing from the SUB socket to readers.

Three kinds of topic: market data (``tick.*`` / ``bar.*``, with local
subscriptions), ``hub.status`` and this lease's ``error.<lease>``. Each has a
``TopicSequencer``; a gap or a new PUB connection asks for a snapshot through the
owner's ``snapshot`` coroutine. The table remembers how each market-data topic was
subscribed, so the owner can subscribe it again after a re-hello.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import msgspec

from ibhub.client.bundle import LazyBundle, decode_message
from ibhub.client.errors import HubError
from ibhub.client.sequencer import TopicSequencer
from ibhub.client.stream import EventStream
from ibhub.client.subscription import Subscription
from ibhub.protocol import (
    TOPIC_BUNDLE,
    TOPIC_ERROR,
    TOPIC_NEWS_BULLETIN,
    TOPIC_STATUS,
    Bar,
    Bundle,
    ContractSpec,
    DepthBook,
    ErrorEvent,
    Event,
    HubStatus,
    NewsBulletin,
    Tick,
    TickByTick,
    Ticks,
)

log = logging.getLogger(__name__)

_EXPECTED: dict[str, type[Event]] = {"ticks": Tick, "bars": Bar, "depth": DepthBook,
                                     "tbt": TickByTick, "hist": Bar}


async def last_value(
    snapshot: Callable[[str], Awaitable[Event | None]], topic: str
) -> Event | None:
    """``topic``'s last value through ``snapshot``; a failed or undecodable snapshot is
    logged and gives ``None`` (the sequencer then goes on from live events)."""
    try:
        return await snapshot(topic)
    except HubError as exc:
        log.warning("snapshot of %s failed: %s", topic, exc)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        log.warning("snapshot of %s had an undecodable event: %s", topic, exc)
    return None


class TopicEntry:
    """One market-data topic: how to resubscribe it, its readers, its sequence state."""

    __slots__ = (
        "expected", "kind", "latest", "pending", "sequencer", "spec", "subs", "topic", "warned",
    )

    def __init__(self, topic: str, spec: ContractSpec, kind: str) -> None:
        self.topic = topic
        self.spec = spec
        self.kind = kind
        self.expected = _EXPECTED[kind.partition(".")[0]]  # Tick, Bar or DepthBook
        self.subs: list[Subscription] = []
        self.latest: Event | None = None
        self.pending = False  # the hub does not hold it for the current lease yet
        self.warned = False  # a failed resubscribe was reported once
        self.sequencer: TopicSequencer  # set by TopicTable.add


class TopicTable:
    """Market-data entries plus the status and error sequencers of one client."""

    def __init__(
        self,
        stream: EventStream,
        snapshot: Callable[[str], Awaitable[Event | None]],
        spawn: Callable[[Coroutine[Any, Any, Any], str], None],
        on_status: Callable[[HubStatus], None],
        on_error: Callable[[ErrorEvent], None],
        bundle: bool = False,
        on_bulletin: Callable[[NewsBulletin], None] | None = None,
    ) -> None:
        self._stream = stream
        # Ticks through bundle.tick (one message per Gateway read, every instrument)
        # instead of one SUB subscription per tick topic; see AsyncHub(tick_bundle=).
        self.bundle = bundle
        self.bundle_on_lane = False  # bundle.tick comes over the lane's tick connection
        self._snapshot = snapshot
        self._spawn = spawn
        self._on_status = on_status
        self._on_error = on_error
        self.entries: dict[str, TopicEntry] = {}
        self.undecodable = 0  # bundle messages of held topics that did not decode
        self.status = TopicSequencer(TOPIC_STATUS, self._status_event, self.request_snapshot)
        self.errors: TopicSequencer | None = None
        stream.subscribe(TOPIC_STATUS)
        # IB news bulletins: a rare topic every client follows, like status
        self._on_bulletin = on_bulletin
        self.bulletins = TopicSequencer(TOPIC_NEWS_BULLETIN, self._bulletin_event,
                                        self.request_snapshot)
        stream.subscribe(TOPIC_NEWS_BULLETIN)
        if bundle:
            stream.subscribe(TOPIC_BUNDLE)

    def use_bundle(self) -> None:
        """Take ticks from ``bundle.tick`` from now on (at connect, before any entry)."""
        if self.entries:
            raise RuntimeError("use_bundle() after subscriptions were made")
        if not self.bundle:
            self.bundle = True
            self._stream.subscribe(TOPIC_BUNDLE)

    def move_bundle(self, on_lane: bool) -> None:
        """``bundle.tick`` now comes over the lane (True: the SUB socket stops
        subscribing it) or over the SUB socket again (False). Each inner message keeps
        its topic's sequence numbers on both routes: the sequencers drop the copies of
        a switch and recover a gap from a snapshot."""
        if not self.bundle or on_lane == self.bundle_on_lane:
            return
        self.bundle_on_lane = on_lane
        if on_lane:
            self._stream.unsubscribe(TOPIC_BUNDLE)
        else:
            self._stream.subscribe(TOPIC_BUNDLE)

    # ------------------------------------------------------------------ membership

    def get(self, topic: str) -> TopicEntry | None:
        return self.entries.get(topic)

    def add(self, topic: str, spec: ContractSpec, kind: str) -> TopicEntry:
        entry = TopicEntry(topic, spec, kind)
        entry.sequencer = TopicSequencer(
            topic,
            lambda event: self._deliver(entry, event),
            self.request_snapshot,
            lambda events: self._deliver_all(entry, events),
        )
        self.entries[topic] = entry
        if not self._bundled(entry):
            self._stream.subscribe(topic)
        return entry

    def remove(self, entry: TopicEntry) -> None:
        if self.entries.get(entry.topic) is entry:
            del self.entries[entry.topic]
            if not self._bundled(entry):
                self._stream.unsubscribe(entry.topic)

    def rename(self, entry: TopicEntry, topic: str) -> TopicEntry:
        """The hub now publishes ``entry`` under another topic (rare: a name clash)."""
        log.warning("topic %s is now published as %s", entry.topic, topic)
        self.remove(entry)
        replacement = self.add(topic, entry.spec, entry.kind)
        replacement.subs = entry.subs
        for sub in entry.subs:
            sub.topic = topic
        return replacement

    def drop(self, entry: TopicEntry, exc: HubError) -> None:
        """End every subscription of ``entry`` with ``exc`` (the hub refused it for good)."""
        log.error("subscription %s ended: the hub refused to resubscribe it: %s",
                  entry.topic, exc)
        self.remove(entry)
        for sub in entry.subs:
            sub.error = exc
            sub._end()

    def end_all(self) -> None:
        for entry in self.entries.values():
            for sub in entry.subs:
                sub._end()
        self.entries.clear()

    def set_lease(self, lease: str) -> None:
        """Listen on ``error.<lease>`` instead of the previous lease's error topic."""
        topic = f"{TOPIC_ERROR}{lease}"
        if self.errors is not None:
            if self.errors.topic == topic:
                return
            self._stream.unsubscribe(self.errors.topic)
        self.errors = TopicSequencer(topic, self._error_event, self.request_snapshot)
        self._stream.subscribe(topic)

    def _bundled(self, entry: TopicEntry) -> bool:
        return self.bundle and entry.kind == "ticks"

    # ------------------------------------------------------------------ events

    def on_event(self, topic: str, event: Event) -> None:
        """One event from the SUB socket (prefix matches included: filter exactly)."""
        entry = self.entries.get(topic)
        if entry is not None:
            _feed(entry.sequencer, event)
        elif type(event) is LazyBundle:
            # A read's tick messages, still encoded: only the topics held are decoded.
            self._on_bundle(event.messages, decode_message)
        elif type(event) is Bundle:
            # A read's tick messages, decoded; the topics this script does not hold are
            # skipped.
            self._on_bundle(event.messages, None)
        elif topic == TOPIC_STATUS:
            self.status.on_event(event)
        elif self.errors is not None and topic == self.errors.topic:
            self.errors.on_event(event)
        elif topic == TOPIC_NEWS_BULLETIN:
            self.bulletins.on_event(event)
        else:
            log.debug("event on %s, which no subscription here wants (prefix match)", topic)

    def _on_bundle(self, messages: Sequence[tuple[str, Any]],
                   decode: Callable[[Any], Tick | Ticks] | None) -> None:
        """The tick messages of one bundle (``decode``: the lazy bundle's, for messages
        still encoded). Per held instrument per read; the usual message, one that
        continues its topic's sequence, goes straight to :meth:`_deliver_all` (one check,
        not through the sequencer's ``deliver_all`` callback: docs/performance.md section
        10); anything else takes the sequencer's rules."""
        entries = self.entries
        for name, encoded in messages:
            entry = entries.get(name)
            if entry is None or entry.kind != "ticks":
                continue
            message: Tick | Ticks
            if decode is None:
                message = encoded
            else:
                try:
                    message = decode(encoded)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    self.undecodable += 1
                    log.warning("ignoring an undecodable message for %s in a bundle: %s",
                                name, exc)
                    continue
            events: Sequence[Tick]
            if isinstance(message, Ticks):
                events = message.ticks
            else:
                events = (message,)
            if entry.sequencer.advance(events):
                self._deliver_all(entry, events)
            else:
                entry.sequencer.on_events(events)

    def _deliver(self, entry: TopicEntry, event: Event) -> None:
        self._deliver_all(entry, (event,))

    def _deliver_all(self, entry: TopicEntry, events: Sequence[Event]) -> None:
        if type(events[0]) is not entry.expected:
            log.warning("ignoring an unexpected %s event on %s", type(events[0]).__name__,
                        entry.topic)
            return
        entry.latest = events[-1]
        for sub in list(entry.subs):
            sub._deliver_all(events)

    def _status_event(self, event: Event) -> None:
        if isinstance(event, HubStatus):
            self._on_status(event)
        else:
            log.warning("ignoring an unexpected %s event on %s", type(event).__name__, TOPIC_STATUS)

    def _bulletin_event(self, event: Event) -> None:
        if not isinstance(event, NewsBulletin):
            log.warning("ignoring an unexpected %s event on %s", type(event).__name__,
                        TOPIC_NEWS_BULLETIN)
        elif self._on_bulletin is not None:
            self._on_bulletin(event)

    def _error_event(self, event: Event) -> None:
        if not isinstance(event, ErrorEvent):
            log.warning("ignoring an unexpected %s event on the error topic", type(event).__name__)
            return
        entry = self.entries.get(event.topic) if event.topic else None
        for sub in entry.subs if entry is not None else ():
            sub.last_error = event
        self._on_error(event)

    # ------------------------------------------------------------------ sequences

    def sequencers(self) -> list[TopicSequencer]:
        seqs = [entry.sequencer for entry in self.entries.values()]
        seqs.append(self.status)
        seqs.append(self.bulletins)
        if self.errors is not None:
            seqs.append(self.errors)
        return seqs

    def resync_all(self) -> None:
        """New PUB connection: forget every baseline and start again from snapshots."""
        for seq in self.sequencers():
            seq.reset()
            seq.sync()

    def gaps_of(self, topic: str) -> int:
        entry = self.entries.get(topic)
        return entry.sequencer.gaps if entry is not None else 0

    async def baseline_status(self) -> None:
        """Take the upstream state from ``hub.status``'s last value now, in sequence
        order with live events (a status *reply* could be older than an event that
        was already applied: the two sockets are not ordered with each other)."""
        seq = self.status
        if seq.recovering:
            return
        seq.sync(request=False)
        event = await last_value(self._snapshot, TOPIC_STATUS)
        if seq is self.status:
            seq.on_snapshot(event)

    def request_snapshot(self, topic: str) -> None:
        self._spawn(self._fetch_snapshot(topic), f"snapshot {topic}")

    async def _fetch_snapshot(self, topic: str) -> None:
        before = self._sequencer_of(topic)
        event = await last_value(self._snapshot, topic)
        seq = self._sequencer_of(topic)
        if seq is not None and seq is before:  # not replaced or removed meanwhile
            seq.on_snapshot(event)

    def _sequencer_of(self, topic: str) -> TopicSequencer | None:
        entry = self.entries.get(topic)
        if entry is not None:
            return entry.sequencer
        for seq in (self.status, self.errors, self.bulletins):
            if seq is not None and seq.topic == topic:
                return seq
        return None


def _feed(sequencer: TopicSequencer, message: Event) -> None:
    """One topic's message to its sequencer: a Ticks batch at once, anything else alone."""
    if type(message) is Ticks:
        sequencer.on_events(message.ticks)
    else:
        sequencer.on_event(message)
