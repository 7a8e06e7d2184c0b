"""The training engine: modes, tracing, TensorBoard, progress, callbacks, parity with `fit`,
checkpoint / resume, and the checks before the first step."""

import os
import re
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from spec_impl import LossHistory, train
from spec_impl._validation import MODES
from spec_impl.testing import assert_allclose, digits_mlp, read_scalars
from spec_impl.trainer.checkpointing import TrainingCheckpoint
from spec_impl.trainer.engine import Trainer

N_TRAIN, BATCH = 100, 32  # 4 steps per epoch, the last one partial (4 samples)
STEPS = -(-N_TRAIN // BATCH)
SPARSE = "sparse_categorical_crossentropy"


def quiet_train(model, data, **kwargs):
    """`train` on an `(x, y)` pair in a fixed order, as `fit(shuffle=False)`."""
    kwargs.setdefault("loss", "sparse_categorical_crossentropy")
    kwargs.setdefault("optimizer", keras.optimizers.Adam(1e-2))
    kwargs.setdefault("verbose", 0)
    kwargs.setdefault("batch_size", BATCH)
    kwargs.setdefault("shuffle", False)
    return train(model, *data, **kwargs).history


def test_unknown_mode_lists_the_modes(digits):
    with pytest.raises(ValueError, match=r"one of eager, function, xla, auto. Received: mode='jit'"):
        quiet_train(digits_mlp(32), digits[0], mode="jit")


def test_history_has_one_value_per_epoch_and_learns(digits):
    history = quiet_train(digits_mlp(32), digits[0], epochs=3, validation_data=digits[1],
                          metrics=["accuracy"])
    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 3 for v in history.values())
    # the values are fit's from the same weights on the same batches (rows of test_fit_parity)
    reference = digits_mlp(32)
    reference.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
    fit = reference.fit(*digits[0], batch_size=BATCH, epochs=3, shuffle=False, verbose=0,
                        validation_data=digits[1]).history
    for name, values in fit.items():
        assert_allclose(history[name], values, atol=1e-6, err_msg=name)


def test_step_functions_trace_once_across_epochs_and_a_partial_batch(digits):
    # The traced signature has a free batch axis, so the partial last batch (4 of 32) does not
    # add a trace: exactly one trace per step function after three epochs.
    trainer = Trainer(digits_mlp(32), loss="sparse_categorical_crossentropy", optimizer="adam")
    trainer.fit(*digits[0], epochs=3, validation_data=digits[1], verbose=0, shuffle=False)
    assert trainer.compiled_train_step.traced.experimental_get_tracing_count() == 1
    assert trainer.compiled_test_step.traced.experimental_get_tracing_count() == 1


def test_loss_includes_model_losses(digits):
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(
        10, activation="softmax", kernel_regularizer=keras.regularizers.L2(1.0))])
    x, y = digits[0]
    trainer = Trainer(model, loss="sparse_categorical_crossentropy", optimizer="sgd")
    model(x[:BATCH])
    expected = (keras.losses.SparseCategoricalCrossentropy()(y[:BATCH], model(x[:BATCH]))
                + tf.add_n(model.losses))
    assert_allclose(trainer.compiled_test_step((x[:BATCH], y[:BATCH]))[0], expected, rtol=1e-5)




def _fit_reference(model, data, epochs=1, **compiling):
    """Keras's `fit` from `model`'s weights, compiled with `compiling`: (history, weights)."""
    reference = digits_mlp(32)
    reference.set_weights(model.get_weights())
    reference.compile(**compiling)
    history = reference.fit(*data, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0)
    return history.history, reference.get_weights()


def _assert_as_fit(history, model, reference):
    fit_history, fit_weights = reference
    assert sorted(history) == sorted(fit_history)
    for name, values in fit_history.items():
        assert_allclose(history[name], values, atol=1e-6, err_msg=name)
    for got, want in zip(model.get_weights(), fit_weights, strict=True):
        assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("other, mode", [("Trainer", "function"), ("Trainer", "eager"),
                                         ("Trainer", "xla"), ("train", "function"),
                                         ("model.compile", "function")])
def test_a_trainer_used_after_another_compiled_the_model_reports_its_own_loss(digits, other, mode):
    # A second compile replaces the loss tracker, loss and metrics the first Trainer's traced
    # steps read: without a re-trace, they update the old ones and the epoch reads the new,
    # never updated, ones (loss 0.0, accuracy 0.0) while the weights still train.
    data = digits[0]
    model = digits_mlp(32)
    first = Trainer(model, optimizer=keras.optimizers.SGD(0.1), loss=SPARSE, metrics=["accuracy"],
                    mode=mode)
    first.fit(*data, batch_size=BATCH, shuffle=False, verbose=0)
    if other == "Trainer":
        Trainer(model, optimizer="adam", loss=SPARSE, mode=mode).fit(
            *data, batch_size=BATCH, shuffle=False, verbose=0)
    elif other == "train":
        quiet_train(model, data, optimizer="adam", loss=SPARSE, mode=mode)
    else:
        model.compile(optimizer="adam", loss=SPARSE)
    reference = _fit_reference(model, data, optimizer=keras.optimizers.SGD(0.1), loss=SPARSE,
                               metrics=["accuracy"])
    history = first.fit(*data, batch_size=BATCH, shuffle=False, verbose=0).history
    assert history["loss"][0] > 0.1
    _assert_as_fit(history, model, reference)
    assert model.optimizer is first.optimizer  # compiled again with the first Trainer's own


def test_a_trainer_without_settings_follows_the_models_new_compile(digits):
    # Made without compile settings, a Trainer uses the model's compile as it is now, as fit.
    data = digits[0]
    model = digits_mlp(32)
    model.compile(optimizer="sgd", loss=SPARSE)
    trainer = Trainer(model)
    trainer.fit(*data, batch_size=BATCH, shuffle=False, verbose=0)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=SPARSE, metrics=["accuracy"])
    reference = _fit_reference(model, data, optimizer=keras.optimizers.SGD(0.05), loss=SPARSE,
                               metrics=["accuracy"])
    _assert_as_fit(trainer.fit(*data, batch_size=BATCH, shuffle=False, verbose=0).history, model,
                   reference)


def test_tensorboard_scalars_per_batch_and_epoch(digits, tmp_path):
    epochs = 2
    history = quiet_train(digits_mlp(32), digits[0], epochs=epochs, validation_data=digits[1],
                          metrics=["accuracy"], log_dir=str(tmp_path))
    train_scalars = read_scalars(tmp_path / "train")
    val_scalars = read_scalars(tmp_path / "validation")
    tags = {"batch_loss", "batch_accuracy", "epoch_loss", "epoch_accuracy"}
    assert set(train_scalars) == tags and set(val_scalars) == tags
    assert [s for s, _ in train_scalars["batch_loss"]] == list(range(1, epochs * STEPS + 1))
    assert [s for s, _ in train_scalars["epoch_loss"]] == list(range(epochs))
    assert_allclose([v for _, v in train_scalars["epoch_loss"]], history["loss"])
    assert_allclose([v for _, v in val_scalars["epoch_loss"]], history["val_loss"])
    assert_allclose([v for _, v in val_scalars["epoch_accuracy"]], history["val_accuracy"])
    # The last batch scalar of an epoch is the epoch's running mean (document 000 logs per batch).
    assert train_scalars["batch_loss"][STEPS - 1][1] == pytest.approx(history["loss"][0], rel=1e-6)
    val_steps = len(digits[1][0]) // BATCH
    assert [s for s, _ in val_scalars["batch_loss"]] == list(range(1, epochs * val_steps + 1))


def _bar_text(out):
    """The progress bar's last state per line: what a terminal shows after the carriage
    returns and backspaces of Keras's `Progbar`, without colours or timings."""
    lines = [line.split("\r")[-1] for line in out.split("\n")]
    plain = [re.sub(r"\x1b\[[0-9;]*m|\x08", "", line) for line in lines]
    return [re.sub(r" \d+m?s \d+m?s/step", "", line) for line in plain]


def test_progress_bar_is_fits(digits, capsys):
    # The bar is Keras's ProgbarLogger: the lines fit prints, the values of this run.
    history = quiet_train(digits_mlp(32), digits[0], epochs=2, verbose=1, validation_data=digits[1])
    ours = _bar_text(capsys.readouterr().out)
    model = digits_mlp(32)
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    model.fit(*digits[0], epochs=2, verbose=1, validation_data=digits[1], batch_size=BATCH,
              shuffle=False)
    assert ours == _bar_text(capsys.readouterr().out)
    assert ours[0] == "Epoch 1/2" and ours[1].startswith(f"{STEPS}/{STEPS} ")
    assert ours[3].endswith(f"loss: {history['loss'][1]:.4f} - val_loss: "
                            f"{history['val_loss'][1]:.4f}")


def test_silent_when_verbose_zero(digits, capsys):
    quiet_train(digits_mlp(32), digits[0], epochs=1, verbose=0, validation_data=digits[1])
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("mode", MODES)
def test_modes_agree_with_fit(mode, digits):
    x, y = digits[0]
    reference = digits_mlp(32)
    initial = reference.get_weights()
    reference.compile(optimizer=keras.optimizers.Adam(1e-2),
                      loss="sparse_categorical_crossentropy")
    reference.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    model = digits_mlp(32)
    model.set_weights(initial)
    quiet_train(model, (x, y), optimizer=keras.optimizers.Adam(1e-2), mode=mode)
    for got, want in zip(model.get_weights(), reference.get_weights(), strict=True):
        assert_allclose(got, want, atol=1e-5)  # float32 reductions in a different order


def _fit_and_train(callbacks_for, digits, epochs=4, **kwargs):
    x, y = digits[0]
    results = {}
    for loop in ("fit", "train"):
        model = digits_mlp(32)
        callbacks = callbacks_for(loop)
        if loop == "fit":
            model.compile(optimizer=keras.optimizers.Adam(1e-2),
                          loss="sparse_categorical_crossentropy")
            history = model.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=False,
                                validation_data=digits[1], callbacks=callbacks, verbose=0,
                                **kwargs).history
        else:
            history = quiet_train(model, (x, y), epochs=epochs, validation_data=digits[1],
                                  callbacks=callbacks, **kwargs)
        results[loop] = (model, history, callbacks)
    return results


def test_early_stopping_stops_both_loops(digits):
    # min_delta is huge, so no epoch counts as an improvement: stop after patience + 1 epochs.
    results = _fit_and_train(
        lambda loop: [keras.callbacks.EarlyStopping(monitor="loss", min_delta=100, patience=1)],
        digits)
    for _, history, _ in results.values():
        assert len(history["loss"]) == 2


def test_model_checkpoint_keeps_only_improvements(digits, tmp_path):
    def callbacks_for(loop):
        return [keras.callbacks.ModelCheckpoint(str(tmp_path / loop / "e{epoch}.keras"),
                                                monitor="val_loss", save_best_only=True)]

    results = _fit_and_train(callbacks_for, digits, epochs=5)
    for loop, (_, history, _) in results.items():
        best, improving = np.inf, []
        for epoch, value in enumerate(history["val_loss"], start=1):
            if value < best:
                best = value
                improving.append(f"e{epoch}.keras")
        assert sorted(os.listdir(tmp_path / loop)) == sorted(improving)
        last_best = keras.models.load_model(tmp_path / loop / improving[-1])
        last_best.compile(loss="sparse_categorical_crossentropy")
        assert last_best.evaluate(*digits[1], verbose=0, batch_size=BATCH) == pytest.approx(
            min(history["val_loss"]), rel=1e-5)


def test_keras_tensorboard_callback_works_with_train(digits, tmp_path):
    quiet_train(digits_mlp(32), digits[0], epochs=2, validation_data=digits[1],
                callbacks=[keras.callbacks.TensorBoard(log_dir=str(tmp_path))])
    assert [s for s, _ in read_scalars(tmp_path / "train")["epoch_loss"]] == [0, 1]
    assert [s for s, _ in read_scalars(tmp_path / "validation")["epoch_loss"]] == [0, 1]


def test_loss_history_writes_one_png_per_epoch_in_both_loops(digits, tmp_path):
    results = _fit_and_train(lambda loop: [LossHistory(tmp_path / loop)], digits, epochs=3)
    for loop, (_, history, (callback,)) in results.items():
        names = sorted(os.listdir(tmp_path / loop))
        assert names == [f"plot_at_epoch_{e}.png" for e in range(3)]
        assert all((tmp_path / loop / n).read_bytes()[:4] == b"\x89PNG" for n in names)
        assert [len(losses) for losses in callback.epoch_losses] == [STEPS] * 3
        assert callback.epoch_losses[-1][-1] == pytest.approx(history["loss"][-1], rel=1e-5)


def test_shape_mismatch_is_refused_before_the_first_step(digits):
    x, y = digits[0]
    model = digits_mlp(32)
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match=r"expects inputs of shape \(batch, 64\). "
                                         r"Received: \(batch, 63\)"):
        quiet_train(model, (x[:, :63], y))
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))


def test_labels_out_of_range_are_refused(digits):
    x, y = digits[0]
    y = y.copy()
    y[-1] = 12
    with pytest.raises(ValueError, match=r"class ids in \[0, 10\) for this model's 10 outputs. "
                                         r"Received labels from 0 to 12"):
        quiet_train(digits_mlp(32), (x, y))


def test_bad_data_arguments(digits):
    x, y = digits[0]
    with pytest.raises(ValueError, match=r"positive integer batch_size. Received: batch_size=0"):
        quiet_train(digits_mlp(32), (x, y), batch_size=0)
    with pytest.raises(ValueError, match=r"validation_split` in \(0, 1\). "
                                         r"Received: validation_split=1.5"):
        quiet_train(digits_mlp(32), (x, y), validation_split=1.5)


def test_non_finite_loss_stops_with_the_step_and_keeps_the_checkpoint(digits, tmp_path):
    x, y = digits[0]
    x = x.copy()
    x[70] = np.nan  # in the third batch
    model = digits_mlp(32)
    with pytest.raises(FloatingPointError, match=r"Non-finite loss nan at epoch 1, step 3: "
                                                 r"training stopped.*last good checkpoint is .*ckpt-2"):
        quiet_train(model, (x, y), checkpoint_dir=str(tmp_path), checkpoint_every=1)
    fresh = digits_mlp(32, seed=1)
    trainer = Trainer(fresh, loss="sparse_categorical_crossentropy",
                      optimizer=keras.optimizers.Adam(1e-2))
    assert TrainingCheckpoint(tmp_path, trainer).restore_latest() == (0, 2)
    assert all(np.isfinite(w).all() for w in fresh.get_weights())


RESUMABLE_RUN = textwrap.dedent("""
    import os, signal, sys
    import keras, numpy as np, tensorflow as tf
    from spec_impl import load_dataset, train
    ckpt_dir, out, kill_at, k = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(0)
    (x, y), _ = load_dataset("digits", input_shape=(64,))
    x, y = x[:320], y[:320]
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])

    class Killer(keras.callbacks.Callback):
        seen = 0
        def on_train_batch_end(self, batch, logs=None):
            Killer.seen += 1
            if Killer.seen == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    history = train(model, x, y, loss="sparse_categorical_crossentropy", shuffle=False,
                    optimizer=keras.optimizers.Adam(1e-2), epochs=3, batch_size=32,
                    checkpoint_dir=ckpt_dir, checkpoint_every=4, callbacks=[Killer()], verbose=0,
                    steps_per_execution=k)
    np.savez(out, *model.get_weights(), loss=np.array(history.history["loss"]))
""")


def _run(args):
    return subprocess.run([sys.executable, "-c", RESUMABLE_RUN, *map(str, args)],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("k,kill_at", [(1, 17), (3, 6)], ids=["k1", "k3"])
def test_killed_run_resumes_to_the_same_weights(k, kill_at, tmp_path):
    # 10 steps per epoch, checkpoints every 4 steps and at each epoch end.
    # k = 1: SIGKILL after step 17 (epoch 2, step 7); the rerun restarts from epoch 2, step 4.
    # k = 3 (steps_per_execution): calls end after steps 3, 6, 9, 10; a checkpoint at the end of
    # each call that reaches a multiple of 4 (steps 6 and 9). SIGKILL at the 6th call (epoch 2,
    # after step 6); the rerun restarts from epoch 2, step 6, its calls shifted.
    straight = _run([tmp_path / "a", tmp_path / "a.npz", 0, k])
    assert straight.returncode == 0, straight.stderr[-2000:]
    killed = _run([tmp_path / "b", tmp_path / "b.npz", kill_at, k])
    assert killed.returncode == -9 and not (tmp_path / "b.npz").exists()
    resumed = _run([tmp_path / "b", tmp_path / "b.npz", 0, k])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    weights = [k for k in a.files if k.startswith("arr_")]
    assert len(weights) == 4
    for key in weights:
        assert_allclose(b[key], a[key], atol=0, rtol=0)
    # Only the epochs run in the resumed process are in its history; they match exactly.
    assert_allclose(b["loss"], a["loss"][1:], atol=0, rtol=0)


def root_mean_square(y_true, y_pred):
    """Finite (0) where the prediction is exact, with a NaN gradient there (sqrt' at 0 x 0)."""
    return tf.sqrt(tf.reduce_mean(tf.square(y_true - y_pred)))


def test_a_finite_loss_with_nan_gradients_stops_too():
    x, y = np.zeros((8, 3), "float32"), np.zeros((8, 1), "float32")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    with pytest.raises(FloatingPointError, match=r"Non-finite loss nan at epoch 1, step 1: "):
        train(model, x, y, loss=root_mean_square, optimizer="sgd", batch_size=4, verbose=0)
    # Keras's TerminateOnNaN reads the loss only: the step with the NaN gradients reports 0, and
    # fit stops one step later, when the NaN weights make the loss NaN.
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile("sgd", root_mean_square)
    batches = []
    seen = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: batches.append((batch, float(logs["loss"]))))
    model.fit(x, y, batch_size=4, epochs=2, verbose=0,
              callbacks=[seen, keras.callbacks.TerminateOnNaN()])
    assert batches[0] == (0, 0.0) and batches[1][0] == 1 and np.isnan(batches[1][1])
    assert len(batches) == 2 and np.isnan(model.get_weights()[0]).all()
