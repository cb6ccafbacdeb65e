"""Settings layering: defaults < TOML file < .env < environment < flags, with sources;
config-file search; bad values name the setting, its source and what is accepted;
port auto-detection prefers paper ports; ``ibhub config show``."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from ibhub.cli import main
from ibhub.config import (
    ConfigError,
    detect_gateway_port,
    load_settings,
    load_settings_with_sources,
)


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No IB*/IBHUB_* variables, an empty working directory, no user config."""
    for key in list(os.environ):
        if key.startswith(("IBHUB_", "IB_")):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_every_layer_overrides_the_one_below(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = write(tmp_path / "hub.toml", """
        gateway_port = 7497
        lines_max = 10
        heartbeat_interval = 2.0
        stale_after = 5
        client_id = 3
        [alert]
        webhook = "http://127.0.0.1:9/hook"
    """.replace("\n        ", "\n"))
    write(tmp_path / ".env", "IBHUB_LINES_MAX=20\nIBHUB_HEARTBEAT_INTERVAL=3\nIB_CLIENT_ID=4\n")
    monkeypatch.setenv("IBHUB_HEARTBEAT_INTERVAL", "4")
    s, src = load_settings_with_sources(config=cfg, stale_after=7.0, search=[])
    assert s.gateway_port == 7497 and src["gateway_port"] == f"config file {cfg}"
    assert s.lines_max == 20 and src["lines_max"].startswith(".env IBHUB_LINES_MAX")
    assert s.heartbeat_interval == 4.0
    assert src["heartbeat_interval"] == "env IBHUB_HEARTBEAT_INTERVAL"
    assert s.stale_after == 7.0 and src["stale_after"] == "command line"
    assert s.client_id == 4 and src["client_id"].startswith(".env IB_CLIENT_ID")
    assert s.alert_webhook == "http://127.0.0.1:9/hook"
    assert src["alert_webhook"] == f"config file {cfg}"
    assert s.request_timeout == 30.0 and src["request_timeout"] == "default"


def test_ibhub_names_beat_ib_names_and_empty_means_unset(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IB_PORT", "7496")
    monkeypatch.setenv("IBHUB_GATEWAY_PORT", "4001")
    monkeypatch.setenv("IB_HOST", "")
    s, src = load_settings_with_sources(search=[])
    assert s.gateway_port == 4001 and src["gateway_port"] == "env IBHUB_GATEWAY_PORT"
    assert s.gateway_host == "127.0.0.1" and src["gateway_host"] == "default"


def test_injected_environment_is_the_only_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IBHUB_LINES_MAX", "9")
    s = load_settings(env={"IB_PORT": "7497"}, search=[])
    assert s.lines_max == 100 and s.gateway_port == 7497


def test_config_search_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user = write(tmp_path / "xdg" / "ibhub" / "ibhub.toml", "lines_max = 11\n")
    s, src = load_settings_with_sources()
    assert s.lines_max == 11 and src["lines_max"] == f"config file {user}"
    local = write(tmp_path / "ibhub.toml", "lines_max = 12\n")
    s, src = load_settings_with_sources()  # ./ibhub.toml comes first
    assert s.lines_max == 12 and src["lines_max"] == f"config file {local.name}"
    other = write(tmp_path / "other.toml", "lines_max = 13\n")
    monkeypatch.setenv("IBHUB_CONFIG", str(other))  # named beats searched
    assert load_settings().lines_max == 13
    assert load_settings(config=user).lines_max == 11  # --config beats $IBHUB_CONFIG


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("lines_maximum = 3\n", "unknown setting 'lines_maximum'.*did you mean lines_max"),
        ("[alert]\nhook = 'x'\n", "unknown setting 'alert_hook'"),
        ("gateway_port = \n", "not valid TOML"),
        ("gateway_port = 70000\n", "gateway_port from config file .*less than or equal to 65535"),
        ("log_format = 'xml'\n", "log_format from config file .*'text' or 'json'"),
        ("log_level = 'loud'\n", "log_level .*'DEBUG', 'INFO', 'WARNING' or 'ERROR'"),
        ("alert_webhook = 'ftp://x'\n", "alert_webhook .*http:// or https://"),
        ("pub = 'localhost:1'\n", "pub .*not a ZeroMQ endpoint"),
    ],
)
def test_bad_file_values_name_setting_source_and_accepted(tmp_path: Path, text: str,
                                                          named: str) -> None:
    cfg = write(tmp_path / "bad.toml", text)
    with pytest.raises(ConfigError, match=named):
        load_settings(config=cfg)


def test_bad_environment_and_flag_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IB_PORT", "four")
    with pytest.raises(ConfigError, match=r"gateway_port from env IB_PORT.*'four'"):
        load_settings(search=[])
    monkeypatch.delenv("IB_PORT")
    with pytest.raises(ConfigError, match="http_port from command line"):
        load_settings(http_port=-1, search=[])
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(config="/nonexistent/ibhub.toml")


def test_value_spellings() -> None:
    s = load_settings(http_port="off", log_level="debug", log_format="JSON", alert_file="",
                      search=[])
    assert (s.http_port, s.log_level, s.log_format, s.alert_file) == (0, "DEBUG", "json", None)


@pytest.fixture
def listening() -> Iterator[list[int]]:
    socks = []
    for _ in range(2):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen()
        socks.append(s)
    yield [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_port_detection_prefers_the_first_listed(listening: list[int]) -> None:
    live, paper = listening
    closed = free_port()
    ports = [(closed, "TWS paper"), (paper, "IB Gateway paper"), (live, "TWS live")]
    assert detect_gateway_port("127.0.0.1", 0.5, ports) == paper
    assert detect_gateway_port("127.0.0.1", 0.5, [(closed, "x")]) is None
    s, src = load_settings_with_sources(search=[], detect_port=True, detect_ports=ports)
    assert s.gateway_port == paper and src["gateway_port"] == "auto-detected (IB Gateway paper)"
    # A port from any source is never second-guessed, and --sim needs no Gateway.
    s, src = load_settings_with_sources(search=[], detect_port=True, detect_ports=ports,
                                        gateway_port=4001)
    assert s.gateway_port == 4001 and src["gateway_port"] == "command line"
    s, _ = load_settings_with_sources(search=[], detect_port=True, detect_ports=ports, sim=True)
    assert s.gateway_port == 4002
    s, src = load_settings_with_sources(search=[], detect_port=True,
                                        detect_ports=[(closed, "TWS paper")])
    assert s.gateway_port == 4002 and "nothing listening" in src["gateway_port"]


def test_config_show(tmp_path: Path) -> None:
    write(tmp_path / "ibhub.toml", "lines_max = 42\n")
    runner = CliRunner()
    env = {"IB_PORT": "7497", "IBHUB_HTTP_PORT": "0"}
    out = runner.invoke(main, ["config", "show", "--json", "--no-detect"], env=env)
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert doc["lines_max"] == {"value": 42, "source": "config file ibhub.toml"}
    assert doc["gateway_port"] == {"value": 7497, "source": "env IB_PORT"}
    assert doc["http_port"] == {"value": 0, "source": "env IBHUB_HTTP_PORT"}
    assert doc["client_id"]["source"] == "default"
    text = runner.invoke(main, ["config", "show", "--changed", "--no-detect"], env=env)
    assert text.exit_code == 0
    lines = text.output.splitlines()
    assert len(lines) == 3 and any(line.startswith("lines_max") and "# config file" in line
                                   for line in lines)
    bad = runner.invoke(main, ["config", "show", "--no-detect"], env={"IBHUB_LINES_MAX": "x"})
    assert bad.exit_code == 1 and "lines_max from env IBHUB_LINES_MAX" in bad.output


def test_logging_text_and_json() -> None:
    import io
    import logging

    from ibhub.cli.logs import configure_logging

    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        buf = io.StringIO()
        configure_logging("warning", "json", buf)
        log = logging.getLogger("ibhub.test")
        log.info("hidden")
        log.warning("lost %s", "upstream", extra={"code": 1100})
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
        lines = [json.loads(x) for x in buf.getvalue().splitlines()]
        assert [x["message"] for x in lines] == ["lost upstream", "failed"]
        assert lines[0]["level"] == "WARNING" and lines[0]["logger"] == "ibhub.test"
        assert lines[0]["code"] == 1100 and lines[0]["ts"].endswith("+00:00")
        assert "ValueError: boom" in lines[1]["exc"]
        buf = io.StringIO()
        configure_logging("INFO", "text", buf)
        assert len(root.handlers) == 1  # replaced, not added
        log.info("readable")
        assert buf.getvalue().rstrip().endswith("INFO    ibhub.test: readable")
        with pytest.raises(ValueError, match="DEBUG, INFO, WARNING, ERROR"):
            configure_logging("LOUD")
        with pytest.raises(ValueError, match="text, json"):
            configure_logging("INFO", "xml")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
