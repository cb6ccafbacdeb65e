"""Requests passed through to the Gateway with their request ids remapped.

Contract details, historical bars (also ``keepUpToDate``), head timestamps,
tick-by-tick data, matching symbols, option parameters, option calculations (implied
volatility, option price), historical ticks,
histograms, fundamentals, SMART components and PnL are not shared
state: each is one request and its replies. The front
door sends the downstream request's own bytes upstream on the hub's session
with a fresh id from the hub's counter (ib_insync's ``getReqId``, the one the
hub's own requests and orders use, so ids never collide) and through ib_insync's
throttle, and sends every reply back with the downstream id put back. Both
sides speak server version 176, so the fields need no translation: everything
the Gateway says reaches the script unchanged.

Replies are taken off the upstream socket by :meth:`Upstream.add_tap` before
ib_insync sees them (ib_insync knows nothing of these ids). A route ends with its
end marker or a non-warning error; streaming ones (keepUpToDate, tick-by-tick)
with the script's cancel or its disconnect (the front door cancels upstream).
When the upstream session is lost every open route is failed with 504 on its
downstream id: a script waiting on a reply must not wait forever.

Nothing here outlives the upstream session it belongs to: routes are failed and
the retired ids forgotten when the session changes (a late reply can only come
on the socket its request went out on). The ids themselves never repeat within
the hub process (``Upstream._unique_req_ids``), so an id retired in one session
can never be the hub's own request in the next.
"""

from __future__ import annotations

import collections
import logging
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from ibhub.frontdoor.learned import info_from_details
from ibhub.frontdoor.requests import NOT_CONNECTED, UNSUPPORTED, request_name, unsupported_text
from ibhub.frontdoor.session import DownstreamSession, Handler
from ibhub.tws.pacing import Priority

if TYPE_CHECKING:
    from ibhub.frontdoor.server import FrontDoor

log = logging.getLogger(__name__)

_LEN = struct.Struct(">I")

#: request msg id -> (index of its request id, streaming?); None = decided per request
REQUESTS: Final[dict[int, tuple[int, bool | None]]] = {
    9: (2, False),  # reqContractDetails -> contractDetails* (10), contractDetailsEnd (52)
    20: (1, None),  # reqHistoricalData -> historicalData (17) [+ updates (90) if keepUpToDate]
    87: (1, False),  # reqHeadTimeStamp -> headTimestamp (88)
    97: (1, True),  # reqTickByTickData with numberOfTicks / ignoreSize -> tickByTick (99)*
    81: (1, False),  # reqMatchingSymbols -> symbolSamples (79)
    78: (1, False),  # reqSecDefOptParams -> securityDefinitionOptionParameter (75)*, end (76)
    96: (1, False),  # reqHistoricalTicks -> historicalTicks* (96/97/98, last has done=1)
    88: (1, False),  # reqHistogramData -> histogramData (89)
    52: (2, False),  # reqFundamentalData -> fundamentalData (51)
    83: (1, False),  # reqSmartComponents -> smartComponents (82)
    92: (1, True),  # reqPnL -> pnl (94)*
    94: (1, True),  # reqPnLSingle -> pnlSingle (95)*
    # served by a Gateway, so passed through
    79: (1, False),  # reqSoftDollarTiers -> softDollarTiers (77)
    104: (1, False),  # reqUserInfo -> userInfo (107)
    22: (1, True),  # reqScannerSubscription -> scannerData (20)* until cancelled
    84: (1, False),  # reqNewsArticle -> newsArticle (83)
    86: (1, False),  # reqHistoricalNews -> historicalNews (86)*, historicalNewsEnd (87)
    # IB's option model -> one tickOptionComputation (21), kept until the script's cancel
    # (ib_insync and ib_async cancel once the answer came)
    54: (2, True),  # calculateImpliedVolatility
    55: (2, True),  # calculateOptionPrice
}
#: cancel msg id -> index of the request id it cancels
CANCELS: Final[dict[int, int]] = {25: 2, 98: 1, 90: 1, 89: 1, 53: 2, 93: 1, 95: 1, 23: 2,
                                  56: 2, 57: 2}
#: reply msg id -> (index of its request id, how it ends the route)
REPLIES: Final[dict[int, tuple[int, str]]] = {
    10: (1, ""),
    52: (2, "end"),
    17: (1, "hist"),  # ends unless keepUpToDate
    90: (1, ""),
    88: (1, "end"),
    99: (1, ""),
    79: (1, "end"),
    75: (1, ""),
    76: (1, "end"),
    96: (1, "done"),
    97: (1, "done"),
    98: (1, "done"),
    89: (1, "end"),
    51: (2, "end"),
    82: (1, "end"),
    94: (1, ""),
    95: (1, ""),
    77: (1, "end"),  # softDollarTiers
    107: (1, "end"),  # userInfo
    20: (2, ""),  # scannerData (one full scan per message; streams until cancelled)
    83: (1, "end"),  # newsArticle
    86: (1, ""),  # historicalNews
    87: (1, "end"),  # historicalNewsEnd
    21: (1, ""),  # tickOptionComputation of a calculation (a line's goes to its stream)
    4: (2, "error"),
}
RETIRED_MAX: Final = 4096
#: requests served on the hub's shared lines (frontdoor/tick_by_tick.py), which pass only
#: their unshareable variants through (request() / cancel() called from there)
SHARED: Final = frozenset({97, 98})
_WARNINGS: Final = frozenset({110, 165, 202, 399, 404, 434, 492, 10167})


@dataclass(slots=True)
class Route:
    session: DownstreamSession
    down_id: int
    msg_id: int
    streaming: bool
    upstream_session: float | None  # Upstream.connected_at when sent: its session


class Passthrough:
    def __init__(self, door: FrontDoor) -> None:
        self._door = door
        self.routes: dict[int, Route] = {}  # upstream id -> route
        # ids whose route ended: late replies (after a cancel) are dropped, not shown
        # to ib_insync, which would log them as unknown
        self._retired: collections.OrderedDict[int, None] = collections.OrderedDict()
        self._retired_session: float | None = None  # Upstream.connected_at they belong to

    def handlers(self) -> dict[int, Handler]:
        table: dict[int, Handler] = {m: self.request for m in REQUESTS if m not in SHARED}
        table.update({m: self.cancel for m in CANCELS if m not in SHARED})
        return table

    # ------------------------------------------------------------------ upstream taps

    def install(self) -> None:
        up = self._door.hub.upstream
        if up is None:
            return
        for msg_id, (index, ending) in REPLIES.items():
            up.add_tap(msg_id, self._make_tap(index, ending))

    def uninstall(self) -> None:
        up = self._door.hub.upstream
        if up is None:
            return
        for msg_id in REPLIES:
            up.remove_tap(msg_id)

    def _make_tap(self, index: int, ending: str) -> Any:
        routes, retired = self.routes, self._retired

        def tap(parts: list[bytes]) -> bool:
            try:
                up_id = int(parts[index])
            except (IndexError, ValueError):
                return False
            route = routes.get(up_id)
            if route is None:
                return up_id in retired
            if ending == "error":
                code = _int(parts[3]) if len(parts) > 3 else 0
                if not (code in _WARNINGS or 2100 <= code < 2200):
                    self._end(up_id)
            elif ending == "end" or (ending == "hist" and not route.streaming):
                self._end(up_id)
            elif ending == "done" and len(parts) >= 2 and parts[-2] == b"1":
                self._end(up_id)
            if parts[0] == b"10":  # contractDetails: the line request that follows needs
                info = info_from_details(parts)  # no second lookup (frontdoor/learned.py)
                if info is not None:
                    self._door.hub.market.remember(info)
            parts = list(parts)
            parts[index] = b"%d" % route.down_id
            payload = b"\0".join(parts)
            route.session.write(_LEN.pack(len(payload)) + payload)
            return True

        return tap

    def _end(self, up_id: int) -> Route | None:
        route = self.routes.pop(up_id, None)
        if route is not None:
            route.session.routes.pop(route.down_id, None)
            self._retired[up_id] = None
            if len(self._retired) > RETIRED_MAX:
                self._retired.popitem(last=False)
        return route

    # ------------------------------------------------------------------ downstream requests

    def request(self, s: DownstreamSession, f: list[str]) -> None:
        msg_id = int(f[0])
        index, streaming = REQUESTS[msg_id]
        down_id = int(f[index])
        up = self._door.hub.upstream
        ib = up.ib if up is not None else None
        if up is None or ib is None or not up.connected or not ib.client.isReady():
            s.send_error(down_id, NOT_CONNECTED,
                         f"Not connected: the hub has no Gateway session right now, so "
                         f"{request_name(msg_id)} cannot be served; retry after 1102/1101")
            return
        if up.server_version != 176:
            s.send_error(down_id, UNSUPPORTED, unsupported_text(
                msg_id, f"the Gateway speaks server version {up.server_version}, not 176"))
            return
        old = s.routes.get(down_id)
        if old is not None and old in self.routes:  # the id is reused: end the old route
            self._cancel_route(self.routes[old], old)
        if streaming is None:  # reqHistoricalData: keepUpToDate is the second-last field
            streaming = len(f) >= 2 and f[-2] == "1"
        up_id = ib.client.getReqId()
        fields = list(f)
        fields[index] = str(up_id)
        self.routes[up_id] = Route(s, down_id, msg_id, streaming, up.connected_at)
        s.routes[down_id] = up_id
        self._send(ib, "\0".join(fields) + "\0", Priority.QUERY, request_name(msg_id))

    def cancel(self, s: DownstreamSession, f: list[str]) -> None:
        down_id = int(f[CANCELS[int(f[0])]])
        up_id = s.routes.get(down_id)
        if up_id is None:
            return  # nothing open under that id (already ended): like the Gateway, quiet
        route = self.routes.get(up_id)
        if route is not None:
            self._cancel_route(route, up_id, f)

    def _cancel_route(self, route: Route, up_id: int | None = None,
                      f: list[str] | None = None) -> None:
        if up_id is None:
            up_id = route.session.routes.get(route.down_id)
            if up_id is None:
                return
        self._end(up_id)
        cancel = _cancel_fields(route.msg_id, up_id) if f is None else _remap(f, up_id)
        up = self._door.hub.upstream
        ib = up.ib if up is not None else None
        if cancel and ib is not None and ib.client.isReady():
            self._send(ib, "\0".join(cancel) + "\0", Priority.CANCEL, "pass-through cancel")

    def _send(self, ib: Any, msg: str, priority: Priority, label: str) -> None:
        """Through the hub's one upstream budget (ibhub.tws.pacing), behind the market-data
        lines: a script's first tick must not wait behind other scripts' lookups, and
        the budget must count every message (else ib_insync's own throttle stops
        everything for a second when the hub and the scripts together pass 45/s)."""
        pacer = self._door.hub.pacer
        if pacer is None:
            ib.client.sendMsg(msg)
            return

        def send() -> None:
            if ib.client.isReady():
                ib.client.sendMsg(msg)

        pacer.submit(priority, send, label=label).add_done_callback(_log_failure)

    def release_all(self, s: DownstreamSession) -> None:
        """The script went away: cancel its streaming requests upstream, forget the rest."""
        for up_id in list(s.routes.values()):
            route = self.routes.get(up_id)
            if route is None:
                continue
            if route.streaming:
                self._cancel_route(route, up_id)
            else:
                self._end(up_id)
        s.routes.clear()

    def drop_stale(self) -> None:
        """Fail every route whose upstream session is gone (504 on the script's id)."""
        up = self._door.hub.upstream
        current = up.connected_at if up is not None else None
        if current != self._retired_session:
            self._retired.clear()
            self._retired_session = current
        for up_id, route in list(self.routes.items()):
            if current is not None and route.upstream_session == current:
                continue
            self._end(up_id)
            route.session.send_error(
                route.down_id, NOT_CONNECTED,
                f"Not connected: the hub lost its Gateway session during this "
                f"{request_name(route.msg_id)}; request it again after 1101/1102")


def _log_failure(fut: Any) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.warning("pass-through send failed: %s", fut.exception())


def _int(b: bytes) -> int:
    try:
        return int(b)
    except ValueError:
        return 0


def _remap(f: list[str], up_id: int) -> list[str]:
    fields = list(f)
    fields[CANCELS[int(f[0])]] = str(up_id)
    return fields


def _cancel_fields(msg_id: int, up_id: int) -> list[str] | None:
    """The upstream cancel for a streaming route of request ``msg_id``."""
    if msg_id == 20:
        return ["25", "1", str(up_id)]
    if msg_id == 97:
        return ["98", str(up_id)]
    if msg_id == 10:
        return ["11", "1", str(up_id), "0"]
    if msg_id in (92, 94):
        return [str(msg_id + 1), str(up_id)]
    if msg_id == 22:
        return ["23", "1", str(up_id)]
    if msg_id in (54, 55):  # cancelCalculateImpliedVolatility / cancelCalculateOptionPrice
        return [str(msg_id + 2), "1", str(up_id)]
    return None
