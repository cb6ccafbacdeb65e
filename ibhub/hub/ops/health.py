"""Health, metrics and the status page over HTTP (aiohttp) on 127.0.0.1, plus the hub's
ops wiring. The status page (``/``, ``/events``, ``/status.json``) is
:mod:`ibhub.hub.ops.statuspage`.

``GET /health`` answers JSON with ``status``:

* ``down`` (HTTP 503): the upstream is not CONNECTED (starting, reconnecting,
  failed). A container health check or load balancer should treat the hub as
  unable to serve market data or orders.
* ``degraded`` (HTTP 200): connected, but something needs a look: market data has
  gone stale while the socket is up (the Gateway's frozen-after-restart mode), the
  market-data line budget is used up, the pacer's queue is backed up, or requests
  were refused ``busy`` (back-pressure) in the last minute. 200, because restarting
  the hub fixes none of these.
* ``healthy`` (HTTP 200).

``reasons`` lists why, in words. ``GET /metrics`` is the Prometheus text format
(:mod:`ibhub.hub.ops.metrics`). The server binds 127.0.0.1 only (like every hub socket);
scrape it from the same host or network namespace (see docs/operations.md).

:func:`attach_ops` is the one call the hub makes: metrics and alerts always (they
cost nothing until something happens), the HTTP server when ``http_port`` is set.
A port already in use is logged as an error and the hub runs on without HTTP: a
monitoring port must not stop a trading connection from coming up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, cast

from aiohttp import web

from ibhub import __version__
from ibhub.acceptor import Acceptor
from ibhub.hub.limits import Limits, ListenerStats, limits_of
from ibhub.hub.ops.alerts import Alerts
from ibhub.hub.ops.metrics import CONTENT_TYPE, HubMetrics, find_pacer
from ibhub.hub.ops.statuspage import StatusPage
from ibhub.protocol import UpstreamState
from ibhub.tws.pacing import REFUSALS_WINDOW

log = logging.getLogger(__name__)

HEALTHY, DEGRADED, DOWN = "healthy", "degraded", "down"
PACING_BACKLOG = 100  # queued upstream requests that make the hub "degraded"
_BUSY_BODY = b"ibhub: too many open /health and /metrics connections; try again\n"
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
         b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(_BUSY_BODY)) + _BUSY_BODY


def health_report(hub: Any, alerts: Alerts | None = None) -> tuple[dict[str, Any], int]:
    """The /health document and its HTTP status (200 healthy/degraded, 503 down)."""
    up = hub.upstream
    state = up.state if up is not None else UpstreamState.DISCONNECTED
    subs = hub.subs.all()
    newest = max((s.stream.last_ts for s in subs), default=0)
    reasons: list[str] = []
    if state != UpstreamState.CONNECTED:
        status = DOWN
        reasons.append(f"upstream {state}")
    else:
        status = HEALTHY
        if getattr(hub, "_stale", False):
            reasons.append(f"no market data for over {hub.settings.stale_after:g}s "
                           "while connected")
        if hub.subs.lines_used >= hub.subs.lines_max:
            reasons.append(f"market-data lines used up ({hub.subs.lines_used}/"
                           f"{hub.subs.lines_max})")
    pacer = find_pacer(hub)
    pacing: dict[str, Any] | None = None
    if pacer is not None:
        pacing = pacer.snapshot()
        limit = getattr(getattr(getattr(hub, "orders", None), "settings", None),
                        "max_order_delay", None)
        pacing["max_order_delay"] = limit
        if status == HEALTHY and pacer.queued >= PACING_BACKLOG:
            reasons.append(f"{pacer.queued} upstream requests waiting for the pacer")
        busy = pacing["refused_recently"]
        if status == HEALTHY and busy:
            # Back-pressure at work: scripts are being told to retry. The hub is fine;
            # the load (or pacer_rate / max_order_delay) needs a look.
            reasons.append(f"{busy} request(s) refused busy in the last "
                           f"{REFUSALS_WINDOW:g}s (a new order would wait "
                           f"{pacing['expected_order_delay']:.2f}s now)")
    limits = getattr(hub, "limits", None)
    connections = limits.report() if isinstance(limits, Limits) else None
    if status == HEALTHY and connections is not None:
        for name, st in connections["listeners"].items():
            if st["refusing"] or st["open"] >= st["max"]:
                reasons.append(f"{name} listener at its connection cap "
                               f"({st['open']}/{st['max']})")
        used, most = connections["open_files"], connections["open_files_max"]
        if used is not None and most and used >= most - connections["reserve"]:
            reasons.append(f"open files at the reserve ({used} of {most})")
    bridge = getattr(hub, "nats", None)  # the NATS bridge (ibhub.hub.nats_bridge)
    nats = bridge.report() if bridge is not None else None
    if status == HEALTHY and nats is not None and (nats["state"] != "connected"
                                                   or nats["stream"] != "ok"):
        # ZeroMQ clients are served either way: degraded, never down.
        reasons.append(f"NATS bridge {nats['state']} (stream {nats['stream']}; "
                       f"{nats['unpublished']} unpublished)")
    if status == HEALTHY and reasons:
        status = DEGRADED
    started = getattr(hub, "_started", 0.0)
    doc: dict[str, Any] = {
        "status": status,
        "reasons": reasons,
        "version": __version__,
        "upstream": {
            "state": state,
            "host": up.host if up is not None else hub.settings.gateway_host,
            "port": up.port if up is not None else hub.settings.gateway_port,
            "client_id": up.client_id if up is not None else hub.settings.client_id,
            "server_version": up.server_version if up is not None else 0,
            "accounts": up.accounts if up is not None else [],
        },
        "connected_at": up.connected_at if up is not None else None,
        "last_tick_at": newest / 1e9 if newest else None,
        "subscriptions": len(subs),
        "leases": len(list(hub.leases.leases())),
        "reconnect_count": up.reconnect_count if up is not None else 0,
        "lines_used": hub.subs.lines_used,
        "lines_max": hub.subs.lines_max,
        "uptime_seconds": round(time.monotonic() - started, 3) if started else 0.0,
        "pacing": pacing,
        "connections": connections,
        "nats": nats,
        "alerts": list(alerts.recent)[-10:] if alerts is not None else [],
        "alert_counts": dict(alerts.counts) if alerts is not None else {},
    }
    return doc, 503 if status == DOWN else 200


class HealthServer:
    """``/health`` and ``/metrics`` on 127.0.0.1:``port`` (a hub service)."""

    def __init__(self, hub: Any, metrics: HubMetrics, alerts: Alerts | None) -> None:
        self.hub = hub
        self.metrics = metrics
        self.alerts = alerts
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._listener: Acceptor | None = None
        # The live status page (/, /events, ...: ibhub.hub.ops.statuspage).
        self.page = StatusPage(hub, alerts)

    def on_upstream_state(self, state: str, code: int, message: str) -> None:
        self.page.on_upstream_state(state, code, message)

    async def start(self, port: int) -> None:
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        self.page.add_routes(app)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        # Our own listener instead of web.TCPSite, so each connection passes the cap
        # first (HTTP_MAX_CONNECTIONS, inside the descriptor reserve: ibhub.hub.limits).
        try:
            self._listener = Acceptor.tcp("127.0.0.1", port, self._protocol)
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = self._listener.port
        self.page.start()
        log.info("health and metrics on http://127.0.0.1:%d/health and /metrics, the status "
                 "page on /", self.port)

    def _protocol(self) -> asyncio.BaseProtocol:
        runner = self._runner
        assert runner is not None and runner.server is not None
        limits = limits_of(self.hub)
        stats = limits.stats("http")
        stats.accepted += 1
        if stats.open >= stats.cap or limits.fds_low():
            stats.refused += 1
            if stats.refused == 1 or stats.refused % 100 == 0:
                log.warning("health/metrics server refuses a connection: %d open (max %d); "
                            "%d refused so far", stats.open, stats.cap, stats.refused)
            return _Busy()
        stats.open += 1
        return _Counted(runner.server(), stats)

    async def stop(self) -> None:
        await self.page.stop()  # ends the /events streams the shutdown would wait for
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.close()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _health(self, request: web.Request) -> web.Response:
        doc, code = health_report(self.hub, self.alerts)
        return web.json_response(doc, status=code)

    async def _metrics(self, request: web.Request) -> web.Response:
        body = self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


class _Busy(asyncio.Protocol):
    """A connection over the cap: a 503 naming the reason, then closed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        t = cast(asyncio.Transport, transport)
        t.write(_BUSY)
        t.close()


class _Counted(asyncio.Protocol):
    """aiohttp's handler for one connection, counted from accept to close (aiohttp's own
    list of connections grows only once a burst of accepts has been set up)."""

    def __init__(self, inner: Any, stats: ListenerStats) -> None:
        self._inner = inner
        self._stats = stats

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stats.open = max(0, self._stats.open - 1)
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return cast("bool | None", self._inner.eof_received())

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class Ops:
    """What :func:`attach_ops` built: ``metrics``, ``alerts``, ``http`` (or None)."""

    def __init__(self, metrics: HubMetrics, alerts: Alerts, http: HealthServer | None) -> None:
        self.metrics = metrics
        self.alerts = alerts
        self.http = http

    @property
    def http_port(self) -> int:
        return self.http.port if self.http is not None else 0


async def attach_ops(hub: Any, http_port: int | None = None) -> Ops:
    """Attach metrics, alerts and (if a port is set) the HTTP server to a started hub.

    ``http_port`` defaults to ``hub.settings.http_port`` (0 = no HTTP server).
    """
    s = hub.settings

    def publish(code: int, message: str) -> None:
        up = hub.upstream
        if hub.fanout is not None:
            hub.fanout.status(up.state if up is not None else UpstreamState.DISCONNECTED,
                              "alert", code, message, up.reconnect_count if up else 0)

    alerts = Alerts(
        publish=publish,
        webhook=s.alert_webhook,
        webhook_timeout=s.alert_webhook_timeout,
        alert_file=s.alert_file,
        state=lambda: hub.upstream.state if hub.upstream is not None else "",
    )
    alerts.start()
    if hub.upstream is not None:
        alerts.attach_ib(hub.upstream.ib)
    if getattr(hub, "orders", None) is not None:
        alerts.attach_orders(hub.orders)  # reconciliation's corrections
    metrics = HubMetrics(hub)
    metrics.alerts = alerts
    if hub.rpc is not None:
        hub.rpc.observers.append(metrics.observe)
        hub.rpc.observers.append(alerts.observe)
    hub.add_service(alerts)
    port = s.http_port if http_port is None else http_port
    http: HealthServer | None = None
    if port:
        server = HealthServer(hub, metrics, alerts)
        try:
            await server.start(port)
        except OSError as exc:
            log.error("health/metrics HTTP server not started on 127.0.0.1:%d: %s "
                      "(set http_port to another port, or 0 to turn it off)", port, exc)
        else:
            http = server
            hub.add_service(server)
    ops = Ops(metrics, alerts, http)
    hub.ops = ops
    return ops
