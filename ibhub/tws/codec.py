"""TWS socket framing: the only code on the server side that knows the byte layout.

Every message is a 4-byte big-endian length followed by NUL-terminated text fields
(``docs``: /work/shared/tws-protocol.md section 2). Outgoing messages are built by
:func:`frame`; incoming bytes are cut into messages by :func:`split_frames` and into
text fields by :func:`split_fields`. :class:`FrameReader` keeps the incomplete tail
between reads (TCP delivers arbitrary chunks). The hub's fast tick reader
(:mod:`ibhub.ib.reader`) and ``ibhub doctor`` use the same two functions.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Sequence
from typing import TypeVar

__all__ = [
    "DEFAULT_MAX_FRAME",
    "UNSET_DOUBLE",
    "UNSET_DOUBLE_TEXT",
    "UNSET_INT",
    "FrameReader",
    "ProtocolError",
    "UnsafeField",
    "fmt",
    "fmt_float",
    "frame",
    "frame_payload",
    "holds_nul",
    "parse_version_range",
    "split_fields",
    "split_frames",
]

UNSET_DOUBLE = 1.7976931348623157e308
UNSET_DOUBLE_TEXT = "1.7976931348623157E308"  # how TWS prints Double.MAX_VALUE
UNSET_INT = 2**31 - 1
#: A real client never sends more than a few kB (placeOrder is ~115 short fields);
#: anything near a megabyte is garbage or an attack, so the session is closed.
DEFAULT_MAX_FRAME = 1 << 20
#: No limit but the prefix's own (for the Gateway's side: a year of one-minute bars is
#: one message of several MB).
UNLIMITED_FRAME = 2**32 - 1

_LEN = struct.Struct(">I")
_VERSION_RE = re.compile(r"^v(\d+)(?:\.\.(\d+))?(?:\s.*)?$")
pack_len = _LEN.pack
_unpack_len = _LEN.unpack_from
_Bytes = TypeVar("_Bytes", bytes, bytearray)


class ProtocolError(Exception):
    """The peer broke the framing (bad length prefix, oversize frame, bad hello)."""


class UnsafeField(ValueError):
    """A field holds NUL, the TWS field separator: sent, it would shift every later
    field of its message (an account "DU1\\0\\0" puts the order ref in parentId's slot).
    Nothing is sent; the request fails with this error instead."""


def holds_nul(value: object) -> bool:
    """Whether a field for the TWS wire would carry a NUL: a string, an IB library
    object whose text attributes are written as fields (a Contract), or a list of
    TagValue-like items (written as ``tag=value;``). Numbers and None never do."""
    if value is None or isinstance(value, (int, float)):
        return False
    if isinstance(value, str):
        return "\0" in value
    if isinstance(value, list):
        return any(holds_nul(getattr(v, "tag", v)) or holds_nul(getattr(v, "value", ""))
                   for v in value)
    attrs = getattr(value, "__dict__", None)
    if attrs is not None:
        return any("\0" in v for v in attrs.values() if isinstance(v, str))
    return "\0" in str(value)


def fmt_float(value: float) -> str:
    """Format a double the way the clients parse it back exactly.

    ``repr`` gives the shortest text that round-trips ("190.01", "0.0"), so prices
    rounded to a tick never grow a tail like ``190.01000000000002``. Unset doubles
    become TWS's own spelling of ``Double.MAX_VALUE``; NaN becomes the empty field.
    """
    if value >= UNSET_DOUBLE:
        return UNSET_DOUBLE_TEXT
    if math.isnan(value):
        return ""
    return repr(float(value))


def fmt(value: object) -> str:
    """One field as text: bool -> 1/0, None -> '', int -> decimal, float -> fmt_float."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return fmt_float(value)
    return str(value)


def frame_payload(fields: Sequence[object]) -> bytes:
    """The NUL-terminated field text of one message, without the length prefix.

    Raises :class:`UnsafeField` when a field holds a NUL (checked by counting the
    separators of the whole payload: one C-level pass, nothing per field)."""
    payload = "".join([fmt(f) + "\0" for f in fields]).encode()
    if payload.count(0) != len(fields):
        bad = next(i for i, f in enumerate(fields) if "\0" in fmt(f))
        msg_id = fmt(fields[0]) if fields else "?"
        raise UnsafeField(f"field {bad} of message {msg_id} holds a NUL (the TWS field "
                          f"separator): {fmt(fields[bad])!r}; the message was not sent")
    return payload


def frame(fields: Sequence[object]) -> bytes:
    """One complete message: length prefix + NUL-terminated fields."""
    payload = frame_payload(fields)
    return pack_len(len(payload)) + payload


class FrameReader:
    """Incremental decoder: ``feed(bytes)`` returns every complete message so far.

    Each message is a list of ``str`` fields (the trailing NUL does not produce an
    empty last field). Text is decoded as UTF-8 with backslash escapes for bad bytes,
    so garbage never raises here; only broken framing raises :class:`ProtocolError`.
    """

    __slots__ = ("_buf", "max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._buf = bytearray()
        self.max_frame = max_frame

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete message."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[list[str]]:
        buf = self._buf
        buf += data
        try:
            bodies, pos = split_frames(buf, self.max_frame)
        except ProtocolError:
            self._buf = bytearray()
            raise
        if pos:
            del buf[:pos]
        return [split_fields(body) for body in bodies]


def split_frames(
    buf: _Bytes, max_frame: int = DEFAULT_MAX_FRAME, most: int = -1
) -> tuple[list[_Bytes], int]:
    """The payloads of the complete messages at the start of ``buf`` (at most ``most``
    of them; -1: all) and the offset where the unread rest begins.

    A length prefix of 0 or above ``max_frame`` is broken framing: :class:`ProtocolError`
    (raised as soon as the prefix is read, before its payload is waited for). This is the
    tick hot path (:meth:`ibhub.ib.reader.TickReader.on_socket_data`): one call per socket
    read, a plain loop over local names, a slice per message.
    """
    bodies: list[_Bytes] = []
    n = len(buf)
    pos = 0
    while n - pos >= 4 and most:
        size = _unpack_len(buf, pos)[0]
        if size == 0 or size > max_frame:
            raise ProtocolError(f"bad length prefix {size} (allowed 1..{max_frame} bytes)")
        end = pos + 4 + size
        if end > n:
            break
        bodies.append(buf[pos + 4 : end])
        pos = end
        most -= 1
    return bodies, pos


def parse_version_range(text: str) -> tuple[int, int] | None:
    """The client's ``vMIN..MAX`` hello (``v100`` alone, or with ``+PACEAPI``-style
    options after a space) as ``(min, max)``; None if it is not one."""
    m = _VERSION_RE.match(text.strip())
    if m is None:
        return None
    lo = int(m.group(1))
    return lo, int(m.group(2) or m.group(1))


def split_fields(payload: bytes | bytearray) -> list[str]:
    """Split one payload into its text fields."""
    parts = payload.decode("utf-8", "backslashreplace").split("\0")
    if parts and parts[-1] == "":
        parts.pop()
    return parts
