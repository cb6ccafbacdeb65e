"""kill -9 of the hub in the middle of an order burst, then a restart.

The hub runs in a subprocess; three scripts fire 60 orders each without waiting; the
hub is SIGKILLed once the simulated Gateway has received some of them. After a restart
on the same journal: every order the hub acknowledged is there with its owner and
client order id, the journal and the simulator's book agree (no order lost, none
duplicated), orders that never reached the Gateway are marked so (and not re-sent),
and retries of every acknowledged order are answered as duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ibhub import wire
from ibhub.orders.journal import JOURNAL_FILE, Journal
from ibhub.orders.port import parse_order_ref
from ibhub.protocol import ContractSpec, OrderAccepted, PlaceOrder
from ibhub.sim import SimGateway
from tests.e2e.conftest import RawClient
from tests.helpers import wait_until

REPO = Path(__file__).resolve().parents[2]
PLACE_ORDER = 3
SCRIPTS = ("s0", "s1", "s2")
PER_SCRIPT = 60


async def start_hub(sim: SimGateway, ipc_dir: str, tag: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.e2e.orders_hub_child", str(sim.port),
        f"ipc://{ipc_dir}/{tag}-pub", f"ipc://{ipc_dir}/{tag}-rpc", ipc_dir,
        stdout=asyncio.subprocess.PIPE, cwd=REPO,
    )  # fmt: skip
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert line.strip() == b"READY", line
    return proc


async def kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGKILL)
    await proc.wait()


def order(client: RawClient, coid: str) -> PlaceOrder:
    return PlaceOrder(id=client.next_id(), lease=client.lease, client_order_id=coid,
                      contract=ContractSpec(symbol="AAPL"), action="BUY", quantity=1.0,
                      order_type="MKT")  # fmt: skip


@pytest.mark.parametrize("kill_after", [1, 120])
async def test_sigkill_mid_burst_then_restart(
    hub_sim: SimGateway, ipc_dir: str, clients: Callable[..., RawClient], kill_after: int
) -> None:
    hub = await start_hub(hub_sim, ipc_dir, "a")
    try:
        scripts = [clients(f"ipc://{ipc_dir}/a-rpc") for _ in SCRIPTS]
        for c, name in zip(scripts, SCRIPTS, strict=True):
            await c.hello(name)
        acked: dict[tuple[str, str], int] = {}
        killed: list[bool] = []

        async def collect(c: RawClient, name: str, coids: dict[int, str]) -> None:
            while True:
                reply = await c.recv_reply(timeout=30)
                if isinstance(reply, OrderAccepted):
                    acked[(name, coids[reply.id])] = reply.order_id
                    if len(acked) >= kill_after and not killed:
                        killed.append(True)
                        hub.send_signal(signal.SIGKILL)  # at once, from the reply path

        readers = []
        for c, name in zip(scripts, SCRIPTS, strict=True):
            coids: dict[int, str] = {}
            readers.append(asyncio.create_task(collect(c, name, coids)))
            for i in range(PER_SCRIPT):
                req = order(c, f"{name}-{i}")
                coids[req.id] = req.client_order_id
                await c.send_raw(wire.encode(req))
        # Kill mid-burst (in the reader, the moment the N-th acknowledgement arrives):
        # replies still coming, orders journaled but queued, some already sent.
        await asyncio.wait_for(hub.wait(), 20.0)
        for t in readers:
            t.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        for c in scripts:
            await c.stop_heartbeat()
        await wait_until(lambda: 0 not in hub_sim.connected_client_ids(), 5.0, "hub gone")
        sent_before_restart = hub_sim.request_counts[PLACE_ORDER]
        assert sent_before_restart < len(SCRIPTS) * PER_SCRIPT

        hub = await start_hub(hub_sim, ipc_dir, "b")
        assert hub_sim.request_counts[PLACE_ORDER] == sent_before_restart  # nothing re-sent
        reader = Journal(Path(ipc_dir) / JOURNAL_FILE, readonly=True)
        rows = {r.order_id: r for r in reader.orders()}
        reader.close()
        assert len(rows) >= len(acked) and len(rows) >= sent_before_restart
        assert all(r.owner in SCRIPTS for r in rows.values())  # nothing taken for external
        keys = [(r.owner, r.client_order_id) for r in rows.values()]
        assert len(keys) == len(set(keys))
        for (owner, coid), order_id in acked.items():  # nothing acknowledged was lost
            assert order_id in rows, f"acknowledged order {owner}/{coid} lost"
            assert (rows[order_id].owner, rows[order_id].client_order_id) == (owner, coid)
        at_sim = {o.order_id: o for o in hub_sim.broker.orders()}
        assert len(at_sim) == sent_before_restart  # the Gateway got each order once
        for order_id, o in at_sim.items():  # the journal knows every order the Gateway has
            row = rows[order_id]
            assert parse_order_ref(o.order_ref) == (row.owner, row.client_order_id)
            assert row.status == "Filled" and row.filled == 1.0
        for order_id, row in rows.items():
            if order_id not in at_sim:  # journaled, never sent: reported, never re-sent
                assert row.status == "Inactive" and "not sent" in row.message

        # Every script retries everything it sent: duplicates only, nothing new upstream.
        for name in SCRIPTS:
            c = clients(f"ipc://{ipc_dir}/b-rpc")
            await c.hello(name)
            for i in range(PER_SCRIPT):
                coid = f"{name}-{i}"
                reply = await c.request(order(c, coid))
                assert isinstance(reply, OrderAccepted), reply
                if (name, coid) in acked:
                    assert reply.duplicate and reply.order_id == acked[(name, coid)]
        # Orders the first hub never journaled (their request was still unread) are new.
        fresh = len(SCRIPTS) * PER_SCRIPT - len(rows)
        await wait_until(lambda: len(hub_sim.broker.orders()) == sent_before_restart + fresh,
                         20.0, "the never-journaled orders placed by the retry")  # fmt: skip
        print(
            f"acked {len(acked)}, journaled {len(rows)}, sent before kill "
            f"{sent_before_restart}, new on retry {fresh}"
        )
        refs = [o.order_ref for o in hub_sim.broker.orders()]
        assert len(refs) == len(set(refs))  # no order twice at the Gateway
    finally:
        await kill(hub)
