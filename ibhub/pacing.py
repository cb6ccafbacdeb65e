"""One outgoing budget for all upstream traffic, served by priority.

IB disconnects (or answers error 100) a client that sends more than 50 messages per
second, and refuses historical requests that break its pacing rules (error 162). Every
upstream request therefore goes through one :class:`Pacer`:

* a token bucket of ``rate`` messages/s (default 40, below IB's 50) with a small
  ``burst``. Any window of T seconds then carries at most ``burst + rate*T`` messages:
  with the defaults at most 45 in any second, so IB's limit holds however the window
  is aligned (a bucket as deep as ``rate`` would allow 80);
* served strictly by priority (cancels, then orders, then subscriptions, then
  historical and contract queries), FIFO within a priority;
* historical requests also wait (never fail) for IB's historical pacing: no identical
  request within 15 s, at most 5 for the same contract/exchange/type within 2 s, and at
  most 60 in any 10 minutes. A waiting historical request does not hold up the rest.

Time comes from an injectable :class:`Clock` so tests are deterministic: the pacer
only ever asks "what time is it" and "call me back at t", and :class:`ManualClock`
answers both without real time passing.
"""

from __future__ import annotations

import asyncio
import enum
import heapq
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class Priority(enum.IntEnum):
    CANCEL = 0
    ORDER = 1
    SUBSCRIPTION = 2
    QUERY = 3  # historical data and contract details


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def now(self) -> float: ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle: ...


class LoopClock:
    """Real time: ``time.monotonic`` and the running loop's timers."""

    def now(self) -> float:
        return time.monotonic()

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        return asyncio.get_running_loop().call_later(max(0.0, delay), callback)


class _ManualTimer:
    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """A clock that moves only when told to (tests). ``advance(dt)`` fires due timers."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._timers: list[tuple[float, int, _ManualTimer]] = []
        self._ids = itertools.count()

    def now(self) -> float:
        return self._now

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        timer = _ManualTimer(self._now + max(0.0, delay), callback)
        heapq.heappush(self._timers, (timer.when, next(self._ids), timer))
        return timer

    def advance(self, seconds: float) -> None:
        target = self._now + seconds
        while self._timers and self._timers[0][0] <= target:
            when, _, timer = heapq.heappop(self._timers)
            self._now = max(self._now, when)
            if not timer.cancelled:
                timer.callback()
        self._now = target

    def next_timer(self) -> float | None:
        live = [w for w, _, t in self._timers if not t.cancelled]
        return min(live) if live else None


@dataclass(frozen=True)
class HistoricalRules:
    """IB's historical-data pacing (TWS API docs, "Pacing Violations for Small Bars")."""

    identical_interval: float = 15.0
    same_contract_window: float = 2.0
    same_contract_max: int = 5
    window: float = 600.0
    window_max: int = 60


class HistoricalPacing:
    """Remembers when historical requests went out and says when the next may go."""

    def __init__(self, rules: HistoricalRules | None = None) -> None:
        self.rules = rules or HistoricalRules()
        self._last_identical: dict[Hashable, float] = {}
        self._by_group: dict[Hashable, deque[float]] = {}
        self._sent: deque[float] = deque()

    def ready_at(self, key: Hashable, group: Hashable | None, now: float) -> float:
        r = self.rules
        ready = now
        last = self._last_identical.get(key)
        if last is not None:
            ready = max(ready, last + r.identical_interval)
        sent = self._sent
        while sent and sent[0] <= now - r.window:
            sent.popleft()
        if len(sent) >= r.window_max:
            ready = max(ready, sent[len(sent) - r.window_max] + r.window)
        if group is not None:
            times = self._by_group.get(group)
            if times:
                while times and times[0] <= now - r.same_contract_window:
                    times.popleft()
                if len(times) >= r.same_contract_max:
                    ready = max(
                        ready, times[len(times) - r.same_contract_max] + r.same_contract_window
                    )
        return ready

    def record(self, key: Hashable, group: Hashable | None, now: float) -> None:
        self._last_identical[key] = now
        self._sent.append(now)
        if group is not None:
            self._by_group.setdefault(group, deque()).append(now)
        # forget identical-request stamps that can no longer delay anything
        if len(self._last_identical) > 4 * self.rules.window_max:
            horizon = now - self.rules.identical_interval
            self._last_identical = {k: t for k, t in self._last_identical.items() if t > horizon}


@dataclass(eq=False)
class _Item:
    priority: Priority
    send: Callable[[], Any]
    future: asyncio.Future[Any]
    cost: float = 1.0
    hist_key: Hashable | None = None
    hist_group: Hashable | None = None
    enqueued: float = 0.0
    label: str = ""


class Pacer:
    """The upstream outgoing queue. ``submit`` returns a future of the send's result."""

    def __init__(
        self,
        rate: float = 40.0,
        *,
        burst: float = 5.0,
        clock: Clock | None = None,
        historical: HistoricalRules | None = None,
    ) -> None:
        if not rate > 0:
            raise ValueError(f"pacer rate must be > 0 messages/s, got {rate}")
        if burst < 1:
            raise ValueError(f"pacer burst must be >= 1, got {burst}")
        self.rate = rate
        self.burst = burst
        self.clock: Clock = clock or LoopClock()
        self.historical = HistoricalPacing(historical)
        self._queues: dict[Priority, deque[_Item]] = {p: deque() for p in Priority}
        self._tokens = burst
        self._stamp: float | None = None
        self._wake = asyncio.Event()
        self._timer: TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self.sent = 0
        self.sent_by_priority: dict[Priority, int] = dict.fromkeys(Priority, 0)
        self.max_wait = 0.0  # longest time an item waited in the queue (seconds)
        self.waiting = False  # True while the loop waits for a token, a timer or work

    # ---------------------------------------------------------------- public

    def start(self) -> None:
        if self._task is None:
            self._stamp = self.clock.now()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="ibhub-pacer")

    async def stop(self) -> None:
        """Stop sending; every item still queued fails with ``CancelledError``."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for q in self._queues.values():
            while q:
                q.popleft().future.cancel()

    def submit(
        self,
        priority: Priority,
        send: Callable[[], T],
        *,
        cost: float = 1.0,
        historical_key: Hashable | None = None,
        historical_group: Hashable | None = None,
        label: str = "",
    ) -> asyncio.Future[T]:
        """Queue ``send`` (a synchronous callable that writes one request upstream).

        ``cost``: messages it sends (a bracket is 3). ``historical_key`` marks a historical
        request (identical requests share the key); ``historical_group`` identifies
        contract+exchange+data type for the 2-second rule. To pace a coroutine-based call,
        let ``send`` start it (``loop.create_task``) and return the task.
        """
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        item = _Item(
            priority,
            send,
            fut,
            cost=max(1.0, cost),
            hist_key=historical_key,
            hist_group=historical_group,
            enqueued=self.clock.now(),
            label=label,
        )
        if self._task is not None and not self.queued:
            # Nothing waiting: send at once if the budget allows (no added latency, and
            # the caller sees the request sent when submit returns, as without a pacer).
            now = self.clock.now()
            self._refill(now)
            ready = item.hist_key is None or (
                self.historical.ready_at(item.hist_key, item.hist_group, now) <= now + 1e-9
            )
            if ready and self._tokens + 1e-9 >= item.cost:
                self._dispatch(item, now)
                return fut
        self._queues[priority].append(item)
        self._wake.set()
        return fut

    async def call(
        self,
        priority: Priority,
        start: Callable[[], Awaitable[T]],
        *,
        cost: float = 1.0,
        historical_key: Hashable | None = None,
        historical_group: Hashable | None = None,
        label: str = "",
    ) -> T:
        """Pace a coroutine-based request (``ib.reqHistoricalDataAsync(...)``): ``start``
        is called when the budget allows (that sends the request), then its result is
        awaited. A historical request may wait minutes for IB's pacing rules, so put a
        request timeout inside ``start`` rather than around this call."""

        def begin() -> asyncio.Future[T]:
            return asyncio.ensure_future(start())

        task = await self.submit(
            priority,
            begin,
            cost=cost,
            historical_key=historical_key,
            historical_group=historical_group,
            label=label,
        )
        return await task

    def depth(self) -> dict[str, int]:
        """Queued items per priority name (for status)."""
        return {p.name.lower(): len(q) for p, q in self._queues.items()}

    @property
    def settled(self) -> bool:
        """Nothing can go until time passes or work arrives (tests wait for this)."""
        return self.waiting and not self._wake.is_set()

    @property
    def queued(self) -> int:
        return sum(len(q) for q in self._queues.values())

    # ---------------------------------------------------------------- loop

    def _refill(self, now: float) -> None:
        assert self._stamp is not None
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def _pick(self, now: float) -> tuple[_Item | None, float | None]:
        """The next item that may go now, else (None, earliest time something may go)."""
        earliest: float | None = None
        for priority in Priority:
            q = self._queues[priority]
            while q and q[0].future.done():  # caller gave up (cancelled)
                q.popleft()
            for item in q:
                if item.future.done():
                    continue
                if item.hist_key is None:
                    return item, None
                ready = self.historical.ready_at(item.hist_key, item.hist_group, now)
                if ready <= now + 1e-9:
                    return item, None
                earliest = ready if earliest is None else min(earliest, ready)
        return None, earliest

    def _schedule(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.clock.call_later(at - self.clock.now(), self._wake.set)

    async def _sleep(self) -> None:
        self._wake.clear()
        self.waiting = True
        try:
            await self._wake.wait()
        finally:
            self.waiting = False

    async def _run(self) -> None:
        while True:
            now = self.clock.now()
            self._refill(now)
            item, earliest = self._pick(now)
            if item is None:
                if earliest is not None:
                    self._schedule(earliest)
                await self._sleep()
                continue
            if self._tokens + 1e-9 < item.cost:  # tolerance: float error must not spin
                # Wait for the budget, then pick again: a cancel may have arrived meanwhile.
                self._schedule(now + (item.cost - self._tokens) / self.rate)
                await self._sleep()
                continue
            self._queues[item.priority].remove(item)
            self._dispatch(item, now)
            # Let the loop breathe between sends (other coroutines, incoming data).
            await asyncio.sleep(0)

    def _dispatch(self, item: _Item, now: float) -> None:
        """Spend the budget for ``item``, send it, and resolve its future."""
        self._tokens = max(0.0, self._tokens - item.cost)
        if item.hist_key is not None:
            self.historical.record(item.hist_key, item.hist_group, now)
        self.sent += 1
        self.sent_by_priority[item.priority] += 1
        self.max_wait = max(self.max_wait, now - item.enqueued)
        try:
            result = item.send()
        except Exception as exc:  # the send failed: that caller learns why, others go on
            log.warning("upstream send %s failed: %s", item.label or item.send, exc)
            if not item.future.done():
                item.future.set_exception(exc)
        else:
            if not item.future.done():
                item.future.set_result(result)
