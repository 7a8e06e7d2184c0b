"""One small CNN in the three model-building APIs (document 000).

Conv2D(32, 3, strides 2, relu) -> MaxPool(3) -> BN -> Conv2D(64, 3, relu) -> BN -> Dropout(0.3)
-> global pooling -> Dense(num_classes), returning logits. For 28x28x3 inputs: 20,426 parameters,
192 of them non-trainable (the batch-norm moving statistics).

The document pools with global *max* pooling in the Sequential and Functional versions and with
global *average* pooling in the subclassed one; each keeps its document's default, and `pooling`
chooses either. The document trains these logits with `CategoricalCrossentropy()`, whose
`from_logits` is False: a bug. Train them with `from_logits=True` (see `logits_loss`).
"""

import keras
from keras import layers

from spec_impl._base import BuildByCallMixin, inner, outer, serializable
from spec_impl._validation import check_choice, check_input_shape, check_positive_int
from spec_impl.precision import output_dtype

POOLING = {"max": layers.GlobalMaxPooling2D, "avg": layers.GlobalAveragePooling2D}


def _cnn_layers(num_classes, pooling, inner_kwargs=None, outer_kwargs=None):
    """The eight layers; `inner_kwargs` / `outer_kwargs` carry the dtype policy of the hidden
    layers and of the logits (float32 under a mixed policy; the global policy by default)."""
    check_positive_int("num_classes", num_classes)
    check_choice("pooling", pooling, tuple(POOLING))
    kw = inner_kwargs or {}
    return [
        layers.Conv2D(32, 3, strides=2, activation="relu", name="conv1", **kw),
        layers.MaxPooling2D(3, name="max1", **kw),
        layers.BatchNormalization(name="bn1", **kw),
        layers.Conv2D(64, 3, activation="relu", name="conv2", **kw),
        layers.BatchNormalization(name="bn2", **kw),
        layers.Dropout(0.3, name="drop", **kw),
        POOLING[pooling](name="pool", **kw),
        layers.Dense(num_classes, name="dense", **(outer_kwargs or {"dtype": output_dtype()})),
    ]


def sequential_cnn(input_shape=(28, 28, 3), num_classes=10, pooling="max"):
    """The CNN with the Sequential API.

    Args:
        input_shape: image shape without the batch axis.
        num_classes: number of logits.
        pooling: `"max"` (the document's choice here) or `"avg"`.

    Returns:
        A built `keras.Sequential` returning logits of shape `(batch, num_classes)`.
    """
    model = keras.Sequential(name="sequential_cnn")
    model.add(keras.Input(shape=input_shape))
    for layer in _cnn_layers(num_classes, pooling):
        model.add(layer)
    return model


def functional_cnn(input_shape=(28, 28, 3), num_classes=10, pooling="max"):
    """The CNN with the Functional API; arguments as for `sequential_cnn`."""
    inputs = keras.Input(shape=input_shape)
    x = inputs
    for layer in _cnn_layers(num_classes, pooling):
        x = layer(x)
    return keras.Model(inputs, x, name="functional_cnn")


@serializable
class SubclassedCNN(BuildByCallMixin, keras.Model):
    """The CNN with the Model-subclassing API.

    Args:
        num_classes: number of logits.
        pooling: `"avg"` (the document's choice here) or `"max"`.

    Input shape:
        `(batch, height, width, channels)`.

    Output shape:
        `(batch, num_classes)`, logits.
    """

    def __init__(self, num_classes=10, pooling="avg", **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.pooling = pooling
        (self.conv1, self.max1, self.bn1, self.conv2, self.bn2, self.drop, self.pool,
         self.dense) = _cnn_layers(num_classes, pooling, inner(self), outer(self))

    def _check_build_shape(self, input_shape):
        check_input_shape(type(self).__name__, (None, None, None), input_shape)

    def call(self, inputs, training=None):
        check_input_shape(type(self).__name__, (None, None, None), inputs.shape)
        inputs = keras.ops.cast(inputs, self.compute_dtype)  # integer images, as Functional takes
        x = self.conv1(inputs)  # (batch, 13, 13, 32) for 28x28 inputs
        x = self.max1(x)  # (batch, 4, 4, 32)
        x = self.bn1(x, training=training)
        x = self.conv2(x)  # (batch, 2, 2, 64)
        x = self.bn2(x, training=training)
        x = self.drop(x, training=training)
        x = self.pool(x)  # (batch, 64)
        return self.dense(x)  # (batch, num_classes)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "pooling": self.pooling}


def subclassed_cnn(input_shape=(28, 28, 3), num_classes=10, pooling="avg"):
    """A built `SubclassedCNN`, for symmetry with the other two builders."""
    model = SubclassedCNN(num_classes, pooling=pooling)
    model.build((None, *input_shape))
    return model


def logits_loss():
    """The loss these logit-returning models should train with: `from_logits=True`."""
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
