"""Alerts: upstream lost and restored, order rejections, pacing violations, and orders
whose journaled state the Gateway contradicted (``order_corrected``).

Every alert is a WARNING log line and a ``hub.status`` event of kind ``"alert"``
(scripts and ``ibhub tail hub.status`` see it), and, when configured
(``alert_webhook``, ``alert_file``), a JSON POST to a webhook and a line in a
JSON-lines file. The payload is the same everywhere::

    {"kind": "upstream_lost", "message": "...", "code": 0, "ts": 1700000000.123,
     "state": "RECONNECTING", "hub": "hostname", "details": {...}, "suppressed": 0}

Delivery never blocks the hub: alerts go into a bounded queue that one background
task drains (aiohttp client with a timeout per POST; file appends in a worker
thread). A failed delivery is logged and counted (``ibhub_alert_deliveries_failed``)
and never retried: an alert that arrives minutes late is noise. A flood (a
Gateway rejecting a 500-order burst) is capped per kind: at most ``BURST`` alerts
per ``WINDOW`` seconds; the rest are counted and the next alert that goes out says
how many were suppressed.

Sources: the hub's ``on_upstream_state`` service hook; ib_insync's ``errorEvent``
(IB's codes: order rejections by :mod:`ibhub.tws.ib_codes` category, pacing violations
100 and "pacing violation" texts such as 162/420; errors on a cancel are not
rejections: the order manager asks the Gateway, and a wrong state becomes an
``order_corrected`` alert); the request loop's observer (``OrderRejected`` replies:
the hub's own risk gate refused an order); and the order manager's reconciliation
(:meth:`Alerts.attach_orders`): every correction names the order, its owner and
both states (``details``: ``order_id``, ``owner``, ``client_order_id``,
``journal_status``, ``gateway_status``; ``"unknown"`` when the Gateway knows nothing
of the order).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from ibhub.protocol import OrderRejected, Reply, UpstreamState

log = logging.getLogger(__name__)

UPSTREAM_LOST: Final = "upstream_lost"
UPSTREAM_RESTORED: Final = "upstream_restored"
ORDER_REJECTED: Final = "order_rejected"
PACING_VIOLATION: Final = "pacing_violation"
ORDER_CORRECTED: Final = "order_corrected"
KINDS: Final = (UPSTREAM_LOST, UPSTREAM_RESTORED, ORDER_REJECTED, PACING_VIOLATION,
                ORDER_CORRECTED)

BURST: Final = 10  # alerts of one kind per WINDOW before suppression
WINDOW: Final = 60.0
QUEUE_MAX: Final = 1000
RECENT_MAX: Final = 50
PACING_CODES: Final = frozenset({100})
# Not connected this long after the hub started (the Gateway was down or
# misconfigured from the start): an upstream_lost alert, since no state change will say so.
STARTUP_GRACE: Final = 60.0

Publish = Callable[[int, str], None]  # (code, message) -> a hub.status "alert" event


def is_pacing_violation(code: int, message: str) -> bool:
    return code in PACING_CODES or "pacing violation" in message.lower()


def is_order_rejection(code: int) -> bool:
    from ibhub.orders.updates import CANCEL_ERRORS
    from ibhub.tws.ib_codes import explain

    return code not in CANCEL_ERRORS and explain(code).category == "order_rejection"


class Alerts:
    """Raises alerts and delivers them; a hub service (``HubServer.add_service``)."""

    def __init__(
        self,
        *,
        publish: Publish | None = None,
        webhook: str | None = None,
        webhook_timeout: float = 5.0,
        alert_file: Path | None = None,
        state: Callable[[], str] = lambda: "",
        clock: Callable[[], float] = time.monotonic,
        startup_grace: float = STARTUP_GRACE,
    ) -> None:
        self.publish = publish
        self.webhook = webhook
        self.webhook_timeout = webhook_timeout
        self.alert_file = alert_file
        self._state = state
        self._clock = clock
        self.counts: dict[str, int] = dict.fromkeys(KINDS, 0)
        self.suppressed: dict[str, int] = dict.fromkeys(KINDS, 0)
        self.delivered = 0
        self.delivery_failures = 0
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=RECENT_MAX)
        self._sent: dict[str, collections.deque[float]] = {}
        self._queue: asyncio.Queue[dict[str, Any]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._ib: Any = None
        self._upstream_state = state() or UpstreamState.DISCONNECTED
        self._lost_at: float | None = None
        self._host = socket.gethostname()
        self.startup_grace = startup_grace
        self._ever_connected = False
        self._startup_timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Start the delivery task (only needed with a webhook or a file) and the
        start-up check (an alert if the upstream never connects within the grace)."""
        if self._upstream_state == UpstreamState.CONNECTED:
            self._ever_connected = True
        elif self.startup_grace > 0 and self._startup_timer is None:
            self._startup_timer = asyncio.get_running_loop().call_later(
                self.startup_grace, self._startup_check)
        if (self.webhook or self.alert_file) and self._worker is None:
            self._queue = asyncio.Queue(QUEUE_MAX)
            self._worker = asyncio.create_task(self._deliver(), name="ibhub-alerts")

    def attach_ib(self, ib: Any) -> None:
        """Listen to IB's error messages (order rejections, pacing violations)."""
        if ib is not None and self._ib is None:
            self._ib = ib
            ib.errorEvent += self._on_ib_error

    def attach_orders(self, service: Any) -> None:
        """Raise an ``order_corrected`` alert for every correction of the order manager's
        reconciliation (:class:`ibhub.orders.service.OrderService`), including those made
        before the alerts were attached (the reconcile at start-up may come first)."""
        service.add_correction_listener(self.on_order_corrected)

    def on_order_corrected(self, c: Any) -> None:
        """One :class:`ibhub.orders.updates.Correction`."""
        self.raise_alert(
            ORDER_CORRECTED, c.describe(), 0, order_id=c.order_id, owner=c.owner,
            client_order_id=c.client_order_id, journal_status=c.journal_status,
            gateway_status=c.gateway_status,
        )  # fmt: skip

    async def stop(self, drain: float = 2.0) -> None:
        """Detach; give queued deliveries up to ``drain`` seconds, then cancel."""
        if self._ib is not None:
            self._ib.errorEvent -= self._on_ib_error
            self._ib = None
        if self._startup_timer is not None:
            self._startup_timer.cancel()
            self._startup_timer = None
        worker, self._worker = self._worker, None
        if worker is None:
            return
        queue = self._queue
        if queue is not None and not queue.empty():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(drain):
                    await queue.join()
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker

    # ------------------------------------------------------------------ sources

    def on_upstream_state(self, state: str, code: int, message: str) -> None:
        """Hub hook: alert when CONNECTED is left (lost) or regained after a loss."""
        prev, self._upstream_state = self._upstream_state, state
        if state == UpstreamState.CONNECTED:
            self._ever_connected = True
        if prev == UpstreamState.CONNECTED and state in (
            UpstreamState.RECONNECTING, UpstreamState.FAILED
        ):
            self._lost_at = self._clock()
            self.raise_alert(UPSTREAM_LOST, f"upstream lost: {message}", code,
                             previous=prev, reason=message)
        elif state == UpstreamState.FAILED and prev != UpstreamState.CONNECTED:
            self.raise_alert(UPSTREAM_LOST, f"upstream connection failed: {message}", code,
                             previous=prev, reason=message)
        elif state == UpstreamState.CONNECTED and self._lost_at is not None:
            down = self._clock() - self._lost_at
            self._lost_at = None
            self.raise_alert(UPSTREAM_RESTORED,
                             f"upstream restored after {down:.1f}s: {message}", code,
                             down_seconds=round(down, 3))

    def _startup_check(self) -> None:
        self._startup_timer = None
        if not self._ever_connected and self._upstream_state != UpstreamState.FAILED:
            self.raise_alert(
                UPSTREAM_LOST,
                f"upstream not connected {self.startup_grace:g}s after the hub started "
                f"(state {self._upstream_state}); check the Gateway with `ibhub doctor`",
                0, previous=self._upstream_state, startup=True)

    def observe(self, kind: str, reply: Reply, seconds: float) -> None:
        """Request observer: the hub refused an order (risk gate, not connected, ...)."""
        if isinstance(reply, OrderRejected):
            self.raise_alert(
                ORDER_REJECTED,
                f"{kind} {reply.client_order_id or reply.order_id} rejected by the hub "
                f"({reply.reason}): {reply.message}",
                reply.ib_code, request=kind, reason=reply.reason,
                client_order_id=reply.client_order_id, order_id=reply.order_id, source="hub",
            )

    def _on_ib_error(self, req_id: int, code: int, message: str, _contract: Any) -> None:
        if is_pacing_violation(code, message):
            self.raise_alert(PACING_VIOLATION, f"IB pacing violation {code}: {message}", code,
                             req_id=req_id)
        elif is_order_rejection(code):
            self.raise_alert(ORDER_REJECTED, f"IB {code} for order {req_id}: {message}", code,
                             order_id=req_id, source="ib")

    # ------------------------------------------------------------------ raising

    def raise_alert(self, kind: str, message: str, code: int = 0, **details: Any) -> bool:
        """Log, publish and queue one alert; False if it was suppressed (flood cap)."""
        self.counts[kind] = self.counts.get(kind, 0) + 1
        now = self._clock()
        sent = self._sent.setdefault(kind, collections.deque())
        while sent and now - sent[0] > WINDOW:
            sent.popleft()
        if len(sent) >= BURST:
            self.suppressed[kind] = self.suppressed.get(kind, 0) + 1
            return False
        sent.append(now)
        suppressed, self.suppressed[kind] = self.suppressed.get(kind, 0), 0
        alert = {
            "kind": kind, "message": message, "code": code, "ts": round(time.time(), 3),
            "state": self._state() or self._upstream_state, "hub": self._host,
            "details": details, "suppressed": suppressed,
        }
        self.recent.append(alert)
        more = f" (+{suppressed} suppressed)" if suppressed else ""
        log.warning("ALERT %s: %s%s", kind, message, more)
        if self.publish is not None:
            try:
                self.publish(code, f"{kind}: {message}{more}")
            except Exception:
                log.exception("publishing alert %s on hub.status failed", kind)
        queue = self._queue
        if queue is not None:
            try:
                queue.put_nowait(alert)
            except asyncio.QueueFull:
                self.delivery_failures += 1
        return True

    # ------------------------------------------------------------------ delivery

    async def _deliver(self) -> None:
        import aiohttp

        assert self._queue is not None
        timeout = aiohttp.ClientTimeout(total=self.webhook_timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                alert = await self._queue.get()
                try:
                    if self.webhook:
                        await self._attempt(alert, "webhook", self._post(session, alert))
                    if self.alert_file is not None:
                        await self._attempt(alert, "file", asyncio.to_thread(
                            _append_line, self.alert_file, alert))
                finally:
                    self._queue.task_done()

    async def _attempt(self, alert: dict[str, Any], where: str, job: Any) -> None:
        import aiohttp

        try:
            await job
        except (OSError, aiohttp.ClientError, TimeoutError, _WebhookRefused) as exc:
            self.delivery_failures += 1
            log.warning("alert %s not delivered to the %s: %s", alert["kind"], where,
                        exc or type(exc).__name__)
        else:
            self.delivered += 1

    async def _post(self, session: Any, alert: dict[str, Any]) -> None:
        assert self.webhook is not None
        async with session.post(self.webhook, json=alert) as resp:
            if resp.status >= 300:
                raise _WebhookRefused(f"webhook {self.webhook} answered HTTP {resp.status}")


class _WebhookRefused(Exception):
    pass


def _append_line(path: Path, alert: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(alert, default=str) + "\n")
