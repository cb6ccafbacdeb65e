"""The shipped IB error table and its classification helpers."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from ibhub.cli.ops import explain_cmd
from ibhub.tws import ib_codes
from ibhub.tws.ib_codes import Category, Explanation, concerns_everyone, explain, is_warning

REQUIRED = [
    100, 101, 102, 103, 110, 162, 165, 200, 201, 202, 300, 321, 322, 326, 354, 502, 504,
    1100, 1101, 1102, 1300, 2103, 2104, 2105, 2106, 2107, 2108, 2109, 2110, 2137, 2157,
    2158, 10167, 10168, 10197,
]  # fmt: skip
EXTRA = [399, 404, 434, 507, 509, 2119, 10089, 10090, 10147, 10148, 10182]


@pytest.mark.parametrize("code", REQUIRED + EXTRA)
def test_required_code_is_in_table(code: int) -> None:
    exp = explain(code)
    assert exp.known
    assert exp.code == code
    assert len(exp.meaning) > 10 and len(exp.action) > 3
    assert isinstance(exp.category, Category)
    # one line each, ASCII only (logs and terminals)
    for text in (exp.meaning, exp.action):
        assert "\n" not in text
        assert text.isascii()


def test_categories_of_key_codes() -> None:
    assert explain(326).category is Category.FATAL
    assert explain(201).category is Category.ORDER
    assert explain(200).category is Category.REQUEST
    assert explain(1100).category is Category.CONNECTIVITY
    assert explain(2103).category is Category.WARNING
    assert explain(2104).category is Category.INFO


@given(st.integers(min_value=-(2**40), max_value=2**40))
def test_any_code_explains_without_raising(code: int) -> None:
    exp = explain(code)
    assert isinstance(exp, Explanation)
    assert exp.code == code
    assert exp.meaning and exp.action


def test_unknown_code_is_generic_and_marked_unknown() -> None:
    exp = explain(987654)
    assert not exp.known
    assert exp.category is Category.REQUEST
    assert explain(2199).category is Category.WARNING  # by range
    assert not explain(2199).known


def test_explanation_is_frozen() -> None:
    exp = explain(200)
    with pytest.raises(AttributeError):
        exp.code = 1  # type: ignore[misc]


@pytest.mark.parametrize("code", [110, 165, 202, 399, 404, 434, 492, 10167, 2100, 2104, 2199])
def test_warnings_match_ib_insync(code: int) -> None:
    assert is_warning(code)


@pytest.mark.parametrize("code", [100, 162, 200, 201, 321, 326, 354, 1100, 2200, 10168, 2099])
def test_errors_are_not_warnings(code: int) -> None:
    assert not is_warning(code)


#: Where ib_async's warning rule differs from ib_insync's (the hub's): requests refused
#: with these codes are ended by ibhub.ib.lib as ib_insync would (tests/e2e/test_iblib.py).
IB_ASYNC_ALSO_WARNS = {105, 321, 329}
IB_ASYNC_NO_LONGER_WARNS = {202}


def test_the_library_agrees_on_warnings() -> None:
    """Guard against drift: read the installed library's warning set from its source.

    The hub's rule is ib_insync's; ib_async differs by the sets above and no more, so a
    new ib_async release that changes its rule fails here, not in production."""
    import inspect
    import re

    from tests.ibclient import CLIENT_ONLY_WARNINGS, NAME, wrapper

    src = inspect.getsource(wrapper.Wrapper.error)
    match = re.search(r"warningCodes = (?:frozenset\()?\{([0-9, ]+)\}", src)
    assert match, f"{NAME} changed how it lists warning codes"
    theirs = {int(x) for x in match.group(1).split(",")}
    if NAME == "ib_async":
        assert CLIENT_ONLY_WARNINGS == IB_ASYNC_ALSO_WARNS
        theirs = (theirs - IB_ASYNC_ALSO_WARNS) | IB_ASYNC_NO_LONGER_WARNS
    for code in theirs:
        assert is_warning(code)
    for code in range(0, 20000):
        ib_says = code in theirs or 2100 <= code < 2200
        assert is_warning(code) == ib_says, code


@pytest.mark.parametrize("code", [1100, 1101, 1102, 2103, 2104, 2105, 2106, 2157, 2158, 2110])
def test_connectivity_concerns_everyone(code: int) -> None:
    assert concerns_everyone(code)


@pytest.mark.parametrize("code", [200, 201, 162, 326, 354, 10167, 2109, 2137, 0, -1])
def test_request_errors_do_not_concern_everyone(code: int) -> None:
    assert not concerns_everyone(code)


def test_format_error_names_code_category_and_action() -> None:
    line = ib_codes.format_error(201, "Order rejected - reason: margin")
    assert line.startswith("IB 201 [order_rejection]: Order rejected - reason: margin -- ")
    assert explain(201).action in line
    # an empty message falls back to the table's meaning
    assert explain(2104).meaning in ib_codes.format_error(2104, "  ")


def test_all_codes_sorted_and_complete() -> None:
    codes = [e.code for e in ib_codes.all_codes()]
    assert codes == sorted(codes)
    assert set(REQUIRED) <= set(codes)


def test_explain_cli_human_and_json() -> None:
    runner = CliRunner()
    res = runner.invoke(explain_cmd, ["326", "2104"])
    assert res.exit_code == 0, res.output
    assert "326" in res.output and "client id is already in use" in res.output
    assert "2104" in res.output

    res = runner.invoke(explain_cmd, ["200", "424242", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert [r["code"] for r in rows] == [200, 424242]
    assert rows[0]["known"] is True and rows[1]["known"] is False
    assert set(rows[0]) == {
        "code", "meaning", "action", "category", "warning", "concerns_everyone", "known",
    }  # fmt: skip


def test_explain_cli_all_and_bad_input() -> None:
    runner = CliRunner()
    res = runner.invoke(explain_cmd, ["--all", "--json"])
    assert res.exit_code == 0
    assert len(json.loads(res.output)) == len(ib_codes.all_codes())
    res = runner.invoke(explain_cmd, [])
    assert res.exit_code == 2
    res = runner.invoke(explain_cmd, ["abc"])
    assert res.exit_code == 2
    assert "abc" in res.output
