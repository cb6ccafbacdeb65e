"""The package layout's import rules (docs/architecture.md, "What each folder may import").

Read from the source with ``ast`` (nothing is imported), over every module of ``ibhub``.
Imports under ``if TYPE_CHECKING:`` are annotations only and never run; they are exempt
from the rules between ibhub's own packages, but not from the rule about the IB library.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "ibhub"
IB_LIBRARIES = ("ib_insync", "ib_async", "eventkit", "ibapi")


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. ibhub.orders.manager
    target: str  # what it imports, e.g. ibhub.tws.pacing or ib_insync
    line: int
    type_only: bool  # under `if TYPE_CHECKING:`

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.target}"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports_of(path: Path) -> list[Import]:
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[Import] = []

    def visit(node: ast.AST, type_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    visit_stmt(stmt, True)
                for stmt in child.orelse:
                    visit_stmt(stmt, type_only)
                continue
            visit_stmt(child, type_only)

    def visit_stmt(stmt: ast.AST, type_only: bool) -> None:
        if isinstance(stmt, ast.Import):
            for alias in stmt.names:
                found.append(Import(module, alias.name, stmt.lineno, type_only))
        elif isinstance(stmt, ast.ImportFrom):
            base = stmt.module or ""
            if stmt.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (stmt.level - 1)]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            # `from ibhub import wire` imports the module ibhub.wire
            for alias in stmt.names:
                found.append(Import(module, f"{base}.{alias.name}", stmt.lineno, type_only))
        else:
            visit(stmt, type_only)

    visit(tree, False)
    return found


def _all_imports() -> list[Import]:
    return [imp for path in sorted(PACKAGE.rglob("*.py")) for imp in _imports_of(path)]


IMPORTS = _all_imports()


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _ibhub_package(target: str) -> str | None:
    """The ibhub package or top-level module ``target`` lies in (``ibhub.hub``,
    ``ibhub.protocol``), None for anything outside ibhub."""
    parts = target.split(".")
    if parts[0] != "ibhub" or len(parts) < 2:
        return None
    return ".".join(parts[:2])


def _violations(package: str, allowed: set[str]) -> list[str]:
    """Imports of ibhub code by ``package``'s modules outside ``allowed`` (runtime only)."""
    bad = []
    for imp in IMPORTS:
        if not _within(imp.module, package) or imp.type_only:
            continue
        target = _ibhub_package(imp.target)
        if target is None or target == package or target == "ibhub.__version__":
            continue
        if target not in allowed:
            bad.append(str(imp))
    return bad


def test_the_layout_test_sees_every_package() -> None:
    modules = {imp.module for imp in IMPORTS}
    for package in (
        "ibhub.client",
        "ibhub.tws",
        "ibhub.orders",
        "ibhub.ib",
        "ibhub.hub",
        "ibhub.frontdoor",
        "ibhub.sim",
        "ibhub.cli",
    ):
        assert any(_within(m, package) for m in modules), package
    # and it resolves `from ibhub import x` and TYPE_CHECKING imports as they are written
    assert any(i.target == "ibhub.sim.broker_messages" for i in IMPORTS)
    assert any(i.type_only for i in IMPORTS)


def test_only_ibhub_ib_imports_the_ib_client_library() -> None:
    bad = [
        str(imp)
        for imp in IMPORTS
        if imp.target.split(".")[0] in IB_LIBRARIES and not _within(imp.module, "ibhub.ib")
    ]
    assert bad == [], "only ibhub/ib/ may import the IB client library:\n" + "\n".join(bad)


def test_only_the_one_door_imports_the_ib_client_library_inside_ibhub_ib() -> None:
    """Inside ibhub/ib/, ib_insync / ib_async are imported by lib.py alone; the other
    modules take what they need from it."""
    bad = [
        str(imp)
        for imp in IMPORTS
        if imp.target.split(".")[0] in IB_LIBRARIES and imp.module != "ibhub.ib.lib"
    ]
    assert bad == [], "import the IB library through ibhub.ib.lib:\n" + "\n".join(bad)


@pytest.mark.parametrize(
    ("package", "allowed"),
    [
        # The SDK is what a script installs and imports: the shared contract only.
        ("ibhub.client", {"ibhub.protocol", "ibhub.wire", "ibhub.keys", "ibhub.tasks",
                          "ibhub.natswire"}),
        # The TWS wire is shared by the simulator, the front door and the doctor.
        ("ibhub.tws", {"ibhub.protocol"}),
        # The simulator is a stand-in for the Gateway: it knows TWS, not the hub.
        # ... and the recording format, to replay a recording (only ibhub.record.format,
        # which imports pyarrow and nothing of ibhub).
        ("ibhub.sim", {"ibhub.protocol", "ibhub.tws", "ibhub.tasks", "ibhub.record",
                       "ibhub.acceptor"}),
        # The recorder is an SDK client that writes Parquet: never the hub.
        ("ibhub.record", {"ibhub.protocol", "ibhub.wire", "ibhub.client", "ibhub.tasks"}),
        # Trading rules and state; the composition root wires in the upstream gateway.
        ("ibhub.orders", {"ibhub.protocol", "ibhub.config", "ibhub.tws", "ibhub.tasks"}),
        # The IB library's door: it implements the order port and speaks TWS.
        ("ibhub.ib", {"ibhub.protocol", "ibhub.config", "ibhub.tws", "ibhub.orders"}),
        # The running hub composes everything but the commands (server.py alone starts
        # the front door, see below).
        (
            "ibhub.hub",
            {
                "ibhub.protocol",
                "ibhub.wire",
                "ibhub.keys",
                "ibhub.config",
                "ibhub.tws",
                "ibhub.orders",
                "ibhub.ib",
                "ibhub.sim",
                "ibhub.frontdoor",
                "ibhub.tasks",
                "ibhub.natswire",
                "ibhub.acceptor",
            },
        ),
        # The front door serves TWS scripts with the hub's services.
        (
            "ibhub.frontdoor",
            {
                "ibhub.protocol",
                "ibhub.config",
                "ibhub.tws",
                "ibhub.orders",
                "ibhub.hub",
                "ibhub.sim",
                "ibhub.tasks",
                "ibhub.acceptor",
            },
        ),
        # The shared contract imports nothing of the packages built on it.
        ("ibhub.protocol", set()),
        ("ibhub.wire", {"ibhub.protocol"}),
        ("ibhub.keys", set()),
        # The NATS subjects and headers, shared by the bridge and the SDK (issue 17).
        ("ibhub.natswire", set()),
        # Task bookkeeping shared by the SDK, the simulator, orders and the hub.
        ("ibhub.tasks", set()),
        # The listening sockets of every server (the simulator's too).
        ("ibhub.acceptor", set()),
        # Settings name the endpoints (wire) and the risk defaults (orders.risk) they
        # default to; nothing that runs.
        ("ibhub.config", {"ibhub.protocol", "ibhub.wire", "ibhub.keys", "ibhub.orders"}),
    ],
)
def test_package_imports_only_what_its_rule_allows(package: str, allowed: set[str]) -> None:
    bad = _violations(package, allowed)
    assert bad == [], f"{package} may import only {sorted(allowed)}:\n" + "\n".join(bad)


def test_the_simulator_reads_recordings_through_the_format_module_only() -> None:
    """The replay needs the on-disk format, never the recorder (which is an SDK client);
    and the format module imports nothing of ibhub but the protocol."""
    bad = [str(imp) for imp in IMPORTS if _within(imp.module, "ibhub.sim")
           and _within(imp.target, "ibhub.record") and imp.target != "ibhub.record.format"]
    bad += [str(imp) for imp in IMPORTS if imp.module == "ibhub.record.format"
            and imp.target.startswith("ibhub") and imp.target != "ibhub.protocol"]
    assert bad == [], "\n".join(bad)


def test_only_the_composition_root_imports_the_front_door_inside_the_hub() -> None:
    """The front door is built on the hub's services; server.py alone starts it."""
    bad = [
        str(imp)
        for imp in IMPORTS
        if _within(imp.module, "ibhub.hub")
        and imp.module != "ibhub.hub.server"
        and _within(imp.target, "ibhub.frontdoor")
    ]
    assert bad == [], "\n".join(bad)


def test_no_package_imports_the_commands() -> None:
    """ibhub/cli/ is the top: it may import anything (lazily); nothing imports it but
    ``ibhub/__main__.py`` (``python -m ibhub``, the same command)."""
    bad = [
        str(imp)
        for imp in IMPORTS
        if _within(imp.target, "ibhub.cli") and not _within(imp.module, "ibhub.cli")
        and imp.module != "ibhub.__main__"
    ]
    assert bad == [], "\n".join(bad)
