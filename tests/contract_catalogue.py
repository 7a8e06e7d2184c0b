"""Broken components, one per check of the contract: each fails its own check and no other.

Every class here is a small, realistic mistake. `CATALOGUE` maps each to the check it must fail,
a phrase of the expected cause, and the inputs it is called on; `tests/test_contract.py` runs
the contract on each (and the mirrored one through `spec-impl check`, which has two devices).
"""

import keras
import numpy as np
import tensorflow as tf

from spec_impl.contract import generate

PACKAGE = "spec_impl_catalogue"
register = keras.saving.register_keras_serializable(package=PACKAGE)


@register
class ForgetfulScale(keras.layers.Layer):
    """`get_config` returns `factor` but forgets `offset`: `from_config` makes a layer without it."""

    def __init__(self, factor=2.0, offset=0.0, **kwargs):
        super().__init__(**kwargs)
        self.factor, self.offset = factor, offset

    def call(self, x):
        return x * self.factor + self.offset

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


def forgetful_scale(**kwargs):
    """A `ForgetfulScale` with an offset other than the default, which the round trip loses."""
    return ForgetfulScale(factor=3.0, offset=1.0, **kwargs)


@register
class PolicyIgnoringHead(keras.layers.Layer):
    """Makes its sub-layer without `dtype=self.dtype_policy`."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(4)

    def build(self, input_shape):
        self.dense.build(input_shape)

    def call(self, x):
        return self.dense(x)


@register
class PolicyIgnoringBlock(keras.layers.Layer):
    """The subclassing guide's pattern (sub-layers made in `__init__`, built at the first call,
    no `build`), its sub-layer made without `dtype=self.dtype_policy`."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(4)

    def call(self, x):
        return self.dense(x)


@register
class WeightsInCall(keras.layers.Layer):
    """Makes its weight on the first call."""

    def call(self, x):
        if not hasattr(self, "scale"):
            self.scale = self.add_weight(shape=(x.shape[-1],), initializer="ones")
        return x * self.scale


@tf.function
def _doubled(x, step):
    del step  # only logged by the original author; its Python value keys the trace
    return 2.0 * x


@register
class RetracingCounter(keras.layers.Layer):
    """Passes a Python call counter to a compiled helper: one new trace per call."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = 0

    def call(self, x):
        self.calls += 1
        return _doubled(x, self.calls)


@register
class HostOp(keras.layers.Layer):
    """Calls back into Python with `tf.py_function`, which XLA cannot compile."""

    def call(self, x):
        y = tf.py_function(lambda t: t * 2.0, [x], Tout=x.dtype)
        y.set_shape(x.shape)
        return y


@register
class MaskDropping(keras.layers.Layer):
    """Claims to support masking, then returns no mask."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, x):
        return 2.0 * x

    def compute_mask(self, inputs, mask=None):
        return None


class Unregistered(keras.layers.Layer):
    """Not registered: a `.keras` file of it needs `custom_objects`."""

    def call(self, x):
        return 2.0 * x


def registered_in_factory():
    """Registers its class when called, not when the module is imported."""

    @keras.saving.register_keras_serializable(package=PACKAGE + "_late")
    class Late(keras.layers.Layer):
        def call(self, x):
            return 2.0 * x

    return Late()


@tf.custom_gradient
def _soft_clip(x):
    y = tf.tanh(x)

    def grad(dy):
        return dy * (1.0 - y)  # d tanh / dx is 1 - y**2

    return y, grad


@register
class WrongGradient(keras.layers.Layer):
    """A `tf.custom_gradient` with the wrong derivative."""

    def call(self, x):
        return _soft_clip(x)


@register
class BatchCentering(keras.layers.Layer):
    """Subtracts the batch mean at inference: each replica sees only its own examples."""

    def call(self, x):
        return x - keras.ops.mean(x, axis=0, keepdims=True)


@register
class Float64Output(keras.layers.Layer):
    """Computes in float64 "for accuracy" and never casts back."""

    def call(self, x):
        return keras.ops.cast(x, "float64") * 2.0


@register
class WrongOutputShape(keras.layers.Layer):
    """`compute_output_shape` doubles the last axis; `call` does not."""

    def call(self, x):
        return 2.0 * x

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 2 * input_shape[-1])


@register
class UnbuiltStateless(keras.layers.Layer):
    """Keeps a `build` stub that only calls the base class's: it makes no state, sets nothing
    and checks nothing, yet the layer is no longer built at construction (a warning)."""

    def build(self, input_shape):
        super().build(input_shape)

    def call(self, x):
        return 2.0 * x


@register
class UnusedWeight(keras.layers.Layer):
    """Its weight never reaches the output."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        return 2.0 * x


@register
class LossTwice(keras.layers.Layer):
    """Adds its activity penalty twice."""

    def call(self, x):
        self.add_loss(keras.ops.mean(x**2))
        self.add_loss(keras.ops.mean(x**2))
        return x


@register
class LastBatchMean(keras.metrics.Metric):
    """Keeps the last batch's mean instead of a running sum and count."""

    def __init__(self, name="last_batch_mean", **kwargs):
        super().__init__(name=name, **kwargs)
        self.value = self.add_variable(shape=(), initializer="zeros", name="value")

    def update_state(self, y_true, y_pred, sample_weight=None):
        self.value.assign(keras.ops.mean(keras.ops.abs(y_true - y_pred)))

    def result(self):
        return self.value


@register
class LazyMetric(keras.metrics.Metric):
    """Creates its variables on the first update."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        if not hasattr(self, "total"):
            self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.total.assign_add(keras.ops.sum(keras.ops.abs(y_true - y_pred)))

    def result(self):
        return self.total


@tf.custom_gradient
def _squared(x):
    def grad(dy):
        return dy * x  # d x**2 / dx is 2 x

    return x**2, grad


@register
class WrongGradientLoss(keras.losses.Loss):
    """A squared error whose custom gradient forgets the factor 2."""

    def call(self, y_true, y_pred):
        return keras.ops.mean(_squared(y_pred - y_true), axis=-1)


VECTORS = generate([(5,)])
SEQUENCES = generate([(6, 5)])
PAIRS = [np.abs(generate([(3,)], seed=1)), np.abs(generate([(3,)], seed=2))]

# name -> (factory, inputs, the check it fails, a phrase of the cause, expect); a check of
# WARNINGS warns instead (Keras accepts the mistake), and the component fails nothing.
CATALOGUE = {
    "forgotten get_config argument": (forgetful_scale, VECTORS, "config_round_trip",
                                      "`get_config` does not return `offset`", None),
    "sub-layer ignores the dtype policy": (PolicyIgnoringHead, VECTORS, "dtype_policy",
                                           "computes in float32, not float64: a layer does not "
                                           "pass its dtype policy on", None),
    "sub-layer without build ignores the dtype policy": (
        PolicyIgnoringBlock, VECTORS, "dtype_policy",
        "computes in float32, not float64: a layer does not pass its dtype policy on", None),
    "weights made in call": (WeightsInCall, VECTORS, "state_in_build",
                             "creates state after the layer is built", None),
    "Python counter retraces": (RetracingCounter, VECTORS, "trace_bound",
                                "eager calls on 3 new batches of the same shape traced", None),
    "op XLA cannot compile": (HostOp, VECTORS, "eager_function_xla",
                              "XLA cannot compile the layer", None),
    "mask dropped": (MaskDropping, SEQUENCES, "masking", "the mask is dropped", None),
    ".keras needs custom_objects": (Unregistered, VECTORS, "keras_reload",
                                    "reloads only with `custom_objects`", None),
    "registered in the factory": (registered_in_factory, VECTORS, "fresh_process_reload",
                                  "in a fresh Python with only `contract_catalogue` imported", None),
    "wrong custom gradient": (WrongGradient, VECTORS, "finite_differences",
                              "by central differences", None),
    "float64 output": (Float64Output, VECTORS, "output_dtype", "output 0 is float64", None),
    "output shape disagrees": (WrongOutputShape, VECTORS, "eager_call",
                               "differ from the symbolic call's", None),
    "a build stub that does nothing": (UnbuiltStateless, VECTORS, "built_at_construction",
                                       "stays unbuilt until its first call for nothing", None),
    "weight never used": (UnusedWeight, VECTORS, "training_step",
                          "no trainable weight gets a gradient", None),
    "loss added twice": (LossTwice, VECTORS, "weight_counts", "2 losses, expected 1", {"losses": 1}),
    "metric keeps the last batch": (LastBatchMean, PAIRS, "streaming",
                                    "two half-batch updates against one", None),
    "metric variables made on update": (LazyMetric, PAIRS, "state_at_construction",
                                        "no variables after construction; `result()` before "
                                        "the first update raises AttributeError", None),
    "loss with a wrong custom gradient": (WrongGradientLoss, PAIRS, "finite_differences",
                                          "by central differences", None),
}
# The checks that warn (what Keras accepts) rather than fail.
WARNINGS = ("built_at_construction",)
# Needs two devices, so it is checked through `spec-impl check` (which splits the CPU in two).
MIRRORED = (BatchCentering, "mirrored", "two replicas against one device")
