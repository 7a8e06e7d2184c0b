"""Training step per model x mode (`eager`, `function`, `xla`) on one fixed batch, and the whole
loop (`loop`: `train_function` over a dataset, function mode) beside `model.fit` on the same
batches, each at steps_per_execution 1, 8 and 32.

Each timed call runs `steps_per_call` steps; `extra_info["ms_per_step"]` is one step.
"""

import pytest

from benchmarks.conftest import record
from spec_impl.bench import (
    MODES,
    STEPS_PER_EXECUTION,
    WORKLOADS,
    build_workload,
    fit_runner,
    loop_runner,
    make_trainer,
    plan_steps,
    same_batch_runner,
    step_flops,
    tracing_count,
)

RUNNERS = [*MODES, *(f"{r}-k{k}" for k in STEPS_PER_EXECUTION for r in ("loop", "fit"))]


@pytest.mark.parametrize("mode", RUNNERS)
@pytest.mark.parametrize("name", WORKLOADS)
def test_train_step(benchmark, name, mode, peak):
    benchmark.group = f"train_step:{name}"
    runner, _, k = mode.partition("-k")
    k = int(k or 1)
    steps = plan_steps(name, k)
    workload = build_workload(name)
    dataset = workload.dataset(steps)
    flops = None
    if runner == "fit":
        fit = fit_runner(workload, dataset, k)
        fit()  # warm-up: traces fit's step
        benchmark.pedantic(fit, rounds=3, warmup_rounds=0)
    else:
        trainer = make_trainer(workload, "function" if runner == "loop" else runner, k)
        float(trainer.train_step((workload.x, workload.y)))  # tracing / XLA compile, untimed
        traces = tracing_count(trainer)
        run = (loop_runner(trainer, dataset) if runner == "loop"
               else same_batch_runner(trainer, workload, steps))
        benchmark.pedantic(run, rounds=3, warmup_rounds=1)
        assert tracing_count(trainer) == traces, "the step retraced after its first call"
        if runner == "loop":  # whole passes over the dataset, k batches a call
            done = int(trainer.train_counter.numpy())
            assert done > 0 and done % steps == 0
        flops = step_flops(trainer, workload)
    record(benchmark, steps=steps, batch_size=workload.batch_size, flops=flops, peak=peak)
    benchmark.extra_info["steps_per_execution"] = k
