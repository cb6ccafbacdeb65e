"""The status page over real HTTP against a hub on the simulator: every section from
live hub state, escaping of what scripts name themselves, the event stream, its cap,
read-only routes; and the IB library's connect-retry ERROR lines demoted during an
outage (one hub WARNING per outage)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import subprocess
import sys

import aiohttp
import pytest

from ibhub.hub.ops import statuspage
from ibhub.hub.server import HubServer
from ibhub.ib import lib as iblib
from ibhub.protocol import ContractSpec, PlaceOrder
from ibhub.sim import SimGateway
from tests.e2e.conftest import HubFactory, wait_until
from tests.e2e.test_health import free_port
from tests.helpers import upstream_of

EVIL = "<script>alert(1)</script>"


async def read_event(resp: aiohttp.ClientResponse) -> dict:
    """The next ``status`` event's data from an open /events stream."""
    data = b""
    while True:
        line = await asyncio.wait_for(resp.content.readline(), 5.0)
        assert line, "stream ended"
        if line.startswith(b"data: "):
            data = line[6:]
        elif line == b"\n" and data:
            return json.loads(data)


async def test_status_page_shows_the_hub(make_hub: HubFactory, clients) -> None:
    hub: HubServer = await make_hub(http_port=free_port(), orders=True)
    base = f"http://127.0.0.1:{hub.ops.http_port}"
    c = clients(hub.rpc_endpoint)
    await c.hello(EVIL)
    await c.subscribe("AAPL")
    order = await c.request(PlaceOrder(id=c.next_id(), lease=c.lease, client_order_id="page-1",
                                       contract=ContractSpec(symbol="AAPL"), action="BUY",
                                       quantity=1, order_type="LMT", limit_price=175.0))
    assert order.__class__.__name__ == "OrderAccepted", order
    await wait_until(lambda: hub.subs.all() and hub.subs.all()[0].stream.ticks >= 3, 5.0,
                     "ticks flowing")
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/") as resp:
            assert resp.status == 200 and resp.content_type == "text/html"
            assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
            page = await resp.text()
        # Server-rendered, every section present, the script name escaped.
        assert 'data-state="CONNECTED"' in page and 'class="badge up"' in page
        for section in ("upstream", "rates", "instruments", "leases", "orders", "pacer",
                        "alerts"):
            assert f'id="{section}"' in page, section
        assert "<script>alert" not in page and "&lt;script&gt;alert(1)" in page
        assert re.search(r"<td>tick\.AAPL</td><td><b>AAPL</b></td>", page)
        assert 'id="lines">1 / 100<' in page
        assert "page-1" not in page  # the script's own id is its business; the row shows:
        assert re.search(r"<td>LMT</td><td>175</td><td>(PreSubmitted|Submitted|PendingSubmit)",
                         page), "working order row"
        assert "<noscript><meta http-equiv=\"refresh\"" in page

        async with http.get(base + "/status.json") as resp:
            doc = await resp.json()
        assert doc["upstream"]["state"] == "CONNECTED"
        assert doc["instruments"][0]["symbol"] == "AAPL"
        assert doc["instruments"][0]["last_tick_at"] > 0
        assert doc["lease_groups"][0]["name"] == EVIL
        assert len(doc["orders"]["working"]) == 1

        async with http.get(base + "/static/status.js") as resp:
            assert resp.status == 200 and "EventSource" in await resp.text()
        async with http.get(base + "/static/../server.py") as resp:
            assert resp.status == 404
        async with http.post(base + "/") as resp:
            assert resp.status == 405  # read-only

        # The event stream: a status event at once, then one a second with new tick times.
        async with http.get(base + "/events") as resp:
            assert resp.content_type == "text/event-stream"
            first = await read_event(resp)
            assert first["state"] == "CONNECTED"
            assert set(first["sections"]) == set(statuspage.statusview.SECTIONS)
            assert "&lt;script&gt;" in first["sections"]["leases"]
            ts1 = re.findall(r'data-ts="([\d.]+)"', first["sections"]["instruments"])
            second = await read_event(resp)
            ts2 = re.findall(r'data-ts="([\d.]+)"', second["sections"]["instruments"])
            assert float(ts2[0]) > float(ts1[0]), "tick time advances"

            # At most MAX_STREAMS at once: one more is refused with a reason.
            page_service = hub.ops.http.page
            extra = []
            try:
                for _ in range(statuspage.MAX_STREAMS - 1):
                    extra.append(await http.get(base + "/events"))
                await wait_until(lambda: page_service.streams == statuspage.MAX_STREAMS,
                                 5.0, "streams open")
                async with http.get(base + "/events") as refused:
                    assert refused.status == 503
                    assert "live status pages are open" in await refused.text()
                async with http.get(base + "/metrics") as scrape:
                    assert scrape.status == 200  # a scrape still gets through
            finally:
                for r in extra:
                    r.close()


async def test_outage_logs_one_warning_and_no_library_errors(
        make_hub: HubFactory, hub_sim: SimGateway, caplog: pytest.LogCaptureFixture) -> None:
    hub = await make_hub(http_port=free_port(), reconnect_backoff_initial=0.05,
                         reconnect_backoff_max=0.1)
    base = f"http://127.0.0.1:{hub.ops.http_port}"
    caplog.set_level(logging.DEBUG, logger=f"{iblib.NAME}")
    caplog.set_level(logging.DEBUG, logger="ibhub")
    caplog.clear()
    await hub_sim.close_port()
    up = upstream_of(hub)
    retries = lambda: sum("failed, attempt" in r.getMessage() for r in caplog.records)  # noqa: E731
    await wait_until(lambda: retries() >= 4, 10.0, "four failed reconnect attempts")
    async with aiohttp.ClientSession() as http, http.get(base + "/status.json") as resp:
        doc = await resp.json()
    assert doc["upstream"]["state"] in ("RECONNECTING", "CONNECTING")
    assert doc["history"][-1]["state"] == doc["upstream"]["state"]
    await hub_sim.open_port()
    await wait_until(lambda: up.connected, 10.0, "reconnected")

    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [f"{r.name}: {r.getMessage()}" for r in errors]
    session_warnings = [r.getMessage() for r in caplog.records
                        if r.name == "ibhub.ib.session" and r.levelno == logging.WARNING]
    assert len(session_warnings) == 1 and "lost" in session_warnings[0], session_warnings
    demoted = [r.getMessage() for r in caplog.records if r.name == "ibhub.ib.liblog"]
    assert any("API connection failed" in m for m in demoted), demoted
    lib_warnings = [r for r in caplog.records
                    if r.name.startswith(iblib.NAME) and r.levelno >= logging.WARNING]
    assert not lib_warnings


def test_python_dash_m_ibhub() -> None:
    done = subprocess.run([sys.executable, "-m", "ibhub", "--help"], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "Usage: ibhub" in done.stdout and "run" in done.stdout
