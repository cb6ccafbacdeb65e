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
* :meth:`XpubSubscriptions.sync` after the fan-out's sends, when there were any (the
  end of a Gateway read that sent something, a rare event): a send processes the
  socket's commands, which moves an arrived subscription into the socket and takes the
  FD's edge, so the loop would never be told; ``sync`` asks ``EVENTS`` and reads what
  is queued;
* :meth:`XpubSubscriptions.sync` before a snapshot is taken
  (:meth:`ibhub.hub.fanout.Fanout.snapshot`): ``EVENTS`` also processes the commands
  that arrived, so a subscriber that subscribed and then asked a snapshot gets every
  event after the snapshot once its subscription reached the hub (the zguide Clone
  pattern, as with PUB).

Only after a read that sent: in the running hub the ``EVENTS`` query after a read costs
~10 us of CPU (measured in situ with ``thread_time``; ~1 us in a tight loop, where
libzmq's code stays in the caches) and a receive that finds nothing ~25 us, as much as
the sends skipped in a read. A read that sent nothing on the socket cannot have taken
the FD's edge, and the loop's reader stays in charge.

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
