"""Operator commands: ``ibhub explain`` (IB error codes) and ``ibhub doctor`` (pre-flight).

Kept apart from the hub so that both start fast and import neither ib_insync nor
the hub: they must work exactly when the hub or the Gateway does not.
"""

from __future__ import annotations

import asyncio
import json
import os
import textwrap

import click

from ibhub import wire
from ibhub.cli import doctor
from ibhub.tws import ib_codes


def _explanation_text(exp: ib_codes.Explanation) -> str:
    flags = [str(exp.category)]
    if ib_codes.is_warning(exp.code):
        flags.append("does not end a request")
    if ib_codes.concerns_everyone(exp.code):
        flags.append("sent to every client")
    if not exp.known:
        flags.append("not in ibhub's table")
    wrap = textwrap.TextWrapper(width=88, initial_indent="  ", subsequent_indent="    ")
    return "\n".join(
        [
            f"{exp.code}  ({', '.join(flags)})",
            wrap.fill(f"meaning: {exp.meaning}"),
            wrap.fill(f"action:  {exp.action}"),
        ]
    )


@click.command("explain")
@click.argument("codes", nargs=-1)
@click.option("--all", "show_all", is_flag=True, help="List every code in the table.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def explain_cmd(codes: tuple[str, ...], show_all: bool, as_json: bool) -> None:
    """Explain IB error/status codes: meaning, what to do, category.

    Example: ibhub explain 326 2104 10197
    """
    if show_all:
        found = ib_codes.all_codes()
    else:
        if not codes:
            raise click.UsageError("give one or more IB error codes, or --all")
        found = []
        for raw in codes:
            try:
                found.append(ib_codes.explain(int(raw)))
            except ValueError:
                raise click.BadParameter(
                    f"{raw!r} is not an integer IB error code", param_hint="CODES"
                ) from None
    if as_json:
        click.echo(json.dumps([e.as_dict() for e in found], indent=2))
    else:
        click.echo("\n\n".join(_explanation_text(e) for e in found))


# --------------------------------------------------------------------------- doctor

_LABEL = {
    "healthy": "OK",
    "hub_healthy": "OK",
    "not_listening": "NOT LISTENING",
    "handshake_stalled": "HANDSHAKE STALLED",
    "client_id_in_use": "CLIENT ID IN USE",
    "handshake_refused": "HANDSHAKE REFUSED",
    "start_stalled": "API START STALLED",
    "unreachable": "UNREACHABLE",
    "hub_not_answering": "HUB NOT ANSWERING",
    "hub_upstream_down": "HUB UPSTREAM DOWN",
    "hub_refused": "HUB REFUSED",
}


def _render_port(r: doctor.PortReport, with_hints: bool, shown: set[str]) -> list[str]:
    """One port's verdict; a hint already printed for another port is not repeated."""
    name = f"{r.host}:{r.port}"
    if r.product:
        name += f" ({r.product} {r.expected_mode})"
    lines = [f"[{_LABEL[r.diagnosis]}] {name}  exit {r.exit_code}", f"    {r.detail}"]
    for m in r.messages:
        lines.append(f"    IB {m.code} [{m.category}]: {m.message}")
    if with_hints or r.diagnosis is doctor.Diagnosis.HEALTHY:
        wrap = textwrap.TextWrapper(width=92, initial_indent="    - ", subsequent_indent="      ")
        for h in r.hints:
            if h not in shown:
                shown.add(h)
                lines.append(wrap.fill(h))
    return lines


def _render_hub(h: doctor.HubReport) -> list[str]:
    lines = [f"[{_LABEL[h.diagnosis]}] hub {h.endpoint}  exit {h.exit_code}", f"    {h.detail}"]
    wrap = textwrap.TextWrapper(width=92, initial_indent="    - ", subsequent_indent="      ")
    lines.extend(wrap.fill(x) for x in h.hints)
    return lines


def _default_ports() -> list[int]:
    """The four standard ports, plus ``$IB_PORT`` (the port scripts are told to use)."""
    found = [p.port for p in doctor.STANDARD_PORTS]
    env = os.environ.get("IB_PORT", "").strip()
    if env.isdigit() and 0 < int(env) < 65536 and int(env) not in found:
        found.append(int(env))
    return found


@click.command("doctor")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    envvar="IB_HOST",
    help="TWS/Gateway host ($IB_HOST).",
)
@click.option(
    "--port",
    "ports",
    type=click.IntRange(1, 65535),
    multiple=True,
    help="Port to probe (repeatable). Default: 7497, 7496, 4002, 4001 and $IB_PORT.",
)
@click.option(
    "--client-id",
    type=int,
    default=doctor.PROBE_CLIENT_ID,
    show_default=True,
    help="Client id the probe connects with (pick one no script uses).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(0.05, 120),
    default=3.0,
    show_default=True,
    help="Seconds allowed for each stage (TCP, handshake, API start, hub reply).",
)
@click.option(
    "--hub",
    "hub",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[ENDPOINT]",
    help="Also check a running hub (default endpoint: $IBHUB_RPC or tcp://127.0.0.1:5571; "
    "a CURVE hub needs $IBHUB_SERVER_KEY and $IBHUB_CLIENT_KEY_FILE).",
)
@click.option(
    "--gateway/--no-gateway",
    default=True,
    show_default=True,
    help="Probe TWS/Gateway ports (--no-gateway with --hub checks only the hub).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def doctor_cmd(
    ctx: click.Context,
    host: str,
    ports: tuple[int, ...],
    client_id: int,
    timeout: float,
    hub: str | None,
    gateway: bool,
    as_json: bool,
) -> None:
    """Diagnose TWS/IB Gateway API ports (and a hub): a pre-flight check.

    Each port gets one verdict and exit code: 0 healthy, 10 nothing listening,
    11 handshake stalled (API socket off / untrusted IP / dialog waiting),
    12 client id in use (326), 13 handshake refused, 14 API start stalled,
    15 host unreachable; hub: 20 not answering, 21 upstream down, 22 refused.
    With several ports the result is 0 if any port is healthy, else the most
    informative failure; a Gateway failure outranks a hub failure.
    """
    if not gateway and hub is None:
        raise click.UsageError("--no-gateway needs --hub (nothing to check otherwise)")
    probe_ports = list(ports) or _default_ports()
    hub_endpoint = None if hub is None else wire.rpc_endpoint(hub or None)

    async def run() -> tuple[list[doctor.PortReport], doctor.HubReport | None]:
        reports: list[doctor.PortReport] = []
        if gateway:
            reports = await doctor.probe_ports(
                host, probe_ports, client_id=client_id, timeout=timeout
            )
        hub_report = await doctor.check_hub(hub_endpoint, timeout=timeout) if hub_endpoint else None
        return reports, hub_report

    reports, hub_report = asyncio.run(run())
    code = doctor.overall_gateway_code(reports)
    if code == 0 and hub_report is not None:
        code = hub_report.exit_code
    if as_json:
        out = {
            "host": host,
            "client_id": client_id,
            "timeout": timeout,
            "exit_code": code,
            "ports": [r.as_dict() for r in reports],
            "hub": hub_report.as_dict() if hub_report else None,
        }
        click.echo(json.dumps(out, indent=2))
    else:
        any_ok = any(r.diagnosis is doctor.Diagnosis.HEALTHY for r in reports)
        lines: list[str] = []
        shown: set[str] = set()
        if gateway:
            lines.append(f"Probing {host} with client id {client_id}, {timeout:g} s per stage")
        for r in reports:
            lines.extend(_render_port(r, not any_ok or len(reports) == 1, shown))
        if hub_report is not None:
            lines.extend(_render_hub(hub_report))
        verdict = "healthy" if code == 0 else "NOT healthy"
        lines.append(f"Result: {verdict} (exit {code}; `ibhub doctor --help` lists the codes)")
        click.echo("\n".join(lines))
    ctx.exit(code)
