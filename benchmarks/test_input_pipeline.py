"""The custom loop's step over a `tf.data` pipeline with TensorFlow's autotuning on (the default)
and off (what `spec_impl.trainer.data.as_dataset` and the benchmark datasets use), beside the step on
one fixed batch.

On a 2-core CPU, with autotuning on, MiniInception's loop step stalled at about 1.2-1.7x the
fixed-batch step in most rounds; with it off, the loop step is within a few percent of it. The
group's medians show what it does on this machine.
"""

import pytest
import tensorflow as tf

from benchmarks.conftest import record
from spec_impl.bench import build_workload, loop_runner, make_trainer, plan_steps, same_batch_runner


@pytest.mark.parametrize("pipeline", ["fixed_batch", "autotune_off", "autotune_on"])
def test_mini_inception_input_pipeline(benchmark, pipeline, peak):
    benchmark.group = "input_pipeline:mini_inception"
    steps = plan_steps("mini_inception")
    workload = build_workload("mini_inception")
    trainer = make_trainer(workload, "function")
    dataset = workload.dataset(steps)  # autotuning off
    if pipeline == "autotune_on":
        options = tf.data.Options()
        options.autotune.enabled = True
        dataset = dataset.with_options(options)
    assert dataset.options().autotune.enabled is (pipeline == "autotune_on")
    run = (same_batch_runner(trainer, workload, steps) if pipeline == "fixed_batch"
           else loop_runner(trainer, dataset))
    benchmark.pedantic(run, rounds=5, warmup_rounds=1)
    record(benchmark, steps=steps, batch_size=workload.batch_size, flops=None, peak=peak)
