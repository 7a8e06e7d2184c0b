"""`tf.function` from the inside (`spec_impl.graphs`): AutoGraph, concrete functions, variables
and side effects, Keras's tracing of custom code, and the chapter's gradient edge cases."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from spec_impl.autodiff import f, tf_cube
from spec_impl.graphs import (
    LOOP_COUNT,
    CallCounter,
    TraceLog,
    add_10_graph_loop,
    add_10_unrolled,
    add_10_while,
    make_counter,
    op_types,
    variable_per_call,
)

X = tf.constant(0)


def graph_ops(fn):
    return op_types(fn.get_concrete_function(X))


def test_autograph_rewrites_loops_into_its_own_calls():
    assert "ag__.for_stmt" in tf.autograph.to_code(add_10_graph_loop.python_function)
    assert "ag__.while_stmt" in tf.autograph.to_code(add_10_while.python_function)
    # the Python range loop is rewritten too; for_stmt runs it in Python when it sees a range
    assert "ag__.for_stmt" in tf.autograph.to_code(add_10_unrolled.python_function)


def test_a_python_range_is_unrolled_a_tf_range_is_one_graph_loop():
    unrolled, loop, while_loop = map(graph_ops, (add_10_unrolled, add_10_graph_loop, add_10_while))
    assert unrolled.count("AddV2") == LOOP_COUNT and not {"While", "StatelessWhile"} & set(unrolled)
    assert len(unrolled) == 2 * LOOP_COUNT + 2  # Placeholder, (Const, AddV2) x 10, Identity
    for ops in (loop, while_loop):
        assert ops.count("StatelessWhile") + ops.count("While") == 1
        assert ops.count("AddV2") < LOOP_COUNT  # the additions live in the loop body's graph
    assert while_loop == ["Placeholder", "Const", "Const", "Const", "StatelessWhile", "Identity"]
    for fn in (add_10_unrolled, add_10_graph_loop, add_10_while):
        assert int(fn(X)) == LOOP_COUNT


def test_concrete_function_graph_and_signature():
    concrete = tf_cube.get_concrete_function(tf.constant(2.0))
    assert tf_cube.get_concrete_function(tf.constant(2.0)) is concrete  # same signature, same object
    assert tf_cube.get_concrete_function(tf.constant(2)) is not concrete  # another dtype: a new trace
    assert float(concrete(tf.constant(2.0))) == 8.0
    ops = concrete.graph.get_operations()
    assert [(op.name, op.type) for op in ops] == [("x", "Placeholder"), ("pow/y", "Const"),
                                                   ("pow", "Pow"), ("Identity", "Identity")]
    assert concrete.graph.get_operation_by_name("x") is ops[0]
    signature = concrete.function_def.signature
    assert [(a.name, tf.dtypes.as_dtype(a.type)) for a in signature.input_arg] == [("x", tf.float32)]
    assert [a.name for a in signature.output_arg] == ["identity"]
    assert signature.name.startswith("__inference_cube_")


def test_a_captured_variable_and_assign_add_as_a_side_effect():
    counter, increment = make_counter()
    increment(tf.constant(1))
    increment(tf.constant(5))
    assert int(counter.numpy()) == 6
    assert increment.experimental_get_tracing_count() == 1
    captured = increment.get_concrete_function().captured_inputs
    assert len(captured) == 1 and captured[0].dtype == tf.resource  # the variable's handle


def test_a_variable_created_on_every_call_is_refused():
    with pytest.raises(ValueError, match="tf.function only supports singleton tf.Variables created "
                                         "on the first call"):
        variable_per_call(tf.constant(1.0))


def test_python_side_effects_run_while_tracing_tf_print_on_every_call(tmp_path):
    log_file = tmp_path / "print.txt"
    log = TraceLog(f"file://{log_file}")
    for value in (1, 2, 3, 1.5):
        log.function(tf.constant(value))
    assert len(log.python_calls) == 2  # one trace for int32, one for float32
    assert log_file.read_text().splitlines() == ["called with 1", "called with 2", "called with 3",
                                                 "called with 1.5"]


@pytest.mark.parametrize("run_eagerly, calls_during_fit", [(False, 1), (True, 10)])
def test_keras_runs_call_once_per_trace_or_once_per_step(run_eagerly, calls_during_fit):
    layer = CallCounter()
    model = keras.Sequential([keras.Input((3,)), layer, keras.layers.Dense(1)])
    assert layer.calls == 1  # the Functional model's symbolic call
    model.compile("sgd", "mse", run_eagerly=run_eagerly)
    model.fit(np.zeros((40, 3)), np.zeros((40, 1)), batch_size=8, epochs=2, verbose=0)  # 10 steps
    assert layer.calls - 1 == calls_during_fit


def test_gradient_of_a_list_of_targets_is_the_gradient_of_their_sum():
    w1, w2 = tf.Variable(5.0), tf.Variable(3.0)
    with tf.GradientTape() as tape:
        targets = [f(w1, w2 + 2.0), f(w1, w2 + 5.0), f(w1, w2 + 7.0)]
    assert [float(g) for g in tape.gradient(targets, [w1, w2])] == [136.0, 30.0]  # the chapter's


def test_sqrt_gradient_at_1e_50_is_inf():
    x = tf.Variable(1e-50)  # underflows to 0 in float32
    with tf.GradientTape() as tape:
        z = tf.sqrt(x)
    assert float(x.numpy()) == 0.0
    assert np.isposinf(tape.gradient(z, x).numpy())


def test_log_of_exp_30_plus_1_loses_the_1_in_float32():
    assert float(tf.math.log(tf.exp(tf.constant(30.0)) + 1.0)) == 30.0
    exact = float(tf.math.log(tf.exp(tf.constant(30.0, tf.float64)) + 1.0))
    assert exact == pytest.approx(30.0 + np.exp(-30.0), abs=1e-15) and exact > 30.0
