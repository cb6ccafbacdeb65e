"""A hub with orders in a process of its own, for the kill -9 test (not a test module).

    python -m tests.e2e.orders_hub_child GATEWAY_PORT PUB RPC DATA_DIR [JSON]

Prints READY once connected, reconciled with the Gateway and the reconciliation is
journaled; then serves until killed. ``JSON``: ``{"hub": {...}, "orders": {...}}``,
HubSettings and OrderSettings overrides (default: order rate limits opened wide and
back-pressure off, so that a burst is queued when the hub dies).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from ibhub.config import HubSettings
from ibhub.hub.server import HubServer
from ibhub.orders.journal import Journal
from tests.e2e.conftest import FAST
from tests.e2e.test_orders_hub import wire_orders

WIDE_OPEN: dict[str, Any] = {
    "hub": {"pacer_queue_per_lease": 10_000},
    "orders": {"order_rate": 1000.0, "order_burst": 1000.0, "max_order_delay": 600.0},
}


async def main(port: int, pub: str, rpc: str, data_dir: str, extra: dict[str, Any]) -> None:
    settings = HubSettings.model_validate(
        {"gateway_host": "127.0.0.1", "gateway_port": port, "client_id": 0, "pub": pub,
         "rpc": rpc, "data_dir": data_dir, **FAST, **extra.get("hub", {})}
    )  # fmt: skip
    hub = HubServer(settings)
    await hub.start()
    while hub.upstream is None or not hub.upstream.connected:
        await asyncio.sleep(0.01)
    svc = await wire_orders(hub, **extra.get("orders", {}))
    await svc.reconciled.wait()
    assert svc.writer is not None
    await svc.writer.write(Journal.note, 0, "ready", {})  # reconciliation committed
    print("READY", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    overrides = json.loads(sys.argv[5]) if len(sys.argv) > 5 else WIDE_OPEN
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], overrides))
