"""/health and /metrics through real HTTP requests to a running hub on the simulator."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from ibhub.hub.server import HubServer
from ibhub.protocol import GetSnapshot, GetStatus, Heartbeat, Snapshot, StatusReply
from ibhub.sim import SimGateway
from tests.e2e.conftest import HubFactory, wait_until
from tests.helpers import upstream_of


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def get(port: int, path: str) -> tuple[int, str, Any]:
    async with aiohttp.ClientSession() as http, \
            http.get(f"http://127.0.0.1:{port}{path}") as resp:
        text = await resp.text()
        body = await resp.json() if resp.content_type == "application/json" else text
        return resp.status, resp.headers.get("Content-Type", ""), body


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(metrics: dict, name: str, **labels: str) -> float:
    return metrics[(name, tuple(sorted(labels.items())))]


async def test_health_and_metrics_of_a_busy_hub(make_hub: HubFactory, clients) -> None:
    hub: HubServer = await make_hub(http_port=free_port())
    assert hub.ops is not None and hub.ops.http_port
    port = hub.ops.http_port
    c = clients(hub.rpc_endpoint)
    await c.hello("health-test")
    sub = await c.subscribe("AAPL")
    await wait_until(lambda: hub.subs.all() and hub.subs.all()[0].stream.ticks >= 5, 5.0,
                     "ticks flowing")
    assert isinstance(await c.request(GetSnapshot(id=c.next_id(), topic=sub.topic)), Snapshot)
    assert isinstance(await c.request(GetStatus(id=c.next_id())), StatusReply)

    status, ctype, doc = await get(port, "/health")
    assert status == 200 and ctype.startswith("application/json")
    assert doc["status"] == "healthy" and doc["reasons"] == []
    assert doc["upstream"]["state"] == "CONNECTED"
    assert doc["upstream"]["port"] == upstream_of(hub).port
    assert doc["connected_at"] and doc["last_tick_at"] >= doc["connected_at"] - 1
    assert doc["subscriptions"] == 1 and doc["leases"] == 1 and doc["reconnect_count"] == 0
    assert doc["lines_used"] == 1 and doc["uptime_seconds"] > 0

    status, ctype, text = await get(port, "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    m = samples(text)
    assert value(m, "ibhub_upstream_state", state="CONNECTED") == 1.0
    assert value(m, "ibhub_upstream_state", state="RECONNECTING") == 0.0
    assert value(m, "ibhub_upstream_connected") == 1.0
    assert value(m, "ibhub_upstream_reconnects_total") == 0
    ticks_in = value(m, "ibhub_ticks_in_total")
    ticks_out = value(m, "ibhub_ticks_out_total")
    assert ticks_out >= 5 and ticks_in >= ticks_out  # every published tick came in
    assert value(m, "ibhub_events_published_total", kind="tick") == ticks_out
    assert value(m, "ibhub_events_published_total", kind="hub") >= 2  # hub.status states
    assert value(m, "ibhub_requests_total", type="hello", outcome="ok") == 1
    assert value(m, "ibhub_requests_total", type="subscribe", outcome="ok") == 1
    assert value(m, "ibhub_requests_total", type="snapshot", outcome="ok") == 1
    assert value(m, "ibhub_request_seconds_count", type="subscribe") == 1
    assert value(m, "ibhub_request_seconds_bucket", type="subscribe", le="+Inf") == 1
    assert value(m, "ibhub_events_dropped_total", reason="subscriber_recovery") == 1
    assert value(m, "ibhub_events_dropped_total", reason="malformed_upstream") == 0
    assert value(m, "ibhub_events_dropped_total", reason="reply_undeliverable") == 0
    assert value(m, "ibhub_requests_malformed_total") == 0
    assert value(m, "ibhub_market_data_lines_used") == 1
    assert value(m, "ibhub_market_data_lines_max") == hub.settings.lines_max
    assert value(m, "ibhub_leases") == 1 and value(m, "ibhub_subscriptions") == 1
    assert value(m, "ibhub_last_tick_seconds") > 0
    assert value(m, "ibhub_alerts_total", kind="upstream_lost") == 0

    # An unknown lease is an error outcome, counted under its code; garbage is malformed.
    await c.request(Heartbeat(id=c.next_id(), lease="nope"))
    await c.send_raw(b"\xc1 not msgpack")
    await c.recv_reply()
    _, _, text = await get(port, "/metrics")
    assert value(samples(text), "ibhub_requests_total", type="heartbeat",
                 outcome="unknown_lease") == 1
    assert value(samples(text), "ibhub_requests_malformed_total") == 1
    # Scrapes are cheap and repeatable: counters only grow.
    assert value(samples(text), "ibhub_ticks_out_total") >= ticks_out


async def test_health_is_503_while_the_upstream_is_down(make_hub: HubFactory,
                                                        hub_sim: SimGateway) -> None:
    hub = await make_hub(http_port=free_port())
    port = hub.ops.http_port
    await hub_sim.close_port()
    await wait_until(lambda: not upstream_of(hub).connected, 5.0, "upstream lost")
    status, _, doc = await get(port, "/health")
    assert status == 503
    assert doc["status"] == "down" and doc["upstream"]["state"] in ("RECONNECTING", "FAILED")
    assert doc["reasons"] and "upstream" in doc["reasons"][0]
    assert doc["connected_at"] is None
    _, _, text = await get(port, "/metrics")
    m = samples(text)
    assert value(m, "ibhub_upstream_connected") == 0.0
    assert value(m, "ibhub_upstream_state", state="RECONNECTING") == 1.0
    assert value(m, "ibhub_alerts_total", kind="upstream_lost") == 1

    await hub_sim.open_port()
    await wait_until(lambda: upstream_of(hub).connected, 10.0, "reconnected")
    status, _, doc = await get(port, "/health")
    assert status == 200 and doc["status"] == "healthy" and doc["reconnect_count"] == 1
    _, _, text = await get(port, "/metrics")
    assert value(samples(text), "ibhub_upstream_reconnects_total") == 1


async def test_degraded_when_the_line_budget_is_used_up(make_hub: HubFactory, clients) -> None:
    hub = await make_hub(http_port=free_port(), lines_max=1)
    c = clients(hub.rpc_endpoint)
    await c.hello("one-line")
    await c.subscribe("AAPL")
    status, _, doc = await get(hub.ops.http_port, "/health")
    assert status == 200 and doc["status"] == "degraded"
    assert any("lines used up" in r for r in doc["reasons"])


async def test_http_port_in_use_does_not_stop_the_hub(make_hub: HubFactory) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        hub = await make_hub(http_port=busy.getsockname()[1])
        assert hub.ops.http is None and upstream_of(hub).connected


async def test_http_off(make_hub: HubFactory) -> None:
    hub = await make_hub(http_port=0)
    assert hub.ops is not None and hub.ops.http is None and hub.ops.http_port == 0


async def test_ibhub_run_serves_health_with_json_logs(ipc_dir: str, tmp_path) -> None:
    """The whole CLI path: config file + flags -> HubSettings -> JSON logs -> /health."""
    port = free_port()
    cfg = tmp_path / "ibhub.toml"
    cfg.write_text(f'pub = "ipc://{ipc_dir}/pub"\nrpc = "ipc://{ipc_dir}/rpc"\n'
                   f'log_format = "json"\ndata_dir = "{tmp_path}"\nsim_control_port = -1\n'
                   f'[alert]\nfile = "{tmp_path}/alerts.jsonl"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IB_", "IBHUB_"))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from ibhub.cli import main; main()",
        "run", "--sim", "--config", str(cfg), "--http-port", str(port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        lines: list[str] = []
        while not any(line.strip().startswith("state") for line in lines):
            raw = await asyncio.wait_for(proc.stdout.readline(), 15.0)
            assert raw, f"ibhub run exited early: {lines}"
            lines.append(raw.decode())
        assert f"http http://127.0.0.1:{port}/ (status page; /health, /metrics)" in "".join(lines)
        status, _, doc = await get(port, "/health")
        assert status == 200 and doc["status"] == "healthy"
        status, _, text = await get(port, "/metrics")
        assert status == 200 and "ibhub_upstream_connected 1.0" in text
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10.0) == 0
        err = (await proc.stderr.read()).decode().splitlines()
        records = [json.loads(line) for line in err if line.startswith("{")]
        assert records, err
        assert any(r["logger"] == "ibhub.hub.ops.health" and f":{port}/health" in r["message"]
                   for r in records)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
