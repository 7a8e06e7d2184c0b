"""Streaming metrics: `HuberMetric` and `HuberMeanMetric` (document 003), `RootMeanSquaredError`
(document 002)."""

import keras
from keras import ops

from spec_impl._base import serializable
from spec_impl.losses import DEFAULT_THRESHOLD, _check_threshold, _huber


@serializable
class HuberMetric(keras.metrics.Metric):
    """Mean Huber loss over every element seen since the last reset.

    Args:
        threshold: the Huber threshold; positive.
        **kwargs: `name`, `dtype`.
    """

    def __init__(self, threshold=DEFAULT_THRESHOLD, name="huber_metric", **kwargs):
        super().__init__(name=name, **kwargs)
        self.threshold = _check_threshold(threshold)
        self.total = self.add_weight(name="total", initializer="zeros")
        self.count = self.add_weight(name="count", initializer="zeros")

    def update_state(self, y_true, y_pred, sample_weight=None):
        values = _huber(y_true, y_pred, self.threshold)
        weights = ops.ones_like(values)
        if sample_weight is not None:
            sample_weight = ops.cast(sample_weight, values.dtype)
            weights = weights * ops.reshape(sample_weight, (-1,) + (1,) * (values.ndim - 1))
        self.total.assign_add(ops.sum(values * weights))
        self.count.assign_add(ops.sum(weights))

    def result(self):
        return ops.divide_no_nan(self.total, self.count)

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}


@serializable
class HuberMeanMetric(keras.metrics.Mean):
    """The Huber loss averaged as `keras.metrics.Mean` averages: the chapter's simpler version.

    `Mean` keeps the running total and count and applies `sample_weight` (one weight per
    sample), so it works as a `compile(weighted_metrics=[...])` entry. Each sample contributes
    its Huber loss averaged over its last axis, as a Keras loss does.

    Args:
        threshold: the Huber threshold; positive.
        **kwargs: `name`, `dtype`.
    """

    def __init__(self, threshold=DEFAULT_THRESHOLD, name="huber_mean", **kwargs):
        super().__init__(name=name, **kwargs)
        self.threshold = _check_threshold(threshold)

    def update_state(self, y_true, y_pred, sample_weight=None):
        per_sample = ops.mean(_huber(y_true, y_pred, self.threshold), axis=-1)
        return super().update_state(per_sample, sample_weight=sample_weight)

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}


@serializable
class RootMeanSquaredError(keras.metrics.Metric):
    """Document 002's RMSE between sparse labels (one-hot encoded here) and probabilities.

    `sqrt(sum_i w_i * sum_c (one_hot(y_i)_c - p_ic)**2 / sum_i w_i)`: squared errors are summed
    over the classes and averaged over the samples, weighted by `sample_weight` (1 by default).
    Keras's `keras.metrics.RootMeanSquaredError` on one-hot labels averages over the classes too,
    so this metric is exactly `sqrt(num_classes)` times Keras's on the same weighted stream.

    Args:
        name: the metric's name.
    """

    def __init__(self, name="rmse", **kwargs):
        super().__init__(name=name, **kwargs)
        self.mse_sum = self.add_weight(name="mse_sum", initializer="zeros")
        self.total_samples = self.add_weight(name="total_samples", initializer="zeros")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.convert_to_tensor(y_pred)
        n_true = ops.shape(ops.reshape(y_true, (-1,)))[0]
        if len(y_pred.shape) != 2 or (y_pred.shape[0] is not None and n_true != y_pred.shape[0]):
            raise ValueError(
                f"Expected class ids of shape (batch,) and probabilities of shape (batch, classes). "
                f"Received: y_true.shape={tuple(ops.shape(y_true))}, y_pred.shape={tuple(y_pred.shape)}")
        y_true = ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), ops.shape(y_pred)[1],
                             dtype=y_pred.dtype)
        per_sample = ops.sum(ops.square(y_true - y_pred), axis=-1)  # (batch,)
        weights = (ops.ones_like(per_sample) if sample_weight is None
                   else ops.cast(ops.reshape(sample_weight, (-1,)), per_sample.dtype))
        self.mse_sum.assign_add(ops.cast(ops.sum(per_sample * weights), self.mse_sum.dtype))
        self.total_samples.assign_add(ops.cast(ops.sum(weights), self.total_samples.dtype))

    def result(self):
        return ops.sqrt(ops.divide_no_nan(self.mse_sum, self.total_samples))

    def reset_state(self):
        self.mse_sum.assign(0.0)
        self.total_samples.assign(0.0)
