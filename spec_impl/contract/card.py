"""The report card: one line per check, the cause and the fix under each failure."""

from spec_impl.contract.core import FAILED, OK, SKIPPED, WARNING


def format_report(report):
    """The report as text: a heading, one line per check (the cause and the fix under each
    failure and warning), a count line with the contract's own time, and a last line when
    nothing was checked."""
    width = max((len(r.check) for r in report.results), default=0)
    lines = [f"{report.component} ({report.kind})"]
    for r in report.results:
        text = r.cause if r.status in (FAILED, WARNING) else r.detail
        lines.append(f"  {r.status:<8} {r.check:<{width}}  {text}".rstrip())
        if r.status in (FAILED, WARNING) and r.fix:
            lines.append(f"  {'':<8} {'':<{width}}  fix: {r.fix}")
    counts = {s: sum(r.status == s for r in report.results) for s in (OK, WARNING, FAILED, SKIPPED)}
    if not counts[WARNING]:
        del counts[WARNING]
    fresh = [r for r in report.results if r.check == "fresh_process_reload" and r.status != SKIPPED]
    timing = f" in {report.seconds():.1f} s"
    if fresh:
        timing += f" (and {fresh[0].seconds:.1f} s for the fresh-process reload)"
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items()) + timing)
    if report.vacuous:
        lines.append("nothing was checked: every check but `construct` was skipped, which is not a pass")
    return "\n".join(lines)
