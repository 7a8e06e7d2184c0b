"""Document 003's warning: a `tf.function` fed Python scalars retraces per value; tensors do not.
The two are timed interleaved; the ratio carries its interval and verdict."""

from benchmarks.conftest import record
from spec_impl.bench.suite import bench_retracing

CALLS = 10


def test_call_cost(benchmark, settings):
    benchmark.group = "retracing:cube"
    result, ratios = benchmark.pedantic(lambda: bench_retracing(settings, CALLS), rounds=1,
                                        iterations=1)
    # A trace per distinct Python value; one trace in all for tensors of one dtype and shape.
    assert result["scalar_traces"] == CALLS and result["tensor_traces"] == 1
    record(benchmark, ratios=ratios, **result)
