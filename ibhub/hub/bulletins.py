"""IB news bulletins as hub events: one upstream subscription for every script.

IB's news bulletins (exchange notices: "exchange unavailable", "available again",
regular messages) are rare and concern everyone, so the hub subscribes to them on
every upstream session (``reqNewsBulletins(allMessages=1)``, at connect; the Gateway
answers with the day's bulletins, then new ones) and publishes each as a
:class:`~ibhub.protocol.NewsBulletin` on ``news.bulletin``: SDK scripts get them with
``hub.add_bulletin_handler(fn)``, TWS scripts through the front door's
``reqNewsBulletins`` (it follows this topic in-process). A bulletin already
published (same id: the replay after a reconnect) is not published again.

The replies are taken off the upstream socket by ``Upstream.add_tap`` (message 14),
so ib_insync never sees them. Decision: subscribing unconditionally costs
nothing (no market-data line, a few messages a day) and lets late scripts see the
day's bulletins from the hub without a request of their own.
"""

from __future__ import annotations

import collections
import logging
from typing import Any, Final

from ibhub.protocol import TOPIC_NEWS_BULLETIN, NewsBulletin

log = logging.getLogger(__name__)

BULLETIN_MSG: Final = 14  # updateNewsBulletin: 14, 1, msgId, msgType, message, origExchange
SEEN_MAX: Final = 1000  # bulletin ids remembered for de-duplication


class NewsBulletins:
    """A hub service (``HubServer.add_service``); see the module docstring."""

    def __init__(self, hub: Any) -> None:
        self.hub = hub
        self.published = 0
        self._seen: collections.OrderedDict[int, None] = collections.OrderedDict()
        self._tapped: Any = None  # the Upstream whose socket the tap sits on
        self._session: float | None = None  # Upstream.connected_at of the subscription

    def on_connected(self, port: int, accounts: list[str]) -> None:
        up = self.hub.upstream
        ib = up.ib if up is not None else None
        if up is None or ib is None or up.connected_at == self._session:
            return  # no session, or this session is subscribed already
        self._session = up.connected_at
        if self._tapped is not up:
            up.add_tap(BULLETIN_MSG, self._on_bulletin)
            self._tapped = up
        ib.client.sendMsg("12\x001\x001\x00")  # reqNewsBulletins(allMessages=True)
        log.debug("subscribed to IB news bulletins")

    async def stop(self) -> None:
        if self._tapped is not None:
            self._tapped.remove_tap(BULLETIN_MSG)
            self._tapped = None

    def _on_bulletin(self, parts: list[bytes]) -> bool:
        try:
            msg_id, msg_type = int(parts[2]), int(parts[3])
            message = parts[4].decode("utf-8", "replace")
            exchange = parts[5].decode("utf-8", "replace") if len(parts) > 5 else ""
        except (IndexError, ValueError):
            log.warning("dropped a malformed news bulletin %r", parts[:6])
            return True
        if msg_id in self._seen:
            return True  # the day's replay after a reconnect
        self._seen[msg_id] = None
        if len(self._seen) > SEEN_MAX:
            self._seen.popitem(last=False)
        self.published += 1
        log.info("IB news bulletin %d (type %d, %s): %s", msg_id, msg_type, exchange or "-",
                 message)
        self.hub.fanout.emit(TOPIC_NEWS_BULLETIN,
                             NewsBulletin(0, 0, msg_id, msg_type, message, exchange))
        return True
