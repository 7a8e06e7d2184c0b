"""Autodiff and `tf.function` fundamentals (document 003, plus the tape demo of 000).

The two-variable function `f(w1, w2) = 3 * w1**2 + 2 * w1 * w2` is the running example:
its gradient at (5, 3) is (36, 10), which a forward finite difference approximates and a
`tf.GradientTape` computes exactly.
"""

import math

import tensorflow as tf


def f(w1, w2):
    """Document 003's running example, `3 * w1**2 + 2 * w1 * w2`."""
    return 3 * w1**2 + 2 * w1 * w2


def f_stop_gradient(w1, w2):
    """`f` with its second term hidden from autodiff by `tf.stop_gradient`."""
    return 3 * w1**2 + tf.stop_gradient(2 * w1 * w2)


def finite_difference(func, args, eps=1e-6):
    """Estimate every partial derivative of `func` at `args` by a forward difference.

    Computed with plain Python arithmetic, so that integer or float arguments reproduce the
    document's figures to the last digit (36.000003007075065 and 10.000000003174137 for `f`
    at (5, 3)).

    Args:
        func: a callable of `len(args)` scalar arguments returning a scalar.
        args: the point, a sequence of numbers.
        eps: the step, a positive finite number.

    Returns:
        A list of floats, one partial derivative estimate per argument.
    """
    if not callable(func):
        raise TypeError(f"Expected `func` to be callable. Received: func={func!r}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"Expected a positive finite step. Received: eps={eps!r}")
    args = list(args)
    base = func(*args)
    estimates = []
    for i in range(len(args)):
        shifted = list(args)
        shifted[i] = shifted[i] + eps
        estimates.append((func(*shifted) - base) / eps)
    return estimates


def tape_gradients(func, args, persistent=False):
    """Gradients of `func` at `args` with respect to each argument, via `tf.GradientTape`.

    Args:
        func: a callable of `len(args)` tensors.
        args: the point; each value becomes a float32 `tf.Variable`.
        persistent: passed on to the tape.

    Returns:
        A list of scalar tensors (or `None` where the output does not depend on an argument).
    """
    variables = [tf.Variable(float(a)) for a in args]
    with tf.GradientTape(persistent=persistent) as tape:
        z = func(*variables)
    return tape.gradient(z, variables)


def hessian(func, args):
    """Second derivatives of `func` at `args` with nested tapes.

    Returns:
        A list of rows; entry `[i][j]` is d2 func / (d args[i] d args[j]), or `None` where the
        first derivative `i` does not depend on argument `j` (document 003: `[[6, 2], [2, None]]`
        for `f`).
    """
    variables = [tf.Variable(float(a)) for a in args]
    with tf.GradientTape(persistent=True) as outer:
        with tf.GradientTape() as inner:
            z = func(*variables)
        firsts = inner.gradient(z, variables)
    rows = [outer.gradient(first, variables) for first in firsts]
    del outer
    return rows


def naive_softplus(z):
    """`log(exp(z) + 1)`: overflows to `inf` (and a NaN gradient) for z above ~88 in float32."""
    return tf.math.log(tf.exp(z) + 1.0)


@tf.custom_gradient
def my_better_softplus(z):
    """Document 003's softplus with a hand-written gradient `1 / (1 + 1 / exp(z))`.

    The gradient stays finite (1.0 at z = 100) where the naive one is NaN, but the value itself
    is still `log(exp(z) + 1)` and overflows to `inf` for large z. See `stable_softplus`.
    """
    exp = tf.exp(z)

    def my_softplus_gradients(grad):
        return grad / (1 + 1 / exp)

    return tf.math.log(exp + 1), my_softplus_gradients


@tf.custom_gradient
def stable_softplus(z):
    """Softplus whose value and gradient are finite and correct for every float z.

    Value `max(z, 0) + log1p(exp(-|z|))` (never overflows), gradient `sigmoid(z)`.
    """
    z = tf.convert_to_tensor(z)
    value = tf.maximum(z, 0) + tf.math.log1p(tf.exp(-tf.abs(z)))

    def grad_fn(upstream):
        return upstream * tf.sigmoid(z)

    return value, grad_fn


def linear_loss_gradients(x, w, b):
    """Document 000's tape demo: gradients of `mean((x @ w + b) ** 2)` w.r.t. `w` and `b`.

    Args:
        x: inputs, shape (batch, n_in).
        w: a `tf.Variable` of shape (n_in, n_out).
        b: a `tf.Variable` of shape (n_out,).

    Returns:
        `(loss, [dloss/dw, dloss/db])`, the gradients of shapes (n_in, n_out) and (n_out,).
    """
    with tf.GradientTape() as tape:
        y = x @ w + b  # (batch, n_out)
        loss = tf.reduce_mean(y**2)
    return loss, tape.gradient(loss, [w, b])


def cube(x):
    """`x ** 3`; a plain Python function (document 003's `tf.function` example)."""
    return x**3


tf_cube = tf.function(cube)
