"""Shared fixtures of the pytest-benchmark suite (`pytest benchmarks`).

The suite measures with the same functions and the same `BenchSettings` as `spec-impl bench`
(`spec_impl.bench.suite`): each test runs one measurement once (`benchmark.pedantic`, one
round), which times its runners interleaved round by round, and puts the rows (ms/step,
samples/s, % of peak) and the ratios (value, 95 % interval, verdict) into
`benchmark.extra_info`, so the JSON of `--benchmark-json` carries them. pytest-benchmark's own
statistics time the whole measurement. With `--benchmark-disable` (CI) the measurements run at
the `smoke` level: two rounds of one step, everything runs, nothing is measured.
"""

import pytest

from spec_impl.bench import BenchSettings, peaks

VERDICTS = {"faster", "slower", "no difference"}


@pytest.fixture(scope="session")
def settings(request):
    if request.config.getoption("benchmark_disable", default=False):
        return BenchSettings("smoke")
    return BenchSettings("full")


@pytest.fixture(scope="session")
def peak(settings):
    """This machine's theoretical and best matmul GFLOP/s per compute dtype, once per run
    (`spec_impl.bench.peaks`); at the smoke level the theoretical one alone (no matmul timed)."""
    if settings.level != "smoke":
        return peaks()[0]
    from spec_impl.bench import theoretical_peak

    gflops = theoretical_peak()["gflops"]
    return {d: {"theoretical": gflops.get(d), "matmul": None} for d in ("float32", "bfloat16")}


def quiet(_message):
    """The suite's progress log, silent under pytest."""


def record(benchmark, rows=(), ratios=(), **extra):
    """Put a measurement's rows and ratios into `extra_info`; check every ratio's record and
    that no row runs above the theoretical peak of its compute dtype."""
    for ratio in ratios:
        assert set(ratio) == {"name", "workload", "value", "low", "high", "verdict", "rounds"}
        if ratio["low"] is None:  # too few rounds (--smoke): no interval, no verdict
            assert ratio["high"] is None and ratio["verdict"] is None
        else:
            assert ratio["low"] <= ratio["value"] <= ratio["high"] and ratio["verdict"] in VERDICTS
    for row in rows:  # the theoretical peak bounds every step (tests/test_peak.py)
        assert row.get("pct_of_peak") is None or row["pct_of_peak"] <= 100, row
    benchmark.extra_info.update({"rows": list(rows), "ratios": list(ratios), **extra})
