"""Each workload's train step in float32 and mixed_bfloat16 on the CPU, interleaved (document
000 used mixed_float16 on a GPU: see test_gpu.py). bfloat16 is fast only on a CPU with bfloat16
instructions (`BF16_FLAGS`); elsewhere it runs emulated and is skipped, naming the flags, as
`spec-impl bench` does. Each row's % of peak is taken against the matmul peak of its compute
dtype."""

import pytest

from benchmarks.conftest import record
from spec_impl.bench import WORKLOADS, has_bf16_instructions, machine_info
from spec_impl.bench.settings import BF16_FLAGS
from spec_impl.bench.suite import measure_precision

pytestmark = pytest.mark.skipif(
    not has_bf16_instructions(machine_info()),
    reason=f"this CPU has no bfloat16 instructions ({', '.join(BF16_FLAGS)} absent)")


@pytest.mark.parametrize("name", WORKLOADS)
def test_precision(benchmark, name, settings, peak):
    benchmark.group = f"precision:{name}"
    rows, ratios = benchmark.pedantic(
        lambda: measure_precision(name, "mixed_bfloat16", settings, peak), rounds=1,
        iterations=1)
    assert [r["compute_dtype"] for r in rows] == ["float32", "bfloat16"]
    assert [r["name"] for r in ratios] == ["mixed_bfloat16 / float32"]
    record(benchmark, rows, ratios)
