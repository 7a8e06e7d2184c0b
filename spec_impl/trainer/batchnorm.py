"""Recalibrating batch-norm statistics after short training ("precise BN").

BatchNormalization normalizes with the batch's statistics in training and with moving averages
(momentum 0.99) at inference. After a few hundred steps the averages still carry a good share
of their initial values (0.99**225 ~ 10%) and lag the fast-changing weights; through the 19
batch norms of MiniInception the errors compound, and inference accuracy can sit at chance while
training accuracy is high (document 000's own log: val acc 0.10 after one epoch). Recomputing
each layer's statistics as the average over a pass of training batches, with the weights frozen,
removes the gap.
"""

import weakref

import keras
import numpy as np
import tensorflow as tf

from spec_impl.trainer import keras_api


def batch_norm_layers(model):
    """Every `BatchNormalization` layer inside `model`, however deeply nested."""
    return [layer for layer in keras_api.all_layers(model)
            if isinstance(layer, keras.layers.BatchNormalization)]


_FORWARDS = weakref.WeakKeyDictionary()


def _training_forward(model):
    """One `tf.function` per model, traced (once) with every batch norm's momentum at 0.

    The function holds the model only through a weak reference: a value that referred to its
    own key would keep every recalibrated model alive in this cache.
    """
    if model not in _FORWARDS:
        ref = weakref.ref(model)
        _FORWARDS[model] = tf.function(lambda x: ref()(x, training=True), reduce_retracing=True)
    return _FORWARDS[model]


def recalibrate_batch_norm(model, data, max_batches=None):
    """Set every batch norm's moving mean / variance to their average over `data`'s batches.

    Weights are not changed; layers other than batch norms run as in training (dropout
    included, which does not touch any variable).

    Args:
        model: a built Keras model.
        data: an iterable of input batches, or of `(x, y)` batches (a `tf.data.Dataset` works).
        max_batches: stop after this many batches.

    Returns:
        The number of batches used (0 when the model has no batch norm).
    """
    layers = batch_norm_layers(model)
    if not layers:
        return 0
    momenta = [bn.momentum for bn in layers]
    means = [np.zeros(bn.moving_mean.shape, "float64") for bn in layers]
    variances = [np.zeros(bn.moving_variance.shape, "float64") for bn in layers]
    for bn in layers:
        bn.momentum = 0.0  # each training-mode call then stores exactly its batch's statistics
    forward = _training_forward(model)
    seen = 0
    batches = 0
    try:
        for batch in data:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            n = int(tf.nest.flatten(x)[0].shape[0])
            forward(x)
            for i, bn in enumerate(layers):
                means[i] += n * bn.moving_mean.numpy()
                variances[i] += n * bn.moving_variance.numpy()
            seen += n
            batches += 1
            if max_batches is not None and batches >= max_batches:
                break
    finally:
        for bn, momentum in zip(layers, momenta, strict=True):
            bn.momentum = momentum
    if seen == 0:
        raise ValueError("Expected at least one batch to recalibrate batch norm. Received none.")
    for i, bn in enumerate(layers):
        bn.moving_mean.assign((means[i] / seen).astype(bn.moving_mean.dtype))
        bn.moving_variance.assign((variances[i] / seen).astype(bn.moving_variance.dtype))
    return batches
