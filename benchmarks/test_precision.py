"""MiniInception's train step in float32 and mixed_bfloat16 on the CPU, interleaved (document
000 used mixed_float16 on a GPU: see test_gpu.py). bfloat16 is fast only on a CPU with bfloat16
instructions; the ratio's verdict says what it does here, and each row's % of peak is taken
against the matmul peak of its compute dtype."""

from benchmarks.conftest import record
from spec_impl.bench.suite import measure_precision


def test_mini_inception_precision(benchmark, settings, peak):
    benchmark.group = "precision:mini_inception"
    rows, ratios = benchmark.pedantic(
        lambda: measure_precision("mini_inception", "mixed_bfloat16", settings, peak), rounds=1,
        iterations=1)
    assert [r["compute_dtype"] for r in rows] == ["float32", "bfloat16"]
    assert [r["name"] for r in ratios] == ["mixed_bfloat16 / float32"]
    record(benchmark, rows, ratios)
