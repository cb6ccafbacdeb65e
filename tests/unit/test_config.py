"""HubSettings from defaults/env/overrides; bad values name the setting; back-off policy."""

from __future__ import annotations

import random

import pytest

from ibhub.config import ConfigError, HubSettings, load_settings
from ibhub.hub.server import bindable
from ibhub.ib.session import backoff_delay


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith(("IBHUB_", "IB_")):
            monkeypatch.delenv(key)


def test_defaults() -> None:
    s = load_settings()
    assert (s.gateway_host, s.gateway_port, s.client_id) == ("127.0.0.1", 4002, 0)
    assert (s.pub, s.rpc) == ("tcp://127.0.0.1:5570", "tcp://127.0.0.1:5571")
    assert s.lines_max == 100 and s.heartbeat_interval == 1.0 and s.lease_timeout == 3.0
    assert s.lease_ttl == 3.0
    assert (s.reconnect_backoff_initial, s.reconnect_backoff_max) == (0.5, 30.0)
    assert s.reconnect_max_attempts == 0 and s.connect_timeout == 4.0
    assert s.raw_client_id_range == (1, 999) and not s.sim and s.market_data_type == 1


def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IB_HOST", "127.0.0.2")
    monkeypatch.setenv("IB_PORT", "7497")
    monkeypatch.setenv("IB_CLIENT_ID", "5")
    monkeypatch.setenv("IBHUB_LINES_MAX", "42")
    monkeypatch.setenv("IBHUB_RAW_CLIENT_ID_RANGE", "10-20")
    monkeypatch.setenv("IBHUB_PUB", "ipc:///tmp/x.pub")
    s = load_settings()
    assert (s.gateway_host, s.gateway_port, s.client_id) == ("127.0.0.2", 7497, 5)
    assert s.lines_max == 42 and s.raw_client_id_range == (10, 20)
    assert s.pub == "ipc:///tmp/x.pub"
    monkeypatch.setenv("IBHUB_GATEWAY_PORT", "4001")  # the IBHUB_ name wins over IB_PORT
    assert load_settings().gateway_port == 4001
    # Explicit overrides beat the environment; None means "not given".
    assert load_settings(gateway_port=4003, lines_max=None).gateway_port == 4003
    assert load_settings(lines_max=None).lines_max == 42


@pytest.mark.parametrize("value", ["1..999", "1:999", "[1, 999]", (1, 999)])
def test_range_spellings(value: object) -> None:
    assert load_settings(raw_client_id_range=value).raw_client_id_range == (1, 999)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"gateway_port": 0}, "gateway_port"),
        ({"gateway_port": "abc"}, "gateway_port"),
        ({"lines_max": 0}, "lines_max"),
        ({"market_data_type": 5}, "market_data_type"),
        ({"heartbeat_interval": -1}, "heartbeat_interval"),
        ({"pub": "localhost:5570"}, "pub"),
        ({"raw_client_id_range": "5-1"}, "raw_client_id_range"),
        ({"raw_client_id_range": "five"}, "raw_client_id_range"),
        ({"reconnect_backoff_initial": 5, "reconnect_backoff_max": 1}, "reconnect_backoff_max"),
        ({"no_such_setting": 1}, "no_such_setting"),
    ],
)
def test_bad_values_name_the_setting(overrides: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings(**overrides)


def test_bad_environment_value_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IBHUB_LINES_MAX", "many")
    with pytest.raises(ConfigError, match="lines_max"):
        load_settings()


def test_settings_object_is_one_model() -> None:
    s = HubSettings(lines_max=3)
    assert s.model_copy(update={"lines_max": 4}).lines_max == 4


def test_bind_endpoints_are_loopback_only() -> None:
    assert bindable("tcp://127.0.0.1:0") == "tcp://127.0.0.1:*"
    assert bindable("tcp://127.0.0.1:5570") == "tcp://127.0.0.1:5570"
    assert bindable("ipc:///tmp/hub.rpc") == "ipc:///tmp/hub.rpc"
    with pytest.raises(ConfigError, match="loopback"):
        bindable("tcp://0.0.0.0:5570")
    with pytest.raises(ConfigError, match="loopback"):
        bindable("tcp://eth0:5570")


def test_backoff_is_exponential_capped_and_jittered() -> None:
    rng = random.Random(7)
    delays = [backoff_delay(n, 0.5, 30.0, rng) for n in range(1, 12)]
    for n, d in enumerate(delays, start=1):
        base = min(30.0, 0.5 * 2 ** (n - 1))
        assert 0.8 * base <= d <= min(30.0, 1.2 * base)
    assert max(delays) <= 30.0 and delays[-1] >= 24.0
    # Jitter: two hubs with different seeds do not retry in lock-step.
    other = [backoff_delay(n, 0.5, 30.0, random.Random(8)) for n in range(1, 6)]
    assert other != delays[:5]
    assert backoff_delay(10_000, 0.5, 30.0, rng) <= 30.0  # no overflow
