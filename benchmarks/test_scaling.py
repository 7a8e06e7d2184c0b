"""Step time and samples/s against batch size (function mode)."""

from benchmarks.conftest import record
from spec_impl.bench.suite import bench_scaling


def test_scaling(benchmark, settings):
    benchmark.group = "scaling"
    rows = benchmark.pedantic(lambda: bench_scaling(settings), rounds=1, iterations=1)
    assert [(r["workload"], r["batch_size"]) for r in rows] == [
        (name, b) for name, sizes in settings.scaling.items() for b in sizes]
    record(benchmark, rows)
