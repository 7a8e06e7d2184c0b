"""Every benchmark setting, in one place, for `spec-impl bench` and `pytest benchmarks` alike.

A `BenchSettings` says how long to measure (rounds, warm-ups, batches per round); the constants
say what to measure (workloads, batch sizes, steps per call, comparisons).
"""

from dataclasses import dataclass

from spec_impl._validation import MODES

# Models of the registry (`spec_impl.registry.MODELS`) that the suite times, at these batch sizes.
WORKLOADS = ("residual_regressor", "mnist_mlp", "sequential_cnn", "mini_inception",
             "ticket_classifier")
DEFAULT_BATCH = {"residual_regressor": 32, "mnist_mlp": 32, "sequential_cnn": 128,
                 "mini_inception": 32, "ticket_classifier": 32}
USER_BATCH = 32  # `--model` without `--batch-size`
# (batches per timed round at one step per call, rounds) per workload; a user model gets the
# cheap workloads' plan. A round at steps_per_execution k runs a multiple of k batches.
# A round of a cheap model runs enough steps that a call's fixed cost (making the iterator,
# fit's callbacks) does not dominate it.
PLAN = {"residual_regressor": (128, 9), "mnist_mlp": (64, 9), "sequential_cnn": (8, 5),
        "mini_inception": (3, 3), "ticket_classifier": (32, 7)}
USER_PLAN = (16, 7)
# Steps per call of the loop and fit at each level, and of the XLA group (mode="xla") at every
# k > 1. A workload whose step takes about a second stops at k = 8 (a round of 32 steps would
# take minutes per runner); --quick stops every workload there; smoke runs k = 2, whose XLA
# group compiles in seconds, where it only checks that everything runs.
STEPS_PER_EXECUTION = {"full": (1, 8, 32), "quick": (1, 8), "smoke": (1, 2)}
SLOW_WORKLOADS = {"mini_inception": (1, 8)}
EAGER_SHARE = 16  # the eager row runs 1/16 of a round's steps (it is 10-50x slower per step)
EVAL_SAMPLES, EVAL_BATCH = 10_000, 32  # document 002's evaluation loop
DOC_EVAL_SPEEDUP = 1.80 / 0.8  # document 002: 1.80 s eagerly, 0.8 s with tf.function
SCALING = {"mnist_mlp": (1, 8, 32, 128, 256)}  # batch sizes (MiniInception's: its table)
QUICK_SCALING = {"mnist_mlp": (1, 32, 256)}  # --quick
GPU_MIXED_BATCH = 256  # document 000 trained MiniInception in mixed_float16 at batch 256
DISTRIBUTED_WORKLOADS = ("mnist_mlp", "mini_inception")  # timed under MirroredStrategy
DISTRIBUTED_BATCH = 32  # the global batch, the same for every number of replicas (divides by 4)
REPLICAS = (1, 2, 4)  # `spec-impl bench --strategy mirrored --devices N` times those <= N
# Seconds of timed rounds per table (after the untimed warm-up): the rounds stop at the plan's
# count or once this is spent, never under MIN_ROUNDS. A slow workload gets fewer rounds, so a
# wider interval (a verdict needs the interval to exclude 1), never a longer run.
BUDGET_S = {"full": 12.0, "quick": 6.0, "smoke": 0.0}
# The fewest rounds with a verdict: the sign-test interval of a median reaches 95 % from 6
# paired rounds (`spec_impl.bench.stats.MIN_VERDICT_ROUNDS`); --smoke's 2 rounds give none.
MIN_ROUNDS = 6
WANTED_ROUNDS = 9  # a full run's rounds where the budget allows (google-benchmark's advice)
# A runner whose rounds spread more than this (interquartile range over median, percent) is
# flagged noisy, as torch.utils.benchmark warns.
NOISE_PCT = 10.0
# CPU flags of bfloat16 instructions: without one, bfloat16 runs emulated and
# `mixed_bfloat16` is not timed (`spec-impl bench` says so).
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
CONFIDENCE = 0.95  # of the interval of every ratio


def step_counts(name, level="full"):
    """The steps per call a workload is timed at (at `level`)."""
    if level == "full":
        return SLOW_WORKLOADS.get(name, STEPS_PER_EXECUTION["full"])
    return STEPS_PER_EXECUTION[level]


def runner_names(name, level="full"):
    """Every runner of a workload's table at `level`, in table order."""
    ks = step_counts(name, level)
    names = [*MODES]
    for k in ks:
        names += [f"loop_k{k}", f"fit_k{k}"]
        if k > 1:
            names.append(f"xla_loop_k{k}")
    if _times_fit_xla(name, level):
        names.append(f"fit_xla_k{ks[-1]}")  # fit(jit_compile=True) at the largest k: the fair rival
    return names


def _times_fit_xla(name, level):
    """`fit(jit_compile=True)` is left out at `--quick` and for the slow workloads, where its
    compilation (MiniInception: 38 s) costs more than its rounds."""
    return level != "quick" and name not in SLOW_WORKLOADS


def quick_skips(name, level):
    """Whether `--quick` leaves `name` out of the default run (a step of about a second: its
    table alone would take minutes); `--quick --model NAME` still times it."""
    return level == "quick" and name in SLOW_WORKLOADS


def comparisons(name, level="full"):
    """`(numerator, denominator)` runner pairs whose time ratio gets an interval and a verdict
    (a ratio below 1: the numerator is faster)."""
    ks = step_counts(name, level)
    pairs = [("function", "eager"), ("xla", "function")]
    pairs += [(f"loop_k{k}", f"fit_k{k}") for k in ks]
    pairs += [(f"loop_k{ks[-1]}", "loop_k1")]
    for k in ks[1:]:
        pairs += [(f"xla_loop_k{k}", f"loop_k{k}"), (f"xla_loop_k{k}", f"fit_k{k}")]
    top = ks[-1]
    if _times_fit_xla(name, level):
        pairs += [(f"xla_loop_k{top}", f"fit_xla_k{top}"), (f"fit_xla_k{top}", f"fit_k{top}")]
    return pairs


@dataclass(frozen=True)
class BenchSettings:
    """How long to measure.

    Args:
        level: `"full"` (the plan's rounds), `"quick"` (about half the rounds, a smaller
            scaling sweep) or `"smoke"` (two rounds of one step per call: everything runs,
            nothing is measured; what CI's untimed benchmarks use).
        warmup: untimed calls of each runner before the rounds (tracing, XLA compilation).
        runners: the names of the runners to time (`--runners`), or `None` for all.
    """

    level: str = "full"
    warmup: int = 1
    runners: tuple = None  # the runners to time (`None`: every runner of each table)

    def __post_init__(self):
        if self.level not in ("full", "quick", "smoke"):
            raise ValueError(f"Expected a level among full, quick, smoke. Received: level={self.level!r}")

    def selects(self, runner):
        """Whether `runner` is timed (`--runners`)."""
        return self.runners is None or runner in self.runners

    def rounds(self, name):
        """The most rounds of `name` (fewer, never under `MIN_ROUNDS`, when `budget` runs out
        first): at least `WANTED_ROUNDS` in a full run, half the plan at `--quick`, 2 at
        `--smoke` (no verdict)."""
        rounds = PLAN.get(name, USER_PLAN)[1]
        return {"full": max(WANTED_ROUNDS, rounds), "quick": max(MIN_ROUNDS, rounds // 2),
                "smoke": 2}[self.level]

    @property
    def budget(self):
        """Seconds of timed rounds per table, or `None` (smoke: the rounds alone)."""
        return BUDGET_S[self.level] or None

    def steps(self, name, k=1):
        """Batches per timed round of `name` at steps_per_execution `k` (a multiple of k)."""
        steps = 1 if self.level == "smoke" else PLAN.get(name, USER_PLAN)[0]
        return steps if k == 1 else k * -(-steps // k)

    @property
    def scaling(self):
        return SCALING if self.level == "full" else QUICK_SCALING
