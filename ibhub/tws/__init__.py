"""The server side of the TWS API socket protocol, shared by the simulated Gateway
(:mod:`ibhub.sim`) and the hub's TWS front door (:mod:`ibhub.frontdoor`).

* :mod:`.codec` — framing (length prefix, NUL-terminated fields), value formatting;
* :mod:`.server_session` — one connection: hello, version handshake, sending,
  error wording, request-id positions (a base ``asyncio.Protocol``);
* :mod:`.contracts` — the twelve-field contract block (C12) and its parser.
"""
