"""Training step per model x mode (`eager`, `function`, `xla`), and the per-step cost of the
whole loop (`loop`: data iteration included, function mode) beside `model.fit` on the same batches.

Each timed call runs `steps_per_call` steps; `extra_info["ms_per_step"]` is one step.
"""

import pytest

from benchmarks.conftest import record
from spec_impl.bench import (MODES, PLAN_STEPS, WORKLOADS, build_workload, fit_runner,
                             loop_runner, make_trainer, same_batch_runner, step_flops,
                             tracing_count)


@pytest.mark.parametrize("mode", [*MODES, "loop", "fit"])
@pytest.mark.parametrize("name", WORKLOADS)
def test_train_step(benchmark, name, mode, peak):
    benchmark.group = f"train_step:{name}"
    steps = PLAN_STEPS[name]
    workload = build_workload(name)
    dataset = workload.dataset(steps)
    flops = None
    if mode == "fit":
        fit = fit_runner(workload, dataset)
        fit()  # warm-up: traces fit's step
        benchmark.pedantic(fit, rounds=3, warmup_rounds=0)
    else:
        trainer = make_trainer(workload, "function" if mode == "loop" else mode)
        float(trainer.train_step(workload.x, workload.y))  # tracing / XLA compile, untimed
        traces = tracing_count(trainer)
        run = (loop_runner(trainer, dataset) if mode == "loop"
               else same_batch_runner(trainer, workload, steps))
        benchmark.pedantic(run, rounds=3, warmup_rounds=1)
        assert tracing_count(trainer) == traces, "the step retraced after its first call"
        flops = step_flops(trainer, workload)
    record(benchmark, steps=steps, batch_size=workload.batch_size, flops=flops, peak=peak)
