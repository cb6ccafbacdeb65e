"""docs/tws-front-door.md's "Every TWS request" table stays true to the front door's dispatch.

Every request id the front door knows (its handler table and ``REQUEST_NAMES``) has a
row with the right name, and the row's verdict matches the dispatch: a "refused" row
has no handler (the front door answers it with the error the row names), a
"passed through" row is handled by the pass-through modules, every other verdict has a
handler of its own.
"""

from __future__ import annotations

import re
import types
from pathlib import Path

from ibhub.frontdoor.requests import REQUEST_NAMES, UNSUPPORTED
from ibhub.frontdoor.server import FrontDoor

DOC = Path(__file__).resolve().parents[2] / "docs" / "tws-front-door.md"
VERDICTS = ("shared", "passed through", "answered locally", "hub order path", "accepted",
            "refused")
_ROW = re.compile(r"^\| (\d+) \| (\w+) \| ([^|]+) \|")


def _rows() -> dict[int, tuple[str, str]]:
    text = DOC.read_text()
    table = text.split("## Every TWS request", 1)[1].split("\n## ", 1)[0]
    rows: dict[int, tuple[str, str]] = {}
    for line in table.splitlines():
        m = _ROW.match(line)
        if m:
            msg_id = int(m.group(1))
            assert msg_id not in rows, f"request {msg_id} has two rows"
            rows[msg_id] = (m.group(2), m.group(3).strip())
    return rows


def test_every_request_has_a_true_row() -> None:
    rows = _rows()
    door = FrontDoor(types.SimpleNamespace())
    known = set(door.handlers) | set(REQUEST_NAMES)
    missing = sorted(known - set(rows))
    assert not missing, f"docs/tws-front-door.md has no row for request ids {missing}"
    for msg_id, (name, verdict) in sorted(rows.items()):
        assert REQUEST_NAMES.get(msg_id) == name, (msg_id, name)
        assert verdict.startswith(VERDICTS), f"{msg_id} {name}: unknown verdict {verdict!r}"
        handler = door.handlers.get(msg_id)
        owner = getattr(handler, "__qualname__", "").split(".")[0]
        if verdict.startswith("refused"):
            assert handler is None, f"{name} is documented as refused but has {handler}"
            assert verdict.startswith(f"refused {UNSUPPORTED}"), (name, verdict)
        else:
            assert handler is not None, f"{name} is documented as {verdict!r} but refused"
        if verdict.startswith("passed through"):
            assert owner in ("Passthrough", "IdlessRequests"), (name, owner)
