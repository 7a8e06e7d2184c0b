"""Ratios of timings with an interval and a verdict.

Two runners are timed in alternation, round by round, so round i of each ran at nearly the same
time on the machine. The ratio of their median times gets a percentile bootstrap interval that
resamples whole rounds (the pairs stay together, so a slow spell of the machine moves both),
as asv compares two benchmark results. A ratio below 1 means the numerator is faster; the
verdict is `faster` or `slower` when the interval excludes 1, and `no difference` when it
includes 1: a ratio inside the noise is not a verdict.
"""

import numpy as np

from spec_impl.bench.settings import BOOTSTRAP_RESAMPLES, CONFIDENCE


def ratio_interval(numerator, denominator, confidence=CONFIDENCE, resamples=BOOTSTRAP_RESAMPLES,
                   seed=0):
    """`(value, low, high)`: median(numerator) / median(denominator) and its interval.

    Args:
        numerator, denominator: per-round times of the two runners, round i of each timed
            next to the other (equal lengths).
        confidence: the interval's coverage.
        resamples: bootstrap resamples of the rounds.
        seed: the resampling's seed (the same data give the same interval).
    """
    a, b = np.asarray(numerator, float), np.asarray(denominator, float)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"Expected two equal, non-empty lists of round times. Received: "
                         f"{len(a)} and {len(b)} rounds")
    value = float(np.median(a) / np.median(b))
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(a), size=(resamples, len(a)))
    boot = np.median(a[picks], axis=1) / np.median(b[picks], axis=1)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(boot, [tail, 100 - tail])
    return value, float(min(low, value)), float(max(high, value))


def verdict(low, high):
    """`faster` (the interval lies below 1), `slower` (above 1) or `no difference`."""
    if high < 1:
        return "faster"
    if low > 1:
        return "slower"
    return "no difference"


def compare(workload, numerator, denominator, times):
    """The JSON record of one comparison: `{name, workload, value, low, high, verdict}`."""
    value, low, high = ratio_interval(times[numerator], times[denominator])
    return {"name": f"{numerator} / {denominator}", "workload": workload, "value": value,
            "low": low, "high": high, "verdict": verdict(low, high)}


def format_ratio(record):
    """`0.97 [0.91, 1.03] no difference`."""
    return (f"{record['value']:.2f} [{record['low']:.2f}, {record['high']:.2f}] "
            f"{record['verdict']}")
