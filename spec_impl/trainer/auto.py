"""`mode="auto"` and `steps_per_execution="auto"`: choose how to run *this* model on *this*
machine by timing its first real training steps.

Whether XLA or several steps per call pays off depends on the model and the machine (on a CPU,
XLA speeds a dense model's loop up and slows convolutions down; several steps per call save a
small model the per-call cost and gain a large one nothing). Keras 3 decides neither:
`jit_compile="auto"` switches XLA off on any CPU, and tf-keras's `steps_per_execution="auto"`
tuner is gone. So the run's first calls are the calibration: each candidate setting runs one
untimed call (tracing, XLA compilation), then calls timed until `TIMED_STEPS` steps, and the rest
of the run takes the fastest. Every calibration step is a real training step of the run, counted
once: the weights are those of a run in the chosen setting to float round-off.

Candidates, cheapest first: steps per call 1, 8, 32 (those of `spec-impl bench`) in `"function"`
and `"xla"` mode. Three rules keep the calibration cheap where a candidate cannot pay off:
- XLA is dropped once it is `XLA_GIVE_UP` times slower than the function loop at the same k > 1
  (convolutions on a CPU). At k = 1 it is timed but not judged: it pays a launch per step that
  the XLA group at k > 1 does not (a dense model on a CPU: 3x slower than the function loop at
  k = 1, the fastest of all at k = 32).
- A larger k is tried only while the last one gained at least `1 - MORE_STEPS_GAIN`.
- XLA compiles the step, and the XLA group up to 8 unrolled steps (a larger k reuses that
  program), so its first call is long (MiniInception on a 2-core CPU: about 15 s per step
  compiled, against 550 ms a step run). It is predicted before it runs (from XLA's first call
  at a smaller k times the ratio of the steps compiled, or, before XLA has run, from the
  function loop's first call, which only traces, times the steps compiled), and a candidate
  whose predicted first call would cost more than `MAX_OVERHEAD` of the rest of the run (at
  the best speed so far) is not tried, and reported as such. With a run of unknown length,
  every candidate is tried.
Precision is never changed: mixed precision is the user's choice (`spec-impl bench` measures
what it would give).
"""

import json
import os
import statistics
import tempfile

from spec_impl.options import AUTO

K_CANDIDATES = (1, 8, 32)
TIMED_STEPS = 8  # per candidate: one call at k >= 8, eight calls at k = 1 (their median)
XLA_GIVE_UP = 1.25
MORE_STEPS_GAIN = 0.95
MAX_OVERHEAD = 0.10  # of the rest of the run that a candidate's compilation may cost
AUTO_MODES = ("function", "xla")
CHOICE_FILE = "execution.json"  # in the checkpoint folder: a resumed run keeps the choice


def label(mode, k):
    """`"xla_k8"`: a setting's name in the report, as `spec-impl bench` names its runners."""
    return f"{mode}_k{k}"


def candidates(mode, steps_per_execution, strategy=None):
    """`(modes, steps per call)` to choose among: the one given, or for `"auto"` `AUTO_MODES`
    and `K_CANDIDATES` (under a strategy, `"function"` mode: XLA per replica is for devices
    that need no calibration to favour it). The workers of a cluster must run one setting, so
    there `"auto"` is refused."""
    modes = (mode,) if mode != AUTO else AUTO_MODES if strategy is None else ("function",)
    ks = (steps_per_execution,) if steps_per_execution != AUTO else K_CANDIDATES
    cluster = getattr(getattr(strategy, "cluster_resolver", None), "task_type", None)
    if len(modes) * len(ks) > 1 and cluster:
        raise ValueError(
            f"`mode` / `steps_per_execution` 'auto' times the steps in each process, and the "
            f"workers of a cluster must run the same setting: pass a mode and a number of "
            f"steps per call. Received: mode={mode!r}, "
            f"steps_per_execution={steps_per_execution!r}")
    return modes, ks


class Calibration:
    """The candidates of one run and their measured times; `choice` once decided.

    Args:
        modes: the execution modes to try (`("function", "xla")` for `mode="auto"`, else the
            one given).
        ks: the steps per call to try (`K_CANDIDATES` for `"auto"`, else the one given).
        steps_per_epoch: the epoch's length when known: larger steps per call are not tried
            (a call never spans two epochs, so it could not be timed whole).
        total_steps: the steps the run has left when it starts, or `None` when unknown (then
            every candidate is tried, whatever it costs to compile).
        unroll: the most steps the XLA group compiles into one program (the engine's
            `XLA_UNROLL`; a larger k reuses that program), or `None` for no cap.
    """

    def __init__(self, modes, ks, steps_per_epoch=None, total_steps=None, unroll=None):
        ks = [k for k in ks if steps_per_epoch is None or k <= steps_per_epoch] or [min(ks)]
        self.modes, self.ks = list(modes), ks
        self.total_steps = total_steps
        self.unroll = unroll
        self.seconds = {}  # (mode, k) -> seconds per step of each timed call
        self.first_call = {}  # (mode, k) -> seconds of the untimed first call
        self.not_tried = {}  # (mode, k) -> predicted seconds of its first call, too many
        self.steps = 0  # training steps run while calibrating
        self.choice = None
        self.source = "calibration"
        self._row = 0  # index into ks
        self._live = list(self.modes)  # modes still tried
        self._pending = self._row_settings()

    @property
    def done(self):
        return self.choice is not None

    @property
    def current(self):
        """The setting the next call runs in."""
        return self.choice or self._pending[0]

    def record(self, setting, seconds, steps):
        """A call of `setting` ran `steps` steps in `seconds` (read back to the host). A call
        that ran fewer than the setting's k steps (an epoch's end) is not timed."""
        self.steps += steps
        if self.done or setting != self.current or steps < setting[1]:
            return
        if setting not in self.first_call:
            self.first_call[setting] = seconds
            return
        times = self.seconds.setdefault(setting, [])
        times.append(seconds / steps)
        if len(times) * setting[1] >= TIMED_STEPS:
            self._pending.pop(0)
            self._skip_unaffordable()

    def _skip_unaffordable(self):
        """Leave out the next pending settings whose predicted first call costs too much (what
        was just timed may predict it); at a row's end, go on to the next."""
        while self._pending:
            setting = self._pending[0]
            predicted = self._predicted_first_call(*setting)
            if predicted is None or self._affordable(predicted, setting[1]):
                return
            self.not_tried[self._pending.pop(0)] = predicted
        self._next_row()

    def per_step(self, setting):
        """The median seconds per step of `setting`'s timed calls."""
        return statistics.median(self.seconds[setting])

    def _row_settings(self):
        """The settings of the current k, in the modes still tried."""
        return [(mode, self.ks[self._row]) for mode in self._live]

    def _predicted_first_call(self, mode, k):
        """A lower bound of XLA's first call at `k`, or `None` (nothing to predict: the
        function loop's traces are shared by every k). From XLA's first call at the largest
        smaller k, times the ratio of the steps compiled (the group unrolls k steps, at most
        `unroll`); before XLA has run, from the function loop's first call at k = 1, times the
        steps compiled (XLA traces the same step, then compiles it)."""
        if mode != "xla":
            return None
        compiled = lambda j: j if self.unroll is None else min(j, self.unroll)  # noqa: E731
        smaller = [j for (m, j) in self.first_call if m == "xla" and j < k]
        if smaller:
            j = max(smaller)
            return self.first_call[("xla", j)] * compiled(k) / compiled(j)
        if ("function", 1) in self.first_call:
            return self.first_call[("function", 1)] * compiled(k)
        return None

    def _affordable(self, predicted, k):
        if self.total_steps is None or not self.seconds:
            return True
        fastest = min(self.per_step(s) for s in self.seconds)
        left = max(0, self.total_steps - self.steps)
        return predicted - k * fastest <= MAX_OVERHEAD * left * fastest

    def _times(self):
        return {s: self.per_step(s) for s in self.seconds}

    def _best(self, k):
        return min(t for (_, j), t in self._times().items() if j == k)

    def _next_row(self):
        k = self.ks[self._row]
        if not any(j == k for _, j in self.seconds):  # nothing at this k was worth trying
            self.finish()
            return
        if k > 1 and ("xla", k) in self.seconds and ("function", k) in self.seconds \
                and self.per_step(("xla", k)) > XLA_GIVE_UP * self.per_step(("function", k)):
            self._live.remove("xla")
        best = self._best(k)
        previous = min((t for (_, j), t in self._times().items() if j < k), default=None)
        self._row += 1
        if self._row < len(self.ks) and (previous is None or best <= MORE_STEPS_GAIN * previous):
            self._pending = self._row_settings()
            self._skip_unaffordable()
        else:
            self.finish()

    def finish(self):
        """Decide on what has been timed: the fastest per step, the first tried among equals
        (the first candidate when none was timed, a run too short to calibrate)."""
        if self.choice is None:
            # the first of equals: the cheaper setting (fewer steps per call, no XLA)
            self.choice = min(self.seconds, key=self.per_step) if self.seconds \
                else (self.modes[0], self.ks[0])
        return self.choice

    def report(self):
        """The choice and what it was chosen on, JSON-ready: `History.params["execution"]`."""
        return {"mode": self.choice[0], "steps_per_execution": self.choice[1],
                "source": self.source, "calibration_steps": self.steps,
                "ms_per_step": {label(*s): round(1e3 * self.per_step(s), 4)
                                for s in self.seconds},
                "first_call_s": {label(*s): round(t, 3) for s, t in self.first_call.items()},
                "not_tried": {label(*s): f"its first call, about {t:.0f} s, would cost more "
                                         f"than {MAX_OVERHEAD:.0%} of the run left"
                              for s, t in self.not_tried.items()}}

    def summary(self):
        """One line for the progress output."""
        mode, k = self.choice
        if self.source != "calibration":
            return f"auto: {mode}, {k} step(s) per call, kept from {self.source}"
        times = ", ".join(f"{label(*s)} {1e3 * self.per_step(s):.3g}"
                          for s in sorted(self.seconds, key=self.per_step))
        return (f"auto: {mode}, {k} step(s) per call, chosen on {self.steps} training steps "
                f"(ms per step: {times or 'none timed'})")

    def markdown(self):
        """The report as a Markdown table, TensorBoard's text summary."""
        mode, k = self.choice
        lines = [f"**{mode}, {k} step(s) per call** ({self.source}, {self.steps} steps)", "",
                 "| setting | ms per step | first call (s) |", "|---|---|---|"]
        for s in sorted(self.seconds, key=self.per_step):
            lines.append(f"| {label(*s)} | {1e3 * self.per_step(s):.4g} | "
                         f"{self.first_call.get(s, float('nan')):.3g} |")
        return "\n".join(lines)

    # ---- kept with the checkpoints ----

    def save(self, directory):
        """Write the choice and its report to `directory/execution.json`, atomically."""
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{CHOICE_FILE}.")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.report(), f, indent=1)
            os.replace(tmp, os.path.join(directory, CHOICE_FILE))
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise

    def restore(self, directory):
        """Take the choice saved in `directory` by an earlier run, if it is one of this run's
        candidates; returns whether it did."""
        try:
            with open(os.path.join(directory, CHOICE_FILE)) as f:
                saved = json.load(f)
            setting = (saved["mode"], int(saved["steps_per_execution"]))
            seconds = {}
            for name, ms in saved.get("ms_per_step", {}).items():
                mode, _, k = name.rpartition("_k")
                seconds[(mode, int(k))] = [ms / 1e3]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return False
        if setting[0] not in self.modes or setting[1] not in self.ks:
            return False
        self.choice, self.seconds, self.steps = setting, seconds, 0
        self.source = f"the checkpoint folder's {CHOICE_FILE}"
        return True
