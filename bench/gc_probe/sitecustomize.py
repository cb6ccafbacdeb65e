"""A garbage-collector probe for the benchmarks (not part of ibhub).

Put this directory first on PYTHONPATH and every Python process of a benchmark (the
hub, the simulator and the scripts are separate processes; spawned children inherit
the environment) appends a line per collection to ``$IBHUB_GC_PROBE_LOG`` (default
``/tmp/ibhub-gc-probe.log``): every full (generation 2) collection, and any other that
took over 1 ms:

    PYTHONPATH=bench/gc_probe:. python bench/orders.py --orders 300
    sort -k2,3 /tmp/ibhub-gc-probe.log

A line: pid, role (hub: the order manager is loaded; sim: the simulator is; client:
anything else), generation, duration, objects collected, objects frozen.
"""

from __future__ import annotations

import gc
import os
import sys
import time
from typing import Any

_started = [0.0]
_log = open(os.environ.get("IBHUB_GC_PROBE_LOG", "/tmp/ibhub-gc-probe.log"), "a",
            buffering=1)


def _role() -> str:
    if "ibhub.orders.manager" in sys.modules:
        return "hub"
    if "ibhub.sim.server" in sys.modules:
        return "sim"
    return "client"


def _probe(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
        return
    ms = (time.perf_counter() - _started[0]) * 1e3
    if ms > 1.0 or info["generation"] == 2:
        _log.write(f"{os.getpid()} {_role()} gen{info['generation']} {ms:.1f}ms "
                   f"collected={info['collected']} frozen={gc.get_freeze_count()}\n")


gc.callbacks.append(_probe)
