"""What every upstream line's stream has in common (bars, depth books, tick-by-tick,
keepUpToDate bars): its fan-out topic, the publisher, the instrument, the counters the
status shows, and the front door's taps. :class:`ibhub.hub.fanout.TickStream` keeps its
own, flatter layout: it is the hot path."""

from __future__ import annotations

from typing import Any

from ibhub.wire import Publisher


class LineStream:
    """The common part of a line's stream; subclasses add how they publish."""

    __slots__ = ("_publish", "_topic", "con_id", "last_ts", "symbol", "taps", "ticks")

    def __init__(self, topic: Any, con_id: int, symbol: str, publisher: Publisher) -> None:
        self._topic = topic  # fanout.Topic: seq, last value, key
        self._publish = publisher.publish
        self.con_id = con_id
        self.symbol = symbol
        self.ticks = 0  # upstream messages applied (status: SubscriptionInfo.ticks)
        self.last_ts = 0
        # The front door's readers of this line, called with what each message carried;
        # () costs one empty loop.
        self.taps: tuple[Any, ...] = ()

    @property
    def topic(self) -> str:
        return self._topic.name
