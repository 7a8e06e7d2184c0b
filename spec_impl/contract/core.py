"""The contract's machinery: checks, their results, and the run that orders them.

A check is a function of a `Context` registered with `@check(...)`. It returns an optional detail
(printed after `ok`), raises `Skip(reason)` where it does not apply, `Warn(cause, fix)` for what
Keras itself only warns about, or `Failure(cause, fix)` for a broken promise a user meets
(reload, training, values, speed); any other exception fails the check with the exception's
first line and the check's general fix. A check names the checks it `needs`: when one of them
FAILED, it is skipped with that reason, so that one fault fails one check (the first that sees
it) and no other. A warning, or a check left out on request, turns off no other check: each
check computes what it reads itself (through the `Context`'s memoised calls).
"""

import contextlib
import dataclasses
import tempfile
import time
import warnings

OK, FAILED, SKIPPED, WARNING = "ok", "FAILED", "skipped", "warning"
NEEDS = "needs"  # the start of a skip's reason when a check it needs did not pass
PENDING = "pending"  # queued work (`Deferred`); the caller that queued it fills the result in
KINDS = ("layer", "model", "loss", "metric")


class Failure(Exception):
    """A check's verdict: what is wrong (`cause`) and how to fix it (`fix`), one sentence each."""

    def __init__(self, cause, fix=None):
        super().__init__(cause)
        self.cause, self.fix = cause, fix


class Skip(Exception):
    """The check does not apply to this component; the message says why."""


class Deferred(Exception):
    """The check's work was queued (a fresh-process reload, run with others in one child);
    its result is `pending` until the queue runs."""


class Warn(Failure):
    """What Keras only warns about: reported with its cause and fix, blocking no other check."""


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
        status: `"ok"`, `"warning"`, `"FAILED"` or `"skipped"`.
        detail: for `ok`, what was found (may be empty); for `skipped`, why.
        cause, fix: for `FAILED` and `warning`, what is wrong and how to fix it.
        seconds: the check's own time.
    """

    check: str
    status: str
    detail: str = ""
    cause: str = ""
    fix: str = ""
    seconds: float = 0.0

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
        """No check failed, and at least one check beyond `construct` passed (a card on which
        every check was skipped checked nothing, and is not a pass)."""
        return all(r.ok for r in self.results) and not self.vacuous

    @property
    def vacuous(self):
        """Whether nothing beyond `construct` was checked (every other check skipped)."""
        return not any(r.status in (OK, WARNING) for r in self.results if r.check != "construct")

    @property
    def failed(self):
        return [r for r in self.results if r.status == FAILED]

    @property
    def warnings(self):
        return [r for r in self.results if r.status == WARNING]

    def seconds(self, leave_out=("fresh_process_reload",)):
        """The checks' own time, in seconds, without those named in `leave_out`."""
        return sum(r.seconds for r in self.results if r.check not in leave_out)

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
        if need in done and (done[need].status == FAILED or done[need].detail.startswith(NEEDS)):
            return Result(chk.name, SKIPPED, f"{NEEDS} {need}, which did not pass")
    try:
        with warnings.catch_warnings():
            # A verdict does not depend on the caller's warning filters (`-W error`): Keras's
            # and TensorFlow's API migrations are not the component's fault, and what Keras
            # warns about that matters (a composite layer without `build`) has a check of its own.
            warnings.simplefilter("ignore")
            detail = chk.run(ctx)
    except Skip as skip:
        return Result(chk.name, SKIPPED, str(skip))
    except Deferred:
        return Result(chk.name, PENDING, "queued for one fresh process")
    except Warn as warning:
        return Result(chk.name, WARNING, cause=warning.cause, fix=warning.fix or chk.fix)
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


def _timed(chk, ctx, done):
    start = time.perf_counter()
    result = _run_one(chk, ctx, done)
    return dataclasses.replace(result, seconds=time.perf_counter() - start)


@contextlib.contextmanager
def _folder(folder):
    if folder is not None:
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="spec_impl_check_") as made:
        yield made


def run_checks(ctx, only=None, skip=(), folder=None):
    """Run the checks of `ctx.kind` in order and return the `Report`.

    Args:
        ctx: the `Context` (the component and what the checks share).
        only: names of the checks to run (the others are left out of the report), or `None`.
        skip: names of checks reported as skipped on request; the checks that need them still
            run (each computes what it reads).
        folder: where the saved files go (a temporary folder, removed afterwards, by default).
    """
    names = [c.name for c in checks_for(ctx.kind)]
    for name in [*(only or ()), *skip]:
        if name not in names:
            raise ValueError(f"Expected check names among {', '.join(names)}. Received: {name!r}")
    done = {}
    with _quiet_tensorflow(), _folder(folder) as ctx.folder:
        for chk in checks_for(ctx.kind):
            if only is not None and chk.name not in only:
                continue
            if chk.name in skip:
                done[chk.name] = Result(chk.name, SKIPPED, "left out on request (the checks "
                                                           "after it still run)")
            else:
                done[chk.name] = _timed(chk, ctx, done)
    return Report(ctx.label, ctx.kind, tuple(done.values()))
