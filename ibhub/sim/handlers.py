"""Handlers for the simulator's core requests (everything that is neither market
data nor orders/account): current time, ids, market data type, contract details,
managed accounts, market rules and a few requests that need no answer (news,
scanners and other reference data: :mod:`ibhub.sim.reference`).

Each handler is ``fn(session, fields)``; ``fields[0]`` is the message id. A handler
raises :class:`~ibhub.sim.session.RequestError` (or ``ValueError`` for unparsable
input) and the session turns it into an error on the request id.
"""

from __future__ import annotations

import logging
import time

from ibhub.sim.contracts import contract_details_fields, parse_c12
from ibhub.sim.session import ClientSession, Handler, RequestError

__all__ = ["NO_SECURITY", "core_handlers"]

log = logging.getLogger(__name__)

NO_SECURITY = "No security definition has been found for the request"


def req_current_time(s: ClientSession, f: list[str]) -> None:
    s.send(49, 1, int(time.time()))


def req_ids(s: ClientSession, f: list[str]) -> None:
    s.send(9, 1, s.gateway.broker.next_order_id(s.client_id))


def req_market_data_type(s: ClientSession, f: list[str]) -> None:
    kind = int(f[2])
    if kind not in (1, 2, 3, 4):
        raise ValueError(f"market data type {kind} is not one of 1, 2, 3, 4")
    s.market_data_type = kind


def req_managed_accounts(s: ClientSession, f: list[str]) -> None:
    s.send(15, 1, ",".join(s.gateway.config.accounts))


def req_contract_details(s: ClientSession, f: list[str]) -> None:
    """[9, 8, reqId, C12, includeExpired, secIdType, secId, issuerId]."""
    req_id = int(f[2])
    query = parse_c12(f, 3)
    found = s.gateway.universe.resolve(query)
    if not found:
        log.info("contract details %d: no match for %s", req_id, query)
        raise RequestError(200, NO_SECURITY)
    directed = query.exchange if query.exchange and query.exchange != "SMART" else ""
    for inst in found:
        s.send(*contract_details_fields(req_id, inst, exchange=directed,
                                        sec_type="CONTFUT" if query.sec_type == "CONTFUT"
                                        else ""))
    s.send(52, 1, req_id)


def req_market_rule(s: ClientSession, f: list[str]) -> None:
    """[91, ruleId] -> marketRule (93) with one price band from the universe's ticks."""
    rule = int(f[1])
    ticks = {i.min_tick for i in s.gateway.universe if i.market_rule_id == rule}
    if not ticks:
        log.warning("client %d asked for unknown market rule %d", s.client_id, rule)
        s.send_error(-1, 321, f"Error validating request.-'91' : cause - unknown market "
                              f"rule {rule}")
        return
    s.send(93, rule, 1, 0.0, min(ticks))


def ignore(s: ClientSession, f: list[str]) -> None:
    """Requests that the Gateway acknowledges with silence (the log level)."""


def core_handlers() -> dict[int, Handler]:
    return {
        8: req_ids,
        9: req_contract_details,
        14: ignore,  # setServerLogLevel
        17: req_managed_accounts,
        49: req_current_time,
        59: req_market_data_type,
        91: req_market_rule,
    }
