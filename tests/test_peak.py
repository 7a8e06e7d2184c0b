"""The benchmark's figures of merit cannot exceed their limits: the theoretical peak of this
machine (cores x clock x FLOPs per cycle, probed now) bounds every matmul it runs, and a step's
FLOP count equals the analytic count of its dense and convolution layers.

Probed, not assumed: the test reads this machine's flags, topology and clock, so it says the
same thing on a CPU with AVX2 only, with AVX-512 BF16 or with AMX.
"""

import platform

import hypothesis.strategies as st
import keras
import pytest
import tensorflow as tf
from hypothesis import given, settings

from spec_impl.bench import (
    WORKLOADS,
    WorkloadSpec,
    analytic_flops,
    best_matmul,
    count_graph,
    measured_ghz,
    physical_cores,
    theoretical_peak,
)
from spec_impl.trainer import Trainer

SMALL_SIZES = (256, 512)  # enough to be BLAS-bound, quick on two cores


@pytest.fixture(scope="module")
def peak():
    return theoretical_peak()


def test_the_theoretical_peak_is_its_three_factors_probed_on_this_machine(peak):
    assert peak["cores"] == physical_cores() >= 1
    assert peak["clock_ghz"] == max(peak["clocks_ghz"].values())  # the highest clock read
    assert peak["clock_source"] in peak["clocks_ghz"]
    float32, bfloat16 = peak["flops_per_cycle"]["float32"], peak["flops_per_cycle"]["bfloat16"]
    assert float32 in (8, 16, 32, 64) and bfloat16 >= float32  # never slower than converting
    for dtype, gflops in peak["gflops"].items():
        assert gflops == pytest.approx(peak["cores"] * peak["clock_ghz"]
                                       * peak["flops_per_cycle"][dtype])


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the clock probe is x86-64 code")
def test_the_clock_is_measured_by_dependent_adds():
    # One dependent add retires per cycle: a probe that miscounted its loop would be off by
    # its 64 adds per iteration or more, far outside any real clock.
    ghz = measured_ghz()
    assert 0.5 < ghz < 7.0


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_no_matmul_runs_above_the_theoretical_peak(peak, dtype):
    measured = best_matmul((dtype,), sizes=SMALL_SIZES, rounds=2)[dtype]
    every = [*measured["tensorflow"].values(), *measured["numpy"].values()]
    assert measured["gflops"] == max(every)
    assert measured["gflops"] <= peak["gflops"][dtype], measured


def _step_graph(model, x, y, loss):
    """The graph of the package's train step for the batch `(x, y)`."""
    trainer = Trainer(model, loss=loss, optimizer="adam")
    specs = tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape, t.dtype), (x, y))
    return tf.function(trainer.train_step).get_concrete_function(specs).graph


def _graph_and_analytic(model, x, y, loss):
    return count_graph(_step_graph(model, x, y, loss)), analytic_flops(model, x)


@pytest.mark.parametrize("name", WORKLOADS)
def test_the_step_count_of_every_workload_equals_the_analytic_count(name):
    workload = WorkloadSpec(name).build()
    (total, products), analytic = _graph_and_analytic(workload.model, workload.x, workload.y,
                                                      workload.loss)
    assert analytic > 0
    assert products == analytic  # both exact: 2 FLOPs per multiply-add
    assert products <= total  # the rest: activations, normalisation, loss, optimizer


def test_the_profilers_own_count_overstates_a_valid_strided_convolution():
    # TensorFlow's profiler counts a convolution's gradients over its input image: the
    # sequential CNN (a stride-2 and a valid 3 x 3 convolution on small images) is 2.2x.
    from tensorflow.python.profiler.model_analyzer import profile
    from tensorflow.python.profiler.option_builder import ProfileOptionBuilder

    workload = WorkloadSpec("sequential_cnn").build()
    graph = _step_graph(workload.model, workload.x, workload.y, workload.loss)
    options = ProfileOptionBuilder(ProfileOptionBuilder.float_operation()).with_empty_output().build()
    profiler = profile(graph, options=options).total_float_ops
    total, _ = count_graph(graph)
    assert profiler / total == pytest.approx(2.19, abs=0.01)


@settings(max_examples=12, deadline=None)
@given(size=st.integers(5, 12), kernel=st.integers(1, 4), stride=st.integers(1, 3),
       padding=st.sampled_from(["valid", "same"]), channels=st.integers(1, 4),
       filters=st.integers(1, 5), units=st.integers(1, 6))
def test_any_conv_and_dense_step_counts_as_the_analytic_count(size, kernel, stride, padding,
                                                              channels, filters, units):
    kernel = min(kernel, size)
    model = keras.Sequential([keras.Input((size, size, channels)),
                              keras.layers.Conv2D(filters, kernel, strides=stride, padding=padding),
                              keras.layers.Conv2D(filters, 1), keras.layers.Flatten(),
                              keras.layers.Dense(units)])
    x, y = tf.random.normal((3, size, size, channels)), tf.random.normal((3, units))
    (_, products), analytic = _graph_and_analytic(model, x, y, "mse")
    assert products == analytic
