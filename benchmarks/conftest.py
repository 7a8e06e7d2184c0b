"""Shared fixtures of the pytest-benchmark suite (`pytest benchmarks`)."""

import pytest

from spec_impl.bench import peak_gflops, rates


@pytest.fixture(scope="session")
def peak():
    """This machine's matmul GFLOP/s, measured once per run: the reference for % of peak."""
    return peak_gflops(rounds=3)


def record(benchmark, *, steps, batch_size, flops, peak):
    """Put samples/s, FLOPs, GFLOP/s and % of peak into `extra_info` (when timing is on)."""
    benchmark.extra_info.update({"steps_per_call": steps, "batch_size": batch_size,
                                 "flops_per_step": flops, "peak_gflops": peak})
    stats = getattr(getattr(benchmark, "stats", None), "stats", None)
    if stats is None:  # --benchmark-disable: the function ran once, untimed
        return
    figures = rates(stats.median / steps, batch_size, flops, peak)
    benchmark.extra_info.update({k: v for k, v in figures.items() if v is not None})


def pytest_configure(config):
    """The `distributed:<model>` group needs 4 logical CPU devices, made before TensorFlow
    initialises its devices (`spec-impl bench --strategy mirrored` makes its own)."""
    from spec_impl.bench import REPLICAS
    from spec_impl.trainer.distribute import cpu_devices

    cpu_devices(max(REPLICAS))
