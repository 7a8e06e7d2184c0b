"""The report card: one line per check, the cause and the fix under each failure."""

from spec_impl.contract.core import FAILED, OK, SKIPPED


def format_report(report):
    """The report as text: a heading, one line per check, and a count line."""
    width = max((len(r.check) for r in report.results), default=0)
    lines = [f"{report.component} ({report.kind})"]
    for r in report.results:
        text = r.cause if r.status == FAILED else r.detail
        lines.append(f"  {r.status:<8} {r.check:<{width}}  {text}".rstrip())
        if r.status == FAILED and r.fix:
            lines.append(f"  {'':<8} {'':<{width}}  fix: {r.fix}")
    counts = {s: sum(r.status == s for r in report.results) for s in (OK, FAILED, SKIPPED)}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items()))
    return "\n".join(lines)
