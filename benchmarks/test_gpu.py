"""GPU runs: the MiniInception step in float32 and `mixed_float16` at batch 256 (document 000
trained with mixed precision at batch 256), interleaved, each row's % of peak against its
compute dtype's matmul peak. Skipped, with the reason, where TensorFlow sees no GPU."""

import pytest
import tensorflow as tf

from benchmarks.conftest import record
from spec_impl.bench import GPU_MIXED_BATCH, WorkloadSpec
from spec_impl.bench.suite import measure_precision

GPUS = tf.config.list_physical_devices("GPU")
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not GPUS, reason="TensorFlow sees no GPU on this machine")]


def test_mini_inception_on_gpu(benchmark, settings, peak):
    benchmark.group = f"gpu:mini_inception_b{GPU_MIXED_BATCH}"
    with tf.device("/GPU:0"):
        rows, ratios = benchmark.pedantic(
            lambda: measure_precision(WorkloadSpec("mini_inception", GPU_MIXED_BATCH),
                                      "mixed_float16", settings, peak), rounds=1, iterations=1)
    assert [r["compute_dtype"] for r in rows] == ["float32", "float16"]
    record(benchmark, rows, ratios, tf32=tf.config.experimental.tensor_float_32_execution_enabled())
