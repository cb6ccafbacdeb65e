"""Strategies and bookkeeping for fuzzing the hub's request socket.

Counts of inputs tried per class are kept in :data:`TRIED` and written to the
results file (``harness.Figures``) by the tests, so docs/reliability.md can say how
many inputs each class saw. ``IBHUB_FUZZ_EXAMPLES`` raises the per-test example
count for the published run (CI default: 60).
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import msgspec
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from ibhub.protocol import AnyRequest

EXAMPLES = int(os.environ.get("IBHUB_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same inputs every run: a failure replays
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)
TRIED: Counter[str] = Counter()
SAVED: Counter[str] = Counter()  # already written to the results file
REPLIES: dict[str, Counter[str]] = {}  # input class -> reply type / error code -> count

TAGS = sorted(t.__struct_config__.tag for t in AnyRequest.__args__)
FIELDS = sorted({f for t in AnyRequest.__args__ for f in t.__struct_fields__}
                | {"type"})
INT64 = st.integers(min_value=-(2**63), max_value=2**64 - 1)
HUGE_TEXT = st.integers(min_value=10_000, max_value=600_000).map(lambda n: "x" * n)

scalars = st.one_of(
    st.none(), st.booleans(), INT64,
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([float("nan"), float("inf"), float("-inf"), 1e308, -0.0, 2**63 - 1]),
    st.text(max_size=50), st.binary(max_size=50), HUGE_TEXT,
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=10), inner, max_size=5)),
    max_leaves=10)
keys = st.one_of(st.sampled_from(FIELDS), st.text(max_size=20))

# A map that looks like a request: a known or unknown tag, random fields and values.
request_like = st.builds(
    lambda tag, fields: {**fields, **({"type": tag} if tag is not None else {})},
    st.one_of(st.none(), st.sampled_from(TAGS), st.text(max_size=20), INT64),
    st.dictionaries(keys, values, max_size=8),
)


def mutate(base: dict[str, Any], data: Any) -> dict[str, Any]:
    """A valid request map with one field dropped, retyped, or set to an edge value,
    or an unknown field added."""
    out = dict(base)
    field = data.draw(st.sampled_from(sorted(out)))
    how = data.draw(st.sampled_from(["drop", "retype", "edge", "extra"]))
    if how == "drop":
        out.pop(field)
    elif how == "retype":
        out[field] = data.draw(values)
    elif how == "edge":
        out[field] = data.draw(st.sampled_from([
            float("nan"), float("inf"), -float("inf"), 2**63 - 1, -(2**63), 2**64 - 1,
            "", "x" * 300_000, "\u0000", "\udcff".encode("utf-8", "surrogatepass"), [], {},
        ]))
    else:
        out[data.draw(st.text(min_size=1, max_size=20))] = data.draw(values)
    return out


def pack(obj: Any) -> bytes:
    return msgspec.msgpack.encode(obj)
