"""``ibhub top --once`` against a running hub on the simulator."""

from __future__ import annotations

import asyncio
import io
import os
import sys

from ibhub.cli.top import run_top
from ibhub.hub.server import attach_orders
from ibhub.protocol import ContractSpec, OrderAccepted, PlaceOrder
from tests.e2e.conftest import HubFactory, wait_until
from tests.e2e.test_health import free_port
from tests.helpers import upstream_of


async def test_top_once_shows_the_hub(make_hub: HubFactory, clients, monkeypatch) -> None:
    hub = await make_hub(http_port=free_port())
    # top runs as the hub's user: it reads the operator token to list every order.
    monkeypatch.setenv("IBHUB_OPERATOR_TOKEN_FILE", str(hub.settings.operator_token_path))
    svc = getattr(hub, "orders", None) or await attach_orders(hub)
    await wait_until(svc.reconciled.is_set, 5.0, "orders reconciled")
    c = clients(hub.rpc_endpoint)
    await c.hello("top-watcher")
    await c.subscribe("AAPL")
    await c.subscribe("MSFT")
    reply = await c.request(PlaceOrder(id=c.next_id(), lease=c.lease, client_order_id="t-1",
                                       contract=ContractSpec(symbol="AAPL"), action="BUY",
                                       quantity=3.0))
    assert isinstance(reply, OrderAccepted)
    await wait_until(lambda: all(s.stream.ticks for s in hub.subs.all()), 5.0, "ticks")

    out = io.StringIO()
    await run_top(hub.rpc_endpoint, hub.pub_endpoint, hub.ops.http_port, 0.5, True, 3.0, out)
    text = out.getvalue()
    print(text)
    assert "\x1b[" not in text  # --once is plain text
    lines = text.splitlines()
    assert lines[1].startswith("upstream   CONNECTED") and f":{upstream_of(hub).port}" in lines[1]
    assert "reconnects 0" in text and "lines 2/100" in text
    assert "SUBSCRIPTIONS (2," in text
    rows = {ln.split()[0]: ln.split() for ln in lines if ln.startswith("tick.")}
    assert set(rows) == {"tick.AAPL", "tick.MSFT"}
    assert float(rows["tick.AAPL"][-1]) > 0  # a measured tick rate
    assert "top-watcher" in text and "ibhub-top" in text  # both leases
    assert "pacing     queue" in text and "health     healthy" in text
    order_rows = [ln for ln in lines if ln.strip().startswith(str(reply.order_id))]
    assert order_rows and "top-watcher" in order_rows[0] and "AAPL" in order_rows[0]


async def test_top_command_once(make_hub: HubFactory, clients) -> None:
    """The CLI end to end in a subprocess; a hub without orders or HTTP says so."""
    hub = await make_hub()
    c = clients(hub.rpc_endpoint)
    await c.hello("cli-watcher")
    await c.subscribe("AAPL")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from ibhub.cli import main; main()", "top", "--once",
        "--rpc", hub.rpc_endpoint, "--pub", hub.pub_endpoint, "--http-port", "0",
        "--interval", "0.3",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        async with asyncio.timeout(20):
            stdout, stderr = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = stdout.decode()
    assert proc.returncode == 0, stderr.decode()
    assert "upstream   CONNECTED" in text and "tick.AAPL" in text and "cli-watcher" in text
    assert "pacing     n/a (no --http-port)" in text
    assert "RECENT ORDERS\n  n/a (" in text


async def test_top_without_a_hub_fails_clearly(ipc_dir: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from ibhub.cli import main; main()", "top", "--once",
        "--rpc", f"ipc://{ipc_dir}/nobody", "--pub", f"ipc://{ipc_dir}/nobody-pub",
        "--timeout", "0.3",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(20):
        _, stderr = await proc.communicate()
    assert proc.returncode == 1 and "hub at ipc://" in stderr.decode()
