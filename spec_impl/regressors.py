"""Custom models of documents 003 and 002: ResidualRegressor, ReconstructionRegressor, and a
CustomModel overriding `train_step` / `test_step`."""

import keras
from keras import layers, ops

from spec_impl._base import BuildByCallMixin, inner, outer, serializable
from spec_impl._validation import check_input_shape, check_positive_int
from spec_impl.layers import ResidualBlock
from spec_impl.precision import output_dtype

RECONSTRUCTION_WEIGHT = 0.05  # document 003
N_HIDDEN = 5  # document 003: five Dense(10, relu) layers


@serializable
class ResidualRegressor(BuildByCallMixin, keras.Model):
    """Dense(30, elu) -> block1 four times -> block2 -> Dense(output_dim).

    Document 003's `get_config` refers to an undefined `output_dim`; this one stores it.

    Args:
        output_dim: number of regression targets.

    Input shape:
        `(batch, features)`.

    Output shape:
        `(batch, output_dim)`.
    """

    def __init__(self, output_dim=1, **kwargs):
        super().__init__(**kwargs)
        self.output_dim = check_positive_int("output_dim", output_dim)
        self.hidden1 = layers.Dense(30, activation="elu", kernel_initializer="he_normal",
                                    **inner(self))
        self.block1 = ResidualBlock(2, 30, **inner(self))
        self.block2 = ResidualBlock(2, 30, **inner(self))
        self.out = layers.Dense(output_dim, **outer(self))

    def _check_build_shape(self, input_shape):
        check_input_shape(type(self).__name__, (None,), input_shape)

    def call(self, inputs):
        check_input_shape(type(self).__name__, (None,), inputs.shape)
        z = self.hidden1(inputs)  # (batch, 30)
        for _ in range(1 + 3):
            z = self.block1(z)  # the same block, and so the same weights, four times
        z = self.block2(z)
        return self.out(z)  # (batch, output_dim)

    def get_config(self):
        return {**super().get_config(), "output_dim": self.output_dim}


@serializable
class ReconstructionRegressor(keras.Model):
    """Five Dense(10, relu) layers and an output, with an auxiliary reconstruction loss.

    The reconstruction layer is created in `build`, once the input width is known (and only when
    it is used, so that training without it warns of no gradient-less weights). When
    `with_reconstruction_loss` is set, each call adds `0.05 * mean((reconstruction - x)**2)` with
    `add_loss` and records the unweighted reconstruction error in a `Mean` metric named
    `reconstruction_loss` (Keras 3 has no `add_metric`; a metric attribute of the model is
    reported by `fit` and `evaluate` and reset each epoch).

    Args:
        output_dim: number of regression targets.
        with_reconstruction_loss: whether to add the auxiliary loss.

    Input shape:
        `(batch, features)`.

    Output shape:
        `(batch, output_dim)`.
    """

    def __init__(self, output_dim=1, with_reconstruction_loss=True, **kwargs):
        super().__init__(**kwargs)
        self.output_dim = check_positive_int("output_dim", output_dim)
        self.with_reconstruction_loss = bool(with_reconstruction_loss)
        for i in range(N_HIDDEN):  # attributes, not a list, so tf.train.Checkpoint sees them
            setattr(self, f"dense_{i}", layers.Dense(10, activation="relu", **inner(self)))
        self.out = layers.Dense(output_dim, **outer(self))
        if self.with_reconstruction_loss:
            self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction_loss")

    @property
    def hidden(self):
        """The five hidden Dense layers in order (see `ResidualBlock.hidden` on why not a list)."""
        return [getattr(self, f"dense_{i}") for i in range(N_HIDDEN)]

    def build(self, batch_input_shape):
        check_input_shape(type(self).__name__, (None,), batch_input_shape)
        shape = tuple(batch_input_shape)
        for layer in self.hidden:
            layer.build(shape)
            shape = (*shape[:-1], 10)
        if self.with_reconstruction_loss:  # unused weights would get no gradients
            self.reconstruct_layer = layers.Dense(batch_input_shape[-1], **inner(self))
            self.reconstruct_layer.build(shape)
        self.out.build(shape)
        self.built = True

    def call(self, inputs):
        check_input_shape(type(self).__name__, (None,), inputs.shape)
        inputs = ops.cast(inputs, self.compute_dtype)  # the reconstruction error compares with it
        z = inputs
        for layer in self.hidden:
            z = layer(z)  # (batch, 10)
        if self.with_reconstruction_loss:
            reconstruction = self.reconstruct_layer(z)  # (batch, features)
            # In float32 under a mixed policy: a loss term, like the output, is kept in float32.
            recon_loss = ops.mean(ops.square(ops.cast(reconstruction, "float32")
                                             - ops.cast(inputs, "float32")))
            self.add_loss(RECONSTRUCTION_WEIGHT * recon_loss)
            self.reconstruction_tracker.update_state(recon_loss)
        return self.out(z)

    def get_config(self):
        return {
            **super().get_config(),
            "output_dim": self.output_dim,
            "with_reconstruction_loss": self.with_reconstruction_loss,
        }


@serializable
class CustomModel(keras.Model):
    """A Model with its own `train_step` and `test_step` (document 002), still driven by `fit`.

    Build it like a Functional model, `CustomModel(inputs, outputs)`. It computes the sparse
    categorical cross-entropy of probabilities, tracks the mean loss (per sample, as `fit` does)
    and accuracy itself, and lists them in `metrics` so that Keras resets them each epoch.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_fn = keras.losses.SparseCategoricalCrossentropy()
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")

    def train_step(self, data):
        import tensorflow as tf

        inputs, targets = data
        with tf.GradientTape() as tape:
            predictions = self(inputs, training=True)
            loss = self.loss_fn(targets, predictions)
        gradients = tape.gradient(loss, self.trainable_weights)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_weights, strict=True))
        return self._update_metrics(loss, targets, predictions)

    def test_step(self, data):
        inputs, targets = data
        predictions = self(inputs, training=False)
        return self._update_metrics(self.loss_fn(targets, predictions), targets, predictions)

    def _update_metrics(self, loss, targets, predictions):
        # Weighted by the batch's size, as `fit` weights its loss tracker: document 002's
        # `update_state(loss)` averages the batch means, which over-weights a short last batch.
        self.loss_tracker.update_state(loss, sample_weight=keras.ops.shape(targets)[0])
        self.accuracy.update_state(targets, predictions)
        return {m.name: m.result() for m in self.metrics}

    @property
    def metrics(self):
        return [self.loss_tracker, self.accuracy]


def custom_mnist_model(input_dim=28 * 28, num_classes=10):
    """Document 002's MNIST MLP as a `CustomModel`."""
    inputs = keras.Input(shape=(input_dim,))
    features = layers.Dense(512, activation="relu")(inputs)
    features = layers.Dropout(0.5)(features)
    outputs = layers.Dense(num_classes, activation="softmax", dtype=output_dtype())(features)
    return CustomModel(inputs, outputs)
