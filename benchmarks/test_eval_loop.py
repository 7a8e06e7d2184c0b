"""Document 002's evaluation loop (10,000 samples, batch 32, MNIST MLP): eager vs
`tf.function` vs `model.evaluate`, interleaved (document: 1.80 s eagerly, 0.8 s compiled on a
Colab CPU)."""

from benchmarks.conftest import record
from spec_impl.bench.suite import bench_eval_loop


def test_eval_loop(benchmark, settings):
    benchmark.group = "eval_loop:mnist_mlp"
    result, ratios = benchmark.pedantic(lambda: bench_eval_loop(settings), rounds=1, iterations=1)
    assert set(result) == {"eager", "function", "evaluate", "document_speedup"}
    assert [r["name"] for r in ratios] == ["function / eager", "function / evaluate"]
    record(benchmark, ratios=ratios, seconds=result)
