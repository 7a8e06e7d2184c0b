"""Training step per model x mode (`eager`, `function`, `xla`), and the per-step cost of the
whole loop (`loop`: data iteration included, function mode) beside `model.fit` on the same batches.

Each timed call runs `steps_per_call` steps; `extra_info["ms_per_step"]` is one step.
"""

import keras
import pytest

from benchmarks.conftest import record
from spec_impl.bench import (MODES, PLAN_STEPS, WORKLOADS, build_workload, make_trainer,
                             step_flops, tracing_count)


@pytest.mark.parametrize("mode", [*MODES, "loop", "fit"])
@pytest.mark.parametrize("name", WORKLOADS)
def test_train_step(benchmark, name, mode, peak):
    benchmark.group = f"train_step:{name}"
    steps = PLAN_STEPS[name]
    workload = build_workload(name)
    dataset = workload.dataset(steps)
    flops = None
    if mode == "fit":
        model = workload.model
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=workload.loss)
        model.fit(dataset, epochs=1, verbose=0, shuffle=False)  # warm-up: traces fit's step
        benchmark.pedantic(lambda: model.fit(dataset, epochs=1, verbose=0, shuffle=False),
                           rounds=3, warmup_rounds=0)
    else:
        trainer = make_trainer(workload, "function" if mode == "loop" else mode)
        float(trainer.train_step(workload.x, workload.y))  # tracing / XLA compile, untimed
        traces = tracing_count(trainer)

        def same_batch():
            for _ in range(steps):
                float(trainer.train_step(workload.x, workload.y))

        def loop():
            for x, y in dataset:
                float(trainer.train_step(x, y))

        benchmark.pedantic(loop if mode == "loop" else same_batch, rounds=3, warmup_rounds=1)
        assert tracing_count(trainer) == traces, "the step retraced after its first call"
        flops = step_flops(trainer, workload)
    record(benchmark, steps=steps, batch_size=workload.batch_size, flops=flops, peak=peak)
