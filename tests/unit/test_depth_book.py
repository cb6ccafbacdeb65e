"""DepthStream (hub/depth.py): IB's row operations applied to a book, one published
DepthBook per read, and the front door's per-script diff (frontdoor/depth.py)."""

from __future__ import annotations

from typing import Any

import msgspec

from ibhub.frontdoor.depth import DepthTap
from ibhub.hub.depth import ASK, BID, DELETE, INSERT, UPDATE, DepthStream
from ibhub.hub.fanout import Topic
from ibhub.protocol import DepthBook


class FakePublisher:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes]] = []

    def publish(self, topic: bytes, payload: bytes) -> None:
        self.sent.append((topic, payload))


class FakeSession:
    closed = False
    paused = False

    def __init__(self) -> None:
        self.msgs: list[tuple[Any, ...]] = []

    def send(self, *fields: Any) -> None:
        self.msgs.append(fields)


def test_row_operations_and_one_book_per_read() -> None:
    pub, dirty = FakePublisher(), list[DepthStream]()
    book = DepthStream(Topic("depth.AAPL"), 1, "AAPL", pub, dirty.append, rows=3)  # type: ignore[arg-type]
    book.row(0, "ARCA", INSERT, BID, 10.0, 100)
    book.row(1, "IEX", INSERT, BID, 9.9, 200)
    book.row(0, "ARCA", INSERT, ASK, 10.1, 300)
    assert dirty == [book]  # marked once per read
    book.flush()
    [(topic, payload)] = pub.sent
    ev = msgspec.msgpack.decode(payload, type=DepthBook)
    assert topic == b"depth.AAPL" and ev.seq == 1
    assert [(lv.price, lv.size, lv.market_maker) for lv in ev.bids] == [
        (10.0, 100, "ARCA"), (9.9, 200, "IEX")]
    book.row(0, "NASDAQ", INSERT, BID, 10.01, 50)  # pushes the others down
    book.row(0, "NASDAQ", INSERT, BID, 10.02, 50)  # 4 rows: the worst falls off (rows=3)
    book.row(1, "NASDAQ", UPDATE, BID, 10.01, 70)
    book.row(0, "ARCA", DELETE, ASK, 0, 0)
    book.row(5, "ARCA", UPDATE, ASK, 1, 1)  # does not fit: ignored, counted
    assert [r[0] for r in book.bids] == [10.02, 10.01, 10.0] and book.asks == []
    assert book.bad_rows == 1 and dirty == [book, book]


def test_front_door_tap_sends_only_the_difference() -> None:
    s = FakeSession()
    tap = DepthTap(s, 7, rows=2, smart=False)  # type: ignore[arg-type]
    tap.book([(10.0, 1, "A"), (9.9, 2, "B"), (9.8, 3, "C")], [(10.1, 4, "A")])
    assert s.msgs == [(12, 1, 7, 0, 0, 1, 10.0, 1), (12, 1, 7, 1, 0, 1, 9.9, 2),
                      (12, 1, 7, 0, 0, 0, 10.1, 4)]
    s.msgs.clear()
    tap.book([(10.0, 5, "A")], [(10.1, 4, "A")])
    assert s.msgs == [(12, 1, 7, 0, 1, 1, 10.0, 5), (12, 1, 7, 1, 2, 1, 9.9, 2)]
    smart = DepthTap(s, 8, rows=1, smart=True)  # type: ignore[arg-type]
    s.msgs.clear()
    smart.book([(10.0, 5, "ARCA")], [])
    assert s.msgs == [(13, 1, 8, 0, "ARCA", 0, 1, 10.0, 5, 1)]
