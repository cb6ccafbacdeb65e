"""A reliability rig: the simulated Gateway, a hub on it, raw clients, and figures.

The scenarios in this folder are plain ``async def`` functions taking a :class:`Rig`
and a count, so the same code runs as a CI-sized test (a few cycles) and from
``bench/faults.py`` (the published run, e.g. 100 restarts). Each returns a
:class:`Figures` row of the results table in ``docs/reliability.md``.

Clients are the e2e suite's raw ZeroMQ ones (``tests/e2e/conftest.py``), so what is
measured is the hub's wire behaviour, not an SDK's smoothing of it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import zmq
import zmq.asyncio

from ibhub import wire
from ibhub.config import HubSettings
from ibhub.hub.server import HubServer
from ibhub.protocol import TOPIC_STATUS
from ibhub.sim import SimConfig, SimGateway
from tests.e2e.conftest import FAST, Listener, RawClient
from tests.helpers import wait_until

SEED = 20261128
RESULTS_ENV = "IBHUB_RELIABILITY_RESULTS"  # a JSON-lines file the tests append figures to


@dataclass
class Figures:
    """One row of the results table: what was tried and what came of it."""

    fault: str
    attempts: int = 0
    recoveries: int = 0
    lost: int = 0
    duplicated: int = 0
    recover_s: list[float] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def p50(self) -> float | None:
        return statistics.median(self.recover_s) if self.recover_s else None

    @property
    def max(self) -> float | None:
        return max(self.recover_s) if self.recover_s else None

    def row(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        del out["recover_s"]
        out["recover_p50_s"] = None if self.p50 is None else round(self.p50, 3)
        out["recover_max_s"] = None if self.max is None else round(self.max, 3)
        return out

    def save(self) -> None:
        """Append this row to ``$IBHUB_RELIABILITY_RESULTS`` when set (bench/faults.py)."""
        path = os.environ.get(RESULTS_ENV)
        if path:
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(self.row()) + "\n")


class Rig:
    """A simulator, one hub on it and the sockets the scenario opened."""

    def __init__(self, sim: SimGateway, hub: HubServer, ctx: zmq.asyncio.Context,
                 data_dir: str) -> None:
        self.sim = sim
        self.hub = hub
        self.ctx = ctx
        self.data_dir = data_dir
        self._clients: list[RawClient] = []
        self._listeners: list[Listener] = []

    def client(self, kind: int = zmq.DEALER) -> RawClient:
        c = RawClient(self.ctx, self.hub.rpc_endpoint, kind)
        self._clients.append(c)
        return c

    def listener(self, *prefixes: str) -> Ordered:
        lst = Ordered(self.ctx, self.hub.pub_endpoint, *prefixes)
        self._listeners.append(lst)
        return lst

    async def close(self) -> None:
        for c in self._clients:
            await c.close()
        for lst in self._listeners:
            await lst.close()


@contextlib.asynccontextmanager
async def rig(*, tick_rate: float = 40.0, sim_options: dict[str, Any] | None = None,
              **hub_overrides: Any) -> AsyncIterator[Rig]:
    """Start a simulator and a hub (test timings from the e2e suite); stop both after."""
    data_dir = tempfile.mkdtemp(prefix="ibhub-rel-")
    sim = SimGateway(SimConfig(host="127.0.0.1", port=0, seed=SEED, tick_rate=tick_rate,
                               **(sim_options or {})))
    await sim.start()
    ctx = zmq.asyncio.Context()
    hub: HubServer | None = None
    r: Rig | None = None
    try:
        values: dict[str, Any] = dict(
            gateway_host="127.0.0.1", gateway_port=sim.port, client_id=0,
            pub=f"ipc://{data_dir}/pub", rpc=f"ipc://{data_dir}/rpc", data_dir=data_dir, **FAST,
        )
        values.update(hub_overrides)
        hub = HubServer(HubSettings(**values))
        await hub.start()
        await wait_until(lambda: hub is not None and hub.upstream is not None
                         and hub.upstream.connected, 10.0, "hub upstream CONNECTED")
        r = Rig(sim, hub, ctx, data_dir)
        yield r
    finally:
        if r is not None:
            await r.close()
        if hub is not None:
            await hub.stop()
        ctx.destroy(linger=0)
        await sim.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


class Ordered(Listener):
    """A Listener that also keeps every event in arrival order (``log``).

    One SUB socket delivers one PUB's messages in publish order across topics, so
    "a tick after the hub.status event saying RECONNECTING" is a tick that came
    through the recovered session, never one still in flight from before the fault.
    """

    def __init__(self, ctx: zmq.asyncio.Context, endpoint: str, *prefixes: str) -> None:
        super().__init__(ctx, endpoint, *prefixes)
        self.log: list[tuple[str, Any]] = []

    async def _run(self) -> None:
        while True:
            topic, payload = await self.sock.recv_multipart()
            name = topic.decode()
            for event in wire.unbatch(wire.decode_event(payload)):
                self.events.setdefault(name, []).append(event)
                self.log.append((name, event))

    def mark(self) -> int:
        return len(self.log)

    def find(self, start: int, pred: Any) -> int | None:
        """Index of the first logged (topic, event) from ``start`` matching ``pred``."""
        for i in range(start, len(self.log)):
            if pred(*self.log[i]):
                return i
        return None

    def status_after(self, start: int, **want: Any) -> int | None:
        def match(topic: str, ev: Any) -> bool:
            return topic == TOPIC_STATUS and all(getattr(ev, k) == v for k, v in want.items())
        return self.find(start, match)

    def tick_after(self, start: int | None, topic: str) -> int | None:
        if start is None:
            return None
        return self.find(start + 1, lambda t, _e: t == topic)


def now() -> float:
    return time.monotonic()


def last_seq(lst: Listener, topic: str) -> int:
    events = lst.on(topic)
    return events[-1].seq if events else 0


def consecutive(lst: Listener, topic: str) -> bool:
    seqs = [e.seq for e in lst.on(topic)]
    return bool(seqs) and seqs == list(range(seqs[0], seqs[0] + len(seqs)))


__all__ = ["SEED", "Figures", "Listener", "Ordered", "RawClient", "Rig", "consecutive",
           "last_seq", "now", "rig", "wait_until"]
