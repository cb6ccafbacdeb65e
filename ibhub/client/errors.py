"""Exceptions raised by the SDK.

Every refusal from the hub arrives as a ``protocol.Error`` reply; the SDK turns it
into one exception type that keeps the stable machine-readable ``code`` (see
``protocol.ErrorCode``) so scripts can branch on it instead of parsing messages.
"""

from __future__ import annotations

from ibhub.protocol import ErrorCode


class HubError(Exception):
    """The hub refused or failed a request (or did not answer in time).

    ``code`` is one of ``protocol.ErrorCode``; ``ib_code`` is the IB error code when
    Interactive Brokers itself refused (else 0).
    """

    def __init__(self, code: str, message: str, ib_code: int = 0) -> None:
        self.code = code
        self.message = message
        self.ib_code = ib_code
        detail = f"{code}: {message}"
        if ib_code:
            detail += f" (IB error {ib_code})"
        super().__init__(detail)


class HubTimeout(HubError, TimeoutError):
    """No reply arrived within the timeout (the hub is down, busy or unreachable)."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.TIMEOUT, message)


class NotConnected(HubError):
    """The SDK holds no lease: call ``connect()`` (or use the context manager) first."""

    def __init__(self, message: str = "not connected to the hub: call connect() first") -> None:
        super().__init__(ErrorCode.UNKNOWN_LEASE, message)
