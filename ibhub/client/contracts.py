"""Turning what a script writes (``"AAPL"``, a conId, a spec) into a ``ContractSpec``."""

from __future__ import annotations

import os
import secrets
import sys
from typing import Any

import msgspec

from ibhub.protocol import ContractSpec


def default_name() -> str:
    """A readable lease name of this run only: the script's file name, its pid and a
    random tag (pids come round again, and the hub binds a name to the run that first
    used it: docs/security.md, "Script names")."""
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return run_name(prog or "python")


def run_name(prog: str) -> str:
    """``prog[pid-tag]``: a name no other run uses, for tools and scripts without one."""
    return f"{prog}[{os.getpid()}-{secrets.token_hex(3)}]"


def contract_spec(contract: str | int | ContractSpec, **fields: Any) -> ContractSpec:
    """``"AAPL"`` -> a stock spec, ``265598`` -> by conId, a ``ContractSpec`` as is.

    Keyword arguments are ``ContractSpec`` fields (``sec_type="CASH"``, ``currency=``,
    ``expiry=``, ...); an unknown one raises ``TypeError`` naming it.
    """
    if isinstance(contract, ContractSpec):
        return msgspec.structs.replace(contract, **fields) if fields else contract
    if isinstance(contract, bool) or not isinstance(contract, str | int):
        raise TypeError(f"contract must be a symbol, a conId or a ContractSpec, not {contract!r}")
    if isinstance(contract, int):
        return ContractSpec(con_id=contract, **fields)
    if not contract.strip():
        raise ValueError("contract symbol is empty")
    return ContractSpec(symbol=contract.strip().upper(), **fields)
