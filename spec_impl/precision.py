"""Mixed precision as Keras does it: dtype policies passed on, float32 outputs, loss scaling.

Under `"mixed_float16"` or `"mixed_bfloat16"` a layer keeps its variables in float32 and computes
in the low-precision dtype. Three habits make that work for layers built from other layers:

- a composite layer passes its own `dtype_policy` to every layer it creates (Keras's own
  `MultiHeadAttention` does; otherwise `dtype="mixed_float16"` on the outer layer leaves the
  inner ones in float32, or mixes float16 and float32 tensors in one `add`);
- a model's last layer computes in float32 (the Keras mixed-precision guide: a float16 softmax
  or logit is numerically unsafe), which `output_dtype` gives;
- `float16` training scales the loss (`keras.optimizers.LossScaleOptimizer`) so that small
  gradients do not underflow to zero; `bfloat16` has float32's exponent range and needs none.
"""

import contextlib

import keras

from spec_impl._validation import POLICIES


def check_policy(name):
    """Raise `ValueError` unless `name` is one of `POLICIES`; returns it."""
    if name not in POLICIES:
        raise ValueError(
            f"Expected a precision among {', '.join(POLICIES)}. Received: precision={name!r}")
    return name


def _policy(dtype):
    if dtype is None:
        return keras.config.dtype_policy()
    if isinstance(dtype, keras.DTypePolicy):
        return dtype
    return keras.DTypePolicy(dtype)


def is_mixed(dtype=None):
    """Whether `dtype` (a policy, a name, or `None` for the global policy) computes in a dtype
    other than its variables'."""
    policy = _policy(dtype)
    return policy.compute_dtype != policy.variable_dtype


def output_dtype(dtype=None):
    """The policy name for a model's output layer: the variable dtype (float32) under a mixed
    policy, else the name of `dtype` itself (or of the global policy for `None`)."""
    policy = _policy(dtype)
    return policy.variable_dtype if is_mixed(policy) else policy.name


@contextlib.contextmanager
def global_policy(name):
    """Set Keras's global dtype policy for the block, and restore the previous one after it.

    >>> with global_policy("mixed_bfloat16"):
    ...     model = spec_impl.get_mnist_model()
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


@contextlib.contextmanager
def global_floatx(name):
    """Set Keras's `floatx` (the dtype of a `keras.Input` given none) for the block, and restore
    the previous one after it; `None` leaves it as it is."""
    previous = keras.config.floatx()
    if name is not None:
        keras.config.set_floatx(name)
    try:
        yield
    finally:
        keras.config.set_floatx(previous)
