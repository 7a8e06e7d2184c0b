"""Custom activation, initializer, regularizer and constraint (document 003).

The four functions are the document's; each is registered so a model using them reloads from a
`.keras` file without `custom_objects`. A function cannot carry a hyperparameter through saving:
`MyL1Regularizer(factor)` is the class form with `get_config` that does.
"""

import keras
from keras import ops

from spec_impl._base import serializable

L1_FACTOR = 0.01  # document 003


@serializable
def my_softplus(z):
    """`log(exp(z) + 1)`, as documented (overflows for z above ~88; see `stable_softplus`)."""
    return ops.log(ops.exp(z) + 1.0)


@serializable
def my_glorot_initializer(shape, dtype=None):
    """Normal with standard deviation `sqrt(2 / (fan_in + fan_out))`."""
    stddev = ops.sqrt(2.0 / (shape[0] + shape[1]))
    return keras.random.normal(shape, stddev=stddev, dtype=dtype or "float32")


@serializable
def my_l1_regularizer(weights):
    """`0.01 * sum(|w|)`."""
    return ops.sum(ops.abs(L1_FACTOR * weights))


@serializable
def my_positive_weights(weights):
    """Negative weights set to zero."""
    return ops.where(weights < 0.0, ops.zeros_like(weights), weights)


@serializable
class MyL1Regularizer(keras.regularizers.Regularizer):
    """`factor * sum(|w|)`, with `factor` kept by `get_config`.

    Args:
        factor: a non-negative float.
    """

    def __init__(self, factor=L1_FACTOR):
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor < 0:
            raise ValueError(f"Expected a non-negative factor. Received: factor={factor!r}")
        self.factor = float(factor)

    def __call__(self, weights):
        return self.factor * ops.sum(ops.abs(weights))

    def get_config(self):
        return {"factor": self.factor}


def documented_dense(units=30, **kwargs):
    """Document 003's `Dense(30)` using all four custom functions."""
    return keras.layers.Dense(
        units,
        activation=my_softplus,
        kernel_initializer=my_glorot_initializer,
        kernel_regularizer=my_l1_regularizer,
        kernel_constraint=my_positive_weights,
        **kwargs,
    )
