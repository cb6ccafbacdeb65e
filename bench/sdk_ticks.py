#!/usr/bin/env python3
"""Micro-benchmark of the SDK's tick path per hub message, in one process.

Not a test. What a subscriber does with one ``bundle.tick`` message once it has read it
(``bench/fanout.py`` at 10k ticks/s: one per Gateway read, 41 instruments, ~108 ticks):
the lazy envelope already decoded, then ``TopicTable.on_event`` -> each held message
decoded, its sequence checked, its ticks delivered to a callback that only counts
(``subscribe``: one call per tick; ``subscribe_batches``: one per instrument per
message). Prints the median and best of 5 x 400 messages in us per message (wall clock,
warm caches: a running subscriber pays more per message, cold, and for its wake-up).
Compare trees with ``PYTHONPATH=<tree> python bench/sdk_ticks.py``.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from ibhub import wire
from ibhub.client.batch import BatchSubscription
from ibhub.client.bundle import decode_bundle
from ibhub.client.subscription import Subscription
from ibhub.client.topics import TopicTable
from ibhub.protocol import TOPIC_BUNDLE, Bundle, ContractInfo, ContractSpec, Tick, Ticks

INSTRUMENTS = 41
MESSAGES = 400
REPEATS = 5
INFO = ContractInfo(1, "X", "STK", "SMART", "NASDAQ", "USD", "X", "NMS", "", 0.0, "", "",
                    0.01, "X")


class NoStream:
    """The SUB socket's subscribe calls, which this benchmark does not need."""

    def subscribe(self, topic: str) -> None:
        pass

    def unsubscribe(self, topic: str) -> None:
        pass


def _spawn(coro: Any, name: str) -> None:
    raise AssertionError("the benchmark's callbacks are plain functions")


def table(batches: bool) -> tuple[TopicTable, list[int]]:
    """A table holding every instrument with one subscription each, its sequence started."""
    t = TopicTable(NoStream(), None, _spawn, lambda s: None, lambda e: None,  # type: ignore[arg-type]
                   bundle=True)
    calls = [0]

    def count(_: Any) -> None:
        calls[0] += 1

    cls = BatchSubscription if batches else Subscription
    for i in range(INSTRUMENTS):
        topic = f"tick.S{i}"
        entry = t.add(topic, ContractSpec(con_id=i), "ticks")
        entry.subs.append(cls(topic, INFO, ContractSpec(con_id=i), "ticks", count,
                              spawn=_spawn, gaps=lambda _: 0, unsubscribe=None))  # type: ignore[arg-type]
        entry.sequencer.last = 0
    return t, calls


def bundles(n: int) -> list[bytes]:
    """``n`` consecutive bundles: 3 ticks for 26 instruments, 2 for 15 (108 a message)."""
    now = time.time_ns()
    seqs = [0] * INSTRUMENTS
    out = []
    for r in range(n):
        messages: list[tuple[str, Tick | Ticks]] = []
        for i in range(INSTRUMENTS):
            ticks = []
            for _ in range(3 if (r + i) % INSTRUMENTS < 26 else 2):
                seqs[i] += 1
                ticks.append(Tick(seq=seqs[i], ts=now, con_id=i, symbol=f"S{i}", bid=1.0,
                                  ask=2.0, last=1.5, bid_size=1.0, ask_size=1.0, last_size=1.0,
                                  volume=1.0))
            messages.append((f"tick.S{i}", Ticks(seq=ticks[0].seq, ts=now, ticks=ticks)))
        out.append(wire.encode(Bundle(seq=r + 1, ts=now, messages=messages)))
    return out


def main() -> None:
    raw = bundles(MESSAGES)
    for batches in (False, True):
        per_message = []
        for _ in range(REPEATS):
            t, calls = table(batches)
            events = [decode_bundle(b) for b in raw]
            start = time.perf_counter()
            for event in events:
                t.on_event(TOPIC_BUNDLE, event)
            per_message.append((time.perf_counter() - start) / MESSAGES * 1e6)
        label = "subscribe_batches" if batches else "subscribe"
        print(f"{label:17} per message: median {statistics.median(per_message):6.1f} us  "
              f"best {min(per_message):6.1f} us  ({calls[0] // MESSAGES} callbacks a message)")


if __name__ == "__main__":
    main()
