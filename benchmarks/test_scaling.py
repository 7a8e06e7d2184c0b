"""Step time and samples/s against batch size (function mode)."""

import pytest

from benchmarks.conftest import record
from spec_impl.bench import build_workload, loop_runner, make_trainer, step_flops, tracing_count

SIZES = {"mnist_mlp": (1, 8, 32, 128, 256), "mini_inception": (1, 8, 32, 64)}
STEPS = {"mnist_mlp": 10, "mini_inception": 2}


@pytest.mark.parametrize("name,batch_size",
                         [(n, b) for n, sizes in SIZES.items() for b in sizes],
                         ids=[f"{n}-b{b}" for n, sizes in SIZES.items() for b in sizes])
def test_scaling(benchmark, name, batch_size, peak):
    benchmark.group = f"scaling:{name}"
    workload = build_workload(name, batch_size)
    trainer = make_trainer(workload, "function")
    float(trainer.train_step(workload.x, workload.y))
    benchmark.pedantic(loop_runner(trainer, workload.dataset(STEPS[name])), rounds=3,
                       warmup_rounds=1)
    assert tracing_count(trainer) == 1
    record(benchmark, steps=STEPS[name], batch_size=batch_size,
           flops=step_flops(trainer, workload), peak=peak)
