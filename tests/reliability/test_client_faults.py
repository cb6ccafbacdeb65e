"""A subscriber that stops reading; a script killed with SIGKILL."""

from __future__ import annotations

import pytest

from tests.reliability import client_faults as cf
from tests.reliability.harness import rig


async def test_stalled_subscriber_is_bounded_and_recovers(monkeypatch: pytest.MonkeyPatch) -> None:
    # Small high-water marks so a CI-length stall overflows them many times over;
    # bench/faults.py runs the hub's real one (ibhub.hub.fanout.PUB_SNDHWM). They count
    # messages, and a message is a batch of several ticks (~7 at this rate).
    monkeypatch.setattr("ibhub.hub.server.PUB_SNDHWM", 200)
    monkeypatch.setattr(cf, "SLOW_RCVHWM", 100)
    async with rig(tick_rate=300.0, heartbeat_interval=0.5, lease_timeout=20.0) as r:
        fig = await cf.slow_subscriber(r, stall=3.0)
    fig.save()
    n = fig.notes
    print(fig.row())
    assert n["pub_sndhwm"] == 200
    assert n["published_during"] > 4 * (n["pub_sndhwm"] + n["slow_rcvhwm"])  # overflowed
    # Bounded: what was queued for it (published during the stall, read afterwards) is
    # the high-water marks plus socket buffers, far below what was published.
    assert n["queued_for_it"] < n["published_during"] / 2
    assert n["queued_for_it"] <= n["pub_sndhwm"] + n["slow_rcvhwm"] + 5000
    assert n["rss_growth_last_2_3_mb"] < 20
    # The reader beside it kept its pace and latency.
    assert n["fast_rate_stall"] > 0.7 * n["fast_rate_base"]
    assert n["fast_p99_ms_stall"] < max(50.0, 3 * n["fast_p99_ms_base"])
    # Gap detected by seq on the topics, each recovered through a snapshot.
    assert n["gaps_detected"] >= 1 and fig.recoveries == 1


async def test_killed_script_releases_its_lease_and_lines() -> None:
    async with rig() as r:
        fig = await cf.script_killed(r, 2)
    fig.save()
    assert fig.recoveries == 2 and fig.lost == 0
    assert fig.notes["leases_left"] == ["survivor"]
    assert fig.max is not None and fig.max < 3.0
