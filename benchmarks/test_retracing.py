"""Document 003's warning: a `tf.function` fed Python scalars retraces per value; tensors do not.
Also the first-call (tracing / XLA compile) time per model, kept apart from the steady step."""

import pytest
import tensorflow as tf

from spec_impl.autodiff import cube
from spec_impl.bench import WORKLOADS, build_workload, make_trainer, tracing_count

CALLS = 10


@pytest.mark.parametrize("argument", ["python_scalar", "tensor"])
def test_call_cost(benchmark, argument):
    benchmark.group = "retracing:cube"
    fn = tf.function(cube)
    if argument == "tensor":
        values = [tf.constant(float(i)) for i in range(CALLS)]
        fn(values[0])
    made = []  # one entry per call, whatever number of rounds pytest-benchmark runs

    def calls():
        base = len(made)  # new Python values every round: each one traces
        for i in range(CALLS):
            float(fn(base + i if argument == "python_scalar" else values[i]))
            made.append(i)

    benchmark.pedantic(calls, rounds=3, warmup_rounds=0)
    traces = fn.experimental_get_tracing_count()
    # A trace per distinct Python value; one trace in all for tensors of one dtype and shape.
    assert traces == (len(made) if argument == "python_scalar" else 1)
    benchmark.extra_info["traces"] = traces


@pytest.mark.parametrize("mode", ["function", "xla"])
@pytest.mark.parametrize("name", WORKLOADS)
def test_first_call(benchmark, name, mode):
    benchmark.group = f"first_call:{name}"
    workload = build_workload(name)

    def first_call():
        trainer = make_trainer(workload, mode)
        float(trainer.train_step((workload.x, workload.y)))
        return trainer

    trainer = benchmark.pedantic(first_call, rounds=1, warmup_rounds=0)
    assert tracing_count(trainer) == 1
