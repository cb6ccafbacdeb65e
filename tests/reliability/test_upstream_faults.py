"""Gateway faults in a loop, end to end against the simulator (CI-sized counts).

``bench/faults.py`` runs the same scenarios with the published counts (e.g. 100
restarts) and prints the table in docs/reliability.md.
"""

from __future__ import annotations

from tests.reliability import upstream_faults as uf
from tests.reliability.harness import rig

CYCLES = 10


async def test_gateway_restart_loop() -> None:
    async with rig() as r:
        fig = await uf.restart_loop(r, CYCLES)
    fig.save()
    print(fig.row())
    assert fig.recoveries == fig.attempts == CYCLES and fig.lost == 0
    assert fig.max is not None and fig.max < 5.0


async def test_1101_resubscribes_every_time() -> None:
    async with rig() as r:
        fig = await uf.connectivity_loop(r, 3, "data_lost")
    fig.save()
    assert fig.recoveries == 3 and fig.lost == 0
    assert fig.notes["resubscribe_requests"] == 3 * 2  # one per line per 1101


async def test_1102_never_resubscribes() -> None:
    async with rig() as r:
        fig = await uf.connectivity_loop(r, 3, "data_kept")
    fig.save()
    assert fig.recoveries == 3 and fig.lost == 0
    assert fig.notes["resubscribe_requests"] == 0


async def test_farm_blip_told_and_resumes() -> None:
    async with rig() as r:
        fig = await uf.farm_blip_loop(r, 3)
    fig.save()
    assert fig.recoveries == 3 and fig.notes["subscribers_told"] == "9/9"


async def test_freeze_told_stale_then_fresh() -> None:
    async with rig(stale_after=0.3) as r:
        fig = await uf.freeze_loop(r, 2)
    fig.save()
    assert fig.recoveries == 2 and fig.notes["subscribers_told"] == "6/6"


async def test_stalled_handshake_then_recovery() -> None:
    async with rig(connect_timeout=0.3) as r:
        fig = await uf.stalled_handshake_loop(r, 2)
    fig.save()
    assert fig.recoveries == 2


async def test_326_on_reconnect_then_in() -> None:
    async with rig(connect_timeout=3.0) as r:
        fig = await uf.client_id_held_loop(r, 2)
    fig.save()
    assert fig.recoveries == 2 and fig.notes["refusals_326"] >= 2
