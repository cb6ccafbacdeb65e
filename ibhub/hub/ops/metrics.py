"""Prometheus metrics for the hub, read at scrape time.

Cost model: nothing here runs per tick. The hot path already keeps plain ints that
say everything we need (each topic's sequence number in :mod:`ibhub.hub.fanout`, the
upstream reader's ``ticks_in``); :class:`HubCollector` reads them when Prometheus
scrapes and turns them into metric families. Calling ``Counter.inc`` per tick would
cost a lock and a dict lookup on a path measured in hundreds of nanoseconds.

Requests are rare (heartbeats, subscriptions, orders), so they are counted with
ordinary prometheus_client ``Counter`` / ``Histogram`` objects, fed by the request
loop's observer hook (``RpcServer.observers``). Every hub has its own
``CollectorRegistry``, so several hubs in one process (tests) never share numbers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ibhub.protocol import Error, OrderRejected, Reply, UpstreamState
from ibhub.tws.pacing import Priority

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0, 30.0)
STATES = (UpstreamState.DISCONNECTED, UpstreamState.CONNECTING, UpstreamState.CONNECTED,
          UpstreamState.RECONNECTING, UpstreamState.FAILED)


def outcome_of(reply: Reply) -> str:
    """A bounded label for a reply: "ok", "rejected", or the error code."""
    if isinstance(reply, Error):
        return str(reply.code)
    if isinstance(reply, OrderRejected):
        return "rejected"
    return "ok"


def find_pacer(hub: Any) -> Any:
    """The hub's shared upstream pacer, else the order service's (None without orders)."""
    pacer = getattr(hub, "pacer", None)
    if pacer is not None:
        return pacer
    for service in getattr(hub, "services", ()) or getattr(hub, "_services", ()):
        pacer = getattr(service, "pacer", None)
        if pacer is not None:
            return pacer
    return None


class HubMetrics:
    """The hub's registry: request counters plus a collector over the hub's own state."""

    def __init__(self, hub: Any) -> None:
        self.hub = hub
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter(
            "ibhub_requests", "Requests answered, by request type and outcome",
            ["type", "outcome"], registry=self.registry,
        )
        self.latency = Histogram(
            "ibhub_request_seconds", "Time from receipt to reply, by request type",
            ["type"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.snapshots = 0  # snapshot requests: a subscriber joining late or recovering a gap
        self.alerts: Any = None  # the Alerts service, when attached (its counts are exported)
        self.registry.register(HubCollector(self))
        # The process's CPU, memory, open fds, GC and Python version (read at scrape
        # time too); the library's shared collectors, registered in our registry.
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)

    def observe(self, kind: str, reply: Reply, seconds: float) -> None:
        """``RpcServer`` observer: one answered request."""
        self.requests.labels(kind, outcome_of(reply)).inc()
        self.latency.labels(kind).observe(seconds)
        if kind == "snapshot":
            self.snapshots += 1

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class HubCollector(Collector):
    """Reads the hub's plain counters and state at scrape time."""

    def __init__(self, metrics: HubMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        hub = self.metrics.hub
        up = hub.upstream
        fanout = hub.fanout
        state = up.state if up is not None else UpstreamState.DISCONNECTED

        g = GaugeMetricFamily("ibhub_upstream_state",
                              "1 for the upstream's current state", labels=["state"])
        for name in STATES:
            g.add_metric([name], 1.0 if name == state else 0.0)
        yield g
        yield GaugeMetricFamily("ibhub_upstream_connected", "1 while the upstream is CONNECTED",
                                value=1.0 if state == UpstreamState.CONNECTED else 0.0)
        yield CounterMetricFamily("ibhub_upstream_reconnects", "Sessions re-established",
                                  value=up.reconnect_count if up is not None else 0)
        connected_at = up.connected_at if up is not None else None
        yield GaugeMetricFamily("ibhub_upstream_connected_since_seconds",
                                "Unix time the current session started (0 if none)",
                                value=connected_at or 0.0)
        yield CounterMetricFamily("ibhub_ticks_in", "Tick and bar messages from the Gateway",
                                  value=getattr(up, "ticks_in", 0) if up is not None else 0)

        published = fanout.published() if fanout is not None else {}
        out = CounterMetricFamily("ibhub_events_published",
                                  "Events published, by topic family (tick, bar, status, ...)",
                                  labels=["kind"])
        for kind, count in sorted(published.items()):
            out.add_metric([kind], count)
        yield out
        yield CounterMetricFamily("ibhub_ticks_out", "Tick and bar events published",
                                  value=published.get("tick", 0) + published.get("bar", 0))
        dropped = CounterMetricFamily(
            "ibhub_events_dropped",
            "Events the hub knows were lost: malformed upstream messages dropped; "
            "subscriber_recovery counts snapshot requests (late joins and gap recoveries, "
            "as PUB drops are only visible to subscribers)", labels=["reason"])
        dropped.add_metric(["malformed_upstream"], up.reader.bad_messages if up else 0)
        dropped.add_metric(["subscriber_recovery"], self.metrics.snapshots)
        rpc = hub.rpc
        dropped.add_metric(["reply_undeliverable"], getattr(rpc, "dropped", 0) if rpc else 0)
        yield dropped
        yield CounterMetricFamily(
            "ibhub_requests_malformed",
            "Requests refused before dispatch (bad frames, not msgpack, invalid fields)",
            value=getattr(rpc, "errors", 0) if rpc is not None else 0)

        subs = hub.subs.all()
        yield GaugeMetricFamily("ibhub_market_data_lines_used", "Market-data lines in use",
                                value=hub.subs.lines_used)
        yield GaugeMetricFamily("ibhub_market_data_lines_max", "Market-data line budget",
                                value=hub.subs.lines_max)
        yield GaugeMetricFamily("ibhub_market_depth_used", "Market-depth subscriptions "
                                "open upstream", value=hub.market.depth.lines_used)
        yield GaugeMetricFamily("ibhub_market_depth_max", "Market-depth budget (depth_max)",
                                value=hub.market.depth.lines_max)
        yield GaugeMetricFamily("ibhub_subscriptions", "Upstream subscriptions", value=len(subs))
        leases = list(hub.leases.leases())
        yield GaugeMetricFamily("ibhub_leases", "Open script leases", value=len(leases))
        yield from _subscriber_metrics(leases)
        newest = max((s.stream.last_ts for s in subs), default=0)
        yield GaugeMetricFamily("ibhub_last_tick_seconds",
                                "Unix time of the newest tick or bar (0 if none)",
                                value=newest / 1e9)
        started = getattr(hub, "_started", 0.0)
        yield GaugeMetricFamily("ibhub_uptime_seconds", "Seconds since the hub started",
                                value=time.monotonic() - started if started else 0.0)

        pacer = find_pacer(hub)
        depth = GaugeMetricFamily("ibhub_pacing_queue_depth",
                                  "Upstream requests waiting for the pacer, by priority",
                                  labels=["priority"])
        if pacer is not None:
            for prio, n in sorted(pacer.depth().items()):
                depth.add_metric([prio], n)
        yield depth
        if pacer is not None:
            yield CounterMetricFamily("ibhub_pacing_sent", "Messages the pacer let through",
                                      value=pacer.sent)
            yield GaugeMetricFamily("ibhub_pacing_max_wait_seconds",
                                    "Longest time a request waited in the pacer",
                                    value=pacer.max_wait)
            snap = pacer.snapshot()
            yield GaugeMetricFamily("ibhub_pacing_expected_order_delay_seconds",
                                    "Seconds a new order would wait for the upstream budget now",
                                    value=pacer.expected_delay(Priority.ORDER))
            limit = getattr(getattr(getattr(hub, "orders", None), "settings", None),
                            "max_order_delay", None)
            if limit is not None:
                yield GaugeMetricFamily("ibhub_pacing_max_order_delay_seconds",
                                        "Expected wait above which an order is refused busy",
                                        value=limit)
            yield GaugeMetricFamily("ibhub_pacing_queued",
                                    "Requests waiting for the pacer, with room held for "
                                    "orders being journaled",
                                    value=snap["queued"] + snap["reserved"])
            yield GaugeMetricFamily("ibhub_pacing_max_order_wait_seconds",
                                    "Longest time an order waited in the pacer",
                                    value=snap["max_order_wait_seconds"])
            yield CounterMetricFamily("ibhub_pacing_busy_refusals",
                                      "Requests refused busy (queue full or too long a wait)",
                                      value=snap["refused"])
            yield CounterMetricFamily("ibhub_pacing_withdrawn",
                                      "Queued sends withdrawn before they went upstream "
                                      "(orders cancelled before they were sent)",
                                      value=snap["withdrawn"])

        yield from _connection_metrics(hub)
        yield from _nats_metrics(hub)
        yield from _lane_metrics(hub)
        yield from _pub_metrics(hub)

        alerts = self.metrics.alerts
        fam = CounterMetricFamily("ibhub_alerts", "Alerts raised, by kind", labels=["kind"])
        if alerts is not None:
            for kind, n in sorted(alerts.counts.items()):
                fam.add_metric([kind], n)
        yield fam
        if alerts is not None:
            yield CounterMetricFamily("ibhub_alert_deliveries_failed",
                                      "Webhook or file deliveries that failed",
                                      value=alerts.delivery_failures)


def _nats_metrics(hub: Any) -> Iterator[Metric]:
    """The NATS bridge (ibhub.hub.nats_bridge): state and counters; nothing without it."""
    bridge = getattr(hub, "nats", None)
    if bridge is None:
        return
    r = bridge.report()
    yield GaugeMetricFamily("ibhub_nats_connected", "1 while the NATS bridge is connected",
                            value=1.0 if r["state"] == "connected" else 0.0)
    yield GaugeMetricFamily("ibhub_nats_stream_ok", "1 once the hub's JetStream stream exists",
                            value=1.0 if r["stream"] == "ok" else 0.0)
    for name, help_ in (("published", "Messages the bridge handed to NATS"),
                        ("unpublished", "Messages the bridge could not hand to NATS"),
                        ("reconnects", "Reconnections of the bridge to NATS"),
                        ("requests", "Requests received over NATS")):
        yield CounterMetricFamily(f"ibhub_nats_{name}", help_, value=r[name])


def _pub_metrics(hub: Any) -> Iterator[Metric]:
    """The XPUB's subscriptions (ibhub.hub.xpub) and the publishes nobody wanted."""
    subs = getattr(hub, "pub_subscriptions", None)
    fanout = getattr(hub, "fanout", None)
    if subs is None or fanout is None:
        return
    yield GaugeMetricFamily("ibhub_pub_subscribed_prefixes",
                            "Distinct topic prefixes PUB subscribers subscribe to",
                            value=len(subs.interest.prefixes))
    yield CounterMetricFamily("ibhub_pub_skipped",
                              "Publishes not sent on PUB: no subscriber wanted the topic",
                              value=fanout.publisher.skipped)
    fam = CounterMetricFamily(
        "ibhub_pub_subscription_messages", "Messages read from the PUB (XPUB) socket: "
        "subscribe, unsubscribe, malformed (not a subscription, ignored)", labels=["what"])
    for name, value in (("subscribe", subs.subscribes), ("unsubscribe", subs.unsubscribes),
                        ("malformed", subs.malformed)):
        fam.add_metric([name], value)
    yield fam


def _lane_metrics(hub: Any) -> Iterator[Metric]:
    """The lane (ibhub.hub.lane): open connections and its counters; nothing without it."""
    lane = getattr(hub, "lane", None)
    if lane is None:
        return
    yield GaugeMetricFamily("ibhub_lane_connections", "Lane connections open",
                            value=len(lane.connections))
    fam = CounterMetricFamily(
        "ibhub_lane", "Lane counters: connections, attached, refusals (attach_refused, "
        "attach_timeouts, bad_frames, refused_full), requests, events pushed and dropped, "
        "tick connections and their bundles pushed and dropped, replies lost, lanes "
        "closed for not reading", labels=["what"])
    for name, value in sorted(lane.counters.items()):
        fam.add_metric([name], value)
    yield fam


def _connection_metrics(hub: Any) -> Iterator[Metric]:
    """Connections per listener and the descriptor budget (ibhub.hub.limits)."""
    from ibhub.hub.limits import Limits

    limits = getattr(hub, "limits", None)
    if not isinstance(limits, Limits):
        return
    open_ = GaugeMetricFamily("ibhub_connections", "Open client connections, by listener",
                              labels=["listener"])
    cap = GaugeMetricFamily("ibhub_connections_max", "Connection cap, by listener",
                            labels=["listener"])
    refused = CounterMetricFamily(
        "ibhub_connections_refused",
        "Connections refused (TWS front door), or times a ZeroMQ listener stopped "
        "accepting (rpc, pub), by listener", labels=["listener"])
    refusing = GaugeMetricFamily("ibhub_connections_refusing",
                                 "1 while a listener refuses new connections",
                                 labels=["listener"])
    for name, st in sorted(limits.listeners.items()):
        open_.add_metric([name], st.open)
        cap.add_metric([name], st.cap)
        refused.add_metric([name], st.refused)
        refusing.add_metric([name], 1.0 if st.refusing else 0.0)
    yield from (open_, cap, refused, refusing)
    yield GaugeMetricFamily("ibhub_open_files_reserve",
                            "Descriptors kept back from clients (fd_reserve)",
                            value=limits.reserve)


def _subscriber_metrics(leases: list[Any]) -> Iterator[Metric]:
    """What subscribers report about keeping up (heartbeats; docs/recording.md): a PUB
    socket drops silently at a slow subscriber's high-water mark, so the subscriber's
    own gap count and lag are the only honest signal. One series per script name."""
    from ibhub.hub.lease_requests import SLOW_LAG_MS

    gaps = CounterMetricFamily("ibhub_subscriber_gaps",
                               "Sequence gaps a subscriber detected (it lost events), "
                               "by script name", labels=["name"])
    lag = GaugeMetricFamily("ibhub_subscriber_lag_seconds",
                            "How far behind the hub a subscriber says it is, by script name",
                            labels=["name"])
    by_name: dict[str, tuple[int, float]] = {}
    slow = 0
    for lease in leases:
        g, ms = by_name.get(lease.name, (0, 0.0))
        by_name[lease.name] = (g + lease.gaps, max(ms, lease.lag_ms))
        slow += lease.lag_ms >= SLOW_LAG_MS
    for name, (g, ms) in sorted(by_name.items()):
        if g or ms:
            gaps.add_metric([name], g)
            lag.add_metric([name], ms / 1000)
    yield gaps
    yield lag
    yield GaugeMetricFamily("ibhub_slow_subscribers",
                            "Subscribers reporting a lag of a second or more", value=slow)
