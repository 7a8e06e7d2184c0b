"""Batch-norm statistics after short training, and their recalibration."""

import keras
import numpy as np
import pytest

from spec_impl import MiniInception, load_dataset, recalibrate_batch_norm, train
from spec_impl.testing import assert_allclose
from spec_impl.trainer.batchnorm import batch_norm_layers

MINI_INCEPTION_BATCH_NORMS = 19  # 1 conv module + 8 inception x 2 + 2 downsample


def test_finds_every_nested_batch_norm():
    model = MiniInception()
    model.build((None, 32, 32, 3))
    assert len(batch_norm_layers(model)) == MINI_INCEPTION_BATCH_NORMS


def test_recalibration_is_the_average_of_batch_statistics():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.BatchNormalization()])
    rng = np.random.default_rng(0)
    batches = [rng.normal(5.0, 2.0, size=(n, 3)).astype("float32") for n in (8, 8, 4)]
    assert recalibrate_batch_norm(model, batches) == 3
    bn = model.layers[0]
    weights = np.array([8, 8, 4]) / 20
    assert_allclose(bn.moving_mean, sum(w * b.mean(0) for w, b in zip(weights, batches, strict=True)),
                    atol=1e-5)
    assert_allclose(bn.moving_variance, sum(w * b.var(0) for w, b in zip(weights, batches, strict=True)),
                    atol=1e-4)
    assert bn.momentum == 0.99  # restored
    assert_allclose(bn.gamma, np.ones(3), atol=0, rtol=0)  # weights untouched


def test_recalibration_needs_a_batch():
    model = keras.Sequential([keras.Input((3,)), keras.layers.BatchNormalization()])
    with pytest.raises(ValueError, match="at least one batch"):
        recalibrate_batch_norm(model, [])


@pytest.mark.slow
def test_short_mini_inception_run_needs_recalibrated_statistics():
    # Document 000's log: validation accuracy 0.10 after the first epoch while training accuracy
    # climbs. The moving averages (momentum 0.99) lag after 45 steps; recomputing them from the
    # training batches brings inference in line with training.
    keras.utils.set_random_seed(0)
    (x, y), (x_test, y_test) = load_dataset("digits", input_shape=(32, 32, 3))
    model = MiniInception()
    history = train(model, x, y, shuffle=False, loss="sparse_categorical_crossentropy",
                    optimizer=keras.optimizers.Adam(1e-3), epochs=1, batch_size=32, verbose=0).history
    assert history["loss"][-1] < 1.0

    def accuracy():
        return float((model.predict(x_test, verbose=0).argmax(1) == y_test).mean())

    stale = accuracy()
    recalibrate_batch_norm(model, [x[i:i + 32] for i in range(0, len(x), 32)])
    fresh = accuracy()
    assert fresh > 0.9
    assert fresh - stale > 0.3


def test_a_recalibrated_model_is_garbage_collected():
    # The per-model cache of traced forward passes must not keep its models alive.
    import gc
    import weakref

    from spec_impl.trainer.batchnorm import _FORWARDS

    model = keras.Sequential([keras.Input((3,)), keras.layers.BatchNormalization()])
    recalibrate_batch_norm(model, [np.ones((4, 3), "float32")])
    assert model in _FORWARDS
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None
