"""Correct components written as public Keras code writes them: the keras-io guides' own layers
(the subclassing guide's `Linear` and `MLPBlock`, the VAE example's `Sampling`, in its Keras 3
form with a `SeedGenerator` and in its older form with a stateful op), a layer whose second call
argument is optional (keras-rs's `FeatureCross(x0, x=None)`), and a Fourier mixing layer that
computes its FFT in complex64 as the FNet example does. `tests/test_contract_fairness.py` runs
the contract on them.
"""

import keras
import tensorflow as tf
from keras import ops

PACKAGE = "contract_public"
register = keras.saving.register_keras_serializable(package=PACKAGE)


class Linear(keras.layers.Layer):
    """The subclassing guide's `Linear`, as written there: no `**kwargs`, no `get_config`."""

    def __init__(self, units=32):
        super().__init__()
        self.units = units

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], self.units), initializer="random_normal",
                                 trainable=True)
        self.b = self.add_weight(shape=(self.units,), initializer="random_normal", trainable=True)

    def call(self, inputs):
        return ops.matmul(inputs, self.w) + self.b


class MLPBlock(keras.layers.Layer):
    """The subclassing guide's `MLPBlock`, as written there: sub-layers made in `__init__` and
    built at the first call (no `build`), no `**kwargs`."""

    def __init__(self):
        super().__init__()
        self.linear_1 = Linear(32)
        self.linear_2 = Linear(32)
        self.linear_3 = Linear(1)

    def call(self, inputs):
        x = self.linear_1(inputs)
        x = keras.activations.relu(x)
        x = self.linear_2(x)
        x = keras.activations.relu(x)
        return self.linear_3(x)


@register
class Sampling(keras.layers.Layer):
    """The VAE example's sampling layer (Keras 3): `z_mean + exp(z_log_var / 2) * epsilon`, with
    epsilon drawn from its own `SeedGenerator` at every call, in inference too."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seed_generator = keras.random.SeedGenerator(1337)

    def call(self, inputs):
        z_mean, z_log_var = inputs
        batch, dim = ops.shape(z_mean)[0], ops.shape(z_mean)[1]
        epsilon = keras.random.normal(shape=(batch, dim), seed=self.seed_generator)
        return z_mean + ops.exp(0.5 * z_log_var) * epsilon


@register
class TypedSampling(Sampling):
    """`Sampling` drawing epsilon in its inputs' dtype, so that it runs under every policy (the
    guide's draws float32 whatever the policy, and fails under float64 and mixed_float16)."""

    def call(self, inputs):
        z_mean, z_log_var = inputs
        batch, dim = ops.shape(z_mean)[0], ops.shape(z_mean)[1]
        epsilon = keras.random.normal(shape=(batch, dim), seed=self.seed_generator,
                                      dtype=z_mean.dtype)
        return z_mean + ops.exp(0.5 * z_log_var) * epsilon


@register
class StatefulSampling(keras.layers.Layer):
    """The older VAE example's sampling layer: a stateful `tf.random.normal`, which no state of
    the layer resets."""

    def call(self, inputs):
        z_mean, z_log_var = inputs
        epsilon = tf.random.normal(shape=tf.shape(z_mean), dtype=z_mean.dtype)
        return z_mean + tf.exp(0.5 * z_log_var) * epsilon


@register
class FeatureCross(keras.layers.Layer):
    """keras-rs's DCN cross layer: `x0 * dense(x) + x`, where `x` defaults to `x0`."""

    def __init__(self, use_bias=True, **kwargs):
        super().__init__(**kwargs)
        self.use_bias = use_bias

    def build(self, input_shape):
        self.output_dense = keras.layers.Dense(input_shape[-1], use_bias=self.use_bias,
                                               dtype=self.dtype_policy)
        self.output_dense.build(input_shape)

    def call(self, x0, x=None):
        if x is None:
            x = x0
        return x0 * self.output_dense(x) + x

    def get_config(self):
        return {**super().get_config(), "use_bias": self.use_bias}


@register
class FourierMixing(keras.layers.Layer):
    """FNet's token mixing: the real part of a 2-D FFT, computed in complex64 (float32 parts)
    whatever the layer's dtype, then cast back."""

    def call(self, x):
        spectrum = tf.signal.fft2d(tf.cast(x, tf.complex64))
        return tf.cast(tf.math.real(spectrum), x.dtype) + x
