"""The sweep's other entries: models written as Keras's guides write them (a Functional model, a
Sequential one, a subclassed one), and this package's own layers, losses, metrics and small
models, through the same contract as Keras's components (`keras_components`).

The package's larger models (the Inception family, the CNNs) go through the same contract in
their own tests (`spec_impl.testing.run_layer_test`); here the sweep stays fast.
"""

import keras

from spec_impl.contract.catalogue import Catalogue
from spec_impl.contract.catalogue import with_kwargs as _kw

COMPONENTS = Catalogue(__name__, "COMPONENTS")
L = keras.layers


def get_uncompiled_model():
    """The training guide's model: 784 inputs, two ReLU layers of 64, a softmax of 10."""
    inputs = keras.Input(shape=(784,), name="digits")
    x = L.Dense(64, activation="relu", name="dense_1")(inputs)
    x = L.Dense(64, activation="relu", name="dense_2")(x)
    outputs = L.Dense(10, activation="softmax", name="predictions")(x)
    return keras.Model(inputs=inputs, outputs=outputs)


def attention_block():
    """A Functional transformer block: self-attention, a residual, layer norm, a projection."""
    inputs = keras.Input(shape=(6, 8))
    attended = L.MultiHeadAttention(num_heads=2, key_dim=4)(inputs, inputs)
    x = L.LayerNormalization()(inputs + attended)
    return keras.Model(inputs, L.Dense(8)(x))


def sequential_model():
    """A Sequential model as the Sequential guide writes one."""
    return keras.Sequential([keras.Input(shape=(5,)), L.Dense(4, activation="relu"), L.Dense(2)])


@keras.saving.register_keras_serializable(package="spec_impl_sweep")
class SubclassedModel(keras.Model):
    """The `keras.Model` documentation's subclassed model: layers in `__init__`, used in `call`."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense1 = L.Dense(32, activation="relu")
        self.dense2 = L.Dense(5, activation="softmax")

    def call(self, inputs):
        return self.dense2(self.dense1(inputs))


def subclassed_model():
    return SubclassedModel()


COMPONENTS.layer("Functional__training_guide", get_uncompiled_model, kind="model", covers="Functional")
COMPONENTS.layer("Functional__attention_block", attention_block, kind="model", covers="Functional")
COMPONENTS.layer("Sequential", sequential_model, kind="model")
COMPONENTS.layer("Model__subclassed", subclassed_model, (5,), kind="model", covers="Model")


def _package():
    """The package's own components (imported when the catalogue is)."""
    from spec_impl import layers, losses, metrics, regressors
    from spec_impl.deep_dive import Classifier

    add = COMPONENTS.layer
    add("spec_impl.Exponential", _kw(layers.Exponential), (4,))
    add("spec_impl.MyDense", _kw(layers.MyDense, 3, activation="relu"), (6,))
    add("spec_impl.MyMultiLayer", _kw(layers.MyMultiLayer), [(2,), (2,)])
    add("spec_impl.MyGaussianNoise", _kw(layers.MyGaussianNoise, 0.1, seed=3), (4,))
    add("spec_impl.ResidualBlock", _kw(layers.ResidualBlock, 2, 5), (5,))
    add("spec_impl.LayerNormalization", _kw(layers.LayerNormalization), (6,))
    add("spec_impl.Classifier", _kw(Classifier, 3), (6,), kind="model")
    add("spec_impl.ResidualRegressor", _kw(regressors.ResidualRegressor, 2), (5,), kind="model")
    COMPONENTS.loss("spec_impl.HuberLoss", _kw(losses.HuberLoss), target="regression")
    COMPONENTS.metric("spec_impl.HuberMetric", _kw(metrics.HuberMetric), target="regression")
    COMPONENTS.metric("spec_impl.HuberMeanMetric", _kw(metrics.HuberMeanMetric), target="regression")
    COMPONENTS.metric("spec_impl.RootMeanSquaredError", _kw(metrics.RootMeanSquaredError),
                      target="sparse")


_package()
