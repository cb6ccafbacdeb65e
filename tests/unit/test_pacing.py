"""Pacer: budget, priorities and IB's historical pacing, on a manual clock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from functools import partial

import pytest

from ibhub.tws.pacing import HistoricalRules, ManualClock, Pacer, PacerBusy, Priority
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


# ----------------------------------------------------------------- keys, withdraw, bounds


async def use_burst(p: Pacer, sent: list[str]) -> None:
    for i in range(int(p.burst)):
        p.submit(Priority.SUBSCRIPTION, partial(sent.append, f"burst{i}"))
    await settle(p)
    assert len(sent) == int(p.burst) and p.queued == 0


async def test_same_key_goes_in_submission_order_across_priorities(
    clock: ManualClock, pacer: Pacer
) -> None:
    sent: list[str] = []
    await use_burst(pacer, sent)
    pacer.submit(Priority.ORDER, lambda: sent.append("place 7"), key=7)
    pacer.submit(Priority.CANCEL, lambda: sent.append("cancel 7"), key=7)
    pacer.submit(Priority.CANCEL, lambda: sent.append("cancel 8"), key=8)
    pacer.submit(Priority.ORDER, lambda: sent.append("place 9"), key=9)
    await advance(clock, pacer, 1.0)
    # the cancel of 8 jumps the queue; the cancel of 7 never overtakes the placement of 7
    assert sent[5:] == ["cancel 8", "place 7", "cancel 7", "place 9"]


async def test_withdrawn_item_is_never_sent_and_frees_its_key(
    clock: ManualClock, pacer: Pacer
) -> None:
    sent: list[str] = []
    await use_burst(pacer, sent)
    place = pacer.submit(Priority.ORDER, lambda: sent.append("place 7"), key=7, owner="a")
    cancel = pacer.submit(Priority.CANCEL, lambda: sent.append("cancel 7"), key=7, owner="a")
    assert pacer.depth() == {"cancel": 1, "order": 1, "subscription": 0, "query": 0}
    assert pacer.expected_delay(Priority.ORDER) > 0
    assert pacer.withdraw(place) and place.cancelled()
    assert not pacer.withdraw(place)  # only once
    assert pacer.depth()["order"] == 0 and pacer.withdrawn == 1
    await advance(clock, pacer, 1.0)
    assert sent[5:] == ["cancel 7"] and cancel.done()
    assert not pacer.withdraw(cancel)  # already sent
    assert pacer.snapshot()["queued"] == 0 and pacer.expected_delay(Priority.ORDER) == 0.0


async def test_expected_delay_and_the_delay_limit(clock: ManualClock, pacer: Pacer) -> None:
    sent: list[str] = []
    await use_burst(pacer, sent)
    assert pacer.expected_delay(Priority.ORDER) == pytest.approx(1 / 40)  # a token away
    for i in range(79):
        pacer.submit(Priority.ORDER, partial(sent.append, f"o{i}"))
    for i in range(30):  # below orders: not ahead of a new order
        pacer.submit(Priority.QUERY, partial(sent.append, f"q{i}"))
    assert pacer.expected_delay(Priority.ORDER) == pytest.approx(80 / 40)
    assert pacer.expected_delay(Priority.QUERY) == pytest.approx(110 / 40)
    pacer.check(Priority.ORDER, max_delay=2.0)  # exactly at the limit: fits
    pacer.submit(Priority.ORDER, lambda: sent.append("o79"))
    with pytest.raises(PacerBusy) as err:
        pacer.check(Priority.ORDER, max_delay=2.0)
    assert err.value.expected_delay == pytest.approx(81 / 40) and err.value.limit == 2.0
    assert "2.02s" in str(err.value) and "max_order_delay=2s" in str(err.value)
    pacer.check(Priority.CANCEL, max_delay=0.0)  # cancels always fit
    assert pacer.refused == 1 and pacer.recent_refusals() == 1
    await advance(clock, pacer, 0.5)  # 20 sent: the estimate follows
    assert pacer.expected_delay(Priority.ORDER) == pytest.approx(61 / 40)
    await advance(clock, pacer, 61.0)
    assert pacer.recent_refusals() == 0 and pacer.refused == 1  # the window moved on


async def test_reservations_count_as_queued(clock: ManualClock, pacer: Pacer) -> None:
    sent: list[str] = []
    await use_burst(pacer, sent)
    held = [pacer.reserve(Priority.ORDER, owner="a", max_delay=2.0) for _ in range(79)]
    assert pacer.queued == 0 and pacer.snapshot()["reserved"] == 79
    with pytest.raises(PacerBusy):  # the 80th fits, the 81st does not
        pacer.reserve(Priority.ORDER, cost=2, owner="b", max_delay=2.0)
    last = pacer.reserve(Priority.ORDER, owner="b", max_delay=2.0)
    for r in held[:40]:
        r.release()
    held[0].release()  # twice is harmless
    assert pacer.snapshot()["reserved"] == 40
    fut = pacer.submit(Priority.ORDER, lambda: sent.append("b"), reservation=last)
    assert pacer.queued == 1 and pacer.snapshot()["reserved"] == 39
    assert pacer.expected_delay(Priority.ORDER) == pytest.approx((39 + 1 + 1) / 40)
    for r in held[40:]:
        r.release()
    await advance(clock, pacer, 0.1)
    assert fut.done() and sent[-1] == "b"
    assert pacer.snapshot()["reserved"] == 0 and pacer.expected_delay(Priority.ORDER) == 0.0


async def test_bounds_overall_and_per_owner(clock: ManualClock) -> None:
    p = Pacer(rate=10.0, burst=1, clock=clock, max_queue=4, max_queue_per_owner=2)
    p.start()
    try:
        sent: list[str] = []
        p.submit(Priority.ORDER, lambda: sent.append("first"))  # the burst: goes at once
        p.submit(Priority.ORDER, lambda: sent.append("a1"), owner="a", bounded=True)
        p.reserve(Priority.ORDER, owner="a")
        with pytest.raises(PacerBusy, match="pacer_queue_per_lease=2"):
            p.submit(Priority.ORDER, lambda: sent.append("a3"), owner="a", bounded=True)
        p.submit(Priority.SUBSCRIPTION, lambda: sent.append("s1"), bounded=True)
        p.submit(Priority.QUERY, lambda: sent.append("q1"), bounded=True)
        with pytest.raises(PacerBusy, match="pacer_queue_max=4"):
            p.check(Priority.QUERY)
        # the hub's own sends and cancels queue whatever the bounds
        p.submit(Priority.SUBSCRIPTION, lambda: sent.append("resubscribe"))
        p.submit(Priority.CANCEL, lambda: sent.append("cancel"), owner="a", bounded=True)
        assert p.queued == 5 and p.refused == 2
        await advance(clock, p, 1.0)
        assert sent == ["first", "cancel", "a1", "s1", "resubscribe", "q1"]
    finally:
        await p.stop()


async def test_a_caller_that_gives_up_frees_its_room(clock: ManualClock, pacer: Pacer) -> None:
    sent: list[str] = []
    await use_burst(pacer, sent)
    fut = pacer.submit(Priority.ORDER, lambda: sent.append("gone"), key=1, owner="a")
    later = pacer.submit(Priority.ORDER, lambda: sent.append("kept"), key=1, owner="a")
    fut.cancel()
    await asyncio.sleep(0)  # the done-callback runs on the loop
    assert pacer.queued == 1 and pacer.snapshot()["queue"]["order"] == 1
    await advance(clock, pacer, 0.1)
    assert later.done() and sent[-1] == "kept" and "gone" not in sent


def test_bad_bounds() -> None:
    with pytest.raises(ValueError, match="max_queue"):
        Pacer(max_queue=0)
    with pytest.raises(ValueError, match="max_queue_per_owner"):
        Pacer(max_queue_per_owner=0)


def named(sent: list[tuple[float, str]], clock: ManualClock, name: str) -> None:
    sent.append((clock.now(), name))


async def test_new_lines_batch_within_the_window(clock: ManualClock) -> None:
    """Issue 15: new market-data lines go as a batch on the window's room (not one per
    25 ms), lookups into half of it; orders keep their reserve; no 1-second window ever
    holds more than ``window`` messages."""
    p = Pacer(rate=40.0, burst=5, clock=clock, window=35, batch_reserve=5)
    p.start()
    try:
        sent: list[tuple[float, str]] = []
        for i in range(20):
            p.submit(Priority.QUERY, partial(named, sent, clock, f"q{i}"))
        await settle(p)
        assert len(sent) == 15  # 5 on the bucket + 10 batched: half of 35 - 5
        for i in range(30):
            p.submit(Priority.SUBSCRIPTION, partial(named, sent, clock, f"l{i}"))
        await settle(p)
        lines = [n for _, n in sent if n.startswith("l")]
        assert len(lines) == 15  # the batch room (30) is full: 15 lookups + 15 lines
        order = p.submit(Priority.ORDER, partial(named, sent, clock, "order"))
        await settle(p)
        assert not order.done()  # the bucket is empty and orders never batch ...
        await advance(clock, p, 0.03)
        assert order.done()  # ... but get the next token, ahead of the lines
        await advance(clock, p, 3.0)
        assert len(sent) == 51 and p.batched >= 25
        times = [t for t, _ in sent]
        for start in times:
            assert sum(1 for t in times if start <= t < start + 1.0) <= 35
    finally:
        await p.stop()
