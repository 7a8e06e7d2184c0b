"""The Inception family: ConvModule, InceptionModule, DownsampleModule, MiniInception,
InceptionModel (documents 000 / 004 and 001)."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from spec_impl import ConvModule, DownsampleModule, InceptionModel, InceptionModule, MiniInception
from spec_impl.testing import (
    assert_allclose,
    conv_keeps_input_channels_on_an_empty_batch,
    run_layer_test,
)

# Document 000: "weights: 6, trainable weights: 4" after a first call on (2, 32, 32, 3).
CONV_MODULE_WEIGHTS = 6
CONV_MODULE_TRAINABLE_WEIGHTS = 4
# Document 000, model summary totals for (32, 32, 3).
MINI_INCEPTION_PARAMS = 1_656_250
MINI_INCEPTION_TRAINABLE = 1_652_826
MINI_INCEPTION_NON_TRAINABLE = 3_424
# Document 000, model summary rows: (layer class, output shape, parameters).
MINI_INCEPTION_SUMMARY = [
    ("InputLayer", (None, 32, 32, 3), 0),
    ("ConvModule", (None, 32, 32, 96), 3_072),
    ("InceptionModule", (None, 32, 32, 64), 31_040),
    ("InceptionModule", (None, 32, 32, 80), 30_096),
    ("DownsampleModule", (None, 15, 15, 160), 58_000),
    ("InceptionModule", (None, 15, 15, 160), 87_840),
    ("InceptionModule", (None, 15, 15, 160), 108_320),
    ("InceptionModule", (None, 15, 15, 160), 128_800),
    ("InceptionModule", (None, 15, 15, 144), 146_640),
    ("DownsampleModule", (None, 7, 7, 240), 124_896),
    ("InceptionModule", (None, 7, 7, 336), 389_520),
    ("InceptionModule", (None, 7, 7, 336), 544_656),
    ("AveragePooling2D", (None, 1, 1, 336), 0),
    ("Flatten", (None, 336), 0),
    ("Dense", (None, 10), 3_370),
]


def conv_module_params(c_in, c_out, k):
    """Conv kernel + bias, then BN gamma, beta, moving mean, moving variance."""
    return k * k * c_in * c_out + c_out + 4 * c_out


def inception_params(c_in, n1, n3):
    return conv_module_params(c_in, n1, 1) + conv_module_params(c_in, n3, 3)


def test_conv_module_weight_counts_match_document():
    cm = ConvModule(96, (3, 3), (1, 1))
    y = cm(tf.ones((2, 32, 32, 3)))
    assert y.shape == (2, 32, 32, 96)
    assert len(cm.weights) == CONV_MODULE_WEIGHTS
    assert len(cm.trainable_weights) == CONV_MODULE_TRAINABLE_WEIGHTS


def test_module_params_follow_the_formula():
    # The formula reproduces document 000's rows, so it can be trusted for document 001.
    assert conv_module_params(3, 96, 3) == MINI_INCEPTION_SUMMARY[1][2]
    assert inception_params(96, 32, 32) == MINI_INCEPTION_SUMMARY[2][2]
    assert conv_module_params(80, 80, 3) == MINI_INCEPTION_SUMMARY[4][2]  # downsample: conv only


def test_conv_module_contract(tmp_path):
    x = np.random.default_rng(0).random((2, 8, 8, 3), dtype=np.float32)
    run_layer_test(lambda **kw: ConvModule(4, 3, 1, **kw), x, (8, 8, 4), tmp_path=tmp_path,
                   expected_num_trainable_weights=4, expected_num_non_trainable_weights=2,
                   expected_num_params=conv_module_params(3, 4, 3))


def test_inception_module_contract(tmp_path):
    x = np.random.default_rng(0).random((2, 8, 8, 3), dtype=np.float32)
    run_layer_test(lambda **kw: InceptionModule(2, 5, **kw), x, (8, 8, 7), tmp_path=tmp_path,
                   expected_num_trainable_weights=8, expected_num_non_trainable_weights=4,
                   expected_num_params=inception_params(3, 2, 5))


def test_downsample_module_contract(tmp_path):
    x = np.random.default_rng(0).random((2, 9, 9, 3), dtype=np.float32)
    # conv branch (9 - 3) // 2 + 1 = 4 wide, 6 filters, beside the 3 pooled input channels.
    run_layer_test(lambda **kw: DownsampleModule(6, **kw), x, (4, 4, 9), tmp_path=tmp_path,
                   expected_num_trainable_weights=4, expected_num_non_trainable_weights=2,
                   expected_num_params=conv_module_params(3, 6, 3))


@pytest.fixture
def mini():
    model = MiniInception()
    model.build((None, 32, 32, 3))
    return model


def test_mini_inception_totals(mini):
    trainable = sum(int(np.prod(w.shape)) for w in mini.trainable_weights)
    non_trainable = sum(int(np.prod(w.shape)) for w in mini.non_trainable_weights)
    assert mini.count_params() == MINI_INCEPTION_PARAMS
    assert trainable == MINI_INCEPTION_TRAINABLE
    assert non_trainable == MINI_INCEPTION_NON_TRAINABLE


def test_mini_inception_every_summary_row(mini):
    graph = mini.build_graph((32, 32, 3))
    rows = [(type(layer).__name__, tuple(layer.output.shape), layer.count_params()) for layer in graph.layers]
    assert rows == MINI_INCEPTION_SUMMARY
    assert graph.count_params() == MINI_INCEPTION_PARAMS


def test_build_graph_shares_weights_with_the_model(mini):
    graph = mini.build_graph((32, 32, 3))
    x = np.random.default_rng(1).random((2, 32, 32, 3), dtype=np.float32)
    assert_allclose(graph(x, training=False), mini(x, training=False))


# Document 000 creates the weights with a call on an empty batch. What that does depends on the
# CPU's Conv2D kernel (spec_impl.testing.conv_keeps_input_channels_on_an_empty_batch).
EMPTY_BATCH_REFUSED = "Incompatible shapes: [0,32,32,3] vs. [1,1,1,96]"  # the first conv's bias


def test_zero_batch_call_creates_weights_or_is_refused_by_the_cpu_conv():
    model = MiniInception()
    if conv_keeps_input_channels_on_an_empty_batch():  # the first bias add refuses the batch
        with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(EMPTY_BATCH_REFUSED)):
            model(tf.ones((0, 32, 32, 3)))
        return
    # where Conv2D gives the filters' channels it works: every weight exists, output (0, 10)
    y = model(tf.ones((0, 32, 32, 3)))
    assert y.shape == (0, 10)
    assert model.count_params() == MINI_INCEPTION_PARAMS


def test_zero_batch_call_in_training_mode_poisons_batch_norm():
    # ... and where it works, the same call with training=True averages over zero samples: the
    # moving statistics become NaN. Build with `build(...)` or a real batch instead.
    model = MiniInception()
    if conv_keeps_input_channels_on_an_empty_batch():
        with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(EMPTY_BATCH_REFUSED)):
            model(tf.ones((0, 32, 32, 3)), training=True)
        return
    model(tf.ones((0, 32, 32, 3)), training=True)
    assert np.isnan(model.conv_block.bn.moving_mean.numpy()).all()


def test_build_and_first_real_call_both_create_weights():
    built = MiniInception()
    built.build((None, 32, 32, 3))
    called = MiniInception()
    called(tf.ones((1, 32, 32, 3)))
    assert built.count_params() == called.count_params() == MINI_INCEPTION_PARAMS


def _innermost_bn_module(model):
    return model.inception_block8.conv2


def _innermost_bn(model):
    return _innermost_bn_module(model).bn


def test_training_true_reaches_innermost_batch_norm(mini):
    """One training call moves the innermost batch norm's moving mean to exactly
    0.99 x before + 0.01 x the mean of what its convolution gave it (Keras's momentum 0.99)."""
    module = _innermost_bn_module(mini)
    before = module.bn.moving_mean.numpy().copy()
    seen = []
    convolve = module.conv.call
    module.conv.call = lambda inputs: seen.append(convolve(inputs)) or seen[-1]
    try:
        mini(np.random.default_rng(2).random((4, 32, 32, 3), dtype=np.float32), training=True)
    finally:
        del module.conv.call
    assert len(seen) == 1
    batch_mean = tf.reduce_mean(seen[0], axis=(0, 1, 2))
    # float32 round-off: Keras and this test sum the batch in different orders.
    assert_allclose(module.bn.moving_mean, 0.99 * before + 0.01 * batch_mean, atol=1e-6, rtol=1e-5)
    assert np.abs(module.bn.moving_mean.numpy() - before).max() > 1e-4  # a move well past that


def test_training_false_leaves_statistics_and_is_deterministic(mini):
    bn = _innermost_bn(mini)
    before = bn.moving_mean.numpy().copy()
    x = np.random.default_rng(3).random((4, 32, 32, 3), dtype=np.float32)
    first = mini(x, training=False)
    second = mini(x, training=False)
    assert_allclose(bn.moving_mean, before, atol=0, rtol=0)
    assert_allclose(first, second, atol=0, rtol=0)


def test_keras3_propagates_training_even_when_a_block_forgets_it():
    # The documents' `call` methods drop `training` for some blocks. Keras 3 fills a missing
    # `training` argument from the outer call's context, so the omission no longer breaks
    # batch norm; this package passes it explicitly all the same.
    class Forgetful(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.bn = keras.layers.BatchNormalization()

        def call(self, x, training=False):
            return self.bn(x)  # `training` not passed on, as in document 000

    class Outer(keras.Model):
        def __init__(self):
            super().__init__()
            self.block = Forgetful()

        def call(self, x, training=False):
            return self.block(x)  # not passed here either

    model = Outer()
    x = tf.random.normal((8, 4)) * 3 + 5
    model(x, training=True)
    # one training-mode call moves the statistics by (1 - momentum 0.99) x the batch mean,
    # from 0; in inference mode they would stay 0
    assert_allclose(model.block.bn.moving_mean, 0.01 * tf.reduce_mean(x, axis=0), rtol=1e-6)


def test_wrong_channels_or_rank_raise_value_error(mini):
    with pytest.raises(ValueError, match=r"expects inputs of shape \(batch, 32, 32, 3\)\. "
                                         r"Received: shape=\(2, 32, 32, 1\)"):
        mini(tf.ones((2, 32, 32, 1)))
    with pytest.raises(ValueError, match=r"Received: shape=\(2, 32, 32\)"):
        mini(tf.ones((2, 32, 32)))


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_counts_raise_at_construction(bad):
    with pytest.raises(ValueError, match=r"Expected a positive integer for `num_classes`"):
        MiniInception(num_classes=bad)
    with pytest.raises(ValueError, match=r"Expected a positive integer for `kernel_num`"):
        ConvModule(bad, 3, 1)
    with pytest.raises(ValueError, match=r"Expected a positive integer for `kernel_size1x1`"):
        InceptionModule(bad, 4)


def test_bad_padding_raises():
    with pytest.raises(ValueError, match=r"`padding` to be one of 'same', 'valid'. "
                                         r"Received: padding='full'"):
        ConvModule(4, 3, 1, padding="full")


def test_inception_model_structure():
    model = InceptionModel()
    graph = model.build_graph(in_shape := (28, 28, 1))
    assert graph.input_shape == (None, *in_shape)
    shapes = [tuple(layer.output.shape) for layer in graph.layers]
    assert shapes == [
        (None, 28, 28, 1), (None, 28, 28, 96), (None, 28, 28, 64), (None, 28, 28, 80),
        (None, 13, 13, 160), (None, 13, 13, 160), (None, 13, 13, 160), (None, 13, 13, 160),
        (None, 6, 6, 256), (None, 256), (None, 10),
    ]
    expected = (
        conv_module_params(1, 96, 3)
        + inception_params(96, 32, 32) + inception_params(64, 32, 48)
        + conv_module_params(80, 80, 3)
        + inception_params(160, 112, 48) + inception_params(160, 96, 64)
        + inception_params(160, 80, 80)
        + conv_module_params(160, 96, 3)
        + 256 * 10 + 10
    )
    assert graph.count_params() == model.count_params() == expected


def test_inception_model_reuses_the_three_module_classes():
    model = InceptionModel()
    kinds = {type(layer).__name__ for layer in model.layers}
    assert {"ConvModule", "InceptionModule", "DownsampleModule"} <= kinds


@pytest.mark.parametrize("cls,shape", [(MiniInception, (32, 32, 3)), (InceptionModel, (28, 28, 1))],
                         ids=["mini_inception", "inception_model"])
def test_models_round_trip_through_keras_file(cls, shape, tmp_path):
    x = np.random.default_rng(4).random((2, *shape), dtype=np.float32)
    model = cls(num_classes=3)
    model.build((None, *shape))
    path = tmp_path / "m.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    assert type(reloaded) is cls and reloaded.num_classes == 3
    assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0))
