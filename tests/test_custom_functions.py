"""Custom activation, initializer, regularizer and constraint (document 003)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from spec_impl import (
    MyL1Regularizer,
    documented_dense,
    my_glorot_initializer,
    my_l1_regularizer,
    my_positive_weights,
    my_softplus,
)
from spec_impl.testing import assert_allclose

L1_FACTOR = 0.01  # document 003


def test_my_softplus_equals_softplus():
    z = np.linspace(-10, 10, 21, dtype=np.float32)
    assert_allclose(my_softplus(z), tf.nn.softplus(z), atol=1e-5)


def test_my_glorot_initializer_standard_deviation(seed):
    w = my_glorot_initializer((400, 600))
    assert w.shape == (400, 600)
    assert abs(float(np.std(w)) - np.sqrt(2.0 / 1000)) < 1e-3


def test_my_l1_regularizer_value():
    w = np.array([[1.0, -2.0], [3.0, -4.0]], dtype=np.float32)
    assert_allclose(my_l1_regularizer(w), L1_FACTOR * 10.0)


def test_my_positive_weights_zeroes_negatives():
    w = np.array([[1.0, -2.0], [-0.0, 4.0]], dtype=np.float32)
    assert_allclose(my_positive_weights(w), [[1.0, 0.0], [0.0, 4.0]])


def test_dense_using_all_four(seed):
    model = keras.Sequential([keras.Input((8,)), documented_dense(30), keras.layers.Dense(1)])
    x = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
    y = x.sum(axis=1, keepdims=True)
    model(x)
    kernel = model.layers[0].kernel
    assert len(model.losses) == 1
    assert_allclose(model.losses[0], L1_FACTOR * np.abs(kernel.numpy()).sum(), rtol=1e-5)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert (kernel.numpy() >= 0).all()  # the constraint ran after each update


def test_dense_using_all_four_round_trips(tmp_path, seed):
    model = keras.Sequential([keras.Input((8,)), documented_dense(30)])
    x = np.random.default_rng(1).normal(size=(4, 8)).astype("float32")
    model.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras")  # registered: no custom_objects
    assert_allclose(reloaded(x), model(x))
    assert reloaded.layers[0].activation is my_softplus


def test_l1_regularizer_class_keeps_its_factor(tmp_path):
    reg = MyL1Regularizer(0.05)
    w = np.array([1.0, -3.0], dtype=np.float32)
    assert_allclose(reg(w), 0.2)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, kernel_regularizer=reg)])
    model.save(tmp_path / "reg.keras")
    reloaded = keras.models.load_model(tmp_path / "reg.keras")
    restored = reloaded.layers[0].kernel_regularizer
    assert isinstance(restored, MyL1Regularizer) and restored.factor == 0.05


def test_l1_regularizer_rejects_negative_factor():
    with pytest.raises(ValueError, match=r"non-negative factor. Received: factor=-1"):
        MyL1Regularizer(-1)
