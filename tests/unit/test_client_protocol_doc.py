"""docs/protocol.md must describe every message of ibhub/protocol.py, field by field.

Someone writing a subscriber in another language has only the document; this test
fails when a message type, field, event index or error code is added to the code
but not to the document.
"""

from __future__ import annotations

import re
import typing
from pathlib import Path

import msgspec
import pytest

from ibhub import protocol as P

DOC = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()


def section(heading: str) -> str:
    start = DOC.index(heading)
    end = DOC.find("\n#### ", start + len(heading))
    return DOC[start: end if end != -1 else len(DOC)]


def fields(cls: type[msgspec.Struct]) -> list[str]:
    return [f.name for f in msgspec.inspect.type_info(cls).fields]  # type: ignore[attr-defined]


MAPS = [*typing.get_args(P.AnyRequest), *typing.get_args(P.AnyReply)]
EVENTS = list(typing.get_args(P.AnyEvent))


@pytest.mark.parametrize("cls", MAPS, ids=lambda c: c.__name__)
def test_every_request_and_reply_is_documented_field_by_field(cls: type[msgspec.Struct]) -> None:
    text = section(f"#### `{cls.__struct_config__.tag}` ({cls.__name__})")
    documented = re.findall(r"^\| `(\w+)` \|", text, flags=re.M)
    assert documented == ["type", *fields(cls)]


@pytest.mark.parametrize("cls", EVENTS, ids=lambda c: c.__name__)
def test_every_event_is_documented_with_its_array_index(cls: type[msgspec.Struct]) -> None:
    text = section(f"#### `{cls.__struct_config__.tag}` ({cls.__name__})")
    rows = re.findall(r"^\| (\d+) \| `(\w+)`", text, flags=re.M)
    assert rows == [(str(i), name) for i, name in enumerate(["t", *fields(cls)])]
    # and each documented index really holds that field in the encoded array
    values = {name: _sample(cls, name, i) for i, name in enumerate(fields(cls))}
    encoded = msgspec.msgpack.decode(msgspec.msgpack.encode(cls(**values)))
    assert encoded[0] == cls.__struct_config__.tag
    for index, name in rows[1:]:
        assert encoded[int(index)] == values[name], (index, name)


def _sample(cls: type, name: str, i: int) -> object:
    hint = typing.get_type_hints(cls)[name]
    return {int: 100 + i, float: i + 0.5, str: f"v{i}", bool: True}.get(hint, 100 + i)


def test_every_error_code_is_documented() -> None:
    codes = [v for k, v in vars(P.ErrorCode).items() if k.isupper()]
    table = DOC[DOC.index("## 8. Error codes"):DOC.index("## 9.")]
    for code in codes:
        assert f"| `{code}` |" in table, code


def test_topics_and_version_are_documented() -> None:
    for prefix in (P.TOPIC_TICK, P.TOPIC_BAR, P.TOPIC_ORDER, P.TOPIC_ERROR, P.TOPIC_STATUS,
                   P.TOPIC_ACCOUNT, P.TOPIC_POSITION):
        assert f"`{prefix}" in DOC, prefix
    assert f"# ibhub wire protocol (version {P.PROTOCOL_VERSION})" in DOC
