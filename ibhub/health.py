"""Health and metrics over HTTP (aiohttp) on 127.0.0.1, plus the hub's ops wiring.

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
(:mod:`ibhub.metrics`). The server binds 127.0.0.1 only (like every hub socket);
scrape it from the same host or network namespace (see docs/operations.md).

:func:`attach_ops` is the one call the hub makes: metrics and alerts always (they
cost nothing until something happens), the HTTP server when ``http_port`` is set.
A port already in use is logged as an error and the hub runs on without HTTP: a
monitoring port must not stop a trading connection from coming up.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aiohttp import web

from ibhub import __version__
from ibhub.alerts import Alerts
from ibhub.metrics import CONTENT_TYPE, HubMetrics, find_pacer
from ibhub.pacing import REFUSALS_WINDOW
from ibhub.protocol import UpstreamState

log = logging.getLogger(__name__)

HEALTHY, DEGRADED, DOWN = "healthy", "degraded", "down"
PACING_BACKLOG = 100  # queued upstream requests that make the hub "degraded"


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

    async def start(self, port: int) -> None:
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/", self._index)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port, reuse_address=True)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1]) if runner.addresses else port
        log.info("health and metrics on http://127.0.0.1:%d/health and /metrics", self.port)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _health(self, request: web.Request) -> web.Response:
        doc, code = health_report(self.hub, self.alerts)
        return web.json_response(doc, status=code)

    async def _metrics(self, request: web.Request) -> web.Response:
        body = self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(text="ibhub: /health (JSON), /metrics (Prometheus)\n")


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
