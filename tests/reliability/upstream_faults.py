"""Gateway-side faults, each repeated ``cycles`` times against one hub.

Every cycle checks what the issue asks of it end to end: the hub ends CONNECTED,
the subscriptions are live again at the simulator, and ticks reach the *same*
subscribers (same leases, same SUB sockets, no new hello) after the fault. Time to
recover is measured from the moment the fault starts (restart, 1100/1101) or ends
(farm OK, thaw, handshake answered again, client id free) to the first tick every
subscriber receives through the recovered session.
"""

from __future__ import annotations

from functools import partial

from ibhub.ib.session import Upstream
from ibhub.protocol import UpstreamState
from tests.reliability.harness import Figures, Ordered, Rig, now, wait_until

REQ_MKT_DATA = 1  # TWS message id the simulator counts in request_counts
RECOVER_TIMEOUT = 20.0
SUBSCRIBERS = (("one", "AAPL"), ("two", "AAPL"), ("three", "MSFT"))


async def subscribers(r: Rig) -> list[tuple[Ordered, str]]:
    """Three scripts: two share AAPL (one upstream line), one has MSFT."""
    out = []
    for name, symbol in SUBSCRIBERS:
        c = r.client()
        topic = f"tick.{symbol}"
        lst = r.listener(topic, "hub.status")
        await c.hello(name)
        await c.subscribe(symbol)
        out.append((lst, topic))
    await wait_until(lambda: all(lst.on(t) for lst, t in out), 10.0, "first ticks")
    return out


def lines(r: Rig) -> list[str]:
    return sorted(s.symbol for s in r.sim.market_data_subscriptions() if s.kind == "mkt")


def leases(r: Rig) -> list[str]:
    return sorted(le.lease_id for le in r.hub.leases.leases())


def reconnected(up: Upstream, n: int) -> bool:
    return up.connected and up.reconnect_count == n


def all_told(subs: list[tuple[Ordered, str]], starts: list[int], kind: str) -> bool:
    return all(lst.status_after(x, kind=kind) is not None
               for (lst, _), x in zip(subs, starts, strict=True))


def timed_out(lst: Ordered, start: int, at_least: int) -> bool:
    return sum(1 for t, e in lst.log[start:] if t == "hub.status" and e.kind == "alert"
               and "timed out" in e.message) >= at_least


async def resumed(subs: list[tuple[Ordered, str]], starts: list[int], **status: object) -> None:
    """Wait until every subscriber got a tick after its hub.status event ``status``."""
    def ok() -> bool:
        return all(lst.tick_after(lst.status_after(s, **status), t) is not None
                   for (lst, t), s in zip(subs, starts, strict=True))
    await wait_until(ok, RECOVER_TIMEOUT, f"ticks after hub.status {status}")


async def restart_loop(r: Rig, cycles: int, down: float = 0.2) -> Figures:
    """Gateway restart (every socket dropped, port refused for ``down`` s), ``cycles`` times."""
    fig = Figures("Gateway restart", notes={"down_s": down})
    subs = await subscribers(r)
    before_leases, up = leases(r), r.hub.upstream
    assert up is not None
    for n in range(1, cycles + 1):
        fig.attempts += 1
        starts = [lst.mark() for lst, _ in subs]
        t0 = now()
        fault = r.sim.spawn(r.sim.restart(down))
        await resumed(subs, starts, state=UpstreamState.RECONNECTING)
        await wait_until(partial(reconnected, up, n), 5.0, "CONNECTED")
        fig.recover_s.append(now() - t0)
        await fault
        if lines(r) != ["AAPL", "MSFT"]:
            fig.lost += 1  # a subscription not re-established (or doubled) upstream
        assert leases(r) == before_leases, "a subscriber lost its lease over a restart"
        fig.recoveries += 1
    fig.notes["subscriptions_per_cycle"] = len(SUBSCRIBERS)
    fig.notes["ticks_received"] = sum(len(lst.on(t)) for lst, t in subs)
    return fig


async def connectivity_loop(r: Rig, cycles: int, restored: str, after: float = 0.2) -> Figures:
    """1100 then 1101 (``data_lost``) or 1102 (``data_kept``): resubscribe only on 1101."""
    code = 1101 if restored == "data_lost" else 1102
    fig = Figures(f"1100 then {code}", notes={"outage_s": after})
    subs = await subscribers(r)
    resubscribes = 0
    for _ in range(cycles):
        fig.attempts += 1
        starts = [lst.mark() for lst, _ in subs]
        sent = r.sim.request_counts[REQ_MKT_DATA]
        t0 = now()
        await r.sim.connectivity_lost(restored, after=after)
        await resumed(subs, starts, kind="state", code=code)
        fig.recover_s.append(now() - t0)
        resubscribes += r.sim.request_counts[REQ_MKT_DATA] - sent
        if lines(r) != ["AAPL", "MSFT"]:
            fig.lost += 1
        fig.recoveries += 1
    fig.notes["resubscribe_requests"] = resubscribes
    fig.notes["lines"] = 2
    return fig


async def farm_blip_loop(r: Rig, cycles: int, seconds: float = 0.2) -> Figures:
    """2103 then 2104: subscribers see both on hub.status and ticks resume after 2104."""
    fig = Figures("farm blip 2103/2104", notes={"blip_s": seconds})
    subs = await subscribers(r)
    told = 0
    for _ in range(cycles):
        fig.attempts += 1
        starts = [lst.mark() for lst, _ in subs]
        await r.sim.farm_blip(seconds)
        t0 = now()
        await resumed(subs, starts, kind="ib", code=2104)
        fig.recover_s.append(now() - t0)
        told += sum(lst.status_after(s, kind="ib", code=2103) is not None
                    for (lst, _), s in zip(subs, starts, strict=True))
        fig.recoveries += 1
    fig.notes["subscribers_told"] = f"{told}/{cycles * len(subs)}"
    return fig


async def freeze_loop(r: Rig, cycles: int, seconds: float = 0.8) -> Figures:
    """Data stops with the socket up and no message: the hub says "stale", then "fresh"."""
    fig = Figures("data freeze (no message)", notes={"freeze_s": seconds,
                                                     "stale_after_s": r.hub.settings.stale_after})
    subs = await subscribers(r)
    told = 0
    for _ in range(cycles):
        fig.attempts += 1
        starts = [lst.mark() for lst, _ in subs]
        await r.sim.freeze(seconds)
        t0 = now()
        await resumed(subs, starts, kind="stale")
        await wait_until(partial(all_told, subs, starts, "fresh"), 5.0, "fresh")
        fig.recover_s.append(now() - t0)
        told += sum(lst.status_after(s, kind="stale") is not None
                    for (lst, _), s in zip(subs, starts, strict=True))
        fig.recoveries += 1
    fig.notes["subscribers_told"] = f"{told}/{cycles * len(subs)}"
    return fig


async def stalled_handshake_loop(r: Rig, cycles: int, timeouts: int = 2) -> Figures:
    """TCP accepted, handshake never answered (connect times out) until it is answered."""
    fig = Figures("handshake stalled then answered",
                  notes={"connect_timeout_s": r.hub.settings.connect_timeout})
    subs = await subscribers(r)
    up = r.hub.upstream
    assert up is not None
    lst0 = subs[0][0]
    for n in range(1, cycles + 1):
        fig.attempts += 1
        starts = [lst.mark() for lst, _ in subs]
        r.sim.stall_handshakes(True)
        await r.sim.restart(0.05)
        await wait_until(partial(timed_out, lst0, starts[0], timeouts), RECOVER_TIMEOUT,
                         "timed-out attempts")
        assert up.state == UpstreamState.RECONNECTING
        r.sim.stall_handshakes(False)
        t0 = now()
        await resumed(subs, starts, state=UpstreamState.RECONNECTING)
        await wait_until(partial(reconnected, up, n), 5.0, "connected")
        fig.recover_s.append(now() - t0)
        fig.recoveries += 1
    return fig


async def client_id_held_loop(r: Rig, cycles: int, hold: float = 0.6) -> Figures:
    """326 on reconnect (a half-open socket still holds the id): retried until it gets in."""
    fig = Figures("326 client id in use on reconnect", notes={"held_s": hold})
    subs = await subscribers(r)
    up = r.hub.upstream
    assert up is not None
    refused = 0
    for n in range(1, cycles + 1):
        fig.attempts += 1
        starts = [lst.mark() for lst, _ in subs]
        r.sim.hold_client_id(r.hub.settings.client_id, hold)
        t_free = now() + hold
        await r.sim.restart(0.02)
        await resumed(subs, starts, state=UpstreamState.RECONNECTING)
        await wait_until(partial(reconnected, up, n), 5.0, "connected")
        fig.recover_s.append(now() - t_free)
        refused += sum(1 for t, e in subs[0][0].log[starts[0]:]
                       if t == "hub.status" and e.kind == "ib" and e.code == 326)
        fig.recoveries += 1
    fig.notes["refusals_326"] = refused
    return fig
