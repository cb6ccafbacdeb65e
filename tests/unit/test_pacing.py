"""Pacer: budget, priorities and IB's historical pacing, on a manual clock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from functools import partial

import pytest

from ibhub.pacing import HistoricalRules, ManualClock, Pacer, Priority
from tests.helpers import wait_until


@pytest.fixture
async def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def pacer(clock: ManualClock) -> AsyncIterator[Pacer]:
    p = Pacer(rate=40.0, burst=5, clock=clock)
    p.start()
    yield p
    await p.stop()


def stamp(sent: list[tuple[float, int]], clock: ManualClock, i: int) -> None:
    sent.append((clock.now(), i))


async def settle(p: Pacer) -> None:
    await wait_until(lambda: p.settled, timeout=2.0, what="the pacer to settle")


async def advance(clock: ManualClock, p: Pacer, seconds: float) -> None:
    """Move time forward in small steps, letting the pacer act at each step."""
    end = clock.now() + seconds
    while True:
        await settle(p)
        nxt = clock.next_timer()
        if nxt is None or nxt > end:
            break
        clock.advance(nxt - clock.now())
    clock.advance(end - clock.now())
    await settle(p)


async def test_burst_then_rate(clock: ManualClock, pacer: Pacer) -> None:
    sent: list[tuple[float, int]] = []
    futs = [pacer.submit(Priority.ORDER, partial(stamp, sent, clock, i)) for i in range(45)]
    await settle(pacer)
    assert len(sent) == 5  # the burst goes at once
    assert pacer.depth()["order"] == 40
    await advance(clock, pacer, 1.0)
    assert len(sent) == 45  # 5 + 40/s * 1 s
    assert [i for _, i in sent] == list(range(45))  # FIFO within a priority
    assert all(f.done() for f in futs)
    # Any 1-second window holds at most burst + rate messages (IB counts 50/s).
    times = [t for t, _ in sent]
    for start in times:
        assert sum(1 for t in times if start <= t < start + 1.0) <= 45
    assert pacer.queued == 0


async def test_priority_cancels_first(clock: ManualClock, pacer: Pacer) -> None:
    sent: list[str] = []
    for i in range(5):
        pacer.submit(Priority.ORDER, partial(sent.append, f"burst{i}"))
    await settle(pacer)
    assert len(sent) == 5  # budget used up
    pacer.submit(Priority.QUERY, lambda: sent.append("hist"))
    pacer.submit(Priority.SUBSCRIPTION, lambda: sent.append("sub"))
    pacer.submit(Priority.ORDER, lambda: sent.append("order"))
    pacer.submit(Priority.CANCEL, lambda: sent.append("cancel"))
    await settle(pacer)
    assert pacer.depth() == {"cancel": 1, "order": 1, "subscription": 1, "query": 1}
    await advance(clock, pacer, 0.2)
    assert sent[5:] == ["cancel", "order", "sub", "hist"]


async def test_send_result_and_error(clock: ManualClock, pacer: Pacer) -> None:
    def boom() -> None:
        raise ConnectionError("socket closed")

    bad = pacer.submit(Priority.ORDER, boom)
    good = pacer.submit(Priority.ORDER, lambda: 42)
    assert await good == 42
    with pytest.raises(ConnectionError, match="socket closed"):
        await bad


async def test_cancelled_item_is_skipped(clock: ManualClock, pacer: Pacer) -> None:
    sent: list[int] = []
    for i in range(5):
        pacer.submit(Priority.ORDER, partial(sent.append, i))
    await settle(pacer)
    gone = pacer.submit(Priority.ORDER, lambda: sent.append(99))
    kept = pacer.submit(Priority.ORDER, lambda: sent.append(100))
    gone.cancel()
    await advance(clock, pacer, 0.1)
    await kept
    assert 99 not in sent and sent[-1] == 100


async def test_identical_historical_waits_15s_without_blocking_others(
    clock: ManualClock, pacer: Pacer
) -> None:
    sent: list[tuple[float, str]] = []
    t0 = clock.now()
    key = ("AAPL", "1 D", "1 hour", "TRADES")
    pacer.submit(Priority.QUERY, lambda: sent.append((clock.now(), "a1")), historical_key=key)
    pacer.submit(Priority.QUERY, lambda: sent.append((clock.now(), "a2")), historical_key=key)
    other = ("MSFT", "1 D", "1 hour", "TRADES")
    pacer.submit(Priority.QUERY, lambda: sent.append((clock.now(), "b")), historical_key=other)
    pacer.submit(Priority.SUBSCRIPTION, lambda: sent.append((clock.now(), "sub")))
    await settle(pacer)
    # a1 went at once (nothing queued); a2 waits its 15 s; b and sub do not wait for it
    assert [n for _, n in sent] == ["a1", "sub", "b"]
    await advance(clock, pacer, 14.9)
    assert len(sent) == 3
    await advance(clock, pacer, 0.2)
    assert sent[-1][1] == "a2" and sent[-1][0] - t0 == pytest.approx(15.0)


async def test_sixty_per_ten_minutes(clock: ManualClock) -> None:
    p = Pacer(rate=1000.0, burst=100, clock=clock)
    p.start()
    try:
        t0 = clock.now()
        sent: list[float] = []
        for i in range(62):
            p.submit(Priority.QUERY, lambda: sent.append(clock.now()), historical_key=("k", i))
        await settle(p)
        assert len(sent) == 60
        await advance(clock, p, 599.0)
        assert len(sent) == 60
        await advance(clock, p, 1.5)
        assert len(sent) == 62
        assert sent[60] - t0 == pytest.approx(600.0)
    finally:
        await p.stop()


async def test_same_contract_rule(clock: ManualClock) -> None:
    rules = HistoricalRules(same_contract_window=2.0, same_contract_max=5)
    p = Pacer(rate=1000.0, burst=100, clock=clock, historical=rules)
    p.start()
    try:
        t0 = clock.now()
        sent: list[float] = []
        for i in range(6):
            p.submit(
                Priority.QUERY,
                lambda: sent.append(clock.now()),
                historical_key=("AAPL", i),
                historical_group=("AAPL", "SMART", "TRADES"),
            )
        await settle(p)
        assert len(sent) == 5
        await advance(clock, p, 2.5)
        assert len(sent) == 6 and sent[5] - t0 == pytest.approx(2.0)
    finally:
        await p.stop()


async def test_stop_cancels_queued(clock: ManualClock) -> None:
    p = Pacer(rate=1.0, burst=1, clock=clock)
    p.start()
    first = p.submit(Priority.ORDER, lambda: 1)
    second = p.submit(Priority.ORDER, lambda: 2)
    assert await first == 1
    await p.stop()
    assert second.cancelled()


async def test_real_clock_rate() -> None:
    p = Pacer(rate=200.0, burst=1)
    p.start()
    try:
        start = time.monotonic()
        futs = [p.submit(Priority.ORDER, lambda: None) for _ in range(21)]
        await asyncio.wait_for(asyncio.gather(*futs), timeout=5.0)
        elapsed = time.monotonic() - start
        assert elapsed >= 20 / 200.0 * 0.9  # 20 after the first, 5 ms apart
        assert p.sent == 21 and p.max_wait > 0
    finally:
        await p.stop()


def test_bad_settings() -> None:
    with pytest.raises(ValueError, match="rate"):
        Pacer(rate=0)
    with pytest.raises(ValueError, match="burst"):
        Pacer(burst=0)


async def test_call_paces_a_coroutine_request(clock: ManualClock, pacer: Pacer) -> None:
    started: list[float] = []

    async def request(n: int) -> int:
        started.append(clock.now())
        await asyncio.sleep(0)
        return n * 2

    key = ("AAPL", "1 D")
    first = asyncio.ensure_future(
        pacer.call(Priority.QUERY, lambda: request(1), historical_key=key)
    )
    second = asyncio.ensure_future(
        pacer.call(Priority.QUERY, lambda: request(2), historical_key=key)
    )
    assert await first == 2
    await settle(pacer)
    assert len(started) == 1 and not second.done()  # identical request: waits 15 s
    await advance(clock, pacer, 15.0)
    assert await second == 4 and started[1] - started[0] == pytest.approx(15.0)


async def test_an_idle_pacer_sends_at_once(clock: ManualClock, pacer: Pacer) -> None:
    sent: list[int] = []
    fut = pacer.submit(Priority.SUBSCRIPTION, partial(sent.append, 1))
    assert sent == [1] and fut.done()  # sent before submit returned: no added latency
    for i in range(2, 9):
        pacer.submit(Priority.ORDER, partial(sent.append, i))
    assert sent == [1, 2, 3, 4, 5]  # the burst; the rest wait for the budget, in order
    await advance(clock, pacer, 0.1)
    assert sent == list(range(1, 9))
