"""Metrics read at scrape time: request counters and latency, the hub's own state,
event totals from the fan-out's sequence numbers (kept across dropped topics)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import zmq
from prometheus_client.parser import text_string_to_metric_families

from ibhub.config import HubSettings
from ibhub.hub.fanout import Fanout
from ibhub.hub.ops.metrics import HubMetrics, outcome_of
from ibhub.hub.server import HubServer
from ibhub.protocol import ContractInfo, Error, Ok, OrderRejected
from ibhub.tws.pacing import Pacer, PacerBusy, Priority


def samples(metrics: HubMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def val(m: dict, name: str, **labels: str) -> float:
    return m[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def pub() -> Iterator[zmq.Socket[bytes]]:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUB)
    sock.bind("inproc://metrics-test")
    yield sock
    sock.close(0)
    ctx.term()


def test_outcomes() -> None:
    assert outcome_of(Ok(id=1)) == "ok"
    assert outcome_of(Error(id=1, code="unknown_lease", message="")) == "unknown_lease"
    assert outcome_of(OrderRejected(id=1, client_order_id="", reason="risk",
                                    message="")) == "rejected"


def test_published_totals_survive_dropped_topics(pub: zmq.Socket[bytes]) -> None:
    fan = Fanout(pub)
    info = ContractInfo(con_id=1, symbol="AAPL", sec_type="STK", exchange="SMART",
                        primary_exchange="", currency="USD", local_symbol="AAPL",
                        trading_class="", expiry="", strike=0.0, right="", multiplier="",
                        min_tick=0.01, long_name="")
    stream = fan.tick_stream(fan.topic_for(info, "ticks"), info)
    for i in range(5):
        stream.price(1, 100.0 + i, 1.0)
    stream.price(21, 99.0, 0.0)  # a tick type a Tick does not carry: not published
    fan.status("CONNECTED", "state", 0, "x", 0)
    fan.error("L1", 200, "no such contract", "", "tick.X")
    fan.error("L1", 200, "again", "", "tick.X")
    assert fan.published() == {"tick": 5, "hub": 1, "error": 2}
    fan.drop("error.L1")  # the lease ended; its topic is forgotten, its count is not
    assert fan.published() == {"tick": 5, "hub": 1, "error": 2}
    fan.error("L1", 200, "new lease, same id", "", "tick.X")
    assert fan.published()["error"] == 3


def test_hub_metrics_without_a_running_hub() -> None:
    hub = HubServer(HubSettings(lines_max=7))
    metrics = HubMetrics(hub)
    metrics.observe("hello", Ok(id=1), 0.0004)
    metrics.observe("hello", Ok(id=2), 0.003)
    metrics.observe("subscribe", Error(id=3, code="line_limit", message=""), 0.2)
    metrics.observe("snapshot", Ok(id=4), 0.0001)
    m = samples(metrics)
    assert val(m, "ibhub_requests_total", type="hello", outcome="ok") == 2
    assert val(m, "ibhub_requests_total", type="subscribe", outcome="line_limit") == 1
    assert val(m, "ibhub_request_seconds_bucket", type="hello", le="0.0005") == 1
    assert val(m, "ibhub_request_seconds_bucket", type="hello", le="0.005") == 2
    assert val(m, "ibhub_request_seconds_count", type="subscribe") == 1
    assert val(m, "ibhub_events_dropped_total", reason="subscriber_recovery") == 1
    assert val(m, "ibhub_upstream_state", state="DISCONNECTED") == 1
    assert val(m, "ibhub_upstream_connected") == 0
    assert val(m, "ibhub_market_data_lines_max") == 7
    assert val(m, "ibhub_market_data_lines_used") == 0 and val(m, "ibhub_leases") == 0
    assert val(m, "ibhub_ticks_in_total") == 0 and val(m, "ibhub_ticks_out_total") == 0
    assert val(m, "process_resident_memory_bytes") > 0  # the process collectors too
    assert any(name == "python_gc_collections_total" for name, _ in m)
    # Two hubs in one process keep separate registries.
    assert samples(HubMetrics(hub)).get(
        ("ibhub_requests_total", (("outcome", "ok"), ("type", "hello")))) is None


async def test_pacing_queue_of_an_attached_service() -> None:
    hub = HubServer(HubSettings())
    pacer = Pacer(rate=1.0, burst=1.0)  # not started: everything stays queued

    class Orders:
        pass

    svc = Orders()
    svc.pacer = pacer  # type: ignore[attr-defined]
    hub.add_service(svc)
    for _ in range(3):
        pacer.submit(Priority.ORDER, lambda: None, label="order")
    pacer.submit(Priority.CANCEL, lambda: None, label="cancel")
    m = samples(HubMetrics(hub))
    assert val(m, "ibhub_pacing_queue_depth", priority="order") == 3
    assert val(m, "ibhub_pacing_queue_depth", priority="cancel") == 1
    assert val(m, "ibhub_pacing_sent_total") == 0
    # back-pressure: 4 ahead of a new order, 1 token at hand, 1 message/s
    assert val(m, "ibhub_pacing_expected_order_delay_seconds") == 4.0
    assert val(m, "ibhub_pacing_queued") == 4
    assert val(m, "ibhub_pacing_busy_refusals_total") == 0
    with pytest.raises(PacerBusy):
        pacer.check(Priority.ORDER, max_delay=2.0)
    m = samples(HubMetrics(hub))
    assert val(m, "ibhub_pacing_busy_refusals_total") == 1
    assert val(m, "ibhub_pacing_withdrawn_total") == 0
    await pacer.stop()
