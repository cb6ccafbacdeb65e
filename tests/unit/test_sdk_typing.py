"""The SDK is typed for its users (issue 15): ``py.typed`` ships, ``subscribe()`` says
what each kind yields (mypy on tests/unit/sdk_typing/), and ``to_dataframe`` turns ticks
and bars into pandas DataFrames."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

import ibhub
from ibhub.client import to_dataframe
from ibhub.protocol import Bar, BarData, Tick, Ticks

TYPING = Path(__file__).with_name("sdk_typing")


def test_package_is_marked_typed() -> None:
    assert (Path(ibhub.__file__).parent / "py.typed").is_file()
    pyproject = (Path(ibhub.__file__).parents[1] / "pyproject.toml").read_text()
    assert re.search(r'"?ibhub"? = \["py.typed"\]', pyproject), "py.typed is not package data"


def test_mypy_knows_what_subscribe_yields(tmp_path: Path) -> None:
    api = pytest.importorskip("mypy.api")
    typed, wrong = TYPING / "sdk_typed.py", TYPING / "sdk_wrong.py"
    out, err, status = api.run([str(typed), str(wrong), "--cache-dir", str(tmp_path),
                                "--no-error-summary", "--hide-error-context"])
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert not [e for e in errors if "sdk_typed.py" in e], out + err
    expected = {i + 1 for i, line in enumerate(wrong.read_text().splitlines())
                if "# E:" in line}
    got = {int(e.split(":")[1]) for e in errors if "sdk_wrong.py" in e}
    assert got == expected, out + err
    assert status == 1


def test_to_dataframe_of_ticks_and_bars() -> None:
    pd = pytest.importorskip("pandas")
    nan = math.nan
    t1 = Tick(1, 1_700_000_000_000_000_000, 265598, "AAPL", 1.0, 1.1, nan, 5, 6, nan, 100)
    t2 = Tick(2, 1_700_000_000_500_000_000, 265598, "AAPL", 1.05, 1.1, 1.06, 5, 6, 2, 102)
    t3 = Tick(3, 1_700_000_001_000_000_000, 265598, "AAPL", 1.06, 1.1, 1.06, 5, 6, 2, 102)
    frame = to_dataframe([t1, Ticks(2, t2.ts, [t2, t3])])  # a batch is expanded
    assert list(frame["seq"]) == [1, 2, 3]
    assert list(frame.columns[:5]) == ["seq", "ts", "con_id", "symbol", "bid"]
    assert frame["datetime"].iloc[1] == pd.Timestamp(t2.ts, unit="ns", tz="UTC")
    assert math.isnan(frame["last"].iloc[0])
    bars = to_dataframe([Bar(1, 0, 265598, "AAPL", 1_700_000_000, 1, 2, 0.5, 1.5, 10, 1.2, 3),
                         Bar(2, 0, 265598, "AAPL", 1_700_000_005, 1.5, 2, 1, 1.8, 4, 1.6, 2)])
    assert list(bars["close"]) == [1.5, 1.8]
    assert bars["datetime"].iloc[1] == pd.Timestamp(1_700_000_005, unit="s", tz="UTC")
    history = to_dataframe([BarData(1_700_000_000, 1, 2, 0.5, 1.5, 10, 1.2, 3)])
    assert list(history.columns) == ["time", "open", "high", "low", "close", "volume",
                                     "wap", "count", "datetime"]
    assert to_dataframe([]).empty
