"""Huber loss as a function, a factory and a Loss subclass (document 003)."""

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from spec_impl import HuberLoss, create_huber, huber_fn
from spec_impl.testing import assert_allclose

finite = st.floats(min_value=-100, max_value=100, allow_nan=False, width=32)
thresholds = st.floats(min_value=0.01, max_value=10, allow_nan=False)


def reference_huber(y_true, y_pred, delta):
    """Keras's own Huber, element-wise: a (n, 1) layout makes its last-axis mean a no-op."""
    return keras.losses.huber(y_true.reshape(-1, 1), y_pred.reshape(-1, 1), delta=delta)


@given(arrays(np.float32, st.integers(1, 20), elements=finite),
       arrays(np.float32, st.integers(1, 20), elements=finite), thresholds)
def test_all_three_forms_equal_keras_huber_elementwise(y_true, y_pred, threshold):
    n = min(len(y_true), len(y_pred))
    y_true, y_pred = y_true[:n], y_pred[:n]
    expected = reference_huber(y_true, y_pred, threshold)
    # atol: float32 rounding of threshold * |error| for errors up to 200.
    assert_allclose(create_huber(threshold)(y_true, y_pred), expected, atol=1e-4, rtol=1e-6)
    loss = HuberLoss(threshold, reduction=None)
    assert_allclose(loss(y_true.reshape(-1, 1), y_pred.reshape(-1, 1))[:, 0], expected,
                    atol=1e-4, rtol=1e-6)
    if threshold == 1.0:
        assert_allclose(huber_fn(y_true.reshape(-1, 1), y_pred.reshape(-1, 1))[:, 0], expected,
                        atol=1e-4)


@given(arrays(np.float32, (8, 3), elements=finite), arrays(np.float32, (8, 3), elements=finite),
       thresholds)
def test_reduced_loss_equals_keras_huber(y_true, y_pred, threshold):
    assert_allclose(HuberLoss(threshold)(y_true, y_pred),
                    keras.losses.Huber(delta=threshold)(y_true, y_pred), atol=1e-4, rtol=1e-5)


def test_huber_fn_values_by_hand():
    # |error| 0.5 -> 0.125 (quadratic); |error| 3 -> 3 - 0.5 = 2.5 (linear).
    assert_allclose(huber_fn(np.array([0.0, 0.0]), np.array([0.5, -3.0])), [0.125, 2.5])


@pytest.mark.parametrize("threshold", [0.5, 1.0, 2.0])
def test_continuous_at_the_threshold(threshold):
    f = create_huber(threshold)
    eps = 1e-3
    below = float(f(np.float32(0.0), np.float32(threshold - eps)))
    above = float(f(np.float32(0.0), np.float32(threshold + eps)))
    at = threshold**2 / 2
    assert abs(below - at) < 2 * threshold * eps and abs(above - at) < 2 * threshold * eps


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), "2"])
def test_non_positive_threshold_is_refused(bad):
    with pytest.raises(ValueError, match=r"Expected a positive threshold. Received: threshold="):
        create_huber(bad)
    with pytest.raises(ValueError, match=r"Expected a positive threshold. Received: threshold="):
        HuberLoss(bad)


def test_huber_loss_config_keeps_threshold():
    loss = HuberLoss(2.0, name="my_huber")
    clone = HuberLoss.from_config(loss.get_config())
    assert clone.threshold == 2.0 and clone.name == "my_huber"
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(restored, HuberLoss) and restored.threshold == 2.0
