"""Custom layers of document 003: Lambda / Exponential, MyDense, MyMultiLayer,
MyGaussianNoise and ResidualBlock; and the chapter's exercise, LayerNormalization."""

import keras
from keras import layers, ops

from spec_impl._base import BuildByCallMixin, inner, serializable
from spec_impl._validation import check_input_shape, check_positive_int

LAYER_NORM_EPSILON = 1e-3  # keras.layers.LayerNormalization's default

# Document 003's weightless layer. A `.keras` file holding it is refused under the default
# `safe_mode=True`, and even with `safe_mode=False` the reloaded lambda has lost its globals.
# `Exponential` below is the serializable equivalent.
exponential_layer = layers.Lambda(lambda x: ops.exp(x))


@serializable
class Exponential(layers.Layer):
    """`exp(x)` element-wise; a weightless, serializable layer.

    Input shape:
        any.

    Output shape:
        same as the input.
    """

    def call(self, inputs):
        return ops.exp(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape


@serializable
class MyDense(layers.Layer):
    """A re-implementation of `keras.layers.Dense`: `activation(x @ kernel + bias)`.

    Args:
        units: number of output units; positive.
        activation: an activation name, function, or `None` (linear).

    Input shape:
        `(batch, ..., input_dim)`.

    Output shape:
        `(batch, ..., units)`.
    """

    def __init__(self, units, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.units = check_positive_int("units", units)
        self.activation = keras.activations.get(activation)
        self.input_spec = layers.InputSpec(min_ndim=2)  # Keras then names a wrong rank

    def build(self, batch_input_shape):
        self.input_spec = layers.InputSpec(min_ndim=2, axes={-1: batch_input_shape[-1]})
        self.kernel = self.add_weight(name="kernel", shape=(batch_input_shape[-1], self.units),
                                      initializer="glorot_normal")
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")

    def call(self, inputs):
        inputs = ops.cast(inputs, self.compute_dtype)  # integer inputs too, as Dense takes them
        return self.activation(inputs @ self.kernel + self.bias)

    def compute_output_shape(self, batch_input_shape):
        return (*batch_input_shape[:-1], self.units)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "activation": keras.activations.serialize(self.activation),
        }


@serializable
class MyMultiLayer(layers.Layer):
    """Two inputs in, three outputs out: `X1 + X2`, `X1 * X2`, `X1 / X2`.

    Input shape:
        a pair of equal shapes.

    Output shape:
        three tensors of that shape.
    """

    def call(self, inputs):
        if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
            raise ValueError(f"Expected a pair of inputs [X1, X2]. Received: {type(inputs).__name__}"
                             + (f" of {len(inputs)}" if isinstance(inputs, (list, tuple)) else ""))
        x1, x2 = inputs
        self.compute_output_shape([x1.shape, x2.shape])
        return [x1 + x2, x1 * x2, x1 / x2]

    def compute_output_shape(self, batch_input_shape):
        b1, b2 = batch_input_shape
        if len(b1) != len(b2) or any(a is not None and b is not None and a != b
                                     for a, b in zip(b1, b2, strict=True)):
            raise ValueError(f"Expected two inputs of one shape. Received: {tuple(b1)} and {tuple(b2)}")
        return [tuple(b1)] * 3


@serializable
class MyGaussianNoise(layers.Layer):
    """Adds zero-mean Gaussian noise of standard deviation `stddev`, only when training.

    Args:
        stddev: the noise's standard deviation; non-negative.

    Input shape:
        any.

    Output shape:
        same as the input.
    """

    def __init__(self, stddev=1.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(stddev, bool) or not isinstance(stddev, (int, float)) or not stddev >= 0:
            raise ValueError(f"Expected a non-negative stddev. Received: stddev={stddev!r}")
        self.stddev = float(stddev)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        if training:
            return inputs + keras.random.normal(ops.shape(inputs), stddev=self.stddev,
                                                dtype=inputs.dtype, seed=self.seed_generator)
        return inputs

    def compute_output_shape(self, batch_input_shape):
        return batch_input_shape

    def get_config(self):
        return {**super().get_config(), "stddev": self.stddev, "seed": self.seed}


@serializable
class ResidualBlock(BuildByCallMixin, layers.Layer):
    """`n_layers` Dense(n_neurons, elu, he_normal) layers with a skip connection: `x + f(x)`.

    Document 003's `get_config` refers to the undefined names `n_layers` and `n_neurons` (a
    `NameError` when saving); this one stores them.

    Args:
        n_layers: number of Dense layers; positive.
        n_neurons: units of each; must equal the input width for the sum.

    Input shape:
        `(batch, n_neurons)`.

    Output shape:
        `(batch, n_neurons)`.
    """

    def __init__(self, n_layers, n_neurons, **kwargs):
        super().__init__(**kwargs)
        self.n_layers = check_positive_int("n_layers", n_layers)
        self.n_neurons = check_positive_int("n_neurons", n_neurons)
        for i in range(n_layers):  # attributes, not a list: see `hidden`
            setattr(self, f"dense_{i}", layers.Dense(n_neurons, activation="elu",
                                                    kernel_initializer="he_normal", **inner(self)))

    @property
    def hidden(self):
        """The Dense layers in order.

        They are stored as attributes `dense_0`, `dense_1`, ... rather than in a list: on
        Keras 3, `tf.train.Checkpoint` does not see layers held in a Python list, so their
        weights would silently be left out of checkpoints.
        """
        return [getattr(self, f"dense_{i}") for i in range(self.n_layers)]

    def _check_build_shape(self, input_shape):
        if len(input_shape) < 2:
            check_input_shape("ResidualBlock", (self.n_neurons,), input_shape)
        if input_shape[-1] != self.n_neurons:
            raise ValueError(
                f"ResidualBlock adds its input to its output, so the input width must be "
                f"n_neurons={self.n_neurons}. Received: input_shape={tuple(input_shape)}"
            )

    def call(self, inputs):
        inputs = ops.cast(inputs, self.compute_dtype)  # an integer input adds to float outputs
        z = inputs
        for layer in self.hidden:
            z = layer(z)
        return inputs + z

    def get_config(self):
        return {**super().get_config(), "n_layers": self.n_layers, "n_neurons": self.n_neurons}


LOW_PRECISION = ("float16", "bfloat16")  # compute dtypes whose statistics are taken in float32


@serializable
class LayerNormalization(layers.Layer):
    """Layer normalization written by hand (the chapter's exercise), equal to
    `keras.layers.LayerNormalization()` with its defaults.

    Each sample is normalized over its last axis: `alpha * (x - mean) / sqrt(variance + epsilon)
    + beta`, with `alpha` (ones) and `beta` (zeros) of the last axis's size, trainable.

    Args:
        epsilon: added to the variance; Keras's default, 1e-3.

    Input shape:
        any, `(batch, ..., features)`.

    Output shape:
        the input's.
    """

    def __init__(self, epsilon=LAYER_NORM_EPSILON, **kwargs):
        super().__init__(**kwargs)
        if not epsilon > 0:
            raise ValueError(f"Expected a positive `epsilon`. Received: epsilon={epsilon!r}")
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        self.alpha = self.add_weight(name="alpha", shape=input_shape[-1:], initializer="ones")
        self.beta = self.add_weight(name="beta", shape=input_shape[-1:], initializer="zeros")

    def call(self, inputs):
        # The statistics in float32 under a mixed policy, as Keras's LayerNormalization does
        # (and in float64 under float64: always float32 lost the precision float64 asks for).
        dtype = "float32" if self.compute_dtype in LOW_PRECISION else self.compute_dtype
        x = ops.cast(inputs, dtype)
        mean = ops.mean(x, axis=-1, keepdims=True)
        variance = ops.var(x, axis=-1, keepdims=True)
        alpha, beta = ops.cast(self.alpha, dtype), ops.cast(self.beta, dtype)
        outputs = alpha * (x - mean) / ops.sqrt(variance + self.epsilon) + beta
        return ops.cast(outputs, self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}
