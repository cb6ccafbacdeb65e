"""The order-size and request-size settings: spellings in TOML and the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from ibhub.config import ConfigError, load_settings
from ibhub.orders.service import OrderSettings


def test_defaults_let_a_standard_fx_order_through() -> None:
    s = load_settings(env={}, env_file=None, search=[])
    assert s.max_order_quantity_by_sec_type == {"CASH": 1_000_000.0, "FUT": 500.0,
                                                "FOP": 500.0, "OPT": 1_000.0}
    assert s.fractional_shares is False and s.min_fx_quantity == 1.0
    assert s.max_request_bytes == 1 << 20
    limits = OrderSettings.from_settings(s).limits()
    assert limits.max_quantity_for("cash") == (1_000_000.0, "max_quantity_by_sec_type[CASH]")
    assert limits.max_quantity_for("STK") == (10_000.0, "max_quantity")
    assert limits.max_quantity_for("FUT") == (500.0, "max_quantity_by_sec_type[FUT]")
    assert limits.max_quantity_for("OPT") == (1_000.0, "max_quantity_by_sec_type[OPT]")


def test_environment_spelling() -> None:
    env = {"IBHUB_MAX_ORDER_QUANTITY_BY_SEC_TYPE": "cash=2e6, FUT=50",
           "IBHUB_FRACTIONAL_SHARES": "1", "IBHUB_MAX_REQUEST_BYTES": "65536"}
    s = load_settings(env=env, env_file=None, search=[])
    assert s.max_order_quantity_by_sec_type == {"CASH": 2e6, "FUT": 50.0}
    assert s.fractional_shares is True and s.max_request_bytes == 65536
    limits = OrderSettings.from_settings(s).limits()
    assert limits.fractional_shares and limits.max_quantity_by_sec_type["FUT"] == 50.0


def test_toml_table(tmp_path: Path) -> None:
    cfg = tmp_path / "ibhub.toml"
    cfg.write_text("min_fx_quantity = 1000\n[max_order_quantity_by_sec_type]\n"
                   "CASH = 5000000\nOPT = 20\n")
    s = load_settings(config=cfg, env={}, env_file=None)
    assert s.max_order_quantity_by_sec_type == {"CASH": 5e6, "OPT": 20.0}
    assert s.min_fx_quantity == 1000.0


@pytest.mark.parametrize(
    "value", ["CASH", "CASH=-1", "CASH=abc", "=5", "FUT=inf"],
)
def test_bad_per_type_maxima_name_the_setting(value: str) -> None:
    env = {"IBHUB_MAX_ORDER_QUANTITY_BY_SEC_TYPE": value}
    with pytest.raises(ConfigError, match="max_order_quantity_by_sec_type"):
        load_settings(env=env, env_file=None, search=[])
