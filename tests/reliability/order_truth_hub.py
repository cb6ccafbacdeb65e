"""The hub of the order-truth machine, in a process of its own (not a test module).

    python -m tests.reliability.order_truth_hub GATEWAY_PORT PUB RPC DATA_DIR TWS_PORT PACER_RATE

A hub with the order service and its TWS front door on ``TWS_PORT``, the e2e suite's
fast timings, a slow upstream budget (``PACER_RATE`` messages/s, so a burst of orders
queues in the pacer) and per-lease order limits high enough never to refuse the
machine's bursts. Prints READY once connected, reconciled with the Gateway and the
reconciliation journaled; then serves until killed (the machine kills it with -9).
"""

from __future__ import annotations

import asyncio
import sys

from ibhub.config import HubSettings
from ibhub.hub.server import HubServer
from ibhub.orders.journal import Journal
from tests.e2e.conftest import FAST


async def main(port: int, pub: str, rpc: str, data_dir: str, tws_port: int,
               pacer_rate: float) -> None:
    settings = HubSettings.model_validate(
        {"gateway_host": "127.0.0.1", "gateway_port": port, "client_id": 0, "pub": pub,
         "rpc": rpc, "data_dir": data_dir, **FAST, "tws_port": tws_port,
         "pacer_rate": pacer_rate, "lease_timeout": 10.0, "orders": True,
         "order_rate": 1000.0, "order_burst": 1000.0, "journal_sync": "NORMAL"}
    )  # fmt: skip
    hub = HubServer(settings)
    await hub.start()  # the order service is attached before any request is served
    while hub.upstream is None or not hub.upstream.connected:
        await asyncio.sleep(0.01)
    svc = hub.orders
    await svc.reconciled.wait()
    assert svc.writer is not None
    await svc.writer.write(Journal.note, 0, "ready", {})  # reconciliation committed
    print("READY", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    a = sys.argv
    asyncio.run(main(int(a[1]), a[2], a[3], a[4], int(a[5]), float(a[6])))
