"""The gate's reports: the terminal table, JUnit XML and a Markdown summary. Each states per metric the drop, the
tolerance, the test used, its p-value (raw and Holm-adjusted) or interval, and the verdict."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from typing import Any

from rich.console import Console
from rich.table import Table

from cli.check.compare import Bound, MetricCheck, Report
from cli.check.policy import HIGHER, LOWER

console = Console()
err_console = Console(stderr=True)

ARROW = {HIGHER: "↑", LOWER: "↓", None: "?"}
VERDICT_STYLE = {"pass": "[green]pass[/]", "regression": "[bold red]REGRESSION[/]", "error": "[bold yellow]ERROR[/]"}
VERDICT_MD = {"pass": "✅ pass", "regression": "❌ regression", "error": "⚠️ error"}
COLUMNS = ("metric", "better", "baseline", "candidate", "drop", "allowed", "test", "p (Holm)")


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:+.4g}"
    return str(value)


def _test(bound: Bound) -> str:
    if bound.finding is None:
        return "legacy tol + k·SE"
    f = bound.finding
    lower = f", drop ≥ {f.lower:.3g}" if f.lower is not None and bound.rule.kind == "max_drop" else ""
    return f"{f.test} ({f.detail}{lower})"


def _p(bound: Bound) -> str:
    if bound.finding is None or bound.p_holm is None:
        return "—"
    return f"{bound.finding.p:.3g} ({bound.p_holm:.3g})"


def _row(check: MetricCheck) -> list[str]:
    drops = [b for b in check.bounds if b.rule.kind == "max_drop"]
    return [
        check.metric,
        ARROW[check.direction],
        _cell(check.baseline),
        _cell(check.candidate),
        f"{drops[0].drop:+.4g}" if drops else "—",
        "; ".join(b.limit for b in check.bounds) or "—",
        "; ".join(_test(b) for b in check.bounds) or "—",
        "; ".join(_p(b) for b in check.bounds) or "—",
    ]


def report_table(report: Report) -> Table:
    against = report.baseline.label if report.baseline else "no baseline"
    table = Table(title=f"robustlab check: {report.candidate.label}  vs  {against}")
    for name in (*COLUMNS, "verdict"):
        justify = "right" if name in ("baseline", "candidate", "drop") else "center" if name == "better" else "left"
        table.add_column(name, justify=justify, no_wrap=name in ("metric", "better", "drop", "verdict"))
    for check in report.checks:
        table.add_row(*_row(check), VERDICT_STYLE[check.verdict])
    return table


def print_report(report: Report) -> None:
    # CI logs are not terminals: rich would wrap at 80 columns, which folds the table; give it room there.
    out = console if console.is_terminal else Console(width=max(console.width, 180))
    out.print(report_table(report))
    for warning in report.warnings:
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    for note in sorted({n for c in report.checks for n in c.notes}):
        out.print(f"[cyan]note:[/] {note}", highlight=False)
    for check in report.checks:
        for reason in check.reasons:
            style = "bold red" if check.verdict == "regression" else "bold yellow"
            out.print(f"[{style}]{check.verdict}:[/] {reason}", highlight=False)
    style = {0: "bold green", 1: "bold red", 2: "bold yellow"}[report.exit_code]
    out.print(f"[{style}]{report.headline}[/]  ({report.rule_text}, {report.seconds:.1f} s)", highlight=False)


def junit_xml(report: Report) -> bytes:
    """JUnit XML: one ``testcase`` per metric; ``failure`` for a regression, ``error`` for a metric that could not
    be checked. Built with :mod:`xml.etree`, so names and messages are always escaped."""
    suite_name = f"robustlab check {report.candidate.name or 'candidate'}"
    counts = {
        "tests": str(len(report.checks)),
        "failures": str(len(report.regressions)),
        "errors": str(len(report.errors)),
        "skipped": "0",
        "time": f"{report.seconds:.3f}",
    }
    root = ET.Element("testsuites", {"name": "robustlab check", **counts})
    suite = ET.SubElement(
        root,
        "testsuite",
        {"name": suite_name, **counts, "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds")},
    )
    props = ET.SubElement(suite, "properties")
    for name, value in (
        ("candidate", report.candidate.label),
        ("baseline", report.baseline.label if report.baseline else ""),
        ("candidate_runs", str(len(report.candidate.runs))),
        ("baseline_runs", str(len(report.baseline.runs)) if report.baseline else "0"),
        ("rule", report.rule_text),
        ("alpha", f"{report.alpha:g}"),
        ("k", "" if report.k is None else f"{report.k:g}"),
    ):
        ET.SubElement(props, "property", name=name, value=value)
    classname = f"robustlab.check.{report.candidate.name or 'candidate'}"
    for check in report.checks:
        case = ET.SubElement(suite, "testcase", classname=classname, name=check.metric, time="0")
        row = dict(zip(COLUMNS, _row(check), strict=True))
        details = "\n".join(
            [
                f"baseline: {row['baseline']}",
                f"candidate: {row['candidate']}",
                f"drop: {row['drop']}",
                f"better: {check.direction or 'unknown'}",
                f"allowed: {row['allowed']}",
                f"test: {row['test']}",
                f"p (Holm-adjusted): {row['p (Holm)']}",
                f"verdict: {check.verdict}",
                f"rules: {', '.join(str(r) for r in check.rules)}",
                *(f"note: {n}" for n in check.notes),
            ]
        )
        if check.verdict == "regression":
            node = ET.SubElement(case, "failure", message="; ".join(check.reasons), type="RobustnessRegression")
            node.text = details
        elif check.verdict == "error":
            node = ET.SubElement(case, "error", message="; ".join(check.reasons), type="CheckError")
            node.text = details
        else:
            ET.SubElement(case, "system-out").text = details
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_summary(report: Report) -> str:
    """A pull-request comment: verdict, what was compared, the per-metric table, the notes and reasons."""
    icon = {0: "✅", 1: "❌", 2: "⚠️"}[report.exit_code]
    runs = f"{len(report.candidate.runs)} candidate run(s)"
    if report.baseline:
        runs += f", {len(report.baseline.runs)} baseline run(s)"
    legacy_spread = report.policy.legacy and report.policy.baseline_spread == "candidate"
    lines = [
        f"### {icon} robustlab check — {_md(report.headline)}",
        "",
        f"- **candidate:** {_md(report.candidate.label)}"
        + (f" — `{report.candidate.name}`" if report.candidate.name else ""),
        f"- **baseline:** {_md(report.baseline.label) if report.baseline else 'none (absolute bounds only)'}",
        f"- **rule:** {_md(report.rule_text)}; {runs}"
        + (" (one-run baseline assumed as noisy as a candidate run)" if legacy_spread else ""),
        "",
        "| " + " | ".join((*COLUMNS, "verdict")) + " |",
        "|---|:-:|--:|--:|--:|---|---|---|---|",
    ]
    for check in report.checks:
        cells = [_md(c) for c in _row(check)]
        cells[0] = f"`{cells[0]}`"
        lines.append("| " + " | ".join([*cells, VERDICT_MD[check.verdict]]) + " |")
    reasons = [(c.verdict, r) for c in report.checks for r in c.reasons]
    notes = sorted({n for c in report.checks for n in c.notes})
    if reasons or report.warnings or notes:
        lines.append("")
        lines += [f"- **{verdict}:** {_md(reason)}" for verdict, reason in reasons]
        lines += [f"- **note:** {_md(n)}" for n in notes]
        lines += [f"- **warning:** {_md(w)}" for w in report.warnings]
    lines += ["", f"<sub>robustlab check · {report.seconds:.1f} s · exit {report.exit_code}</sub>", ""]
    return "\n".join(lines)
