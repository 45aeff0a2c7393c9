"""
The ``buttress`` command line.

::

    buttress status --url http://127.0.0.1:8081 [--json]
    buttress config check FILE [--kind KIND] [--target NAME ...] [--env]
    buttress dashboards [--datasource UID] [--selector MATCHERS] [--out DIR]
    buttress alerts [--selector MATCHERS] [--out DIR] [--slo 0.999] [--THRESHOLD VALUE ...]

``status`` reads a running service's ``/health`` endpoint (see ``buttress._health_server``) and
prints one line per target. Exit codes: 0 healthy or degraded, 1 unhealthy, 2 unreachable (or
not a buttress health endpoint). ``config check`` validates a configuration file and prints the
effective policies (exit 0), or the error on stderr (exit 2). ``dashboards`` and ``alerts`` write
the generated Grafana dashboards and Prometheus/Alertmanager files (see
``buttress.observability``). New commands are subparsers: add a
``_add_<command>`` function and register it in :func:`build_parser`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from ._config_file import KINDS
from ._exceptions import ConfigurationError

__all__ = ["build_parser", "main", "render_status"]

EXIT_OK = 0
EXIT_UNHEALTHY = 1
EXIT_UNREACHABLE = 2
EXIT_CONFIG_INVALID = 2

DEFAULT_TIMEOUT = 5.0
_COLUMNS = ("TARGET", "KIND", "STATUS", "BREAKER", "CALLS", "FAIL%", "P50", "P95", "BULKHEAD")
_Command = Callable[[argparse.Namespace, TextIO, TextIO], int]


class _UnreachableError(Exception):
    """The endpoint did not answer with a health report."""


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the ``buttress`` command with *argv* (default: ``sys.argv[1:]``).

    Returns:
        The exit code.

    .. versionadded:: 0.1.0
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    command: _Command | None = getattr(args, "command_fn", None)
    if command is None:
        parser.print_help(sys.stderr)
        return EXIT_UNREACHABLE
    return command(args, sys.stdout, sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, one subparser per command."""
    parser = argparse.ArgumentParser(
        prog="buttress", description="Inspect services protected by buttress."
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_status(commands)
    _add_config(commands)
    _add_dashboards(commands)
    _add_alerts(commands)
    return parser


def _add_status(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = commands.add_parser(
        "status",
        help="show the health of a running service's targets",
        description=(
            "Fetch URL/health and show one line per target. Exit code: 0 healthy or degraded, "
            "1 unhealthy, 2 unreachable."
        ),
    )
    status.add_argument(
        "--url", required=True, help="the health server's base URL, e.g. http://127.0.0.1:8081"
    )
    status.add_argument("--json", action="store_true", help="print the report as JSON")
    status.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds to wait for an answer (default {DEFAULT_TIMEOUT:g})",
    )
    status.set_defaults(command_fn=_status)


def _add_config(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    config = commands.add_parser("config", help="check a configuration file")
    actions = config.add_subparsers(title="actions", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check",
        help="validate a TOML configuration file and show the effective policies",
        description=(
            "Validate FILE (the file BUTTRESS_CONFIG names) and print the effective policies per "
            "kind default, per target table and per --target. Exit code: 0 valid, 2 invalid."
        ),
    )
    check.add_argument("file", metavar="FILE", help="the TOML configuration file")
    check.add_argument("--kind", choices=KINDS, help="show this kind only (default: every kind)")
    check.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="NAME",
        help="also show the policies of this target name (repeatable)",
    )
    check.add_argument(
        "--env",
        action="store_true",
        help="apply this environment's BUTTRESS_* quick variables on top, as a service would",
    )
    check.set_defaults(command_fn=_config_check)


def _add_dashboards(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dashboards = commands.add_parser(
        "dashboards",
        help="write the generated Grafana dashboards",
        description="Write the Grafana dashboards (JSON) generated from buttress's metric names.",
    )
    dashboards.add_argument(
        "--datasource", metavar="UID", help="default Prometheus data source uid (prometheus)"
    )
    _add_generator_arguments(dashboards, "dashboards/")
    dashboards.set_defaults(command_fn=_dashboards)


def _add_alerts(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from .observability._prometheus_rules import AlertParams  # noqa: PLC0415

    alerts = commands.add_parser(
        "alerts",
        help="write the generated Prometheus rules, their tests and an Alertmanager example",
        description=(
            "Write Prometheus alerting and recording rules, promtool unit tests and an "
            "Alertmanager example generated from buttress's metric names."
        ),
    )
    _add_generator_arguments(alerts, "alerts/")
    defaults = AlertParams()
    for field in dataclasses.fields(AlertParams):
        if field.name in ("selector", "runbook_url"):
            continue
        default = getattr(defaults, field.name)
        alerts.add_argument(
            "--" + field.name.replace("_", "-"),
            dest=field.name,
            type=type(default),
            default=default,
            metavar="VALUE",
            help=f"default {default}",
        )
    alerts.set_defaults(command_fn=_alerts)


def _add_generator_arguments(parser: argparse.ArgumentParser, out: str) -> None:
    parser.add_argument(
        "--selector",
        default="",
        metavar="MATCHERS",
        help="extra label matchers for every metric, e.g. 'job=\"checkout\"'",
    )
    parser.add_argument("--out", default=out, metavar="DIR", help=f"output folder (default {out})")
    parser.add_argument("--runbook-url", metavar="URL", help="URL of docs/runbooks.md")


def _dashboards(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        from .observability import dashboard_files, write_files  # noqa: PLC0415

        files = dashboard_files(
            datasource=args.datasource, selector=args.selector, runbook_url=args.runbook_url
        )
    except ImportError as exc:
        err.write(f"buttress: dashboards: {exc} (install the 'dashboards' dependency group)\n")
        return EXIT_CONFIG_INVALID
    out.writelines(f"wrote {path}\n" for path in write_files(files, args.out))
    return EXIT_OK


def _alerts(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .observability import AlertParams, alert_files, write_files  # noqa: PLC0415

    values = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(AlertParams)
        if getattr(args, f.name, None) is not None
    }
    try:
        params = AlertParams(**values)
    except ValueError as exc:
        err.write(f"buttress: alerts: {exc}\n")
        return EXIT_CONFIG_INVALID
    out.writelines(f"wrote {path}\n" for path in write_files(alert_files(params), args.out))
    return EXIT_OK


def _config_check(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from ._settings import check_report  # noqa: PLC0415 - `buttress status` needs none of it

    kinds = KINDS if args.kind is None else (args.kind,)
    environ = os.environ if args.env else None
    try:
        report = check_report(args.file, kinds=kinds, targets=args.target, environ=environ)
    except ConfigurationError as exc:
        err.write(f"buttress: config check: {_one_line(str(exc))}\n")
        return EXIT_CONFIG_INVALID
    except Exception as exc:
        err.write(
            f"buttress: config check: {_one_line(args.file)}: internal error "
            f"({type(exc).__name__}) while checking the file; please report this as a buttress "
            "bug\n"
        )
        return EXIT_CONFIG_INVALID
    out.write(report)
    return EXIT_OK


def _one_line(text: str) -> str:
    # One line on stderr whatever the file path or a key holds.
    return " ".join(text.splitlines())


def _status(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    url = str(args.url).rstrip("/") + "/health"
    try:
        report = fetch_report(url, float(args.timeout))
    except _UnreachableError as exc:
        err.write(f"buttress: {url}: {exc}\n")
        return EXIT_UNREACHABLE
    if args.json:
        out.write(json.dumps(report, indent=2, sort_keys=True) + "\n")
    else:
        out.write(render_status(report))
    return EXIT_UNHEALTHY if report.get("status") == "unhealthy" else EXIT_OK


def fetch_report(url: str, timeout: float) -> dict[str, Any]:
    """
    GET *url* and return the health report it answers with.

    A 503 is an answer too (the service is unhealthy): its body is the report.

    Raises:
        _UnreachableError: no answer, another status, or a body that is not a health report.
    """
    if not url.startswith(("http://", "https://")):
        raise _UnreachableError("the URL must start with http:// or https://")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - scheme checked
            body = response.read()
    except urllib.error.HTTPError as exc:
        if exc.code != 503:
            raise _UnreachableError(f"HTTP {exc.code} {exc.reason}") from None
        body = exc.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise _UnreachableError(f"cannot connect ({reason})") from None
    try:
        report = json.loads(body)
    except ValueError:
        raise _UnreachableError(
            "the answer is not JSON: is this a buttress health endpoint?"
        ) from None
    if not isinstance(report, dict) or not isinstance(report.get("targets"), list):
        raise _UnreachableError("the answer is not a buttress health report")
    return report


def render_status(report: Mapping[str, Any]) -> str:
    """
    The terminal rendering of a health report (as ``HealthReport.to_dict()`` gives it).

    An overall status line, a table with one row per target, then why each non-healthy target
    is not healthy. Missing figures show as ``-``.

    .. versionadded:: 0.1.0
    """
    targets: list[Mapping[str, Any]] = list(report.get("targets") or [])
    window = report.get("window")
    header = f"status: {str(report.get('status', 'unknown')).upper()}"
    header += f"  ({len(targets)} target{'' if len(targets) == 1 else 's'}"
    header += f", last {window:g}s)" if isinstance(window, int | float) else ")"
    lines = [header]
    if not targets:
        lines.append("no targets registered")
        return "\n".join(lines) + "\n"
    rows = [_COLUMNS, *(_row(t) for t in targets)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines.extend(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
    for t in targets:
        reasons = t.get("reasons") or []
        if reasons:
            lines.append(f"{t.get('target')}: {'; '.join(str(r) for r in reasons)}")
    return "\n".join(lines) + "\n"


def _row(t: Mapping[str, Any]) -> tuple[str, ...]:
    limit = t.get("bulkhead_limit")
    if limit is None:
        bulkhead = "-"
    else:
        bulkhead = f"{t.get('bulkhead_active', 0)}/{limit}"
        queued = t.get("bulkhead_queued") or 0
        if queued:
            bulkhead += f" +{queued}"
    failure_rate = t.get("failure_rate")
    return (
        str(t.get("target", "?")),
        str(t.get("kind", "-")),
        str(t.get("status", "-")),
        str(t.get("state") or "-"),
        str(t.get("calls", 0)),
        "-" if failure_rate is None else f"{failure_rate * 100:.1f}%",
        _duration(t.get("p50")),
        _duration(t.get("p95")),
        bulkhead,
    )


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.1f}ms" if seconds < 0.01 else f"{seconds * 1000:.0f}ms"
    return f"{seconds:.2f}s"
