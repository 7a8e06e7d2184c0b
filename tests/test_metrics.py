"""Streaming metrics: Precision demo, HuberMetric (003), RootMeanSquaredError (002)."""

import keras
import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from spec_impl import HuberMetric, RootMeanSquaredError, create_huber
from spec_impl.testing import assert_allclose

# Document 003: the two mocked steps give precision 0.5 with 4 true and 4 false positives.
PRECISION_CALLS = [([0, 1, 1, 1, 0, 1, 0, 1], [1, 1, 0, 1, 0, 1, 0, 1]),
                   ([0, 1, 0, 0, 1, 0, 1, 1], [1, 0, 1, 1, 0, 0, 0, 0])]
PRECISION_RESULT, TRUE_POSITIVES, FALSE_POSITIVES = 0.5, [4.0], [4.0]
# Document 003: HuberMetric(2.0) gives 14.0, then 7.0.
HUBER_STEPS = [(([[2.0]], [[10.0]]), 14.0), (([[0.0], [5.0]], [[1.0], [9.25]]), 7.0)]


def test_precision_demo():
    precision = keras.metrics.Precision()
    for y_true, y_pred in PRECISION_CALLS:
        precision(y_true, y_pred)
    assert float(precision.result()) == PRECISION_RESULT
    variables = {v.name: v.numpy().tolist() for v in precision.variables}
    assert variables == {"true_positives": TRUE_POSITIVES, "false_positives": FALSE_POSITIVES}
    precision.reset_state()
    assert float(precision.result()) == 0.0
    assert all(v.numpy().tolist() == [0.0] for v in precision.variables)


def test_huber_metric_documented_values():
    m = HuberMetric(2.0)
    for (y_true, y_pred), expected in HUBER_STEPS:
        assert float(m(y_true, y_pred)) == expected
    assert m.total.numpy() == 21.0 and m.count.numpy() == 3.0
    m.reset_state()
    assert float(m.result()) == 0.0


@given(arrays(np.float32, st.integers(2, 40), elements=st.floats(-50, 50, width=32)),
       st.integers(1, 5), st.floats(0.1, 5))
def test_huber_metric_streams_to_the_whole_batch_mean(errors, n_chunks, threshold):
    y_true = np.zeros_like(errors).reshape(-1, 1)
    y_pred = errors.reshape(-1, 1)
    m = HuberMetric(threshold)
    for t, p in zip(np.array_split(y_true, n_chunks), np.array_split(y_pred, n_chunks), strict=True):
        if len(t):
            m.update_state(t, p)
    whole = np.mean(create_huber(threshold)(y_true, y_pred))
    assert_allclose(m.result(), whole, atol=1e-4, rtol=1e-5)  # float32 sums of up to 40 terms


def test_huber_metric_sample_weight():
    m = HuberMetric(1.0)
    m.update_state([[0.0], [0.0]], [[0.5], [3.0]], sample_weight=[1.0, 0.0])
    assert_allclose(m.result(), 0.125)


def test_huber_metric_config_and_round_trip():
    m = HuberMetric(2.0, name="hm")
    clone = HuberMetric.from_config(m.get_config())
    assert clone.threshold == 2.0 and clone.name == "hm"


def rmse_reference(y, p):
    one_hot = np.eye(p.shape[1])[y]
    return np.sqrt(((one_hot - p) ** 2).sum() / len(y))


@given(st.integers(2, 30), st.integers(1, 4), st.integers(0, 2**16))
def test_rmse_streams_to_the_batch_value(n, n_chunks, seed):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(5), size=n).astype("float32")
    y = rng.integers(0, 5, n)
    m = RootMeanSquaredError()
    for yc, pc in zip(np.array_split(y, n_chunks), np.array_split(p, n_chunks), strict=True):
        if len(yc):
            m.update_state(yc, pc)
    assert_allclose(m.result(), rmse_reference(y, p), atol=1e-6, rtol=1e-5)
    m.reset_state()
    assert float(m.result()) == 0.0 and float(m.total_samples.numpy()) == 0.0


@given(st.integers(2, 30), st.integers(1, 4), st.integers(2, 6), st.integers(0, 2**16))
def test_weighted_rmse_is_sqrt_classes_times_keras_rmse(n, n_chunks, classes, seed):
    # Document 002's RMSE sums over classes; Keras's averages over them: a factor sqrt(classes)
    # on any weighted stream.
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(classes), size=n).astype("float32")
    y = rng.integers(0, classes, n)
    w = rng.random(n).astype("float32")
    mine, theirs = RootMeanSquaredError(), keras.metrics.RootMeanSquaredError()
    for yc, pc, wc in zip(*(np.array_split(a, n_chunks) for a in (y, p, w)), strict=True):
        if len(yc):
            mine.update_state(yc, pc, sample_weight=wc)
            theirs.update_state(np.eye(classes, dtype="float32")[yc], pc, sample_weight=wc)
    one_hot = np.eye(classes)[y]
    expected = np.sqrt((w * ((one_hot - p) ** 2).sum(-1)).sum() / w.sum())
    assert_allclose(mine.result(), expected, atol=1e-6, rtol=1e-5)
    assert_allclose(mine.result(), np.sqrt(classes) * float(theirs.result()), atol=1e-6, rtol=1e-5)


def test_rmse_zero_weight_ignores_a_sample():
    m = RootMeanSquaredError()
    m.update_state(np.array([0, 1]), np.array([[1.0, 0.0], [1.0, 0.0]]), sample_weight=[1.0, 0.0])
    assert_allclose(m.result(), 0.0)


def test_rmse_hand_value_and_use_in_compile():
    m = RootMeanSquaredError()
    m.update_state(np.array([0, 1]), np.array([[1.0, 0.0], [1.0, 0.0]]))
    assert_allclose(m.result(), 1.0)  # errors: 0, then 1 + 1 over 2 samples -> sqrt(1)
    assert m.name == "rmse"
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy", RootMeanSquaredError()])
    x = np.random.default_rng(0).random((16, 4)).astype("float32")
    y = np.arange(16) % 3
    history = model.fit(x, y, epochs=1, verbose=0)
    assert "rmse" in history.history
    # under evaluate (weights fixed), the compiled metric is the hand formula on the predictions:
    # per sample the squared errors against the one-hot row summed, averaged, rooted
    p = model.predict(x, verbose=0)
    want = np.sqrt(np.mean(np.sum((np.eye(3)[y] - p) ** 2, axis=1)))
    assert_allclose(model.evaluate(x, y, verbose=0, return_dict=True)["rmse"], want, rtol=1e-5)
