"""The contract on many components at once: every public class of Keras's own layers, losses and
metrics (`keras_components`), or any list of entries, with their fresh-process reloads run in
one child process, and the table of what passed.

`sweep(components)` returns one `Swept` per entry; `table(swept)` writes them as the Markdown
table of `docs/check.md`; `coverage()` compares the catalogue with the installed Keras.
"""

import dataclasses
import inspect
import os
import tempfile
import time

from spec_impl.contract.core import FAILED, OK, PENDING, SKIPPED, WARNING, Report

MODULES = ("layers", "losses", "metrics")


@dataclasses.dataclass(frozen=True)
class Swept:
    """One component's sweep result: its entry and its `Report`."""

    component: object
    report: Report

    @property
    def failed(self):
        return [r.check for r in self.report.failed]


def public_classes():
    """`{"layers.Dense": Dense, ...}`: the public classes of `keras.layers`, `keras.losses` and
    `keras.metrics`, one name per class (its own name where it is exported under it)."""
    import keras

    found = {}
    for module in MODULES:
        names = {}
        for name in dir(getattr(keras, module)):
            obj = getattr(getattr(keras, module), name)
            if inspect.isclass(obj) and not name.startswith("_"):
                names.setdefault(obj, []).append(name)
        for cls, aliases in names.items():
            name = cls.__name__ if cls.__name__ in aliases else sorted(aliases)[0]
            found[f"{module}.{name}"] = cls
    return found


def coverage():
    """`(covered, not_swept, missing)`: the public classes the catalogue checks, those it leaves
    out with a reason, and those of the installed Keras it does not know."""
    from spec_impl.contract.keras_components import COMPONENTS, NOT_SWEPT

    public = set(public_classes())
    covered = {c.covers for c in COMPONENTS}
    left_out = set(NOT_SWEPT)
    return sorted(public & covered), sorted(public & left_out), sorted(public - covered - left_out)


def inputs_of(component):
    """The generated inputs of a layer's or model's catalogue entry (a model without shapes
    takes its own inputs')."""
    from spec_impl.contract.component import generate, model_inputs

    shapes, dtypes = list(component.shapes), list(component.dtypes or ()) or None
    if not shapes:
        shapes, dtypes = model_inputs(component.factory())
    return generate(shapes, dtypes)


def run_deferred(queued):
    """Run the queued fresh-process reloads (`(job, compare)` pairs) in one child; returns, per
    job, the check's `Result` fields `(status, detail, cause, fix)`."""
    from spec_impl.contract.core import Failure
    from spec_impl.contract.saving_checks import child_failure, run_jobs

    results = []
    for (job, compare), outputs in zip(queued, run_jobs([job for job, _ in queued]), strict=True):
        try:
            if isinstance(outputs, str):
                raise child_failure(job, outputs)
            compare(outputs)
        except Failure as failure:
            results.append((FAILED, "", failure.cause, failure.fix))
            continue
        results.append((OK, f"only {job['module']} imported", "", ""))
    return results


def sweep(components, folder=None):
    """Run the contract on each catalogue entry; the fresh-process reloads run afterwards, all
    in one child process. Returns a list of `Swept`, in order."""
    from spec_impl.contract import check_component
    from spec_impl.contract.component import loss_inputs

    with tempfile.TemporaryDirectory(prefix="spec_impl_sweep_") as made:
        root = folder or made
        reports, queued, owners = [], [], []
        for n, component in enumerate(components):
            sub = os.path.join(root, f"{n:03d}_{component.name}")
            os.makedirs(sub, exist_ok=True)
            start = len(queued)
            if component.kind in ("loss", "metric"):
                inputs, targets = loss_inputs(component.factory(), component.shapes[0],
                                              component.target)
            else:
                inputs, targets = inputs_of(component), None
            report = check_component(component.factory, inputs, kind=component.kind,
                                     target=component.reference, label=component.name,
                                     targets=targets, deferred=queued, folder=sub)
            reports.append(report)
            owners += [n] * (len(queued) - start)
        start = time.perf_counter()
        outcomes = run_deferred(queued)
        seconds = (time.perf_counter() - start) / max(1, len(queued))
    for n, (status, detail, cause, fix) in zip(owners, outcomes, strict=True):
        results = tuple(dataclasses.replace(r, status=status, detail=detail, cause=cause, fix=fix,
                                            seconds=seconds)
                        if r.status == PENDING else r for r in reports[n].results)
        reports[n] = dataclasses.replace(reports[n], results=results)
    return [Swept(c, r) for c, r in zip(components, reports, strict=True)]


def counts(swept):
    """`{status: number of checks}` over every report."""
    found = dict.fromkeys((OK, WARNING, FAILED, SKIPPED), 0)
    for s in swept:
        for r in s.report.results:
            found[r.status] = found.get(r.status, 0) + 1
    return found


def _row(s):
    failed = ", ".join(s.failed) or "—"
    warned = ", ".join(r.check for r in s.report.warnings) or "—"
    skipped = sum(r.status == SKIPPED for r in s.report.results)
    return (f"| `{s.component.covers}` ({s.component.name}) | {s.component.kind} | "
            f"{sum(r.status == OK for r in s.report.results)} | {skipped} | {warned} | {failed} | "
            f"{s.report.seconds():.1f} |")


def table(swept):
    """The sweep as a Markdown table: one row per entry."""
    lines = ["| Keras class (entry) | kind | ok | skipped | warnings | FAILED | seconds |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    return "\n".join(lines + [_row(s) for s in swept])


CATALOGUES = ("keras", "package")


def catalogue(name):
    """The entries of the catalogue `name` (`"keras"`: every public class of Keras's layers,
    losses and metrics; `"package"`: models written as Keras's guides write them and this
    package's own components)."""
    if name == "keras":
        from spec_impl.contract.keras_components import COMPONENTS
    elif name == "package":
        from spec_impl.contract.package_components import COMPONENTS
    else:
        raise ValueError(f"Expected a catalogue among {', '.join(CATALOGUES)}. Received: {name!r}")
    return list(COMPONENTS)


def unexpected(swept):
    """`{entry: [checks]}`: the failures that are not listed upstream defects, and the listed
    defects that did not fail (`{entry: ["-check"]}`), so that a fixed defect is noticed."""
    from spec_impl.contract.keras_components import UPSTREAM_DEFECTS

    found = {}
    for s in swept:
        listed = set(UPSTREAM_DEFECTS.get(s.component.name, {}))
        extra = [c for c in s.failed if c not in listed]
        gone = [f"-{c}" for c in sorted(listed - set(s.failed))]
        if extra or gone:
            found[s.component.name] = extra + gone
    return found


def summary(swept):
    """One paragraph: components run, passed, with upstream defects, with unexpected failures."""
    from spec_impl.contract.keras_components import UPSTREAM_DEFECTS

    defects = [s for s in swept if s.failed and s.component.name in UPSTREAM_DEFECTS]
    passed = [s for s in swept if not s.failed]
    found = counts(swept)
    return (f"{len(swept)} components: {len(passed)} passed every check, {len(defects)} failed only "
            f"listed upstream defects, {len(unexpected(swept))} differ from the list; "
            f"{found[OK]} checks ok, {found[WARNING]} warnings, {found[FAILED]} FAILED, "
            f"{found[SKIPPED]} skipped; the contract's own time "
            f"{sum(s.report.seconds() for s in swept):.0f} s")


def add_parser(sub):
    """Add the `sweep` command to the `spec-impl` sub-parsers."""
    p = sub.add_parser("sweep", help="run the contract on every public class of Keras's layers, "
                                     "losses and metrics (and on the package's own components)")
    p.add_argument("--catalogue", choices=CATALOGUES, action="append", default=None,
                   help="which entries: keras (every public Keras class), package (Keras-guide "
                        "models and the package's own components); both by default")
    p.add_argument("--only", action="append", default=None, metavar="ENTRY",
                   help="run this entry alone (repeatable), such as Dense or loss_Huber")
    p.add_argument("--part", default="1/1", metavar="K/N",
                   help="run the K-th of N equal parts of the entries (to spread them over processes)")
    p.add_argument("--json", default=None, help="also write every card to this JSON file")
    p.set_defaults(func=run, check=_check_args)


def _part(text):
    k, _, n = text.partition("/")
    if not (k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
        raise ValueError(f"expected --part K/N with 1 <= K <= N, received {text!r}")
    return int(k), int(n)


def _check_args(args):
    from spec_impl._paths import BadPath, output_file

    try:
        _part(args.part)
    except ValueError as error:
        raise BadPath(str(error)) from None
    if args.json:
        output_file("--json", args.json)


def run(args):
    """Print the sweep's table and summary; exit 0 when the failures are exactly the listed
    upstream defects, 1 otherwise (naming the differences), 2 for an entry that does not exist."""
    import json
    import sys

    import tensorflow as tf

    from spec_impl.contract.command import REPLICAS
    from spec_impl.trainer.distribute import cpu_devices

    if len(tf.config.list_physical_devices("GPU")) < REPLICAS:
        cpu_devices(REPLICAS)
    entries = [e for name in (args.catalogue or CATALOGUES) for e in catalogue(name)]
    if args.only:
        known = {e.name for e in entries}
        wrong = [n for n in args.only if n not in known]
        if wrong:
            print(f"spec-impl sweep: no entry named {', '.join(map(repr, wrong))}; see "
                  f"docs/check.md for the names", file=sys.stderr)
            return 2
        entries = [e for e in entries if e.name in args.only]
    k, n = _part(args.part)
    entries = entries[k - 1::n]
    swept = sweep(entries)
    print(table(swept))
    print(summary(swept))
    differ = unexpected(swept)
    for name, checks in differ.items():
        print(f"not as listed: {name}: {', '.join(checks)}")
    if args.json:
        from spec_impl.saving import write_atomic_text

        write_atomic_text(args.json, json.dumps([
            {"entry": s.component.name, "covers": s.component.covers, "kind": s.component.kind,
             "seconds": s.report.seconds(), "results": [r.__dict__ for r in s.report.results]}
            for s in swept], indent=2) + "\n")
    return 1 if differ else 0


__all__ = ["Swept", "catalogue", "counts", "coverage", "public_classes", "summary", "sweep",
           "table", "unexpected"]
