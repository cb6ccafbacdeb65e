"""A market-data subscription as the script sees it.

Events arrive either through a callback (called on the SDK's event loop, in
sequence order) or through a bounded queue read with ``async for`` / ``get()``. A
slow reader must not make the SDK's memory grow without bound, so when the queue is
full the oldest event is dropped and counted in ``dropped``: every tick is a
complete top of book, so the newest value is the one worth keeping.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Generic, TypeVar, cast

from ibhub.client.errors import HubError, HubTimeout
from ibhub.protocol import ContractInfo, ContractSpec, ErrorEvent, Event

log = logging.getLogger(__name__)

_CLOSED: Any = object()  # queue sentinel that ends iteration

#: What a subscription yields: ``Subscription[Tick]`` for ``kind="ticks"``,
#: ``Subscription[Bar]`` for ``"bars"`` (``AsyncHub.subscribe``'s overloads say which).
E = TypeVar("E", bound=Event)


class Subscription(Generic[E]):
    """Ticks (or bars) for one instrument; close it to unsubscribe.

    Generic in the event type it yields (``Subscription[Tick]``), so ``async for tick
    in sub`` is typed; the type is the kind's (``AsyncHub.subscribe`` overloads).

    What it needs of its SDK comes in as three callables: ``spawn(coro, what)`` runs a
    coroutine callback's result as a task the SDK owns, ``gaps(topic)`` counts the
    topic's sequence gaps, ``unsubscribe(sub)`` ends it (``AsyncHub.unsubscribe``).
    """

    def __init__(
        self,
        topic: str,
        contract: ContractInfo,
        spec: ContractSpec,
        kind: str,
        callback: Callable[[E], Any] | None = None,
        maxsize: int = 10_000,
        *,
        spawn: Callable[[Coroutine[Any, Any, Any], str], None],
        gaps: Callable[[str], int],
        unsubscribe: Callable[[Subscription[Any]], Awaitable[None]],
    ) -> None:
        self.topic = topic
        self.contract = contract
        self.spec = spec
        self.kind = kind
        self.callback = callback
        self.received = 0
        self.dropped = 0
        self.latest: E | None = None
        self.closed = False
        self.error: HubError | None = None  # why the SDK ended it, if the hub refused it
        self.last_error: ErrorEvent | None = None  # the last IB error about this topic
        self.on_close: Callable[[], None] | None = None  # called once when it ends
        self._spawn = spawn
        self._gaps = gaps
        self._unsubscribe = unsubscribe
        self._queue: asyncio.Queue[E] = asyncio.Queue(maxsize=max(1, maxsize))

    def __repr__(self) -> str:
        return f"<Subscription {self.topic} received={self.received} gaps={self.gaps}>"

    @property
    def gaps(self) -> int:
        """Sequence gaps detected (and recovered from a snapshot) on this topic."""
        return self._gaps(self.topic)

    def _deliver(self, event: Event) -> None:
        """Called by the hub's receive loop, in sequence order. Never raises."""
        self._deliver_all((event,))

    def _deliver_all(self, delivered: Sequence[Event]) -> None:
        """Consecutive events (one, or a ``Ticks`` batch), in sequence order. Never raises."""
        events = cast("Sequence[E]", delivered)  # the topic's kind: this subscription's E
        callback = self.callback
        if callback is None:
            for event in events:
                if self.closed:
                    return
                self.received += 1
                self.latest = event
                self._put(event)
            return
        iscoroutine = asyncio.iscoroutine
        for event in events:
            if self.closed:  # the callback may close the subscription mid-batch
                return
            self.received += 1
            self.latest = event
            try:
                result = callback(event)
                # a plain callback returns None: skip the coroutine check (~0.1 us a tick)
                if result is not None and iscoroutine(result):
                    self._spawn(result, f"callback {self.topic}")
            except Exception:
                log.exception("subscription callback for %s raised; continuing", self.topic)

    def _put(self, item: E) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(item)

    def _end(self) -> None:
        """Mark closed, drop what is still queued and wake every reader."""
        if not self.closed:
            self.closed = True
            while not self._queue.empty():
                self._queue.get_nowait()
            self._put(_CLOSED)
            if self.on_close is not None:
                try:
                    self.on_close()
                except Exception:
                    log.exception("on_close hook of %s raised", self.topic)

    async def get(self, timeout: float | None = None) -> E:
        """The next event.

        Raises ``HubTimeout`` after ``timeout`` seconds, ``StopAsyncIteration`` once closed.
        """
        if self.closed and self._queue.empty():
            raise StopAsyncIteration
        try:
            async with asyncio.timeout(timeout):
                item = await self._queue.get()
        except TimeoutError:
            raise HubTimeout(f"no event on {self.topic} within {timeout}s") from None
        if item is _CLOSED:
            self._queue.put_nowait(_CLOSED)  # wake other readers too
            raise StopAsyncIteration
        return item

    def __aiter__(self) -> Subscription[E]:
        return self

    async def __anext__(self) -> E:
        return await self.get()

    async def close(self) -> None:
        """Unsubscribe (the hub cancels upstream when its last subscriber leaves)."""
        await self._unsubscribe(self)

    async def __aenter__(self) -> Subscription[E]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
