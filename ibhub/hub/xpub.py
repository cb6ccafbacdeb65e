"""The hub's XPUB socket: which topics somebody subscribes to.

The hub publishes on an XPUB socket (it behaves as a PUB towards subscribers) so it
can read the subscriptions: a message ``\\x01<prefix>`` when the first subscriber
subscribes to a prefix, ``\\x00<prefix>`` when the last one unsubscribes or goes away
(``XPUB_VERBOSE`` off: libzmq counts the subscribers of a prefix itself). They feed an
:class:`~ibhub.wire.Interest`, which the fan-out's :class:`~ibhub.wire.Publisher`
asks before every publish: a topic nobody wants costs no encode of the bundle and no
``send()`` (docs/performance.md 8.6). Reconnecting subscribers re-send their
subscriptions (libzmq does), and a restarted hub starts from none and gets them again.

When a subscription counts. A PUB socket applied a subscription when it processed the
command that carried it (at a send or a poll); here the hub applies it when it reads it,
so it reads the socket promptly:

* on the loop, woken by the socket's edge-triggered ``ZMQ_FD``
  (:class:`~ibhub.wire.EdgeReader`), when nothing is being published;
* :meth:`XpubSubscriptions.sync` after the fan-out's sends (the end of every Gateway
  read, every rare event): a send processes the socket's commands and may take the FD's
  edge of a subscription that arrived meanwhile, so the edge would never come; ``sync``
  asks ``EVENTS`` (one call per read, ~0.5-1 us) and reads what waits;
* before a snapshot is taken (:meth:`ibhub.hub.fanout.Fanout.snapshot`): a subscriber
  that subscribed and then asked a snapshot gets every event after the snapshot once
  its subscription reached the hub (the zguide Clone pattern, as with PUB).

Anything else arriving on the socket (an XSUB peer may send any bytes) is counted in
:attr:`XpubSubscriptions.malformed` and ignored; the first few are logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final, cast

import zmq

from ibhub.wire import EdgeReader, Interest, drain

log = logging.getLogger(__name__)

SUBSCRIBE: Final = 1
UNSUBSCRIBE: Final = 0
DRAIN_BATCH: Final = 256  # subscription messages read per loop turn
LOGGED_MALFORMED: Final = 10


class XpubSubscriptions:
    """Reads an XPUB socket's subscription messages into an :class:`Interest`."""

    def __init__(self, socket: zmq.Socket[Any], interest: Interest | None = None) -> None:
        self.interest = interest if interest is not None else Interest()
        self.malformed = 0  # messages that were not a subscribe/unsubscribe
        self.subscribes = 0
        self.unsubscribes = 0
        self._reader = EdgeReader(socket, self._handle, batch=DRAIN_BATCH, name="hub xpub")
        get = getattr(zmq.backend.Socket, "get", None)  # skips pyzmq's option sugar
        plain = self._reader.plain
        self._get = cast(Callable[[int], int],
                         get.__get__(plain) if get is not None else plain.getsockopt)
        self._events = int(zmq.EVENTS)
        self._pollin = int(zmq.POLLIN)

    def start(self) -> None:
        """Read on the running loop (and now: what arrived before)."""
        self._reader.start()
        self.sync()

    async def stop(self) -> None:
        await self._reader.stop()

    def sync(self) -> None:
        """Apply every subscription message that reached the socket (never blocks)."""
        try:
            if not self._get(self._events) & self._pollin:
                return
            more = drain(self._reader.receive, self._handle, DRAIN_BATCH)
        except zmq.ZMQError:  # closed during shutdown
            return
        if more:
            self._reader.schedule()

    def _handle(self, frames: list[bytes]) -> None:
        message = frames[0]
        if len(frames) == 1 and message and message[0] <= SUBSCRIBE:
            prefix = message[1:]
            if message[0] == SUBSCRIBE:
                self.subscribes += 1
                self.interest.subscribe(prefix)
            else:
                self.unsubscribes += 1
                self.interest.unsubscribe(prefix)
            return
        self.malformed += 1
        if self.malformed <= LOGGED_MALFORMED:
            log.warning("hub PUB socket: ignored a message that is not a subscription "
                        "(%d frame(s), first %r)", len(frames), message[:40])
