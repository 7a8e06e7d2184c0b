"""Step time and samples/s against batch size (function mode)."""

import pytest

from benchmarks.conftest import record
from spec_impl.bench import (
    SCALING,
    build_workload,
    loop_runner,
    make_trainer,
    plan_steps,
    step_flops,
    tracing_count,
)


@pytest.mark.parametrize("name,batch_size",
                         [(n, b) for n, sizes in SCALING.items() for b in sizes],
                         ids=[f"{n}-b{b}" for n, sizes in SCALING.items() for b in sizes])
def test_scaling(benchmark, name, batch_size, peak):
    benchmark.group = f"scaling:{name}"
    workload = build_workload(name, batch_size)
    trainer = make_trainer(workload, "function")
    float(trainer.train_step((workload.x, workload.y)))
    benchmark.pedantic(loop_runner(trainer, workload.dataset(plan_steps(name))), rounds=3,
                       warmup_rounds=1)
    assert tracing_count(trainer) == 1
    record(benchmark, steps=plan_steps(name), batch_size=batch_size,
           flops=step_flops(trainer, workload), peak=peak)
