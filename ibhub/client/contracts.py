"""Turning what a script writes (``"AAPL"``, a conId, a spec) into a ``ContractSpec``."""

from __future__ import annotations

import os
import sys
from typing import Any

import msgspec

from ibhub.protocol import ContractSpec


def default_name() -> str:
    """A readable lease name: the script's file name and pid."""
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return f"{prog or 'python'}[{os.getpid()}]"


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
