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
  most 60 in any 10 minutes. A waiting historical request does not hold up the rest;
* **keyed** items (everything about one order family carries the family's key) go in
  submission order per key, whatever their priorities: a cancel never overtakes the
  placement or modification of its own order while that is still queued. A queued item
  can be withdrawn (:meth:`Pacer.withdraw`): it is never sent;
* **bounded**: at most ``max_queue`` items overall and ``max_queue_per_owner`` per
  owner (a lease) wait at once, and a caller may ask for room only if its request would
  go within ``max_delay`` seconds (:meth:`Pacer.reserve`, :meth:`Pacer.check`); a request
  that does not fit is refused at once with :class:`PacerBusy`. Cancels are never
  refused: they are cheap and withdraw work. The expected delay of a new request is
  what is queued ahead of it at its priority and above, less the budget at hand,
  divided by the rate (:meth:`Pacer.expected_delay`).

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
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

REFUSALS_WINDOW: Final = 60.0  # seconds over which recent busy refusals are counted


class Priority(enum.IntEnum):
    CANCEL = 0
    ORDER = 1
    SUBSCRIPTION = 2
    QUERY = 3  # historical data and contract details


#: priorities that may go as a batch on the window's room (new lines, lookups)
_BATCHED: Final = frozenset({Priority.SUBSCRIPTION, Priority.QUERY})


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


class PacerBusy(Exception):
    """The pacer cannot take a request now: its queue is full (overall or for this
    owner), or the request would wait longer than the caller's limit. The message says
    which, with the figures; nothing was queued."""

    def __init__(self, message: str, *, expected_delay: float, limit: float | None) -> None:
        super().__init__(message)
        self.expected_delay = expected_delay
        self.limit = limit


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
    key: Hashable | None = None
    owner: Hashable | None = None


class Reservation:
    """Room held in the queue for a request being prepared (an order being journaled):
    it counts as queued (for the bounds and the expected delay of others) until it is
    handed to :meth:`Pacer.submit` or :meth:`released <release>`."""

    __slots__ = ("_pacer", "active", "cost", "owner", "priority")

    def __init__(
        self, pacer: Pacer, priority: Priority, cost: float, owner: Hashable | None
    ) -> None:
        self._pacer = pacer
        self.priority = priority
        self.cost = cost
        self.owner = owner
        self.active = True

    def release(self) -> None:
        """Give the room back (the request was refused or failed before it was queued)."""
        if self.active:
            self.active = False
            self._pacer._unreserve(self)


class Pacer:
    """The upstream outgoing queue. ``submit`` returns a future of the send's result."""

    def __init__(
        self,
        rate: float = 40.0,
        *,
        burst: float = 5.0,
        clock: Clock | None = None,
        historical: HistoricalRules | None = None,
        max_queue: int | None = None,
        max_queue_per_owner: int | None = None,
        window: float | None = None,
        batch_reserve: float = 0.0,
    ) -> None:
        """``max_queue``: items (plus reservations) that may wait at once, all owners
        and priorities; ``max_queue_per_owner``: the same per owner. None: no bound.
        Only :meth:`check` / :meth:`reserve` and ``submit(bounded=True)`` enforce them;
        the hub's own sends (re-subscribing after a reconnect, cancels) always queue.

        ``window``: at most this many messages in any 1-second window, whatever the
        bucket holds (IB's own rule is 50/s; ib_insync's throttle is 45 per second).
        With a window, new market-data lines and lookups (SUBSCRIPTION and non-historical
        QUERY items) go as a **batch** when the bucket is empty but the window has room
        beyond ``batch_reserve`` (kept for orders and cancels; lookups only into half of
        that room, the lines they lead to need the rest): 30 scripts starting together
        get their lines at once instead of one per 25 ms."""
        if not rate > 0:
            raise ValueError(f"pacer rate must be > 0 messages/s, got {rate}")
        if burst < 1:
            raise ValueError(f"pacer burst must be >= 1, got {burst}")
        for name, bound in (("max_queue", max_queue), ("max_queue_per_owner", max_queue_per_owner)):
            if bound is not None and bound < 1:
                raise ValueError(f"pacer {name} must be >= 1 (or None), got {bound}")
        self.rate = rate
        self.burst = burst
        self.max_queue = max_queue
        self.max_queue_per_owner = max_queue_per_owner
        self.clock: Clock = clock or LoopClock()
        self.historical = HistoricalPacing(historical)
        self._queues: dict[Priority, deque[_Item]] = {p: deque() for p in Priority}
        # What waits, for the bounds and the delay estimate: queued items and reservations.
        self._cost: dict[Priority, float] = dict.fromkeys(Priority, 0.0)  # queued items
        self._rcost: dict[Priority, float] = dict.fromkeys(Priority, 0.0)  # reservations
        self._owners: Counter[Hashable] = Counter()
        self._reserved = 0
        self._by_key: dict[Hashable, deque[_Item]] = {}  # per-key FIFO of queued items
        self._items: dict[asyncio.Future[Any], _Item] = {}  # queued items by future
        self._tokens = burst
        self._stamp: float | None = None
        if window is not None and window < burst:
            raise ValueError(f"pacer window ({window}) must be >= burst ({burst})")
        self.window = window
        self.batch_reserve = batch_reserve
        self._recent: deque[tuple[float, float]] = deque()  # (sent at, cost) in the window
        self._recent_cost = 0.0
        self.batched = 0  # items sent on the window's room beyond the bucket
        self._wake = asyncio.Event()
        self._timer: TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self.sent = 0
        self.sent_by_priority: dict[Priority, int] = dict.fromkeys(Priority, 0)
        self.max_wait = 0.0  # longest time an item waited in the queue (seconds)
        self.max_wait_by_priority: dict[Priority, float] = dict.fromkeys(Priority, 0.0)
        self.waiting = False  # True while the loop waits for a token, a timer or work
        self.withdrawn = 0  # items withdrawn before they were sent
        self.refused = 0  # requests refused with PacerBusy
        self._refusals: deque[float] = deque(maxlen=10_000)  # when, for recent_refusals()

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
                item = q[0]
                self._unqueue(item)
                item.future.cancel()

    def submit(
        self,
        priority: Priority,
        send: Callable[[], T],
        *,
        cost: float = 1.0,
        historical_key: Hashable | None = None,
        historical_group: Hashable | None = None,
        label: str = "",
        key: Hashable | None = None,
        owner: Hashable | None = None,
        reservation: Reservation | None = None,
        bounded: bool = False,
    ) -> asyncio.Future[T]:
        """Queue ``send`` (a synchronous callable that writes one request upstream).

        ``cost``: messages it sends (a bracket is 3). ``historical_key`` marks a historical
        request (identical requests share the key); ``historical_group`` identifies
        contract+exchange+data type for the 2-second rule. To pace a coroutine-based call,
        let ``send`` start it (``loop.create_task``) and return the task.

        ``key``: items with the same key are sent in the order they were submitted, even
        across priorities. ``owner``: whom the item counts against (per-owner bound).
        ``reservation``: room taken earlier with :meth:`reserve`, now used by this item.
        ``bounded``: refuse with :class:`PacerBusy` when the queue is full (a request
        from a script; the hub's own sends queue regardless). The future is cancelled
        if the item is withdrawn or the pacer stops before it is sent.
        """
        if reservation is not None:
            owner = reservation.owner if owner is None else owner
            reservation.release()  # its room passes to the item
        elif bounded:
            self.check(priority, cost=cost, owner=owner)
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
            key=key,
            owner=owner,
        )
        if self._task is not None and not self.queued:
            # Nothing waiting: send at once if the budget allows (no added latency, and
            # the caller sees the request sent when submit returns, as without a pacer).
            now = self.clock.now()
            self._refill(now)
            ready = item.hist_key is None or (
                self.historical.ready_at(item.hist_key, item.hist_group, now) <= now + 1e-9
            )
            if ready and self._budget_allows(item, now):
                self._dispatch(item, now)
                return fut
        self._enqueue(item)
        self._wake.set()
        return fut

    def withdraw(self, fut: asyncio.Future[Any]) -> bool:
        """Take a queued item out before it is sent: it never will be, and its future
        is cancelled. False if it is not queued (already sent, or never was)."""
        item = self._items.get(fut)
        if item is None:
            return False
        self._unqueue(item)
        self.withdrawn += 1
        fut.cancel()
        self._wake.set()  # a later item of its key may be free to go now
        return True

    def recost(self, fut: asyncio.Future[Any], cost: float) -> None:
        """A queued item will send fewer messages than it said (a bracket leg withdrawn)."""
        item = self._items.get(fut)
        if item is not None:
            new = max(1.0, cost)
            self._cost[item.priority] = max(0.0, self._cost[item.priority] + new - item.cost)
            item.cost = new

    def expected_delay(self, priority: Priority, cost: float = 1.0) -> float:
        """Seconds a request of ``priority`` submitted now would wait before it is sent:
        what waits ahead of it (its priority and above, reservations included) less the
        budget at hand, at the pacer's rate. Requests of higher priority submitted later
        go first and add to it; historical requests may also wait for IB's rules."""
        now = self.clock.now()
        tokens = (
            self.burst
            if self._stamp is None
            else min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        )
        ahead = sum(self._cost[p] + self._rcost[p] for p in Priority if p <= priority)
        return max(0.0, (ahead + max(1.0, cost) - tokens) / self.rate)

    def check(
        self,
        priority: Priority,
        *,
        cost: float = 1.0,
        owner: Hashable | None = None,
        max_delay: float | None = None,
    ) -> None:
        """Raise :class:`PacerBusy` if a request like this would not be taken now: the
        queue is full, ``owner`` has its share waiting, or it would wait longer than
        ``max_delay`` seconds. Cancels always fit."""
        if priority == Priority.CANCEL:
            return
        delay = self.expected_delay(priority, cost)
        waiting = self.queued + self._reserved
        if self.max_queue is not None and waiting >= self.max_queue:
            self._refuse(
                f"the hub's upstream queue is full: {waiting} requests wait for the "
                f"Gateway (limit pacer_queue_max={self.max_queue}); retry in a moment",
                delay,
                max_delay,
            )
        mine = self._owners.get(owner, 0) if owner is not None else 0
        if owner is not None and self.max_queue_per_owner is not None:
            if mine >= self.max_queue_per_owner:
                self._refuse(
                    f"{mine} of your requests already wait for the Gateway (limit "
                    f"pacer_queue_per_lease={self.max_queue_per_owner}); retry in a moment",
                    delay,
                    max_delay,
                )
        if max_delay is not None and delay > max_delay + 1e-9:
            self._refuse(
                f"the Gateway is busy: this would wait about {delay:.2f}s before it is "
                f"sent (limit max_order_delay={max_delay:g}s; {waiting} requests wait "
                f"ahead of it at {self.rate:g} messages/s); retry in a moment",
                delay,
                max_delay,
            )

    def reserve(
        self,
        priority: Priority,
        *,
        cost: float = 1.0,
        owner: Hashable | None = None,
        max_delay: float | None = None,
    ) -> Reservation:
        """:meth:`check`, then hold room for the request until it is submitted (pass the
        reservation to :meth:`submit`) or released. Requests being prepared meanwhile
        (journaled, say) count as queued, so a burst of them cannot all pass the check
        against the same empty queue."""
        self.check(priority, cost=cost, owner=owner, max_delay=max_delay)
        r = Reservation(self, priority, max(1.0, cost), owner)
        self._rcost[priority] += r.cost
        self._reserved += 1
        if owner is not None:
            self._owners[owner] += 1
        return r

    def recent_refusals(self, window: float = REFUSALS_WINDOW) -> int:
        """Requests refused as busy in the last ``window`` seconds (at most 60)."""
        horizon = self.clock.now() - window
        return sum(1 for t in self._refusals if t > horizon)

    def snapshot(self) -> dict[str, Any]:
        """Depths, bounds and the delay a new order would see now (status, health)."""
        return {
            "queue": self.depth(),
            "queued": self.queued,
            "reserved": self._reserved,
            "expected_order_delay": round(self.expected_delay(Priority.ORDER), 3),
            "max_queue": self.max_queue,
            "max_queue_per_owner": self.max_queue_per_owner,
            "refused": self.refused,
            "refused_recently": self.recent_refusals(),
            "withdrawn": self.withdrawn,
            "sent": self.sent,
            "max_wait_seconds": round(self.max_wait, 3),
            "max_order_wait_seconds": round(self.max_wait_by_priority[Priority.ORDER], 3),
        }

    async def call(
        self,
        priority: Priority,
        start: Callable[[], Awaitable[T]],
        *,
        cost: float = 1.0,
        historical_key: Hashable | None = None,
        historical_group: Hashable | None = None,
        label: str = "",
        bounded: bool = False,
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
            bounded=bounded,
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
                self._unqueue(q[0])
            for item in q:
                if item.future.done():
                    continue
                if item.key is not None and self._by_key[item.key][0] is not item:
                    continue  # an earlier item of its key goes first
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
            if not self._budget_allows(item, now):
                # Wait for the budget, then pick again: a cancel may have arrived meanwhile.
                at = now + max(0.0, item.cost - self._tokens) / self.rate
                self._schedule(max(at, self._window_free_at(item.cost, now)))
                await self._sleep()
                continue
            self._unqueue(item)
            self._dispatch(item, now)
            # Let the loop breathe between sends (other coroutines, incoming data).
            await asyncio.sleep(0)

    def _enqueue(self, item: _Item) -> None:
        self._queues[item.priority].append(item)
        self._cost[item.priority] += item.cost
        if item.owner is not None:
            self._owners[item.owner] += 1
        if item.key is not None:
            self._by_key.setdefault(item.key, deque()).append(item)
        self._items[item.future] = item
        item.future.add_done_callback(self._gone)

    def _gone(self, fut: asyncio.Future[Any]) -> None:
        """A queued item's future ended before it was sent (its caller gave up)."""
        item = self._items.get(fut)
        if item is not None:
            self._unqueue(item)
            self._wake.set()

    def _unqueue(self, item: _Item) -> None:
        if self._items.pop(item.future, None) is None:
            return
        self._queues[item.priority].remove(item)
        self._cost[item.priority] = max(0.0, self._cost[item.priority] - item.cost)
        if not self._queues[item.priority]:
            self._cost[item.priority] = 0.0  # no float residue once empty
        if item.owner is not None:
            self._uncount(item.owner)
        if item.key is not None:
            same = self._by_key[item.key]
            same.remove(item)
            if not same:
                del self._by_key[item.key]

    def _unreserve(self, r: Reservation) -> None:
        self._reserved -= 1
        self._rcost[r.priority] = (
            max(0.0, self._rcost[r.priority] - r.cost) if self._reserved else 0.0
        )
        if r.owner is not None:
            self._uncount(r.owner)

    def _uncount(self, owner: Hashable) -> None:
        left = self._owners[owner] - 1
        if left > 0:
            self._owners[owner] = left
        else:
            del self._owners[owner]

    def _refuse(self, message: str, delay: float, limit: float | None) -> None:
        now = self.clock.now()
        self.refused += 1
        self._refusals.append(now)
        while self._refusals and self._refusals[0] <= now - REFUSALS_WINDOW:
            self._refusals.popleft()
        raise PacerBusy(message, expected_delay=delay, limit=limit)

    # ---------------------------------------------------------------- the window

    def _window_used(self, now: float) -> float:
        recent = self._recent
        while recent and recent[0][0] <= now - 1.0:
            self._recent_cost -= recent.popleft()[1]
        if not recent:
            self._recent_cost = 0.0  # no float residue once empty
        return self._recent_cost

    def _budget_allows(self, item: _Item, now: float) -> bool:
        """The bucket has the tokens (or a line/lookup batches on the window's room), and
        the window is not full. Tolerance 1e-9: float error must not spin."""
        if self.window is None:
            return self._tokens + 1e-9 >= item.cost
        used = self._window_used(now)
        if used + item.cost > self.window + 1e-9:
            return False
        if self._tokens + 1e-9 >= item.cost:
            return True
        room = self.window - self.batch_reserve
        if item.priority == Priority.QUERY:
            room /= 2  # lookups batch into half: the lines they lead to need the rest
        if (item.priority in _BATCHED and item.hist_key is None
                and used + item.cost <= room + 1e-9):
            self.batched += 1
            return True
        return False

    def _window_free_at(self, cost: float, now: float) -> float:
        """When the window will have room for ``cost`` more (now if it has)."""
        if self.window is None:
            return now
        room = self.window - self._window_used(now)
        for sent_at, c in self._recent:
            if room + 1e-9 >= cost:
                break
            room += c
            now = max(now, sent_at + 1.0 + 1e-6)
        return now

    def _dispatch(self, item: _Item, now: float) -> None:
        """Spend the budget for ``item``, send it, and resolve its future."""
        self._tokens = max(0.0, self._tokens - item.cost)
        if self.window is not None:
            self._recent.append((now, item.cost))
            self._recent_cost += item.cost
        if item.hist_key is not None:
            self.historical.record(item.hist_key, item.hist_group, now)
        self.sent += 1
        self.sent_by_priority[item.priority] += 1
        waited = now - item.enqueued
        self.max_wait = max(self.max_wait, waited)
        if waited > self.max_wait_by_priority[item.priority]:
            self.max_wait_by_priority[item.priority] = waited
        try:
            result = item.send()
        except Exception as exc:  # the send failed: that caller learns why, others go on
            log.warning("upstream send %s failed: %s", item.label or item.send, exc)
            if not item.future.done():
                item.future.set_exception(exc)
        else:
            if not item.future.done():
                item.future.set_result(result)
