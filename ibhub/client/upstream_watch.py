"""Turns ``hub.status`` events into "upstream down" / "upstream back" callbacks.

The upstream (the hub's one Gateway session) counts as *up* when its state is
CONNECTED and no IB 1100 ("connectivity between IB and the Gateway lost") is
outstanding; 1101/1102 (restored) or a fresh CONNECTED state clear the 1100. Only
transitions of that one boolean fire handlers, so a reconnect that passes through
RECONNECTING, CONNECTING, RECONNECTING, ... CONNECTED fires the disconnect handlers
once and the connect handlers once. The first state the SDK learns (at connect) is
a baseline, not a transition.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from ibhub.protocol import HubStatus, StatusReply, UpstreamState

log = logging.getLogger(__name__)

Handler = Callable[[HubStatus], Any]

IB_CONNECTIVITY_LOST = 1100
IB_RESTORED = (1101, 1102)


class UpstreamWatch:
    """Tracks the upstream state and calls handlers on up/down transitions."""

    def __init__(self, spawn: Callable[[Any, str], None]) -> None:
        self.state = "UNKNOWN"
        self.up: bool | None = None  # None until the first status is known
        self.link_lost = False
        self.reconnect_count = 0
        self.disconnects = 0
        self.connects = 0
        self._spawn = spawn
        self.disconnect_handlers: list[Handler] = []
        self.connect_handlers: list[Handler] = []
        self.status_handlers: list[Handler] = []
        self._waiters: list[asyncio.Future[None]] = []

    async def wait_up(self, timeout: float | None) -> bool:
        """Wait until the upstream is up; False if ``timeout`` passes first."""
        if self.up:
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
            return True
        except TimeoutError:
            return False
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def _wake_waiters(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def on_event(self, event: HubStatus) -> None:
        """A ``hub.status`` event, in sequence order."""
        self.state = event.state
        self.reconnect_count = event.reconnect_count
        if event.kind == "ib" and event.code == IB_CONNECTIVITY_LOST:
            self.link_lost = True
        elif event.kind == "ib" and event.code in IB_RESTORED:
            self.link_lost = False
        elif event.kind == "state" and event.state == UpstreamState.CONNECTED:
            self.link_lost = False
        self._call(self.status_handlers, event)
        self._set_up(event.state == UpstreamState.CONNECTED and not self.link_lost, event)

    def on_status_reply(self, reply: StatusReply) -> None:
        """A status reply (at connect and after a re-hello): the state right now."""
        self.state = reply.state
        self.reconnect_count = reply.reconnect_count
        up = reply.connected and reply.state == UpstreamState.CONNECTED
        if up:
            self.link_lost = False
        synthetic = HubStatus(
            seq=0,
            ts=time.time_ns(),
            state=reply.state,
            kind="state",
            code=0,
            message="state from a status reply",
            reconnect_count=reply.reconnect_count,
        )
        self._set_up(up and not self.link_lost, synthetic)

    def _set_up(self, up: bool, event: HubStatus) -> None:
        if up:
            self._wake_waiters()
        if self.up is None:
            self.up = up
            return
        if up == self.up:
            return
        self.up = up
        if up:
            self.connects += 1
            log.info("hub upstream is back (%s)", event.state)
            self._call(self.connect_handlers, event)
        else:
            self.disconnects += 1
            log.warning("hub upstream went down (%s: %s)", event.state, event.message)
            self._call(self.disconnect_handlers, event)

    def _call(self, handlers: list[Handler], event: HubStatus) -> None:
        for handler in list(handlers):
            try:
                result = handler(event)
                if asyncio.iscoroutine(result):
                    self._spawn(result, f"status handler {handler!r}")
            except Exception:
                log.exception("status handler %r raised; continuing", handler)
