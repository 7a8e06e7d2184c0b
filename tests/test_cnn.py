"""The same CNN in the Sequential, Functional and Subclassing APIs (document 000)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from spec_impl import SubclassedCNN, functional_cnn, load_dataset, logits_loss, sequential_cnn
from spec_impl.cnn import subclassed_cnn
from spec_impl.testing import assert_allclose, assert_same_training, run_layer_test

INPUT_SHAPE = (28, 28, 3)  # document 000: MNIST repeated to 3 channels
CNN_PARAMS = 20_426  # document 000's layer sizes at 28x28x3
CNN_NON_TRAINABLE = 192  # two batch norms' moving mean and variance: 2 * (32 + 64)

BUILDERS = {
    "sequential": sequential_cnn,
    "functional": functional_cnn,
    "subclassed": subclassed_cnn,
}


@pytest.mark.parametrize("api", list(BUILDERS), ids=list(BUILDERS))
def test_parameter_counts(api):
    model = BUILDERS[api](INPUT_SHAPE, 10)
    non_trainable = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    assert model.count_params() == CNN_PARAMS
    assert non_trainable == CNN_NON_TRAINABLE


def test_each_api_keeps_its_documents_pooling():
    assert isinstance(sequential_cnn().get_layer("pool"), keras.layers.GlobalMaxPooling2D)
    assert isinstance(functional_cnn().get_layer("pool"), keras.layers.GlobalMaxPooling2D)
    assert isinstance(SubclassedCNN().pool, keras.layers.GlobalAveragePooling2D)


@pytest.mark.parametrize("pooling", ["max", "avg"])
def test_three_apis_agree_with_copied_weights(pooling):
    x = np.random.default_rng(0).random((4, *INPUT_SHAPE), dtype=np.float32)
    seq = sequential_cnn(INPUT_SHAPE, 10, pooling=pooling)
    func = functional_cnn(INPUT_SHAPE, 10, pooling=pooling)
    sub = subclassed_cnn(INPUT_SHAPE, 10, pooling=pooling)
    func.set_weights(seq.get_weights())
    sub.set_weights(seq.get_weights())
    expected = seq(x, training=False)
    assert expected.shape == (4, 10)
    assert_allclose(func(x, training=False), expected)
    assert_allclose(sub(x, training=False), expected)


def test_pooling_choice_changes_the_output():
    x = np.random.default_rng(1).random((2, *INPUT_SHAPE), dtype=np.float32)
    a = sequential_cnn(INPUT_SHAPE, 10, pooling="max")
    b = sequential_cnn(INPUT_SHAPE, 10, pooling="avg")
    b.set_weights(a.get_weights())
    assert not np.allclose(a(x, training=False), b(x, training=False))


def test_the_package_loss_is_the_cross_entropy_of_the_logits():
    # Document 000 compiles these logit outputs with CategoricalCrossentropy(), whose from_logits
    # defaults to False (its values on both Kerases: tests/test_idioms.py,
    # categorical_crossentropy_on_logits). The package's loss takes the logits.
    logits = tf.constant([[2.0, -1.0, 0.5], [-0.3, 0.2, 1.5]])
    labels = tf.constant([0, 2])
    reference = -tf.reduce_mean(tf.gather(tf.nn.log_softmax(logits), labels, batch_dims=1))
    assert_allclose(logits_loss()(labels, logits), reference)


def test_subclassed_cnn_contract(tmp_path):
    x = np.random.default_rng(2).random((2, *INPUT_SHAPE), dtype=np.float32)
    # Trainable: two conv kernels and biases, two BN gammas and betas, dense kernel and bias.
    run_layer_test(lambda **kw: SubclassedCNN(10, **kw), x, (10,), tmp_path=tmp_path,
                   expected_float32_layers=1,
                   expected_num_trainable_weights=10, expected_num_non_trainable_weights=4,
                   expected_num_params=CNN_PARAMS)


@pytest.mark.parametrize("api", list(BUILDERS), ids=list(BUILDERS))
def test_builders_round_trip_through_keras_file(api, tmp_path):
    x = np.random.default_rng(3).random((2, *INPUT_SHAPE), dtype=np.float32)
    model = BUILDERS[api](INPUT_SHAPE, 10)
    model.save(tmp_path / "cnn.keras")
    reloaded = keras.models.load_model(tmp_path / "cnn.keras")
    assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match=r"`pooling` to be one of 'max', 'avg'. Received: pooling='sum'"):
        sequential_cnn(pooling="sum")
    with pytest.raises(ValueError, match=r"positive integer for `num_classes`. Received: num_classes=0"):
        SubclassedCNN(0)


def _fit_on_digits(api, x, y, initial=None):
    keras.utils.set_random_seed(0)  # the same dropout seed in each API's model
    model = BUILDERS[api](INPUT_SHAPE, 10, pooling="max")
    if initial is not None:
        model.set_weights(initial)
    initial = model.get_weights()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=logits_loss())
    history = model.fit(x[:256], y[:256], batch_size=32, epochs=3, shuffle=False, verbose=0)
    return initial, history.history, model.get_weights()


def test_the_three_apis_train_alike():
    """From the same weights and seed, `fit` on the same batches gives each API's model the same
    losses and weights (measured: bit-identical; held to float32 round-off)."""
    (x, y), _ = load_dataset("digits", input_shape=INPUT_SHAPE)
    initial, history, weights = _fit_on_digits("sequential", x, y)
    for api in ("functional", "subclassed"):
        _, got_history, got_weights = _fit_on_digits(api, x, y, initial)
        assert_same_training((got_history, got_weights), (history, weights))
    losses = history["loss"]
    # It did train: each epoch's mean loss is below the last (measured 2.47, 0.63, 0.39).
    assert losses[0] > losses[1] > losses[2]
    moved = max(np.abs(w - w0).max() for w, w0 in zip(weights, initial, strict=True))
    assert moved > 1e-2


@pytest.mark.parametrize("api", list(BUILDERS), ids=list(BUILDERS))
def test_wrong_channels_or_rank_name_the_expected_shape(api):
    # Keras's own input checks name the expected value for the Sequential and Functional
    # models; the subclassed one checks its rank itself (Keras's message was "min_ndim=4").
    model = BUILDERS[api](INPUT_SHAPE, 10)
    with pytest.raises(ValueError, match=r"expected axis -1 of input shape to have value 3, "
                                         r"but received input with shape \(2, 28, 28, 1\)"):
        model(np.zeros((2, 28, 28, 1), "float32"))
    rank_message = (r"SubclassedCNN expects inputs of shape \(batch, \?, \?, \?\). "
                    r"Received: shape=\(2, 28, 28\)" if api == "subclassed"
                    else r"Expected shape \(None, 28, 28, 3\), but input has incompatible "
                         r"shape \(2, 28, 28\)")
    with pytest.raises(ValueError, match=rank_message):
        model(np.zeros((2, 28, 28), "float32"))
