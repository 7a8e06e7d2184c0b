"""The Inception family built from subclassed layers (documents 000 / 004 and 001).

`ConvModule` (conv, batch norm, relu), `InceptionModule` (1x1 and 3x3 conv modules side by side,
concatenated), `DownsampleModule` (a stride-2 conv module beside a stride-2 max pool,
concatenated), and two networks made of them: `MiniInception` (CIFAR-10 sized, document 000) and
`InceptionModel` (MNIST sized, document 001).

Unlike the documents, every block passes `training` on to the batch normalizations inside it.
"""

import keras
import tensorflow as tf
from keras import layers

from spec_impl._base import BuildByCallMixin, inner, outer, serializable
from spec_impl._validation import check_choice, check_input_shape, check_positive_int


@serializable
class ConvModule(BuildByCallMixin, layers.Layer):
    """Conv2D, then BatchNormalization, then relu.

    Args:
        kernel_num: number of filters (C in the document's diagram).
        kernel_size: an int or a pair, the filter size (K x K).
        strides: an int or a pair (S x S).
        padding: `"same"` or `"valid"`.

    Input shape:
        `(batch, height, width, channels)`.

    Output shape:
        `(batch, new_height, new_width, kernel_num)`.
    """

    def __init__(self, kernel_num, kernel_size=(3, 3), strides=(1, 1), padding="same", **kwargs):
        super().__init__(**kwargs)
        self.kernel_num = check_positive_int("kernel_num", kernel_num)
        self.kernel_size = kernel_size
        self.strides = strides
        self.padding = check_choice("padding", padding, ("same", "valid"))
        self.conv = layers.Conv2D(kernel_num, kernel_size=kernel_size, strides=strides,
                                  padding=padding, **inner(self))
        self.bn = layers.BatchNormalization(**inner(self))

    def call(self, inputs, training=None):
        x = self.conv(inputs)
        x = self.bn(x, training=training)
        return tf.nn.relu(x)

    def get_config(self):
        return {
            **super().get_config(),
            "kernel_num": self.kernel_num,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
        }


@serializable
class InceptionModule(BuildByCallMixin, layers.Layer):
    """A 1x1 and a 3x3 `ConvModule` on the same input, concatenated on channels.

    Args:
        kernel_size1x1: filters of the 1x1 branch.
        kernel_size3x3: filters of the 3x3 branch.

    Input shape:
        `(batch, height, width, channels)`.

    Output shape:
        `(batch, height, width, kernel_size1x1 + kernel_size3x3)`.
    """

    def __init__(self, kernel_size1x1, kernel_size3x3, **kwargs):
        super().__init__(**kwargs)
        self.kernel_size1x1 = check_positive_int("kernel_size1x1", kernel_size1x1)
        self.kernel_size3x3 = check_positive_int("kernel_size3x3", kernel_size3x3)
        self.conv1 = ConvModule(kernel_size1x1, kernel_size=(1, 1), strides=(1, 1), **inner(self))
        self.conv2 = ConvModule(kernel_size3x3, kernel_size=(3, 3), strides=(1, 1), **inner(self))
        self.cat = layers.Concatenate(**inner(self))

    def call(self, inputs, training=None):
        x_1x1 = self.conv1(inputs, training=training)
        x_3x3 = self.conv2(inputs, training=training)
        return self.cat([x_1x1, x_3x3])

    def get_config(self):
        return {
            **super().get_config(),
            "kernel_size1x1": self.kernel_size1x1,
            "kernel_size3x3": self.kernel_size3x3,
        }


@serializable
class DownsampleModule(BuildByCallMixin, layers.Layer):
    """A 3x3 stride-2 `ConvModule` ("valid") beside a 3x3 stride-2 max pool, concatenated.

    Args:
        kernel_size: filters of the convolution branch.

    Input shape:
        `(batch, height, width, channels)`.

    Output shape:
        `(batch, (height - 3) // 2 + 1, (width - 3) // 2 + 1, kernel_size + channels)`.
    """

    def __init__(self, kernel_size, **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = check_positive_int("kernel_size", kernel_size)
        self.conv3 = ConvModule(kernel_size, kernel_size=(3, 3), strides=(2, 2), padding="valid",
                                **inner(self))
        self.pool = layers.MaxPooling2D(pool_size=(3, 3), strides=(2, 2), **inner(self))
        self.cat = layers.Concatenate(**inner(self))

    def call(self, inputs, training=None):
        conv_x = self.conv3(inputs, training=training)
        pool_x = self.pool(inputs)
        return self.cat([conv_x, pool_x])

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size}


class _GraphMixin(BuildByCallMixin):
    """`build_graph`, `build` and an input check for subclassed image models."""

    def build_graph(self, raw_shape=None):
        """A Functional model over this model's layers, for `summary()` and `plot_model`."""
        raw_shape = tuple(raw_shape or self.default_input_shape)
        x = keras.Input(shape=raw_shape)
        # `inputs=x`, not the documents' `[x]`: Keras 3 warns when a one-item list model is called
        # with a bare tensor.
        graph = keras.Model(inputs=x, outputs=self.call(x), name=self.name + "_graph")
        if not self.built:  # the symbolic call created every weight
            self.built_input_shape = raw_shape
            self.built = True
        return graph

    def _check_build_shape(self, input_shape):
        check_input_shape(type(self).__name__, (None, None, None), input_shape)
        self.built_input_shape = tuple(input_shape)[1:]

    def _check(self, inputs):
        """Check the shape; returns the inputs in the compute dtype (integer images, uint8 say,
        are taken as a Functional model takes them)."""
        expected = getattr(self, "built_input_shape", None)
        if expected is None:
            expected = (None, None, None)
        check_input_shape(type(self).__name__, expected, inputs.shape)
        return keras.ops.cast(inputs, self.compute_dtype)


@serializable
class MiniInception(_GraphMixin, keras.Model):
    """Document 000's small Inception network for 32x32x3 images (1,656,250 parameters).

    conv(96) -> inception(32, 32), (32, 48) -> downsample(80) -> inception(112, 48), (96, 64),
    (80, 80), (48, 96) -> downsample(96) -> inception(176, 160) x 2 -> 7x7 average pool ->
    flatten -> dense softmax.

    Args:
        num_classes: number of output classes.

    Input shape:
        `(batch, 32, 32, channels)` (the 7x7 average pool expects 32x32 inputs).

    Output shape:
        `(batch, num_classes)`, probabilities.
    """

    default_input_shape = (32, 32, 3)

    def __init__(self, num_classes=10, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.conv_block = ConvModule(96, (3, 3), (1, 1), **inner(self))
        self.inception_block1 = InceptionModule(32, 32, **inner(self))
        self.inception_block2 = InceptionModule(32, 48, **inner(self))
        self.downsample_block1 = DownsampleModule(80, **inner(self))
        self.inception_block3 = InceptionModule(112, 48, **inner(self))
        self.inception_block4 = InceptionModule(96, 64, **inner(self))
        self.inception_block5 = InceptionModule(80, 80, **inner(self))
        self.inception_block6 = InceptionModule(48, 96, **inner(self))
        self.downsample_block2 = DownsampleModule(96, **inner(self))
        self.inception_block7 = InceptionModule(176, 160, **inner(self))
        self.inception_block8 = InceptionModule(176, 160, **inner(self))
        self.avg_pool = layers.AveragePooling2D((7, 7), **inner(self))
        self.flat = layers.Flatten(**inner(self))
        self.classifier = layers.Dense(num_classes, activation="softmax", **outer(self))

    def call(self, inputs, training=None):
        inputs = self._check(inputs)
        x = self.conv_block(inputs, training=training)  # (batch, 32, 32, 96)
        x = self.inception_block1(x, training=training)  # (batch, 32, 32, 64)
        x = self.inception_block2(x, training=training)  # (batch, 32, 32, 80)
        x = self.downsample_block1(x, training=training)  # (batch, 15, 15, 160)
        x = self.inception_block3(x, training=training)  # (batch, 15, 15, 160)
        x = self.inception_block4(x, training=training)  # (batch, 15, 15, 160)
        x = self.inception_block5(x, training=training)  # (batch, 15, 15, 160)
        x = self.inception_block6(x, training=training)  # (batch, 15, 15, 144)
        x = self.downsample_block2(x, training=training)  # (batch, 7, 7, 240)
        x = self.inception_block7(x, training=training)  # (batch, 7, 7, 336)
        x = self.inception_block8(x, training=training)  # (batch, 7, 7, 336)
        x = self.avg_pool(x)  # (batch, 1, 1, 336)
        x = self.flat(x)  # (batch, 336)
        return self.classifier(x)  # (batch, num_classes)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


@serializable
class InceptionModel(_GraphMixin, keras.Model):
    """Document 001's Inception network for 28x28x1 (MNIST-sized) images.

    conv(96) -> inception(32, 32), (32, 48) -> downsample(80) -> inception(112, 48), (96, 64),
    (80, 80) -> downsample(96) -> global average pool -> dense softmax.

    Args:
        num_classes: number of output classes.

    Input shape:
        `(batch, height, width, channels)`; documented for (28, 28, 1).

    Output shape:
        `(batch, num_classes)`, probabilities.
    """

    default_input_shape = (28, 28, 1)

    def __init__(self, num_classes=10, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.conv = ConvModule(96, (3, 3), 1, **inner(self))
        self.incept_1 = InceptionModule(32, 32, **inner(self))
        self.incept_2 = InceptionModule(32, 48, **inner(self))
        self.down_1 = DownsampleModule(80, **inner(self))
        self.incept_3 = InceptionModule(112, 48, **inner(self))
        self.incept_4 = InceptionModule(96, 64, **inner(self))
        self.incept_5 = InceptionModule(80, 80, **inner(self))
        self.down_2 = DownsampleModule(96, **inner(self))
        self.pool = layers.GlobalAveragePooling2D(**inner(self))
        self.dense = layers.Dense(num_classes, activation="softmax", **outer(self))

    def call(self, inputs, training=None):
        inputs = self._check(inputs)
        x = self.conv(inputs, training=training)  # (batch, 28, 28, 96)
        x = self.incept_1(x, training=training)  # (batch, 28, 28, 64)
        x = self.incept_2(x, training=training)  # (batch, 28, 28, 80)
        x = self.down_1(x, training=training)  # (batch, 13, 13, 160)
        x = self.incept_3(x, training=training)  # (batch, 13, 13, 160)
        x = self.incept_4(x, training=training)  # (batch, 13, 13, 160)
        x = self.incept_5(x, training=training)  # (batch, 13, 13, 160)
        x = self.down_2(x, training=training)  # (batch, 6, 6, 256)
        x = self.pool(x)  # (batch, 256)
        return self.dense(x)  # (batch, num_classes)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}
