"""Batch delivery: a whole hub message at a time instead of one call per tick.

The hub publishes every tick of one Gateway read for an instrument as one message
(``Ticks``). A consumer that stores or aggregates ticks (``ibhub record``, a
research script) pays Python per call; receiving the message's ticks as one
``Batch`` makes that one call per message. Two ways to get batches:

* ``AsyncHub.subscribe_batches(contract, callback=...)``: a ``BatchSubscription``,
  the same sequence rules and snapshot recovery as ``subscribe`` (a gap is recovered
  from the topic's last value and counted in ``sub.gaps``), events in ``Batch``es.
* ``AsyncHub.listen(prefix, callback=...)``: a ``Tap`` on every topic starting with
  ``prefix`` (``"tick."``, ``"order."``, ``"hub.status"``), whatever subscribed them.
  It recovers nothing: a sequence jump is reported in the next batch's ``missed``
  (and a restart at 1 in ``restarted``), which is what a recorder needs to write a
  gap as a gap. It never asks the hub to open a line.

Both deliver in sequence order, per topic; a callback may be a coroutine function
(its coroutine runs as a task), and without one the batches queue (bounded: the
oldest batch is dropped and counted in ``dropped`` when full) for ``async for``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any

import msgspec

from ibhub import wire
from ibhub.client.bundle import LazyBundle, decode_message
from ibhub.client.errors import HubTimeout
from ibhub.client.subscription import Subscription
from ibhub.protocol import Bundle, ContractInfo, ContractSpec, Event

log = logging.getLogger(__name__)

_CLOSED: Any = object()


class Batch:
    """Consecutive events of one topic from one hub message, in sequence order.

    ``missed``: events of this topic the hub published before this batch that this
    client never received (a sequence jump; 0 normally). ``restarted``: the sequence
    went back (the hub restarted and counts from 1 again): what came between the last
    event seen and this batch is unknown. ``BatchSubscription`` batches are always
    ``missed == 0``: it recovers gaps from a snapshot and counts them in ``gaps``.
    ``prev_seq``: the topic's last sequence number seen before this batch (a tap's;
    None for its first, and for a subscription's batches).
    """

    __slots__ = ("events", "missed", "prev_seq", "restarted", "topic")

    def __init__(
        self, topic: str, events: Sequence[Event], missed: int = 0, restarted: bool = False,
        prev_seq: int | None = None,
    ) -> None:
        self.topic = topic
        self.events = events
        self.missed = missed
        self.restarted = restarted
        self.prev_seq = prev_seq

    @property
    def first_seq(self) -> int:
        return self.events[0].seq

    @property
    def last_seq(self) -> int:
        return self.events[-1].seq

    def __len__(self) -> int:
        return len(self.events)

    def __repr__(self) -> str:
        extra = f" missed={self.missed}" if self.missed else ""
        extra += " restarted" if self.restarted else ""
        return (f"<Batch {self.topic} seq {self.first_seq}..{self.last_seq} "
                f"({len(self.events)}){extra}>")


class BatchQueue:
    """Bounded queue of batches with the SDK's drop-oldest rule and a close sentinel."""

    def __init__(self, maxsize: int, what: str) -> None:
        self._queue: asyncio.Queue[Batch] = asyncio.Queue(maxsize=max(1, maxsize))
        self._what = what
        self.dropped = 0  # batches dropped because the reader was behind

    def put(self, item: Batch) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(item)

    def end(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(_CLOSED)

    def backlog(self) -> int:
        return self._queue.qsize()

    async def get(self, timeout: float | None) -> Batch:
        try:
            async with asyncio.timeout(timeout):
                item = await self._queue.get()
        except TimeoutError:
            raise HubTimeout(f"no batch on {self._what} within {timeout}s") from None
        if item is _CLOSED:
            self._queue.put_nowait(_CLOSED)
            raise StopAsyncIteration
        return item


class BatchSubscription(Subscription):
    """A ``Subscription`` whose callback (or ``async for``) receives ``Batch``es.

    ``received`` and ``latest`` count and hold events as for ``Subscription``;
    ``dropped`` counts queued batches dropped because the reader was behind.
    """

    def __init__(
        self,
        topic: str,
        contract: ContractInfo,
        spec: ContractSpec,
        kind: str,
        callback: Callable[[Batch], Any] | None = None,
        maxsize: int = 10_000,
        *,
        spawn: Callable[[Coroutine[Any, Any, Any], str], None],
        gaps: Callable[[str], int],
        unsubscribe: Callable[[Subscription], Awaitable[None]],
    ) -> None:
        super().__init__(topic, contract, spec, kind, None, maxsize,
                         spawn=spawn, gaps=gaps, unsubscribe=unsubscribe)
        self.batch_callback = callback
        self._batches = BatchQueue(maxsize, topic)

    def _deliver_all(self, events: Sequence[Event]) -> None:
        if self.closed or not events:
            return
        self.received += len(events)
        self.latest = events[-1]
        batch = Batch(self.topic, events)
        callback = self.batch_callback
        if callback is None:
            self._batches.put(batch)
            self.dropped = self._batches.dropped
            return
        try:
            result = callback(batch)
            if result is not None and asyncio.iscoroutine(result):
                self._spawn(result, f"batch callback {self.topic}")
        except Exception:
            log.exception("batch callback for %s raised; continuing", self.topic)

    def _end(self) -> None:
        if not self.closed:
            self._batches.end()
        super()._end()

    async def get(self, timeout: float | None = None) -> Batch:
        """The next batch; ``HubTimeout`` after ``timeout`` s, ``StopAsyncIteration`` once
        closed."""
        return await self._batches.get(timeout)

    def __aiter__(self) -> BatchSubscription:
        return self

    async def __anext__(self) -> Batch:
        return await self._batches.get(None)


class Tap:
    """Every topic starting with ``prefix``, as ``Batch``es with gaps reported, not
    recovered (``AsyncHub.listen``). ``last`` holds each topic's last sequence number
    seen (seed it with ``since`` to detect what was lost while this process was not
    listening); ``missed`` and ``restarts`` count over all topics."""

    def __init__(
        self,
        prefix: str,
        callback: Callable[[Batch], Any] | None,
        maxsize: int,
        *,
        spawn: Callable[[Coroutine[Any, Any, Any], str], None],
        since: Mapping[str, int] | None = None,
        close: Callable[[Tap], None],
    ) -> None:
        self.prefix = prefix
        self.callback = callback
        self.last: dict[str, int] = dict(since or {})
        self._live: set[str] = set()  # topics that delivered a batch to this tap
        # hub time of each topic's last event delivered: a batch from 1 again is a hub
        # restart only if it is newer; else it is the bundle's copy of what went out
        self._last_ts: dict[str, int] = {}
        self.received = 0
        self.missed = 0
        # sequence jumps while listening (each lost one or more events; not the first
        # jump after ``since``, which is what was lost while this client was away)
        self.gaps = 0
        self.restarts = 0
        self.stale = 0  # events not newer than one already delivered (dropped)
        self.closed = False
        self._spawn = spawn
        self._close = close
        self._batches = BatchQueue(maxsize, prefix)

    def __repr__(self) -> str:
        return f"<Tap {self.prefix!r} received={self.received} missed={self.missed}>"

    @property
    def dropped(self) -> int:
        """Batches dropped from the queue because the reader was behind."""
        return self._batches.dropped

    @property
    def backlog(self) -> int:
        """Batches queued and not yet read."""
        return self._batches.backlog()

    def on_message(self, topic: str, message: Event) -> None:
        """One PUB message whose topic starts with ``prefix``. Never raises."""
        if type(message) is Bundle:
            for name, inner in message.messages:
                if name.startswith(self.prefix):
                    self._on_events(name, wire.unbatch(inner))
            return
        if type(message) is LazyBundle:
            for name, raw in message.messages:
                if name.startswith(self.prefix):
                    try:
                        decoded = decode_message(raw)
                    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                        log.warning("tap %r: undecodable message for %s in a bundle: %s",
                                    self.prefix, name, exc)
                        continue
                    self._on_events(name, wire.unbatch(decoded))
            return
        if topic.startswith(self.prefix):
            self._on_events(topic, wire.unbatch(message))

    def _on_events(self, topic: str, events: Sequence[Event]) -> None:
        if self.closed or not events:
            return
        last = self.last.get(topic)
        first = events[0].seq
        missed = 0
        restarted = False
        if last is not None and first != last + 1:
            if first > last + 1:
                missed = first - last - 1
                self.missed += missed
                self.gaps += topic in self._live
            elif first == 1 and events[-1].ts > self._last_ts.get(topic, -1):
                restarted = True
                self.restarts += 1
            else:  # already delivered (a duplicate route, e.g. bundle and topic)
                newer = [e for e in events if e.seq > last]
                self.stale += len(events) - len(newer)
                if not newer:
                    return
                events = newer
                missed = events[0].seq - last - 1
                self.missed += missed
                self.gaps += missed > 0 and topic in self._live
        self.last[topic] = events[-1].seq
        self._live.add(topic)
        self._last_ts[topic] = events[-1].ts
        self.received += len(events)
        batch = Batch(topic, events, missed, restarted, last)
        callback = self.callback
        if callback is None:
            self._batches.put(batch)
            return
        try:
            result = callback(batch)
            if result is not None and asyncio.iscoroutine(result):
                self._spawn(result, f"tap callback {self.prefix}")
        except Exception:
            log.exception("tap callback for %r raised; continuing", self.prefix)

    async def get(self, timeout: float | None = None) -> Batch:
        """The next batch; ``HubTimeout`` after ``timeout`` s, ``StopAsyncIteration`` once
        closed."""
        return await self._batches.get(timeout)

    def __aiter__(self) -> Tap:
        return self

    async def __anext__(self) -> Batch:
        return await self._batches.get(None)

    def _end(self) -> None:
        if not self.closed:
            self.closed = True
            self._batches.end()

    def close(self) -> None:
        """Stop listening (the SUB prefix is dropped when no one else uses it)."""
        self._close(self)
