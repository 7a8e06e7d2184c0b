"""Custom layers (document 003): Lambda / Exponential, MyDense, MyMultiLayer,
MyGaussianNoise, ResidualBlock."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from spec_impl import (
    Exponential,
    MyDense,
    MyGaussianNoise,
    MyMultiLayer,
    ResidualBlock,
    exponential_layer,
)
from spec_impl.testing import assert_allclose, run_layer_test

RNG = np.random.default_rng(0)


def test_lambda_and_exponential_layer_compute_exp():
    x = np.array([[0.0, 1.0, -2.0]], dtype=np.float32)
    assert_allclose(exponential_layer(x), np.exp(x))
    assert_allclose(Exponential()(x), np.exp(x))


def test_exponential_contract(tmp_path):
    x = RNG.random((3, 4), dtype=np.float32)
    run_layer_test(Exponential, x, (4,), tmp_path=tmp_path, expected_num_trainable_weights=0,
                   run_training_step=False)


def test_my_dense_hand_checkable():
    # Keras's test_dense_correctness: kernel [[1, -2], [3, -4]], bias [5, -6], input [[-1, 2]].
    layer = MyDense(2, activation="relu")
    layer.build((None, 2))
    layer.set_weights([np.array([[1.0, -2.0], [3.0, -4.0]]), np.array([5.0, -6.0])])
    assert_allclose(layer(np.array([[-1.0, 2.0]], dtype=np.float32)), [[10.0, 0.0]])


def test_my_dense_equals_dense_in_outputs_and_gradients():
    x = tf.constant(RNG.normal(size=(5, 4)), dtype=tf.float32)
    mine, ref = MyDense(3, activation="tanh"), keras.layers.Dense(3, activation="tanh")
    mine.build((None, 4))
    ref.build((None, 4))
    mine.set_weights(ref.get_weights())
    grads = []
    for layer in (mine, ref):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x) ** 2)
        grads.append(tape.gradient(loss, [x, *layer.trainable_weights]))
    assert_allclose(mine(x), ref(x))
    for g_mine, g_ref in zip(*grads, strict=True):
        assert_allclose(g_mine, g_ref, atol=1e-5)  # two float32 matmul orders


def test_my_dense_gradient_against_finite_differences_float64():
    layer = MyDense(3, activation="tanh", dtype="float64")
    layer.build((None, 4))
    x = tf.constant(RNG.normal(size=(2, 4)), dtype=tf.float64)
    theoretical, numerical = tf.test.compute_gradient(layer, [x])
    assert_allclose(theoretical[0], numerical[0], atol=1e-6)


def test_my_dense_contract(tmp_path, seed):
    # Seeded, and inputs of both signs: with inputs in [0, 1) a relu layer can, for some initial
    # weights, output 0 everywhere, and the contract's training step then changes nothing.
    x = np.random.default_rng(seed).normal(size=(4, 6)).astype(np.float32)
    run_layer_test(lambda **kw: MyDense(3, activation="relu", **kw), x, (3,), tmp_path=tmp_path,
                   expected_num_trainable_weights=2, expected_num_params=6 * 3 + 3)


def test_my_dense_compute_output_shape():
    assert MyDense(7).compute_output_shape((None, 5, 4)) == (None, 5, 7)


def test_my_dense_rejects_bad_units():
    with pytest.raises(ValueError, match=r"positive integer for `units`. Received: units=0"):
        MyDense(0)


def test_my_multi_layer_outputs():
    x1 = np.array([[2.0, 3.0]], dtype=np.float32)
    x2 = np.array([[4.0, -1.5]], dtype=np.float32)
    add, mul, div = MyMultiLayer()([x1, x2])
    assert_allclose(add, [[6.0, 1.5]])
    assert_allclose(mul, [[8.0, -4.5]])
    assert_allclose(div, [[0.5, -2.0]])
    assert MyMultiLayer().compute_output_shape([(None, 2), (None, 2)]) == [(None, 2)] * 3


def test_my_multi_layer_in_a_functional_model(tmp_path):
    x1, x2 = RNG.random((3, 2), dtype=np.float32), RNG.random((3, 2), dtype=np.float32) + 1
    run_layer_test(MyMultiLayer, [x1, x2], [(2,), (2,), (2,)], tmp_path=tmp_path,
                   expected_num_trainable_weights=0, run_training_step=False)


def test_my_multi_layer_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match=r"two inputs of one shape. Received: \(None, 2\) and \(None, 3\)"):
        MyMultiLayer().compute_output_shape([(None, 2), (None, 3)])


@pytest.mark.parametrize("stddev", [0.5, 2.0])
def test_gaussian_noise_only_in_training(stddev):
    x = np.zeros((200, 100), dtype=np.float32)
    layer = MyGaussianNoise(stddev, seed=1)
    noisy = layer(x, training=True).numpy()
    assert abs(noisy.std() - stddev) < 0.02 * stddev  # 20,000 samples: sd of the estimate ~0.5%
    assert abs(noisy.mean()) < 0.05 * stddev
    assert_allclose(layer(x, training=False), x, atol=0, rtol=0)
    assert_allclose(layer(x), x, atol=0, rtol=0)


def test_gaussian_noise_contract(tmp_path):
    x = RNG.random((3, 4), dtype=np.float32)
    run_layer_test(lambda **kw: MyGaussianNoise(0.1, seed=3, **kw), x, (4,), tmp_path=tmp_path,
                   expected_num_trainable_weights=0, run_training_step=False)


def test_gaussian_noise_rejects_negative_stddev():
    with pytest.raises(ValueError, match=r"non-negative stddev. Received: stddev=-1"):
        MyGaussianNoise(-1)


def test_residual_block_adds_its_input(seed):
    block = ResidualBlock(2, 4)
    x = RNG.normal(size=(3, 4)).astype("float32")
    block(x)
    z = x
    for dense in block.hidden:
        z = dense(z)
    assert_allclose(block(x), x + z)


def test_residual_block_contract(tmp_path):
    x = RNG.random((3, 5), dtype=np.float32)
    run_layer_test(lambda **kw: ResidualBlock(2, 5, **kw), x, (5,), tmp_path=tmp_path,
                   expected_num_trainable_weights=4, expected_num_params=2 * (5 * 5 + 5))


def test_documented_residual_block_get_config_is_broken():
    # Document 003's get_config returns {'n_layers': n_layers, 'n_neurons': n_neurons} with
    # neither name defined in that scope: saving such a block raises NameError.
    class DocumentedResidualBlock(ResidualBlock):
        def get_config(self):
            base_config = keras.layers.Layer.get_config(self)
            return {**base_config, "n_layers": n_layers, "n_neurons": n_neurons}  # noqa: F821  (the document's bug, reproduced)

    with pytest.raises(NameError, match="n_layers"):
        DocumentedResidualBlock(2, 30).get_config()
    assert ResidualBlock(2, 30).get_config()["n_layers"] == 2


def test_residual_block_refuses_mismatched_width():
    with pytest.raises(ValueError,
                       match=r"input width must be n_neurons=30. Received: input_shape=\(None, 8\)"):
        ResidualBlock(2, 30).build((None, 8))
