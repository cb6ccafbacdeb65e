"""Market depth in the hub: one shared book per instrument.

The upstream session (:mod:`ibhub.ib.session`) opens ONE SMART depth subscription
(``reqMktDepth`` with ``isSmartDepth=1``, ``HubSettings.depth_rows`` rows) per
instrument however many scripts watch it; the lines are ref-counted by a
:class:`~ibhub.hub.subscriptions.SubscriptionRegistry` of their own whose budget is
``HubSettings.depth_max`` (IB gives an account 3 depth subscriptions by default and
answers error 309 beyond them; the hub refuses the 4th instrument itself, before IB
does, with ``line_limit``).

:class:`DepthStream` is the line's sink. Each row operation the Gateway sends
(``updateMktDepth`` 12 / ``updateMktDepthL2`` 13: insert, update or delete at a
position) is applied to the book; after the Gateway read that carried it the stream
publishes the whole book as one :class:`~ibhub.protocol.DepthBook` on
``depth.<instrument>`` (one message per instrument per read, like ticks) and shows it
to its taps (the TWS front door, which re-encodes each script's own rows). A whole
book rather than row operations: the topic's last value is then a complete book for a
late joiner, and a lost message loses nothing (the next book replaces it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Final

from ibhub.hub.line_stream import LineStream
from ibhub.protocol import DepthBook, DepthLevel
from ibhub.wire import Publisher, encode

__all__ = ["DELETE", "INSERT", "UPDATE", "DepthStream"]

log = logging.getLogger(__name__)

INSERT: Final = 0
UPDATE: Final = 1
DELETE: Final = 2
ASK: Final = 0  # IB's side numbers
BID: Final = 1

Row = tuple[float, float, str]  # price, size, market maker


class DepthStream(LineStream):
    """One instrument's depth book; the upstream line's sink (``Upstream._sinks``)."""

    __slots__ = ("_dirty", "_pending", "asks", "bad_rows", "bids", "rows")

    def __init__(self, topic: Any, con_id: int, symbol: str, publisher: Publisher,
                 dirty: Callable[[DepthStream], None], rows: int) -> None:
        # ticks: row operations applied; taps: the front door's readers of this book,
        # each called with (bids, asks) after every read that changed it
        super().__init__(topic, con_id, symbol, publisher)
        self._dirty = dirty  # called with self when the first row of a read changed
        self._pending = False
        self.rows = rows
        self.bids: list[Row] = []
        self.asks: list[Row] = []
        self.bad_rows = 0

    def row(self, position: int, market_maker: str, operation: int, side: int,
            price: float, size: float) -> None:
        """Apply one upstream row operation (IB: 0 insert, 1 update, 2 delete)."""
        book = self.bids if side == BID else self.asks
        if side not in (BID, ASK) or position < 0:
            self._bad(position, operation, side)
            return
        if operation == INSERT and position <= len(book):
            book.insert(position, (price, size, market_maker))
            del book[self.rows:]
        elif operation == UPDATE and position < len(book):
            book[position] = (price, size, market_maker)
        elif operation == UPDATE and position == len(book):
            book.append((price, size, market_maker))  # IB may "update" the next empty row
        elif operation == DELETE and position < len(book):
            del book[position]
        else:
            self._bad(position, operation, side)
            return
        self.ticks += 1
        if not self._pending:
            self._pending = True
            self._dirty(self)

    def _bad(self, position: int, operation: int, side: int) -> None:
        self.bad_rows += 1
        if self.bad_rows <= 10:
            log.warning("%s: depth operation %d at position %d side %d does not fit a book "
                        "of %d bids / %d asks; ignored", self.topic, operation, position, side,
                        len(self.bids), len(self.asks))

    def reset(self) -> None:
        """The upstream line was (re)requested: the Gateway sends the book again."""
        self.bids.clear()
        self.asks.clear()

    def event(self) -> DepthBook:
        return DepthBook(self._topic.seq, self.last_ts, self.con_id, self.symbol,
                         [DepthLevel(*r) for r in self.bids],
                         [DepthLevel(*r) for r in self.asks])

    def flush(self) -> None:
        """Publish the book (the read that changed it is over) and show it to the taps."""
        self._pending = False
        topic = self._topic
        topic.seq += 1
        self.last_ts = time.time_ns()
        payload = encode(self.event())
        topic.last = payload
        self._publish(topic.key, payload)
        for tap in self.taps:
            tap.book(self.bids, self.asks)
