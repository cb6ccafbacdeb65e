"""Issue 18: ``--sim`` keeps its data apart from a real hub's; the hub never detects or
connects to its own TWS front door; the simulator's permIds and execIds never repeat
across restarts; doctor says when psutil is missing."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ibhub.config import SIM_DATA_SUBDIR, ConfigError, HubSettings, load_settings_with_sources
from ibhub.sim import SimConfig
from ibhub.sim.broker import FIRST_PERM_ID, PERM_IDS_PER_SECOND, clock_perm_id


def load(**kw: Any) -> tuple[HubSettings, dict[str, str]]:  # no file, no .env, no env
    return load_settings_with_sources(search=[], env={}, env_file=None, **kw)


def test_sim_data_lives_apart_from_a_real_hubs(tmp_path: Path) -> None:
    real, src = load()
    sim, sim_src = load(sim=True)
    assert sim.data_dir == Path(real.data_dir) / SIM_DATA_SUBDIR
    assert "--sim" in sim_src["data_dir"] and src["data_dir"] == "default"
    # The operator token stays where the SDK and the CLI look for it.
    assert sim.operator_token_path == real.operator_token_path
    # An explicit data dir is the operator's choice, with or without --sim.
    given, _ = load(sim=True, data_dir=str(tmp_path))
    assert given.data_dir == tmp_path
    env, _ = load_settings_with_sources(search=[], env={"IBHUB_DATA_DIR": str(tmp_path)},
                                        env_file=None, sim=True)
    assert env.data_dir == tmp_path


@pytest.fixture
def listening() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def test_never_detects_its_own_front_door(listening: int) -> None:
    other = socket.socket()
    other.bind(("127.0.0.1", 0))
    other.listen()
    try:
        gateway = int(other.getsockname()[1])
        ports = [(listening, "TWS paper"), (gateway, "IB Gateway paper")]
        # Without a front door the first listening port wins ...
        s, _ = load(detect_port=True, detect_ports=ports)
        assert s.gateway_port == listening
        # ... with the front door on that port, it is skipped: the hub's own listener.
        s, src = load(detect_port=True, detect_ports=ports, tws_port=listening)
        assert s.gateway_port == gateway and src["gateway_port"].startswith("auto-detected")
    finally:
        other.close()


def test_refuses_to_connect_to_its_own_front_door() -> None:
    with pytest.raises(ConfigError, match="own TWS front door"):
        load(gateway_port=7497, tws_port=7497)
    with pytest.raises(ConfigError, match="own TWS front door"):
        load(gateway_host="localhost", gateway_port=7000, tws_port=7000)
    # Another host's 7497 is another process; --sim replaces the upstream port.
    s, _ = load(gateway_host="10.0.0.5", gateway_port=7497, tws_port=7497)
    assert s.gateway_port == 7497
    s, _ = load(sim=True, gateway_port=7497, tws_port=7497)
    assert s.tws_port == 7497


def test_sim_perm_ids_grow_across_restarts() -> None:
    t0 = 1_800_000_000.0
    assert clock_perm_id(t0 + 10) - clock_perm_id(t0) == 10 * PERM_IDS_PER_SECOND
    assert clock_perm_id(0) == FIRST_PERM_ID
    # Java int, as IB's permId, for years to come.
    assert clock_perm_id(2_200_000_000) < 2**31
    assert SimConfig().first_perm_id == 0  # 0: from the clock


async def test_restarted_simulator_never_reuses_perm_or_exec_ids() -> None:
    from ibhub.sim import SimGateway
    from ibhub.sim.broker import Broker

    seen_perm: set[int] = set()
    seen_prefix: set[str] = set()
    for start in (1_800_000_000.0, 1_800_000_001.0):
        first = clock_perm_id(start)
        gw = SimGateway(SimConfig(port=0, seed=7, first_perm_id=first))
        broker = Broker(gw)
        perm = next(broker._perm_ids)
        assert perm == first and perm not in seen_perm
        seen_perm.update(range(perm, perm + PERM_IDS_PER_SECOND))
        assert broker._exec_prefix not in seen_prefix
        seen_prefix.add(broker._exec_prefix)


def test_doctor_says_when_psutil_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    from ibhub.cli import doctor

    monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil -> ImportError
    assert doctor._local_peers("127.0.0.1", 4002) is None
    monkeypatch.delitem(sys.modules, "psutil")
    assert isinstance(doctor._local_peers("127.0.0.1", 1), list)
