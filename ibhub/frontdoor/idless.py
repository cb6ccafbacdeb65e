"""Requests that carry no request id, passed through and shared; news bulletins.

``reqNewsProviders``, ``reqScannerParameters``, ``reqFamilyCodes``, ``reqMarketRule``
and ``requestFA`` have no request id, and their reply names none either (a market
rule and FA data name their rule id / data type). The clients wait for **the reply
itself**: ib_insync and ib_async keep a future under a fixed key
(``'newsProviders'``, ``'scannerParams'``, ``f'marketRule-{id}'``, ``'requestFA'``)
that only the reply ends, and an ibapi script waits for its wrapper callback. An
error cannot end them (it would arrive on id -1), so "refused" is not an option:
the front door always gets the script its reply.

How: the request goes upstream once (on the hub's session, through ib_insync's
throttle) and every script asking for the same thing while it is in flight waits
on that one request; the reply (taken off the upstream socket by
:meth:`Upstream.add_tap` before ib_insync sees it) is written to each of them
unchanged. A reply nobody here waits for goes on to ib_insync (the hub's own
request). When the hub has no Gateway session the script gets ``504`` on -1 and
then the empty reply (no providers, no rule increments ...), so its request ends
at once instead of never; a waiter whose reply does not come within
:data:`REPLY_WAIT` seconds (the Gateway ignored it) is answered the same way.

News bulletins (``reqNewsBulletins`` / ``cancelNewsBulletins``, no id either) come
from the hub's one upstream subscription (:mod:`ibhub.hub.bulletins`, which also
publishes them to SDK scripts on ``news.bulletin``): the front door follows that
topic in-process and writes each bulletin to the scripts that asked for them. It
keeps the bulletins it saw (at most :data:`BULLETINS_KEPT`) so a script subscribing
with ``allMessages=1`` gets the day's earlier ones, as from a Gateway, and later
ones as they come.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from ibhub.frontdoor.requests import NOT_CONNECTED, request_name
from ibhub.frontdoor.session import DownstreamSession, Handler
from ibhub.protocol import NewsBulletin

if TYPE_CHECKING:
    from ibhub.frontdoor.server import FrontDoor

log = logging.getLogger(__name__)

_LEN = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class IdlessKind:
    """One id-less request: its reply's message id, where the key sits in the request
    and in the reply (None: one key for all), and the empty reply that ends it."""

    reply: int
    request_key: int | None
    reply_key: int | None
    empty: Callable[[str], list[object]]


#: request msg id -> how its reply is recognised and what ends it when none comes.
KINDS: Final[dict[int, IdlessKind]] = {
    85: IdlessKind(85, None, None, lambda key: [85, 0]),  # newsProviders: n, (code, name)*
    24: IdlessKind(19, None, None, lambda key: [19, 1, ""]),  # scannerParameters: xml
    80: IdlessKind(78, None, None, lambda key: [78, 0]),  # familyCodes: n, (acct, code)*
    91: IdlessKind(93, 1, 1, lambda key: [93, key, 0]),  # marketRule: ruleId, n, (edge, inc)*
    18: IdlessKind(16, 2, 2, lambda key: [16, 1, key, ""]),  # receiveFA: faDataType, xml
}
#: seconds a script waits for an id-less reply before it is given the empty one
REPLY_WAIT: Final = 20.0
BULLETINS_KEPT: Final = 200


@dataclass(slots=True)
class _Waiting:
    sessions: list[DownstreamSession] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


class IdlessRequests:
    """The id-less requests and news bulletins of every downstream session."""

    def __init__(self, door: FrontDoor) -> None:
        self._door = door
        self.waiting: dict[tuple[int, str], _Waiting] = {}  # (request id, key) -> waiters
        self.bulletin_subscribers: set[DownstreamSession] = set()
        self.bulletins: collections.deque[bytes] = collections.deque(maxlen=BULLETINS_KEPT)

    def handlers(self) -> dict[int, Handler]:
        table: dict[int, Handler] = {m: self.request for m in KINDS}
        table[12] = self.subscribe_bulletins
        table[13] = self.cancel_bulletins
        return table

    # ------------------------------------------------------------------ upstream taps

    def install(self) -> None:
        up = self._door.hub.upstream
        if up is None:
            return
        for msg_id, kind in KINDS.items():
            up.add_tap(kind.reply, self._make_tap(msg_id, kind))

    def uninstall(self) -> None:
        up = self._door.hub.upstream
        for w in self.waiting.values():
            if w.timer is not None:
                w.timer.cancel()
        self.waiting.clear()
        if up is None:
            return
        for kind in KINDS.values():
            up.remove_tap(kind.reply)

    def _make_tap(self, msg_id: int, kind: IdlessKind) -> Callable[[list[bytes]], bool]:
        def tap(parts: list[bytes]) -> bool:
            key = ""
            if kind.reply_key is not None:
                if len(parts) <= kind.reply_key:
                    return False
                key = parts[kind.reply_key].decode("utf-8", "replace")
            waiting = self.waiting.pop((msg_id, key), None)
            if waiting is None:
                return False  # not ours: the hub's own request
            if waiting.timer is not None:
                waiting.timer.cancel()
            payload = b"\0".join(parts)
            data = _LEN.pack(len(payload)) + payload
            for s in waiting.sessions:
                s.write(data)
            return True

        return tap

    # ------------------------------------------------------------------ id-less requests

    def request(self, s: DownstreamSession, f: list[str]) -> None:
        msg_id = int(f[0])
        kind = KINDS[msg_id]
        key = ""
        if kind.request_key is not None:
            key = f[kind.request_key]
            int(key)  # a rule id / FA data type is a number; ValueError -> 321 naming it
        ib = self._ready_ib()
        if ib is None:
            s.send_error(-1, NOT_CONNECTED,
                         f"Not connected: the hub has no Gateway session right now, so "
                         f"{request_name(msg_id)} gets an empty answer; retry after 1102/1101")
            s.send_fields(kind.empty(key))
            return
        waiting = self.waiting.get((msg_id, key))
        if waiting is not None:  # the same question is already upstream: share its answer
            if s not in waiting.sessions:
                waiting.sessions.append(s)
            return
        waiting = _Waiting([s])
        self.waiting[(msg_id, key)] = waiting
        waiting.timer = asyncio.get_running_loop().call_later(
            REPLY_WAIT, self._overdue, msg_id, key)
        ib.client.sendMsg("\0".join(f) + "\0")

    def _overdue(self, msg_id: int, key: str) -> None:
        waiting = self.waiting.pop((msg_id, key), None)
        if waiting is None:
            return
        log.warning("front door: the Gateway did not answer %s within %gs; %d scripts get "
                    "an empty answer", request_name(msg_id), REPLY_WAIT, len(waiting.sessions))
        for s in waiting.sessions:
            s.send_error(-1, NOT_CONNECTED,
                         f"{request_name(msg_id)}: the Gateway did not answer within "
                         f"{REPLY_WAIT:g}s; an empty answer ends the request")
            s.send_fields(KINDS[msg_id].empty(key))

    def fail_all(self) -> None:
        """The upstream session is gone: every waiter gets 504 and the empty reply."""
        for (msg_id, key), waiting in list(self.waiting.items()):
            del self.waiting[(msg_id, key)]
            if waiting.timer is not None:
                waiting.timer.cancel()
            for s in waiting.sessions:
                s.send_error(-1, NOT_CONNECTED,
                             f"Not connected: the hub lost its Gateway session during this "
                             f"{request_name(msg_id)}; an empty answer ends it")
                s.send_fields(KINDS[msg_id].empty(key))

    def _ready_ib(self) -> Any:
        up = self._door.hub.upstream
        ib = up.ib if up is not None else None
        if up is None or ib is None or not up.connected or not ib.client.isReady():
            return None
        return ib

    # ------------------------------------------------------------------ news bulletins

    def subscribe_bulletins(self, s: DownstreamSession, f: list[str]) -> None:
        """[12, 1, allMessages]: this script gets bulletins (the kept ones first if all)."""
        self.bulletin_subscribers.add(s)
        if len(f) > 2 and f[2] == "1":
            for data in self.bulletins:
                s.write(data)

    def cancel_bulletins(self, s: DownstreamSession, f: list[str]) -> None:
        self.bulletin_subscribers.discard(s)

    def release_all(self, s: DownstreamSession) -> None:
        for w in self.waiting.values():
            if s in w.sessions:
                w.sessions.remove(s)
        self.bulletin_subscribers.discard(s)

    def on_bulletin(self, event: NewsBulletin) -> None:
        """A bulletin the hub published (``news.bulletin``): to every subscribed script."""
        payload = "\0".join(("14", "1", str(event.msg_id), str(event.msg_type),
                             event.message, event.exchange, "")).encode()
        data = _LEN.pack(len(payload)) + payload
        self.bulletins.append(data)
        for s in self.bulletin_subscribers:
            s.write(data)
