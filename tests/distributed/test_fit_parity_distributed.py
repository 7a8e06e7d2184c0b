"""The parity table under `MirroredStrategy`, where `fit` is itself right: every replica holds
as many samples (96 samples in global batches of 32 on 2 replicas) and the model has no
`model.losses` term. `train` and `fit` under the same strategy, from the same weights on the same
batches, end with the same history and weights (`tests/test_fit_parity.py` has the table on one
device; `test_distribute.py` has the cases where `fit` is wrong and `train` equals one device).
"""

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

from spec_impl import make_strategy, train
from spec_impl.testing import assert_allclose, digits_mlp

N_TRAIN, N_VAL, BATCH, EPOCHS = 96, 64, 32, 2
# Float32 sums per replica, then across: the order differs from one device's, by about 1e-7.
ATOL = 1e-5
SPARSE = "sparse_categorical_crossentropy"


def _data():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    return x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:N_TRAIN + N_VAL], y[N_TRAIN:N_TRAIN + N_VAL]


def _two_heads():
    inputs = keras.Input((64,), name="pixels")
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    return keras.Model(inputs, {"digit": keras.layers.Dense(10, activation="softmax",
                                                             name="digit")(hidden),
                                "size": keras.layers.Dense(1, name="size")(hidden)})


_mlp = functools.partial(digits_mlp, seed=None)  # each row sets the weights itself


def _plain_top_class(y_true, y_pred):
    """A metric as a plain function."""
    hit = tf.cast(tf.argmax(y_pred, axis=-1), y_true.dtype) == y_true
    return tf.cast(hit, "float32")


WEIGHTS = np.linspace(0.5, 1.5, N_TRAIN).astype("float32")
ROWS = {
    "metrics-names": dict(metrics=["acc", keras.metrics.SparseTopKCategoricalAccuracy]),
    "metrics-function": dict(metrics=[_plain_top_class]),
    "sample_weight-weighted_metrics": dict(weighted_metrics=["accuracy"],
                                           fit=dict(sample_weight=WEIGHTS)),
    "class_weight": dict(fit=dict(class_weight={c: 1.0 + c / 10 for c in range(10)})),
    "validation_data-weighted": dict(validation=True),
    "dict-outputs-loss_weights": dict(model=_two_heads, loss={"digit": SPARSE, "size": "mse"},
                                      loss_weights={"digit": 1.0, "size": 0.5},
                                      metrics={"digit": ["accuracy"]}),
}


def _compile_args(row):
    args = {k: row[k] for k in ("metrics", "weighted_metrics", "loss_weights") if k in row}
    if isinstance(args.get("metrics"), list):  # metric classes: a fresh object per run
        args["metrics"] = [m(k=3) if isinstance(m, type) else m for m in args["metrics"]]
    return {"loss": row.get("loss", SPARSE), **args}


def _targets(row, x, y):
    return {"digit": y, "size": x.mean(axis=1, keepdims=True)} if "model" in row else y


@pytest.mark.parametrize("name", list(ROWS))
def test_train_equals_fit_under_mirrored_strategy(name):
    row = ROWS[name]
    strategy = make_strategy("mirrored", 2)
    x, y, x_val, y_val = _data()
    kwargs = dict(batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0, **row.get("fit", {}))
    if row.get("validation"):
        kwargs["validation_data"] = (x_val, y_val, np.linspace(2.0, 0.0, N_VAL).astype("float32"))
    runs = []
    for loop in ("fit", "train"):
        with strategy.scope():
            keras.utils.set_random_seed(0)
            model = row.get("model", _mlp)()
            optimizer = keras.optimizers.SGD(0.1)
        if loop == "fit":
            with strategy.scope():
                model.compile(optimizer=optimizer, **_compile_args(row))
            history = model.fit(x, _targets(row, x, y), **kwargs)
        else:
            history = train(model, x, _targets(row, x, y), optimizer=optimizer, strategy=strategy,
                            **_compile_args(row), **kwargs)
        runs.append((model, history))
    (reference, fit_history), (model, history) = runs
    assert sorted(history.history) == sorted(fit_history.history)
    for key, values in fit_history.history.items():
        assert_allclose(history.history[key], values, atol=ATOL, err_msg=key)
    for got, want in zip(model.get_weights(), reference.get_weights(), strict=True):
        assert_allclose(got, want, atol=ATOL)


def test_a_models_own_train_step_under_mirrored_strategy_as_under_fit():
    # Document 002's CustomModel: its train_step and test_step run on each replica under both
    # loops, and their logs are reduced as fit reduces them (the mean over replicas).
    from spec_impl import CustomModel

    strategy = make_strategy("mirrored", 2)
    x, y, x_val, y_val = _data()
    runs = []
    for loop in ("fit", "train"):
        with strategy.scope():
            keras.utils.set_random_seed(0)
            inputs = keras.Input((64,))
            model = CustomModel(inputs, keras.layers.Dense(10, activation="softmax")(
                keras.layers.Dense(16, activation="relu")(inputs)))
            model.compile(keras.optimizers.SGD(0.1))
        kwargs = dict(batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0,
                      validation_data=(x_val, y_val))
        if loop == "fit":
            history = model.fit(x, y, **kwargs)
        else:
            history = train(model, x, y, strategy=strategy, **kwargs)
        runs.append((model, history))
    (reference, fit_history), (model, history) = runs
    assert sorted(history.history) == sorted(fit_history.history) == [
        "accuracy", "loss", "val_accuracy", "val_loss"]
    for key, values in fit_history.history.items():
        assert_allclose(history.history[key], values, atol=ATOL, err_msg=key)
    assert len(model.get_weights()) == len(reference.get_weights())
    for got, want in zip(model.get_weights(), reference.get_weights(), strict=True):
        assert_allclose(got, want, atol=ATOL)
