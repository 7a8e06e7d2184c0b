"""Autodiff, custom gradients and `tf.function` tracing (documents 003 and 000)."""

import re

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given
from hypothesis import strategies as st

from spec_impl.autodiff import (
    cube,
    f,
    f_stop_gradient,
    finite_difference,
    hessian,
    linear_loss_gradients,
    my_better_softplus,
    naive_softplus,
    stable_softplus,
    tape_gradients,
)
from spec_impl.testing import assert_allclose

POINT = (5, 3)  # document 003
FD_ESTIMATES = (36.000003007075065, 10.000000003174137)  # document 003, eps = 1e-6
GRADIENT = (36.0, 10.0)  # document 003, analytic and tape
HESSIAN = [[6.0, 2.0], [2.0, None]]  # document 003
STOP_GRADIENT = (30.0, None)  # document 003, f2 with tf.stop_gradient


def test_finite_difference_reproduces_document_digits():
    assert finite_difference(f, POINT, eps=1e-6) == list(FD_ESTIMATES)


def test_finite_difference_is_close_to_analytic_gradient():
    assert_allclose(finite_difference(f, POINT), GRADIENT, atol=1e-4, rtol=0)  # O(eps) error


@pytest.mark.parametrize("eps", [0, -1e-6, float("nan"), float("inf")])
def test_finite_difference_rejects_bad_eps(eps):
    with pytest.raises(ValueError, match=r"Expected a positive finite step. Received: eps="):
        finite_difference(f, POINT, eps=eps)


def test_finite_difference_rejects_non_callable():
    with pytest.raises(TypeError, match=r"Expected `func` to be callable. Received: func=42"):
        finite_difference(42, POINT)


def test_tape_gradients_are_exact():
    grads = tape_gradients(f, POINT)
    assert [float(g) for g in grads] == list(GRADIENT)


def test_second_gradient_call_on_non_persistent_tape_raises():
    w1, w2 = tf.Variable(5.0), tf.Variable(3.0)
    with tf.GradientTape() as tape:
        z = f(w1, w2)
    assert float(tape.gradient(z, w1)) == GRADIENT[0]
    with pytest.raises(RuntimeError, match="non-persistent"):
        tape.gradient(z, w2)


def test_persistent_tape_allows_several_gradient_calls():
    w1, w2 = tf.Variable(5.0), tf.Variable(3.0)
    with tf.GradientTape(persistent=True) as tape:
        z = f(w1, w2)
    assert float(tape.gradient(z, w1)) == GRADIENT[0]
    assert float(tape.gradient(z, w2)) == GRADIENT[1]
    del tape


def test_constants_are_not_watched_unless_asked():
    c1, c2 = tf.constant(5.0), tf.constant(3.0)
    with tf.GradientTape() as tape:
        z = f(c1, c2)
    assert tape.gradient(z, [c1, c2]) == [None, None]
    with tf.GradientTape() as tape:
        tape.watch(c1)
        tape.watch(c2)
        z = f(c1, c2)
    assert [float(g) for g in tape.gradient(z, [c1, c2])] == list(GRADIENT)


def test_hessian_matches_document():
    rows = hessian(f, POINT)
    got = [[None if g is None else float(g) for g in row] for row in rows]
    assert got == HESSIAN


def test_stop_gradient_hides_second_term():
    grads = tape_gradients(f_stop_gradient, POINT)
    assert float(grads[0]) == STOP_GRADIENT[0]
    assert grads[1] is STOP_GRADIENT[1]


def test_gradients_against_tf_finite_differences_float64():
    # tf.test.compute_gradient returns (theoretical, numerical) Jacobians.
    theoretical, numerical = tf.test.compute_gradient(
        lambda w: f(w[0], w[1]), [tf.constant([5.0, 3.0], dtype=tf.float64)]
    )
    assert_allclose(theoretical[0], [GRADIENT], atol=0, rtol=0)
    assert_allclose(numerical[0], theoretical[0], atol=1e-6)


def test_linear_demo_gradient_shapes_and_values(seed):
    # Document 000: y = x @ w + b, loss = mean(y**2); w (3, 2), b (2,), x = [[1, 2, 3]].
    x = tf.constant([[1.0, 2.0, 3.0]])
    w = tf.Variable(tf.random.normal((3, 2)), name="w")
    b = tf.Variable(tf.zeros(2), name="b")
    loss, (dw, db) = linear_loss_gradients(x, w, b)
    assert dw.shape == (3, 2) and db.shape == (2,)
    y = (x @ w + b).numpy()  # (1, 2)
    n = y.size
    expected_db = 2 * y[0] / n
    expected_dw = np.outer(x.numpy()[0], expected_db)
    assert_allclose(db, expected_db)
    assert_allclose(dw, expected_dw, rtol=1e-5)  # float32 matmul accumulation
    # The document's printed gradient has the same structure: row i of dw is x[i] * db.
    assert_allclose(float(loss), np.mean(y**2), rtol=1e-6)


def test_naive_softplus_gradient_is_nan_at_100():
    z = tf.Variable(100.0)
    with tf.GradientTape() as tape:
        y = naive_softplus(z)
    assert np.isinf(float(y))
    assert np.isnan(float(tape.gradient(y, z)))


def test_my_better_softplus_gradient_is_one_at_100():
    z = tf.Variable(100.0)
    with tf.GradientTape() as tape:
        y = my_better_softplus(z)
    assert float(tape.gradient(y, z)) == 1.0


def test_my_better_softplus_value_still_overflows():
    # The documented custom gradient fixes the gradient, not the value: pinned here.
    assert np.isinf(float(my_better_softplus(tf.constant(100.0))))
    assert np.isfinite(float(stable_softplus(tf.constant(100.0))))


def _value_and_grad(fn, z):
    z = tf.constant(z, dtype=tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(z)
        y = fn(z)
    return y, tape.gradient(y, z)


@pytest.mark.parametrize("z", [-1e4, -88.0, -20.0, 0.0, 20.0, 88.0, 100.0, 1e4])
def test_stable_softplus_edges(z):
    y, g = _value_and_grad(stable_softplus, z)
    y_ref, g_ref = _value_and_grad(tf.nn.softplus, z)
    assert np.isfinite(float(y)) and np.isfinite(float(g))
    assert_allclose(y, y_ref)
    assert_allclose(g, tf.sigmoid(tf.constant(z)))
    assert_allclose(g, g_ref)


@given(st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, width=32))
def test_stable_softplus_matches_softplus_and_sigmoid(z):
    y, g = _value_and_grad(stable_softplus, z)
    assert np.isfinite(float(y)) and np.isfinite(float(g))
    assert_allclose(y, tf.nn.softplus(tf.constant(z, tf.float32)), atol=1e-6, rtol=1e-6)
    assert_allclose(g, tf.sigmoid(tf.constant(z, tf.float32)), atol=1e-7, rtol=1e-6)


def test_stable_softplus_gradient_against_finite_differences_float64():
    z = tf.constant([-30.0, -1.0, 0.0, 0.5, 30.0], dtype=tf.float64)
    theoretical, numerical = tf.test.compute_gradient(stable_softplus, [z])
    assert_allclose(theoretical[0], numerical[0], atol=1e-7)


# ---- tf.function ----


def test_tf_function_returns_tensors_python_function_returns_python():
    tf_cube = tf.function(cube)
    result = tf_cube(2)
    assert isinstance(result, tf.Tensor) and result.dtype == tf.int32 and int(result) == 8
    plain = tf_cube.python_function(2)
    assert type(plain) is int and plain == 8
    assert float(tf_cube(tf.constant(2.0))) == 8.0


def test_python_scalars_retrace_per_value():
    fn = tf.function(cube)
    for value in (2, 3, 4):
        fn(value)
    fn(2)  # a value seen before reuses its trace
    assert fn.experimental_get_tracing_count() == 3


def test_tensors_retrace_per_dtype_and_shape_only():
    fn = tf.function(cube)
    fn(tf.constant(2.0))
    fn(tf.constant(3.0))  # same dtype and shape: no retrace
    assert fn.experimental_get_tracing_count() == 1
    fn(tf.constant(2))  # int32
    assert fn.experimental_get_tracing_count() == 2
    fn(tf.constant([2.0]))  # shape (1,)
    assert fn.experimental_get_tracing_count() == 3


def test_input_signature_stops_retracing():
    fn = tf.function(cube, input_signature=[tf.TensorSpec(shape=[None], dtype=tf.float32)])
    for n in (1, 2, 3, 7):
        fn(tf.ones([n]))
    assert fn.experimental_get_tracing_count() == 1
    with pytest.raises(TypeError, match=re.escape(
            "Can not cast TensorSpec(shape=(2,), dtype=tf.int32, name=None) to "
            "TensorSpec(shape=(None,), dtype=tf.float32, name=None)")):
        fn(tf.constant([1, 2]))  # int32 does not match the signature


def test_reduce_retracing_generalises_shapes():
    fn = tf.function(cube, reduce_retracing=True)
    for n in (1, 2, 3, 7, 11):
        fn(tf.ones([n]))
    # First trace is for shape (1,); the second generalises to (None,) and serves the rest.
    assert fn.experimental_get_tracing_count() == 2
