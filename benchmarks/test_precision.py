"""MiniInception's train step in float32 and mixed_bfloat16 on the CPU (document 000 used
mixed_float16 on a GPU: see test_gpu.py). oneDNN may or may not speed bfloat16 up on a given
CPU; the group's ratio says what it does here."""

import pytest

from benchmarks.conftest import record
from spec_impl.bench import build_workload, make_trainer, plan_steps, same_batch_runner, tracing_count
from spec_impl.trainer.precision import global_policy


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_mini_inception_precision(benchmark, policy, peak):
    benchmark.group = "precision:mini_inception"
    steps = plan_steps("mini_inception")
    with global_policy(policy):
        workload = build_workload("mini_inception")
    trainer = make_trainer(workload, "function")
    float(trainer.train_step((workload.x, workload.y)))  # tracing, untimed
    benchmark.pedantic(same_batch_runner(trainer, workload, steps), rounds=3, warmup_rounds=1)
    assert tracing_count(trainer) == 1
    assert workload.model.conv_block.conv.compute_dtype == policy.replace("mixed_", "")
    record(benchmark, steps=steps, batch_size=workload.batch_size, flops=None, peak=peak)
