"""The contract's machinery: checks, their results, and the run that orders them.

A check is a function of a `Context` registered with `@check(...)`. It returns an optional detail
(printed after `ok`), raises `Skip(reason)` where it does not apply, or raises `Failure(cause,
fix)`; any other exception fails the check with the exception's first line and the check's
general fix. A check names the checks it `needs`: when one of them did not pass, it is skipped
with that reason, so that one fault fails one check (the first that sees it) and no other.
"""

import contextlib
import dataclasses
import tempfile
import warnings

OK, FAILED, SKIPPED = "ok", "FAILED", "skipped"
KINDS = ("layer", "model", "loss", "metric")


class Failure(Exception):
    """A check's verdict: what is wrong (`cause`) and how to fix it (`fix`), one sentence each."""

    def __init__(self, cause, fix=None):
        super().__init__(cause)
        self.cause, self.fix = cause, fix


class Skip(Exception):
    """The check does not apply to this component; the message says why."""


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    kinds: tuple
    needs: tuple
    run: object
    why: str
    fix: str


@dataclasses.dataclass(frozen=True)
class Result:
    """One line of the report card.

    Attributes:
        check: the check's name.
        status: `"ok"`, `"FAILED"` or `"skipped"`.
        detail: for `ok`, what was found (may be empty); for `skipped`, why.
        cause, fix: for `FAILED`, what is wrong and how to fix it.
    """

    check: str
    status: str
    detail: str = ""
    cause: str = ""
    fix: str = ""

    @property
    def ok(self):
        return self.status != FAILED


@dataclasses.dataclass(frozen=True)
class Report:
    """The results of every check on one component, in the contract's order."""

    component: str
    kind: str
    results: tuple

    @property
    def ok(self):
        return all(r.ok for r in self.results)

    @property
    def failed(self):
        return [r for r in self.results if r.status == FAILED]

    def __getitem__(self, name):
        for result in self.results:
            if result.check == name:
                return result
        raise KeyError(f"no check named {name!r}; the checks run were "
                       f"{', '.join(r.check for r in self.results)}")


REGISTRY = []


def check(name, *, kinds, needs=(), why, fix):
    """Register the decorated function as the check `name` for the component kinds `kinds`."""

    def register(fn):
        if any(c.name == name and set(c.kinds) & set(kinds) for c in REGISTRY):
            raise ValueError(f"the check {name!r} is registered twice for {kinds}")
        REGISTRY.append(Check(name, tuple(kinds), tuple(needs), fn, why, fix))
        return fn

    return register


def checks_for(kind):
    """The checks a component of `kind` goes through, in order."""
    return [c for c in REGISTRY if kind in c.kinds]


def first_line(error):
    text = str(error).strip()
    # Keras wraps a call's error in "Exception encountered when calling X.call()." and ANSI bold.
    lines = [line for line in text.replace("\x1b[1m", "").replace("\x1b[0m", "").splitlines()
             if line.strip() and not line.startswith("Exception encountered when calling")]
    return f"{type(error).__name__}: {lines[0].strip() if lines else ''}".rstrip(": ")


def _run_one(chk, ctx, done):
    for need in chk.needs:
        if need in done and done[need].status != OK:
            return Result(chk.name, SKIPPED, f"needs {need}, which did not pass")
    try:
        with warnings.catch_warnings():
            # Keras's and TensorFlow's own API migrations are not the component's fault, even
            # under a caller's `-W error`.
            warnings.simplefilter("ignore", DeprecationWarning)
            detail = chk.run(ctx)
    except Skip as skip:
        return Result(chk.name, SKIPPED, str(skip))
    except Failure as failure:
        return Result(chk.name, FAILED, cause=failure.cause, fix=failure.fix or chk.fix)
    except Exception as error:
        return Result(chk.name, FAILED, cause=first_line(error), fix=chk.fix)
    return Result(chk.name, OK, detail or "")


@contextlib.contextmanager
def _quiet_tensorflow():
    """TensorFlow's retracing warnings off: the checks make many small functions on purpose."""
    import tensorflow as tf

    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        yield
    finally:
        logger.setLevel(level)


def run_checks(ctx, only=None, skip=()):
    """Run the checks of `ctx.kind` in order and return the `Report`.

    Args:
        ctx: the `Context` (the component and what the checks share).
        only: names of the checks to run (the others are left out of the report), or `None`.
        skip: names of checks reported as skipped on request.
    """
    names = [c.name for c in checks_for(ctx.kind)]
    for name in [*(only or ()), *skip]:
        if name not in names:
            raise ValueError(f"Expected check names among {', '.join(names)}. Received: {name!r}")
    done = {}
    with _quiet_tensorflow(), tempfile.TemporaryDirectory(prefix="spec_impl_check_") as folder:
        ctx.folder = folder
        for chk in checks_for(ctx.kind):
            if only is not None and chk.name not in only:
                continue
            if chk.name in skip:
                done[chk.name] = Result(chk.name, SKIPPED, "left out on request")
            else:
                done[chk.name] = _run_one(chk, ctx, done)
    return Report(ctx.label, ctx.kind, tuple(done.values()))
