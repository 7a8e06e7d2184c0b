"""`train` against `fit`: the parity table.

Every row trains the same model from the same weights on the same batches twice, once with
`model.compile(...)` + `model.fit(...)` and once with `spec_impl.train(...)` given the same
arguments, and asserts the same history (keys first, then values) and the same weights. Each
row runs in `function` mode with one step per call, and (marked slow) in `eager` mode against
`fit` with `run_eagerly=True` and in `xla` mode with two steps per call against
`fit(jit_compile=True, steps_per_execution=2)`: the same execution on both sides. (Keras's
per-output loss trackers weigh batches by their static size, which is unknown in a graph: a
graph `fit` averages per-batch means where an eager one weighs them by batch size.)

The inputs are ordinary Keras code the package did not write: plain-function losses and
metrics, Keras's callbacks, generators, `PyDataset`, dict and multi-output models.
"""

import csv
import functools
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from spec_impl import train
from spec_impl.testing import assert_allclose, digits_arrays, digits_mlp, read_scalars

N_TRAIN, N_VAL, BATCH = 100, 64, 32  # 4 steps per epoch, the last one partial (4 samples)
EPOCHS = 3
# float32 sums in another order (XLA fuses, eager does not): the weights after 12 Adam steps
# differ by a few ulp of the update, well under 1e-5.
ATOL = 1e-5
VARIANTS = [
    pytest.param(("function", 1), id="function"),
    pytest.param(("eager", 1), id="eager", marks=pytest.mark.slow),
    pytest.param(("xla", 2), id="xla-k2", marks=pytest.mark.slow),
]


digits = functools.partial(digits_arrays, N_TRAIN, N_VAL)
mlp = functools.partial(digits_mlp, seed=None)  # each row sets the weights itself


def regression():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N_TRAIN + N_VAL, 8)).astype("float32")
    y = (x @ rng.normal(size=(8, 1)) + 0.1).astype("float32")
    return x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:]


def regressor():
    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, activation="relu"),
                             keras.layers.Dense(1)])


def two_heads():
    """Multi-input, multi-output, dict in and out (document 002's ticket model, in small)."""
    pixels, extra = keras.Input((64,), name="pixels"), keras.Input((3,), name="extra")
    hidden = keras.layers.Dense(16, activation="relu")(keras.layers.Concatenate()([pixels, extra]))
    outputs = {"digit": keras.layers.Dense(10, activation="softmax", name="digit")(hidden),
               "size": keras.layers.Dense(1, name="size")(hidden)}
    return keras.Model({"pixels": pixels, "extra": extra}, outputs)


def two_heads_data():
    x, y, x_val, y_val = digits()

    def inputs(a):
        return {"pixels": a, "extra": a[:, :3] * 2.0}

    def targets(a, labels):
        return {"digit": labels, "size": a.sum(axis=1, keepdims=True) / 64.0}

    return inputs(x), targets(x, y), inputs(x_val), targets(x_val, y_val)


def plain_mae(y_true, y_pred):
    """A metric as a plain function (Keras names it `plain_mae`)."""
    return tf.reduce_mean(tf.abs(tf.cast(y_true, y_pred.dtype) - y_pred), axis=-1)


def plain_mse(y_true, y_pred):
    """A loss as a plain function."""
    return tf.reduce_mean(tf.square(y_true - y_pred), axis=-1)


class Digits(keras.utils.PyDataset):
    """The training digits as a `PyDataset` of 4 batches."""

    def __init__(self):
        super().__init__()
        self.x, self.y = digits()[:2]

    def __len__(self):
        return -(-N_TRAIN // BATCH)

    def __getitem__(self, index):
        part = slice(index * BATCH, (index + 1) * BATCH)
        return self.x[part], self.y[part]


def generator(x, y):
    """An endless Python generator of the batches in order (with `steps_per_epoch`)."""
    while True:
        for start in range(0, len(x), BATCH):
            yield x[start:start + BATCH], y[start:start + BATCH]


SPARSE = "sparse_categorical_crossentropy"


def adam():
    return keras.optimizers.Adam(1e-2)


# Each row: the model, the data (x, y, x_val, y_val), compile's arguments, fit's arguments.
# Callables among fit's arguments are called once per run (fresh callbacks, generators).
def _row(model=mlp, data=digits, **settings):
    compile_args = {k: settings.pop(k) for k in ("loss", "metrics", "loss_weights",
                                                 "weighted_metrics", "optimizer")
                    if k in settings}
    compile_args.setdefault("loss", SPARSE)
    compile_args.setdefault("optimizer", adam)
    return model, data, compile_args, settings


def _dataset(with_weights=False):
    def make(x, y, *_):
        weights = np.linspace(0.5, 1.5, len(y)).astype("float32")
        parts = (x, y, weights) if with_weights else (x, y)
        return tf.data.Dataset.from_tensor_slices(parts).batch(BATCH)
    return make


ROWS = {
    # losses
    "loss-name": _row(),
    "loss-function": _row(model=regressor, data=regression, loss=plain_mse),
    "loss-object": _row(loss=keras.losses.SparseCategoricalCrossentropy()),
    "loss-list": _row(model=two_heads, data=two_heads_data, loss=[SPARSE, "mse"]),
    "loss-dict-loss_weights": _row(model=two_heads, data=two_heads_data,
                                   loss={"digit": SPARSE, "size": "mse"},
                                   loss_weights={"digit": 1.0, "size": 0.25}),
    # metrics
    "metrics-mae": _row(model=regressor, data=regression, loss="mse", metrics=["mae"]),
    "metrics-acc": _row(metrics=["acc"]),
    "metrics-accuracy": _row(metrics=["accuracy"]),
    "metrics-function": _row(model=regressor, data=regression, loss="mse", metrics=[plain_mae]),
    "metrics-object": _row(metrics=lambda: [keras.metrics.SparseTopKCategoricalAccuracy(k=3)]),
    "metrics-per-output-dict": _row(model=two_heads, data=two_heads_data,
                                    loss={"digit": SPARSE, "size": "mse"},
                                    metrics={"digit": ["accuracy"], "size": ["mae"]}),
    "weighted_metrics": _row(metrics=["accuracy"], weighted_metrics=["accuracy"],
                             sample_weight=lambda y: np.where(y % 2 == 0, 2.0, 0.5)),
    # sample and class weights
    "sample_weight-arrays": _row(sample_weight=lambda y: np.linspace(0.5, 1.5, len(y))),
    "sample_weight-dataset": _row(dataset=_dataset(with_weights=True)),
    "class_weight": _row(class_weight={c: 1.0 + c / 10 for c in range(10)}),
    # validation
    "validation_data-arrays": _row(validation="arrays"),
    "validation_data-dataset": _row(validation="dataset"),
    "validation_data-weighted": _row(validation="weighted"),
    "validation_data-float64-int32": _row(validation="float64-int32"),
    "validation_split": _row(validation_split=0.25),
    "validation_freq": _row(validation="arrays", validation_freq=2),
    # epochs and steps
    "initial_epoch": _row(initial_epoch=1),
    "steps_per_epoch-repeated-dataset": _row(dataset=lambda x, y, *_: tf.data.Dataset
                                             .from_tensor_slices((x, y)).batch(BATCH).repeat(),
                                             steps_per_epoch=4),
    "shuffle-arrays": _row(shuffle=True),
    # other inputs
    "generator": _row(dataset=lambda x, y, *_: generator(x, y), steps_per_epoch=4),
    "PyDataset": _row(dataset=lambda *_: Digits()),
    "dict-multi-input-multi-output": _row(model=two_heads, data=two_heads_data,
                                          loss={"digit": SPARSE, "size": "mse"},
                                          validation="arrays"),
    # optimizer features
    "use_ema": _row(optimizer=lambda: keras.optimizers.Adam(1e-2, use_ema=True,
                                                            ema_overwrite_frequency=None)),
    "gradient_accumulation_steps": _row(
        optimizer=lambda: keras.optimizers.Adam(1e-2, gradient_accumulation_steps=2)),
    "clipnorm": _row(optimizer=lambda: keras.optimizers.SGD(0.5, clipnorm=0.1)),
    "clipvalue": _row(optimizer=lambda: keras.optimizers.SGD(0.5, clipvalue=0.01)),
    "global_clipnorm": _row(optimizer=lambda: keras.optimizers.SGD(0.5, global_clipnorm=0.1)),
    "learning-rate-schedule": _row(optimizer=lambda: keras.optimizers.SGD(
        keras.optimizers.schedules.ExponentialDecay(0.5, decay_steps=2, decay_rate=0.5))),
}


def _fit_arguments(data, settings, tmp):
    """`(x, y, fit kwargs)` for one run: callables made fresh, validation resolved."""
    x, y, x_val, y_val = data()
    kwargs = dict(settings)
    validation = kwargs.pop("validation", None)
    dataset = kwargs.pop("dataset", None)
    if "sample_weight" in kwargs:
        kwargs["sample_weight"] = kwargs["sample_weight"](y).astype("float32")
    if validation == "arrays":
        kwargs["validation_data"] = (x_val, y_val)
    elif validation == "dataset":
        kwargs["validation_data"] = tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(16)
    elif validation == "weighted":
        kwargs["validation_data"] = (x_val, y_val, np.linspace(2.0, 0.0, N_VAL).astype("float32"))
    elif validation == "float64-int32":
        kwargs["validation_data"] = (x_val.astype("float64"), y_val.astype("int32"))
    if "callbacks" in kwargs:
        tmp.mkdir(parents=True)
        kwargs["callbacks"] = kwargs["callbacks"](tmp)
    kwargs.setdefault("shuffle", False)  # (fit warns of shuffle=True on a dataset)
    if dataset is not None:
        return dataset(x, y, x_val, y_val), None, kwargs
    kwargs["batch_size"] = BATCH
    return x, y, kwargs


def _fresh(compile_args):
    """compile's arguments with a new optimizer (and new metric objects) for one run."""
    fresh = dict(compile_args, optimizer=compile_args["optimizer"]())
    if callable(fresh.get("metrics")):
        fresh["metrics"] = fresh["metrics"]()
    return fresh


def run_both(row, variant, tmp_path):
    """`((fit model, fit History), (train model, train History))` of one row."""
    model_fn, data, compile_args, settings = row
    mode, k = variant
    keras.utils.set_random_seed(0)
    reference = model_fn()
    initial = reference.get_weights()
    reference.compile(**_fresh(compile_args), steps_per_execution=k, run_eagerly=mode == "eager",
                      jit_compile=mode == "xla")
    keras.utils.set_random_seed(1)  # the same draws (shuffle) in both runs
    x, y, kwargs = _fit_arguments(data, settings, tmp_path / "fit")
    fit_history = reference.fit(x, y, epochs=EPOCHS, verbose=0, **kwargs)

    model = model_fn()
    model.set_weights(initial)
    compiled = _fresh(compile_args)
    keras.utils.set_random_seed(1)
    x, y, kwargs = _fit_arguments(data, settings, tmp_path / "train")
    history = train(model, x, y, epochs=EPOCHS, verbose=0, mode=mode, steps_per_execution=k,
                    **compiled, **kwargs)
    return (reference, fit_history), (model, history)


def assert_same_histories(ours, theirs, atol=ATOL):
    """Keys first (a key one side lacks fails), then every epoch's value."""
    assert sorted(ours.history) == sorted(theirs.history)
    assert ours.epoch == theirs.epoch
    for name, values in theirs.history.items():
        assert_allclose(ours.history[name], values, atol=atol, err_msg=name)


def assert_same_weights(ours, theirs, atol=ATOL):
    assert len(ours.weights) == len(theirs.weights)
    for got, want in zip(ours.get_weights(), theirs.get_weights(), strict=True):
        assert_allclose(got, want, atol=atol)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", list(ROWS))
def test_train_equals_fit(name, variant, tmp_path):
    (reference, fit_history), (model, history) = run_both(ROWS[name], variant, tmp_path)
    assert isinstance(history, keras.callbacks.History) and model.history is history
    assert_same_histories(history, fit_history)
    assert_same_weights(model, reference)


# ---- callbacks: Keras's own, each under both loops ----

def _csv_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _with_callbacks(make, **settings):
    return _row(validation="arrays", callbacks=make, **settings)


CALLBACK_ROWS = {
    "EarlyStopping-restore_best_weights": _with_callbacks(lambda tmp: [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=0, min_delta=10.0,
                                      restore_best_weights=True)]),
    "ModelCheckpoint-save_best_only": _with_callbacks(lambda tmp: [
        keras.callbacks.ModelCheckpoint(str(tmp / "e{epoch}.keras"), monitor="val_loss",
                                        save_best_only=True)]),
    "ReduceLROnPlateau": _with_callbacks(lambda tmp: [
        keras.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0,
                                          min_delta=10.0)]),
    "LearningRateScheduler": _with_callbacks(lambda tmp: [
        keras.callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.5)]),
    "CSVLogger": _with_callbacks(lambda tmp: [keras.callbacks.CSVLogger(str(tmp / "log.csv"))]),
    "TerminateOnNaN": _with_callbacks(lambda tmp: [keras.callbacks.TerminateOnNaN()]),
    "TensorBoard": _with_callbacks(lambda tmp: [keras.callbacks.TensorBoard(str(tmp / "tb"))]),
    "LambdaCallback": _with_callbacks(lambda tmp: [keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: os.makedirs(tmp / f"epoch{epoch}-{len(logs)}"))]),
}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", list(CALLBACK_ROWS))
def test_keras_callbacks_act_as_under_fit(name, variant, tmp_path):
    (reference, fit_history), (model, history) = run_both(CALLBACK_ROWS[name], variant, tmp_path)
    assert_same_histories(history, fit_history)
    assert_same_weights(model, reference)
    # what each callback left on disk is the same under both loops
    fit_files = sorted(os.listdir(tmp_path / "fit")) if (tmp_path / "fit").exists() else []
    train_files = sorted(os.listdir(tmp_path / "train")) if (tmp_path / "train").exists() else []
    assert train_files == fit_files
    if name == "EarlyStopping-restore_best_weights":
        assert history.epoch == [0, 1]  # no later epoch improves by 10: stopped at the second
    if name == "ModelCheckpoint-save_best_only":
        best = np.argmin(history.history["val_loss"]) + 1
        assert f"e{best}.keras" in train_files
    if name in ("ReduceLROnPlateau", "LearningRateScheduler"):
        assert history.history["learning_rate"][-1] < history.history["learning_rate"][0]
    if name == "CSVLogger":
        ours, theirs = _csv_rows(tmp_path / "train" / "log.csv"), _csv_rows(tmp_path / "fit" / "log.csv")
        assert [sorted(r) for r in ours] == [sorted(r) for r in theirs]
        for a, b in zip(ours, theirs, strict=True):
            assert_allclose([float(a[k]) for k in sorted(a)], [float(b[k]) for k in sorted(a)],
                            atol=ATOL)
    if name == "TensorBoard":
        for side in ("train", "validation"):
            ours = read_scalars(tmp_path / "train" / "tb" / side)
            theirs = read_scalars(tmp_path / "fit" / "tb" / side)
            assert sorted(ours) == sorted(theirs)
            for tag, points in theirs.items():
                assert [s for s, _ in ours[tag]] == [s for s, _ in points]
                assert_allclose([v for _, v in ours[tag]], [v for _, v in points], atol=ATOL)
    if name == "LambdaCallback":
        assert train_files == [f"epoch{e}-2" for e in range(EPOCHS)]  # loss and val_loss


class Interrupt(keras.callbacks.Callback):
    """Stops a run with an exception at the end of epoch `at` (0-based), as a crash would."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.at:
            raise RuntimeError(f"interrupted after epoch {epoch}")


def _one_loop(loop, model, x, y, mode, k, args):
    """`fit` (compiled here) or `train` with the same arguments."""
    if loop == "fit":
        model.compile(adam(), SPARSE, steps_per_execution=k, run_eagerly=mode == "eager",
                      jit_compile=mode == "xla")
        return model.fit(x, y, **args)
    return train(model, x, y, optimizer=adam(), loss=SPARSE, mode=mode, steps_per_execution=k,
                 **args)


@pytest.mark.parametrize("variant", VARIANTS)
def test_backup_and_restore_resumes_as_under_fit(variant, tmp_path):
    # Each loop: a run interrupted after epoch 2 of 3, then a rerun with the same
    # BackupAndRestore folder, which resumes at epoch 3 from the backed-up weights.
    mode, k = variant
    x, y, x_val, y_val = digits()
    keras.utils.set_random_seed(0)
    initial = mlp().get_weights()
    results = {}
    for loop in ("fit", "train"):
        runs = []
        for callbacks in ([Interrupt(at=1)], []):
            model = mlp()
            model.set_weights(initial)
            backup = keras.callbacks.BackupAndRestore(str(tmp_path / loop))
            args = dict(epochs=EPOCHS, batch_size=BATCH, shuffle=False, verbose=0,
                        validation_data=(x_val, y_val), callbacks=[backup, *callbacks])
            if callbacks:
                with pytest.raises(RuntimeError, match="interrupted after epoch 1"):
                    _one_loop(loop, model, x, y, mode, k, args)
            else:
                runs.append((model, _one_loop(loop, model, x, y, mode, k, args)))
        results[loop] = runs[0]
    (reference, fit_history), (model, history) = results["fit"], results["train"]
    assert history.epoch == fit_history.epoch == [2]  # only the last epoch ran again
    assert_same_histories(history, fit_history)
    assert_same_weights(model, reference)


# ---- what train refuses where fit would loop forever or fail late ----

def test_a_repeated_dataset_without_steps_per_epoch_is_refused_before_the_first_step():
    x, y, *_ = digits()
    keras.utils.set_random_seed(0)
    model = mlp()
    before = model.get_weights()
    endless = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH).repeat()
    with pytest.raises(ValueError, match=r"`x` is an infinitely repeated dataset, so an epoch "
                                         r"never ends: pass `steps_per_epoch`"):
        train(model, endless, loss=SPARSE, optimizer="sgd", verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))


def test_fit_overruns_steps_per_epoch_that_steps_per_execution_does_not_divide():
    # fit(steps_per_epoch=3) with steps_per_execution=2 starts calls at steps 0 and 2, each of
    # 2 steps: 4 steps per epoch. train's last call runs the 1 step left: 3 per epoch.
    x, y, *_ = digits()
    endless = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH).repeat()
    runs = {}
    for loop in ("fit", "train"):
        keras.utils.set_random_seed(0)
        model = mlp()
        if loop == "fit":
            model.compile("sgd", SPARSE, steps_per_execution=2)
            model.fit(endless, epochs=2, steps_per_epoch=3, verbose=0, shuffle=False)
        else:
            train(model, endless, epochs=2, steps_per_epoch=3, verbose=0, optimizer="sgd",
                  loss=SPARSE, steps_per_execution=2)
        runs[loop] = int(model.optimizer.iterations)
    assert runs == {"fit": 8, "train": 6}


def test_train_uses_the_compile_of_an_already_compiled_model():
    # `train(model, x, y)` after `model.compile(...)`, as `fit` is called.
    x, y, *_ = digits()
    keras.utils.set_random_seed(0)
    model = mlp()
    model.compile(keras.optimizers.SGD(0.1), SPARSE, metrics=["acc"])
    optimizer = model.optimizer
    history = train(model, x, y, batch_size=BATCH, verbose=0)
    assert model.optimizer is optimizer and int(optimizer.iterations) == 4
    assert sorted(history.history) == ["acc", "loss"]
