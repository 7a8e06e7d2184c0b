"""The package's loop under `MirroredStrategy` on 1, 2 and 4 (logical CPU) devices against no
strategy, at one global batch: group `distributed:<model>`.

On a CPU the logical devices share the same cores, so no speed-up is expected; the figure is the
strategy's per-step overhead, `extra_info["overhead_vs_no_strategy"]`, from the no-strategy
loop timed in the same test (when timing is on).
"""

import pytest

from benchmarks.conftest import record
from spec_impl.bench import (
    DISTRIBUTED_WORKLOADS,
    REPLICAS,
    distributed_trainer,
    loop_runner,
    median_seconds,
    plan_steps,
)


@pytest.mark.parametrize("replicas", [None, *REPLICAS], ids=lambda n: f"replicas-{n or 'none'}")
@pytest.mark.parametrize("name", DISTRIBUTED_WORKLOADS)
def test_distributed(benchmark, name, replicas, peak):
    benchmark.group = f"distributed:{name}"
    steps = plan_steps(name)
    workload, trainer = distributed_trainer(name, replicas)
    run = loop_runner(trainer, workload.dataset(steps))
    benchmark.pedantic(run, rounds=3, warmup_rounds=1)
    assert trainer.train_function.experimental_get_tracing_count() == 1
    assert int(trainer.train_counter.numpy()) % steps == 0
    record(benchmark, steps=steps, batch_size=workload.batch_size, flops=None, peak=peak)
    benchmark.extra_info["replicas"] = replicas or 0
    stats = getattr(getattr(benchmark, "stats", None), "stats", None)
    if stats is not None and replicas is not None:
        base_workload, base = distributed_trainer(name, None)
        baseline = median_seconds(loop_runner(base, base_workload.dataset(steps)), rounds=3)
        benchmark.extra_info["overhead_vs_no_strategy"] = stats.median / baseline
