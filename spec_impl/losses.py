"""The Huber loss three ways (document 003): a function, a factory, a `keras.losses.Loss`.

All three equal `keras.losses.Huber(delta=threshold)`: `error**2 / 2` where |error| is below the
threshold, `threshold * |error| - threshold**2 / 2` beyond it (the two meet at the threshold).
`huber_fn` and `create_huber` are deliberately left unregistered, as in the document: a model
compiled with them reloads only with `custom_objects`. `HuberLoss` is registered and keeps its
threshold through `get_config`.
"""

import keras
from keras import ops
from keras.src.losses.loss import squeeze_or_expand_to_same_rank  # what Keras's losses use

from spec_impl._base import serializable

DEFAULT_THRESHOLD = 1.0


def _check_threshold(threshold):
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not threshold > 0:
        raise ValueError(f"Expected a positive threshold. Received: threshold={threshold!r}")
    return float(threshold)


def align_targets(y_true, y_pred):
    """`y_true`, `y_pred` as float tensors of one shape, as Keras's losses take them.

    An integer `y_pred` is cast to float32 and `y_true` to `y_pred`'s dtype; a trailing axis of
    size 1 is squeezed or added so that `(batch, 1)` meets `(batch,)` (Keras's
    `squeeze_or_expand_to_same_rank`), instead of broadcasting to `(batch, batch)`.

    Raises:
        ValueError: shapes that still differ, naming both.
    """
    y_pred = ops.convert_to_tensor(y_pred)
    if not keras.backend.is_float_dtype(y_pred.dtype):
        y_pred = ops.cast(y_pred, keras.config.floatx())
    y_true = ops.cast(y_true, y_pred.dtype)
    y_true, y_pred = squeeze_or_expand_to_same_rank(y_true, y_pred)
    if len(y_true.shape) != len(y_pred.shape) or any(
            a is not None and b is not None and a != b
            for a, b in zip(y_true.shape, y_pred.shape, strict=True)):
        raise ValueError(f"Expected y_true and y_pred of one shape. Received: "
                         f"y_true.shape={tuple(y_true.shape)}, y_pred.shape={tuple(y_pred.shape)}")
    return y_true, y_pred


def _huber(y_true, y_pred, threshold):
    y_true, y_pred = align_targets(y_true, y_pred)
    error = y_true - y_pred
    is_small_error = ops.abs(error) < threshold
    squared_loss = ops.square(error) / 2
    linear_loss = threshold * ops.abs(error) - threshold**2 / 2
    return ops.where(is_small_error, squared_loss, linear_loss)


def huber_fn(y_true, y_pred):
    """Element-wise Huber loss with threshold 1 (document 003's first version)."""
    return _huber(y_true, y_pred, DEFAULT_THRESHOLD)


def create_huber(threshold=DEFAULT_THRESHOLD):
    """A Huber loss function for `threshold`; the threshold is not saved with a model.

    Args:
        threshold: where the loss turns from quadratic to linear; positive.

    Returns:
        An element-wise loss function named `huber_fn`.
    """
    threshold = _check_threshold(threshold)

    def huber_fn(y_true, y_pred):
        return _huber(y_true, y_pred, threshold)

    return huber_fn


@serializable
class HuberLoss(keras.losses.Loss):
    """Huber loss as a `keras.losses.Loss` whose threshold survives saving.

    Args:
        threshold: where the loss turns from quadratic to linear; positive.
        **kwargs: `name`, `reduction`, `dtype` as for any Keras loss.
    """

    def __init__(self, threshold=DEFAULT_THRESHOLD, **kwargs):
        self.threshold = _check_threshold(threshold)
        super().__init__(**kwargs)

    def call(self, y_true, y_pred):
        return _huber(y_true, y_pred, self.threshold)

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}
