"""`spec-impl bench --compare BASE.json [NEW.json]`: did a runner get slower?

Per workload and runner present in both files, the ratio new / base of the time per step with
the 95 % interval that inverts the Mann-Whitney U test on the two files' raw rounds
(`stats.shift_interval`: the rounds of two runs are not paired), and a verdict. As under
pytest-benchmark's `--benchmark-compare-fail`, a threshold turns a regression into a failing
exit code: `regressions(comparison, pct)` lists the runners whose interval lies wholly above
`1 + pct / 100`. Files from different machines or versions (`provenance.COMPARED_FIELDS`) are
compared only when forced, and the table names what differs.
"""

import json

from spec_impl.bench import stats
from spec_impl.bench.provenance import SCHEMA_VERSION, differences


class IncomparableError(ValueError):
    """Two benchmark files that cannot be compared as they are."""


def load_results(path):
    """A benchmark JSON, checked to carry this version's schema and raw rounds."""
    try:
        with open(path) as f:
            results = json.load(f)
    except (OSError, ValueError) as error:
        raise IncomparableError(f"{path}: cannot be read as a benchmark JSON ({error})") from None
    version = results.get("schema_version") if isinstance(results, dict) else None
    if version is None:
        raise IncomparableError(f"{path} has no schema_version: it was written by an older "
                                f"spec-impl, without the raw rounds a comparison needs. Run the "
                                f"benchmark again to compare.")
    if version != SCHEMA_VERSION:
        raise IncomparableError(f"{path} has schema_version {version}; this spec-impl compares "
                                f"schema_version {SCHEMA_VERSION}. Run the benchmark again.")
    return results


def _rounds(results):
    return {(r["workload"], r["mode"]): r for r in results.get("train_steps", [])
            if r.get("rounds_s_per_step")}


def compare_results(base, new, force=False):
    """`{"differences": [...], "rows": [...], "only_base": [...], "only_new": [...]}`: one row
    per (workload, runner) in both files: base and new ms per step, `value`, `low`, `high`,
    `verdict`.

    Raises:
        IncomparableError: the machines or versions differ and `force` is not set.
    """
    differ = differences(base["machine"], new["machine"])
    if differ and not force:
        raise IncomparableError("The two runs were measured on different machines or "
                                "versions (" + "; ".join(differ) + "): pass --force to compare "
                                "them anyway.")
    old, now = _rounds(base), _rounds(new)
    rows = []
    for key in (k for k in now if k in old):
        value, low, high = stats.shift_interval(now[key]["rounds_s_per_step"],
                                                old[key]["rounds_s_per_step"])
        rows.append({"workload": key[0], "runner": key[1],
                     "base_ms": old[key]["ms_per_step"], "new_ms": now[key]["ms_per_step"],
                     "value": value, "low": low, "high": high,
                     "verdict": stats.verdict(low, high),
                     "rounds": [len(old[key]["rounds_s_per_step"]),
                                len(now[key]["rounds_s_per_step"])]})
    return {"differences": differ, "rows": rows,
            "only_base": sorted(f"{w}/{r}" for w, r in old if (w, r) not in now),
            "only_new": sorted(f"{w}/{r}" for w, r in now if (w, r) not in old)}


def regressions(comparison, pct):
    """The rows slower by more than `pct` percent: their interval's lower end above
    `1 + pct / 100`."""
    return [r for r in comparison["rows"]
            if r["verdict"] == "slower" and r["low"] > 1 + pct / 100]


def format_comparison(comparison, base_name, new_name):
    """The comparison table: one line per runner, grouped by workload."""
    lines = [f"new: {new_name}", f"base: {base_name}"]
    if comparison["differences"]:
        lines.append("compared with --force although they differ: "
                     + "; ".join(comparison["differences"]))
    lines += ["", "time per step, new / base (< 1: new is faster), Hodges-Lehmann estimate, "
                  "95 % Mann-Whitney interval over both runs' rounds:"]
    width = max((len(r["runner"]) for r in comparison["rows"]), default=6)
    workload = None
    for r in comparison["rows"]:
        if r["workload"] != workload:
            workload = r["workload"]
            lines.append(workload)
        if r["low"] is None:
            ratio = (f"{r['value']:.2f} ({r['rounds'][0]} and {r['rounds'][1]} rounds: no "
                     f"verdict)")
        else:
            ratio = stats.format_ratio(r)
        lines.append(f"  {r['runner']:<{width}}  {r['base_ms']:>9.3f} -> {r['new_ms']:>9.3f} "
                     f"ms/step  {ratio}")
    for side in ("only_base", "only_new"):
        if comparison[side]:
            lines.append(f"{side.replace('_', ' in ')}: {', '.join(comparison[side])}")
    return "\n".join(lines)
