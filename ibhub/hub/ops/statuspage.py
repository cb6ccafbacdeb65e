"""The live status page on the hub's HTTP port (``/``), with its server-sent events.

Routes, all read-only ``GET`` on the /health server's 127.0.0.1 listener
(:class:`ibhub.hub.ops.health.HealthServer`):

* ``/`` (and ``/status``): the page, rendered on the server
  (:mod:`ibhub.hub.ops.statusview`), readable without JavaScript;
* ``/events``: ``text/event-stream``, one ``status`` event a second (and at once on
  an upstream state change) carrying each section's HTML, which ``static/status.js``
  swaps in; a browser's ``EventSource`` reconnects by itself after a hub restart;
* ``/status.json``: the same snapshot as JSON;
* ``/static/status.css``, ``/static/status.js``: package data, hand-written, no build.

Cost: nothing here touches the tick path. Once a second one sampler task reads the
counters the hub already keeps (the upstream reader's ``ticks_in``, the request
loop's observer hook, :func:`ibhub.hub.ops.health.health_report`), renders the
sections once and hands the same bytes to every open stream. At most
``MAX_STREAMS`` pages stream at a time, so browser tabs cannot take the connections a
Prometheus scrape needs (the listener's own cap still applies); one more gets a 503
saying so, and the page keeps working by reloading.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from importlib import resources
from typing import Any, Final

from aiohttp import web

from ibhub import __version__
from ibhub.hub.ops import statusview
from ibhub.protocol import Reply, UpstreamState

log = logging.getLogger(__name__)

SAMPLE_EVERY: Final = 1.0  # seconds between snapshots (and rate samples)
RATE_SAMPLES: Final = 120  # seconds of rate history in the charts
HISTORY_MAX: Final = 20  # upstream state changes kept
MAX_STREAMS: Final = 8  # concurrent /events streams
ALERTS_SHOWN: Final = 10
STATIC: Final = {"status.css": "text/css", "status.js": "text/javascript",
                 "favicon.svg": "image/svg+xml"}
# Everything from the hub itself; no inline script, no frames, no referrer.
HEADERS: Final = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "connect-src 'self'; img-src 'self'; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _static(name: str) -> bytes:
    return resources.files("ibhub.hub.ops").joinpath("static", name).read_bytes()


class StatusPage:
    """The page's state (upstream history, rate samples) and its HTTP handlers.

    A hub service (``on_upstream_state``, ``stop``); :meth:`add_routes` puts its
    handlers on the /health server's application.
    """

    def __init__(self, hub: Any, alerts: Any = None) -> None:
        self.hub = hub
        self.alerts = alerts
        up = hub.upstream
        state = up.state if up is not None else UpstreamState.DISCONNECTED
        since = (up.connected_at if up is not None and up.connected_at else None) or time.time()
        self.state_since = since
        self.history: collections.deque[dict[str, Any]] = collections.deque(
            [{"ts": since, "state": state, "message": "current state when the page started"}],
            maxlen=HISTORY_MAX)
        self.tick_rates: collections.deque[float] = collections.deque(maxlen=RATE_SAMPLES)
        self.request_rates: collections.deque[float] = collections.deque(maxlen=RATE_SAMPLES)
        self.requests = 0  # answered requests (the request loop's observer)
        self._last: tuple[float, int, int] | None = None  # (monotonic, ticks, requests)
        self.streams = 0
        self.refused_streams = 0
        self.message = b""  # the current SSE message, shared by every stream
        self._fresh = asyncio.Event()  # set (and replaced) whenever ``message`` changes
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._static = {name: _static(name) for name in STATIC}

    # ------------------------------------------------------------------ hub service

    def start(self) -> None:
        rpc = getattr(self.hub, "rpc", None)
        if rpc is not None:
            rpc.observers.append(self.observe)
        self._sample()
        self._task = asyncio.create_task(self._sampler(), name="ibhub-statuspage")

    async def stop(self) -> None:
        """Ends every stream (so the HTTP server's shutdown does not wait for them)."""
        self._closing = True
        self._wake()
        rpc = getattr(self.hub, "rpc", None)
        if rpc is not None and self.observe in rpc.observers:
            rpc.observers.remove(self.observe)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def observe(self, kind: str, reply: Reply, seconds: float) -> None:
        self.requests += 1

    def on_upstream_state(self, state: str, code: int, message: str) -> None:
        self.state_since = time.time()
        self.history.append({"ts": self.state_since, "state": state, "message": message})
        if not self._closing:
            self._publish()  # the page turns red or green now, not at the next sample

    # ------------------------------------------------------------------ snapshot

    def snapshot(self) -> dict[str, Any]:
        """Everything the page shows, as plain data (also ``/status.json``)."""
        from ibhub.hub.ops.health import health_report

        hub = self.hub
        doc, _ = health_report(hub, self.alerts)
        now = time.time()
        doc["now"] = now
        doc["state_since"] = self.state_since
        doc["history"] = list(self.history)
        doc["stale_after"] = hub.settings.stale_after
        doc["rates"] = {"ticks": list(self.tick_rates), "requests": list(self.request_rates)}
        doc["alerts"] = doc["alerts"][-ALERTS_SHOWN:]
        doc["instruments"] = [
            {"topic": s.topic, "symbol": s.contract.local_symbol or s.contract.symbol,
             "kind": s.kind, "subscribers": len(s.leases), "ticks": s.stream.ticks,
             "last_tick_at": s.stream.last_ts / 1e9 if s.stream.last_ts else None}
            for s in sorted(hub.subs.all(), key=lambda s: s.topic)]
        groups: dict[str, dict[str, Any]] = {}
        mono = hub.leases.now()
        for ls in hub.leases.leases():
            g = groups.setdefault(ls.name, {"name": ls.name, "leases": 0, "roles": [],
                                            "client_ids": [], "subscriptions": 0,
                                            "oldest_age": 0.0})
            g["leases"] += 1
            if ls.role not in g["roles"]:
                g["roles"].append(ls.role)
            g["client_ids"].append(ls.client_id)
            g["subscriptions"] += len(ls.topics)
            g["oldest_age"] = max(g["oldest_age"], mono - ls.created)
        doc["lease_groups"] = sorted(groups.values(), key=lambda g: g["name"])
        doc["raw_client_ids"] = sorted(r.client_id for r in hub.leases.raw_leases())
        doc["orders"] = self._orders()
        return doc

    def _orders(self) -> dict[str, Any] | None:
        service = getattr(self.hub, "orders", None)
        if service is None:
            return None
        book = getattr(service, "book", None)
        working = sorted(book.store.working, key=lambda r: r.order_id) if book else []
        return {
            "trading": service.status()["trading"],
            "working": [
                {"order_id": r.order_id, "owner": r.owner, "symbol": r.symbol,
                 "action": r.action, "quantity": r.quantity, "order_type": r.order_type,
                 "limit_price": r.limit_price, "status": r.status, "filled": r.filled}
                for r in working],
        }

    # ------------------------------------------------------------------ sampling

    async def _sampler(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_EVERY)
            try:
                self._sample()
            except Exception:  # the page must never take the hub down
                log.exception("status page: snapshot failed")

    def _sample(self) -> None:
        up = self.hub.upstream
        ticks = int(getattr(up, "ticks_in", 0) or 0) if up is not None else 0
        now = time.monotonic()
        if self._last is not None:
            then, t0, r0 = self._last
            dt = max(now - then, 1e-3)
            self.tick_rates.append(max(0, ticks - t0) / dt)
            self.request_rates.append(max(0, self.requests - r0) / dt)
        self._last = (now, ticks, self.requests)
        self._publish()

    def _publish(self) -> None:
        self.message = self._render()
        self._wake()

    def _render(self) -> bytes:
        """The SSE ``status`` event for the hub's state now."""
        d = self.snapshot()
        payload = {"title": statusview.title(d), "state": d["upstream"]["state"],
                   "asof": statusview.clock(d["now"]), "sections": statusview.sections(d)}
        return b"event: status\ndata: " + json.dumps(payload).encode() + b"\n\n"

    def _wake(self) -> None:
        fresh, self._fresh = self._fresh, asyncio.Event()
        fresh.set()

    # ------------------------------------------------------------------ HTTP

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.page)
        app.router.add_get("/status", self.page)
        app.router.add_get("/status.json", self.json)
        app.router.add_get("/events", self.events)
        app.router.add_get("/static/{name}", self.static)
        app.router.add_get("/favicon.ico", self.favicon)

    async def page(self, request: web.Request) -> web.Response:
        body = statusview.page(self.snapshot(), __version__)
        return web.Response(text=body, content_type="text/html", charset="utf-8",
                            headers=HEADERS)

    async def json(self, request: web.Request) -> web.Response:
        return web.json_response(self.snapshot(), headers=HEADERS)

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC:
            raise web.HTTPNotFound(text=f"no static file {name!r}")
        return web.Response(body=self._static[name], content_type=STATIC[name],
                            charset="utf-8", headers=HEADERS)

    async def favicon(self, request: web.Request) -> web.Response:
        return web.Response(body=self._static["favicon.svg"], content_type="image/svg+xml",
                            headers=HEADERS)

    async def events(self, request: web.Request) -> web.StreamResponse:
        if self.streams >= MAX_STREAMS:
            self.refused_streams += 1
            return web.Response(status=503, headers=HEADERS, text=(
                f"ibhub: {MAX_STREAMS} live status pages are open already; this one "
                "shows a snapshot (reload for a newer one)\n"))
        resp = web.StreamResponse(headers={**HEADERS, "Content-Type": "text/event-stream",
                                           "X-Accel-Buffering": "no"})
        self.streams += 1
        try:
            await resp.prepare(request)
            # retry: how soon a browser reconnects after the hub went away (ms). The
            # first event is rendered now: the page it follows may be newer than the
            # last sample.
            await resp.write(b"retry: 1000\n" + self._render())
            while not self._closing:
                fresh = self._fresh
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(SAMPLE_EVERY * 5):
                        await fresh.wait()
                if self._closing:
                    break
                await resp.write(self.message)
        except (ConnectionResetError, ConnectionError):
            pass  # the browser went away
        finally:
            self.streams -= 1
        return resp
