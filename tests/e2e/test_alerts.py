"""Alerts end to end: a local aiohttp receiver gets the webhook POSTs, the alert file
gets JSON lines, hub.status carries kind "alert"; a slow or broken webhook never
holds the hub up."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from ibhub.hub.server import attach_orders
from ibhub.protocol import ContractSpec, OrderAccepted, OrderRejected, PlaceOrder
from ibhub.sim import SimGateway
from tests.e2e.conftest import HubFactory, wait_until
from tests.helpers import upstream_of


class Receiver:
    """A webhook endpoint on 127.0.0.1 that records what it is sent."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.status = 200
        self.hang = asyncio.Event()  # set: answer; clear: never answer (slow webhook)
        self.hang.set()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hook"

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.json()
        await self.hang.wait()
        self.received.append(body)
        return web.Response(status=self.status)

    async def stop(self) -> None:
        self.hang.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def kinds(self) -> list[str]:
        return [a["kind"] for a in self.received]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


async def subscribed(hub: Any, lst: Any) -> None:
    """Wait until the SUB socket gets hub.status (publishing probes until it does)."""
    def probe() -> bool:
        if lst.statuses():
            return True
        hub.fanout.status(upstream_of(hub).state, "probe", 0, "test probe", 0)
        return False

    await wait_until(probe, 5.0, "subscribed to hub.status", interval=0.02)


def file_kinds(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [json.loads(line)["kind"] for line in path.read_text().splitlines()]


async def test_upstream_lost_and_restored(make_hub: HubFactory, hub_sim: SimGateway,
                                          receiver: Receiver, listeners,
                                          tmp_path: Path) -> None:
    path = tmp_path / "alerts" / "alerts.jsonl"
    hub = await make_hub(alert_webhook=receiver.url, alert_file=path)
    lst = listeners(hub.pub_endpoint, "hub.status")
    await subscribed(hub, lst)

    await hub_sim.close_port()
    await wait_until(lambda: "upstream_lost" in receiver.kinds(), 5.0, "webhook: lost")
    lost = receiver.received[0]
    assert lost["state"] in ("RECONNECTING", "FAILED") and "lost" in lost["message"]
    assert lost["details"]["previous"] == "CONNECTED" and lost["ts"] > 0
    await wait_until(lambda: file_kinds(path) == ["upstream_lost"], 5.0, "file: lost")
    await wait_until(lambda: any(e.kind == "alert" and e.message.startswith("upstream_lost")
                                 for e in lst.statuses()), 5.0, "hub.status alert")

    await hub_sim.open_port()
    await wait_until(lambda: "upstream_restored" in receiver.kinds(), 10.0, "webhook: restored")
    restored = receiver.received[-1]
    assert restored["state"] == "CONNECTED" and restored["details"]["down_seconds"] > 0
    await wait_until(lambda: file_kinds(path) == ["upstream_lost", "upstream_restored"], 5.0,
                     "file: restored")
    # the receiver has the POST before the hub has its response and counts the delivery
    await wait_until(lambda: hub.ops.alerts.delivered == 4, 5.0, "deliveries counted")
    assert hub.ops.alerts.delivery_failures == 0


async def test_order_rejections_and_pacing_violations(make_hub: HubFactory, hub_sim: SimGateway,
                                                      receiver: Receiver, clients) -> None:
    hub = await make_hub(alert_webhook=receiver.url)
    svc = getattr(hub, "orders", None) or await attach_orders(hub, max_order_quantity=2e6)
    await wait_until(svc.reconciled.is_set, 5.0, "orders reconciled")
    c = clients(hub.rpc_endpoint)
    await c.hello("alert-trader")

    def order(coid: str, qty: float) -> PlaceOrder:
        return PlaceOrder(id=c.next_id(), lease=c.lease, client_order_id=coid,
                          contract=ContractSpec(symbol="AAPL"), action="BUY", quantity=qty)

    # Refused by the hub itself (risk gate): the reply is OrderRejected.
    reply = await c.request(order("too-big", 5e6))
    assert isinstance(reply, OrderRejected)
    await wait_until(lambda: "order_rejected" in receiver.kinds(), 5.0, "hub-side rejection")
    first = receiver.received[-1]
    assert first["details"]["source"] == "hub" and first["details"]["reason"] == reply.reason

    # Refused by the (simulated) Gateway: IB error 201 arrives after OrderAccepted.
    reply = await c.request(order("ib-refuses", 1.5e6))
    assert isinstance(reply, OrderAccepted)
    await wait_until(lambda: sum(k == "order_rejected" for k in receiver.kinds()) == 2, 5.0,
                     "IB-side rejection")
    second = receiver.received[-1]
    assert second["code"] == 201 and second["details"]["source"] == "ib"

    hub_sim.broadcast_error(100, "Max rate of messages per second has been exceeded:max=50")
    await wait_until(lambda: "pacing_violation" in receiver.kinds(), 5.0, "pacing alert")
    assert receiver.received[-1]["code"] == 100
    assert hub.ops.alerts.counts["order_rejected"] == 2


async def test_a_slow_or_failing_webhook_never_blocks_the_hub(
        make_hub: HubFactory, hub_sim: SimGateway, receiver: Receiver, listeners) -> None:
    receiver.hang.clear()  # the webhook accepts the POST and never answers
    hub = await make_hub(alert_webhook=receiver.url, alert_webhook_timeout=0.3)
    lst = listeners(hub.pub_endpoint, "hub.status")
    await subscribed(hub, lst)
    await hub_sim.close_port()
    # hub.status gets the alert at once, whatever the webhook does.
    await wait_until(lambda: any(e.kind == "alert" and "upstream_lost" in e.message
                                 for e in lst.statuses()), 2.0, "alert on hub.status")
    await wait_until(lambda: hub.ops.alerts.delivery_failures == 1, 5.0, "webhook timed out")
    receiver.hang.set()
    receiver.status = 500  # now it answers, with an error
    await hub_sim.open_port()
    await wait_until(lambda: hub.ops.alerts.delivery_failures == 2, 10.0, "HTTP 500 counted")
    assert upstream_of(hub).connected
