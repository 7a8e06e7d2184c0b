"""Ratios of timings with an interval and a verdict, by a method whose error rate is known.

Two runners are timed in alternation, round by round, so round i of each ran at nearly the same
time on the machine: a slow spell of the machine moves both. Each round gives one paired ratio
(the numerator's time over the denominator's), which cancels that drift. The ratio reported is
the median of the paired ratios, and its interval is the distribution-free interval of a median
from the sign test: the order statistics `r_(j)` and `r_(n+1-j)` with the largest j whose
two-sided binomial tail is within `1 - CONFIDENCE`. Its coverage is at least 95 % whatever the
distribution of the times (no normality, no symmetry), so two runners that take the same time
get a false `faster` or `slower` in at most 5 % of runs. It needs `MIN_VERDICT_ROUNDS` rounds
(6: below that not even `[min, max]` reaches 95 %); with fewer, a ratio carries no interval and
no verdict. (A percentile bootstrap of the ratio of medians gives false verdicts in 21-26 % of
runs at 3 rounds, and intervals that end at their own estimate.)

Across two runs (`spec-impl bench --compare`), rounds are not paired: the ratio new / base is
the Hodges-Lehmann estimate (the median of every new / base pair of round times) with the
interval that inverts the Mann-Whitney U test, the method asv and google-benchmark's
`compare.py` test with. The verdict is `faster` or `slower` when the interval excludes 1, and
`no difference` when it includes 1.
"""

import functools
import math

import numpy as np
from scipy import stats as scipy_stats

from spec_impl.bench.settings import CONFIDENCE


@functools.cache
def _sign_test_rank(n, confidence):
    """The largest j (1-based) with `2 * P(Binomial(n, 1/2) <= j - 1) <= 1 - confidence`, or 0
    when even j = 1 (the interval `[min, max]`) does not reach `confidence`."""
    alpha = 1 - confidence
    j = 0
    while j < n // 2 and 2 * scipy_stats.binom.cdf(j, n, 0.5) <= alpha:
        j += 1
    return j


def min_verdict_rounds(confidence=CONFIDENCE):
    """The fewest paired rounds whose sign-test interval reaches `confidence` (6 at 95 %)."""
    return next(n for n in range(1, 64) if _sign_test_rank(n, confidence) >= 1)


MIN_VERDICT_ROUNDS = min_verdict_rounds()


def ratio_interval(numerator, denominator, confidence=CONFIDENCE):
    """`(value, low, high)`: the median of the paired ratios `numerator[i] / denominator[i]`
    and its sign-test interval; `low` and `high` are `None` below `MIN_VERDICT_ROUNDS` rounds.

    Args:
        numerator, denominator: per-round times of the two runners, round i of each timed
            next to the other (equal lengths).
        confidence: the interval's coverage.
    """
    a, b = np.asarray(numerator, float), np.asarray(denominator, float)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"Expected two equal, non-empty lists of round times. Received: "
                         f"{len(a)} and {len(b)} rounds")
    ratios = np.sort(a / b)
    value = float(np.median(ratios))
    j = _sign_test_rank(len(ratios), confidence)
    if j == 0:
        return value, None, None
    return value, float(ratios[j - 1]), float(ratios[len(ratios) - j])


@functools.cache
def _u_null_cdf(m, n):
    """P(U <= u) for u = 0..m*n under the null hypothesis (`_u_null_counts`), as floats."""
    return (np.cumsum(_u_null_counts(m, n)) / math.comb(m + n, m)).astype(float)


def _u_null_counts(m, n):
    """How many of the C(m+n, m) orderings give each Mann-Whitney U = 0..m*n (no ties)."""
    # counts[i][j]: the U distribution of i and j samples, built one sample at a time
    counts = [[np.ones(1, dtype=object) for _ in range(n + 1)] for _ in range(m + 1)]
    for i in range(1, m + 1):
        for j in range(1, n + 1):
            with_i = np.concatenate([np.zeros(j, dtype=object), counts[i - 1][j]])  # i-th largest
            with_j = counts[i][j - 1]
            size = i * j + 1
            total = np.zeros(size, dtype=object)
            total[:len(with_i)] += with_i
            total[:len(with_j)] += with_j
            counts[i][j] = total
    return counts[m][n]


def shift_interval(new, base, confidence=CONFIDENCE):
    """`(value, low, high)`: the Hodges-Lehmann ratio new / base of two unpaired samples of
    times and the interval inverting the two-sided Mann-Whitney U test (exact null
    distribution); `low` and `high` are `None` when no interval reaches `confidence` (3 rounds
    against 3)."""
    logs_new, logs_base = np.log(np.asarray(new, float)), np.log(np.asarray(base, float))
    if logs_new.ndim != 1 or logs_base.ndim != 1 or not len(logs_new) or not len(logs_base):
        raise ValueError(f"Expected two non-empty lists of round times. Received: {len(new)} "
                         f"and {len(base)} rounds")
    differences = np.sort(np.subtract.outer(logs_new, logs_base).ravel())
    value = float(math.exp(np.median(differences)))
    m, n = len(logs_new), len(logs_base)
    cumulative = _u_null_cdf(m, n)
    # [d_(k), d_(mn+1-k)] (1-based) misses the true shift with probability 2 P(U <= k - 1):
    # k is how many U values have P(U <= u) within half the error
    k = int(np.searchsorted(cumulative, (1 - confidence) / 2, side="right"))
    if k == 0:
        return value, None, None
    return value, float(math.exp(differences[k - 1])), float(math.exp(differences[-k]))


def verdict(low, high):
    """`faster` (the interval lies below 1), `slower` (above 1), `no difference`, or `None`
    without an interval (too few rounds)."""
    if low is None:
        return None
    if high < 1:
        return "faster"
    if low > 1:
        return "slower"
    return "no difference"


def compare(workload, numerator, denominator, times):
    """The JSON record of one comparison: `{name, workload, value, low, high, verdict,
    rounds}` (`low`, `high` and `verdict` `None` below `MIN_VERDICT_ROUNDS` rounds)."""
    value, low, high = ratio_interval(times[numerator], times[denominator])
    return {"name": f"{numerator} / {denominator}", "workload": workload, "value": value,
            "low": low, "high": high, "verdict": verdict(low, high),
            "rounds": len(times[numerator])}


def spread(seconds):
    """The interquartile range of `seconds` over their median, in percent."""
    q1, median, q3 = np.percentile(np.asarray(seconds, float), [25, 50, 75])
    return float(100 * (q3 - q1) / median)


def format_ratio(record):
    """`0.97 [0.91, 1.03] no difference`, or `0.97 (2 rounds: no verdict under 6)`."""
    if record.get("low") is None:
        return (f"{record['value']:.2f} ({record.get('rounds', '?')} rounds: no verdict under "
                f"{MIN_VERDICT_ROUNDS})")
    return (f"{record['value']:.2f} [{record['low']:.2f}, {record['high']:.2f}] "
            f"{record['verdict']}")
