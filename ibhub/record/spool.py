"""The append log that makes the low-rate kinds survive ``kill -9``.

Order events, fills, ``hub.status`` transitions and gaps are rare and cannot be
re-derived, so each is appended to ``DIR/_recorder/spool-<kind>-<writer>-<n>.bin``
with one ``write()`` before it joins the in-memory buffer (the OS keeps what a killed
process wrote). The part that later holds the segment's rows is named with the same
``<writer>-<n>``; once it is renamed into place the segment is deleted. At the next
start a segment whose part exists is deleted, any other is turned into its part:
nothing spooled is lost and nothing is written twice. Ticks and bars are not
spooled (the cost per tick would double); a kill loses their open buffer, which the
next start reports and records as gaps.

Record framing: 4-byte little-endian length, then msgpack of the row tuple.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

SPOOLED = ("orders", "status", "gaps")
_LEN = struct.Struct("<I")
_NAME = re.compile(r"^spool-([a-z]+)-([0-9a-z]+)-(\d+)\.bin$")


def spool_dir(root: Path) -> Path:
    return root / "_recorder"


class Spool:
    """One kind's current segment, appended unbuffered."""

    def __init__(self, root: Path, kind: str, writer: str) -> None:
        self.kind = kind
        self.writer = writer
        self.segment = 0
        self._dir = spool_dir(root)
        self._dir.mkdir(parents=True, exist_ok=True)
        self._encode = msgspec.msgpack.Encoder().encode
        self._fd = -1
        self._open()

    def path(self, segment: int | None = None) -> Path:
        n = self.segment if segment is None else segment
        return self._dir / f"spool-{self.kind}-{self.writer}-{n}.bin"

    def _open(self) -> None:
        self._fd = os.open(self.path(), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def append(self, row: tuple[Any, ...]) -> None:
        payload = self._encode(row)
        os.write(self._fd, _LEN.pack(len(payload)) + payload)

    def rotate(self) -> int:
        """Start the next segment; returns the one just closed (its part is due)."""
        done = self.segment
        os.close(self._fd)
        self.segment += 1
        self._open()
        return done

    def discard(self, segment: int) -> None:
        """The segment's part is in place: its rows are durable there."""
        self.path(segment).unlink(missing_ok=True)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def leftover_segments(root: Path) -> list[tuple[str, str, int, Path]]:
    """(kind, writer, segment, path) of every spool segment on disk."""
    found = []
    directory = spool_dir(root)
    if directory.is_dir():
        for path in directory.iterdir():
            match = _NAME.match(path.name)
            if match:
                found.append((match[1], match[2], int(match[3]), path))
    return sorted(found, key=lambda f: (f[1], f[2], f[0]))


def read_segment(path: Path) -> Iterator[list[Any]]:
    """The rows of a segment; a torn last record (cut mid-write) is skipped."""
    data = path.read_bytes()
    decode = msgspec.msgpack.Decoder().decode
    pos, end = 0, len(data)
    while pos + 4 <= end:
        (size,) = _LEN.unpack_from(data, pos)
        if pos + 4 + size > end:
            return
        yield decode(data[pos + 4:pos + 4 + size])
        pos += 4 + size
