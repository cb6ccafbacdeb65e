"""Historical bars kept up to date, shared: one upstream keepUpToDate request per
instrument, bar size and whatToShow (``kind="hist.<bar size>.<WHAT>"``).

IB's ``reqHistoricalData(keepUpToDate=True)`` answers the requested history and then
sends historicalDataUpdate (90) for the current bar, about every few seconds, until it
is cancelled. The history is each script's own (its duration, its end); the updates
are the same for everyone who watches the same bars. So the hub shares the updates:
the line asks the Gateway for the shortest history that starts the stream
(``ib.session.hist_duration``), drops that history (historicalData, 17) and publishes every
update as a :class:`~ibhub.protocol.Bar` on ``hbar.<size>.<what>.<instrument>``
(``hbar.1min.trades.AAPL``; ``time`` is the bar's start, ``count`` IB's bar count). A
script gets its history with ``historical_bars`` (one-shot, paced) and the updates with
``subscribe(..., kind="hist.1 min.TRADES")``; subscribing first loses nothing in between.
"""

from __future__ import annotations

import datetime as dt
import time

from ibhub.hub.line_stream import LineStream
from ibhub.protocol import Bar
from ibhub.wire import encode

__all__ = ["HistUpdateStream", "parse_kind"]

def parse_kind(kind: str) -> tuple[str, str]:
    """"hist.1 min.TRADES" -> ("1 min", "TRADES")."""
    size, _, what = kind[5:].rpartition(".")
    return size, what


def _bar_time(text: str) -> int:
    """formatDate=2 gives epoch seconds for intraday bars; daily bars are YYYYMMDD."""
    if len(text) == 8 and text.isdigit() and not text.startswith("1"):
        day = dt.datetime.strptime(text, "%Y%m%d").replace(tzinfo=dt.UTC)
        return int(day.timestamp())
    return int(text)


class HistUpdateStream(LineStream):
    """One shared keepUpToDate line: the upstream session calls :meth:`update`."""

    __slots__ = ()

    def update(self, f: list[bytes]) -> None:
        """[90, reqId, barCount, date, open, close, high, low, WAP, volume]."""
        topic = self._topic
        topic.seq += 1
        ts = time.time_ns()
        bar = Bar(topic.seq, ts, self.con_id, self.symbol, _bar_time(f[3].decode()),
                  float(f[4]), float(f[6]), float(f[7]), float(f[5]), float(f[9] or 0),
                  float(f[8] or 0), int(f[2] or 0))
        self.ticks += 1
        self.last_ts = ts
        payload = encode(bar)
        topic.last = payload
        self._publish(topic.key, payload)
