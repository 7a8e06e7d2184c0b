"""GPU runs: the MiniInception step in float32 and `mixed_float16` (document 000 trained with
mixed precision at batch 256). Skipped, with the reason, where TensorFlow sees no GPU."""

import keras
import pytest
import tensorflow as tf

from spec_impl.bench import GPU_MIXED_BATCH, build_workload, make_trainer, tracing_count

GPUS = tf.config.list_physical_devices("GPU")
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not GPUS, reason="TensorFlow sees no GPU on this machine")]


@pytest.mark.parametrize("policy", ["float32", "mixed_float16"])
def test_mini_inception_on_gpu(benchmark, policy):
    benchmark.group = f"gpu:mini_inception_b{GPU_MIXED_BATCH}"
    keras.mixed_precision.set_global_policy(policy)
    try:
        with tf.device("/GPU:0"):
            workload = build_workload("mini_inception", GPU_MIXED_BATCH)
            trainer = make_trainer(workload, "function")
            float(trainer.train_step((workload.x, workload.y)))
            benchmark.pedantic(lambda: float(trainer.train_step((workload.x, workload.y))),
                               rounds=10, warmup_rounds=2)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert tracing_count(trainer) == 1
    benchmark.extra_info["tf32"] = tf.config.experimental.tensor_float_32_execution_enabled()
