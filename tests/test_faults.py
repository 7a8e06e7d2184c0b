"""Faults a real machine produces, each injected: a SIGTERM (preemption), a second run on the
same checkpoint folder, a truncated checkpoint, a checkpoint write that fails, a step with a
non-finite gradient.

The references are what a user would otherwise rely on: an uninterrupted run (a preempted and
resumed run must end bit-identical to it), and, for `on_nan="skip"`, the same run on data
without the bad batch (a skipped step must change nothing: weights, optimizer state, epoch loss).
The SIGTERMs here are real signals sent to this process by a callback at a chosen point;
`tests/test_faults_cli.py` sends them to `spec-impl train` subprocesses, and
`tests/distributed/test_distribute.py` to one worker of a two-worker cluster.
"""

import functools
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import textwrap
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from spec_impl import global_policy, train
from spec_impl.testing import assert_allclose, digits_arrays, digits_mlp, read_scalars
from spec_impl.trainer.checkpointing import (
    CheckpointUnreadableError,
    CheckpointWriteError,
    TrainingCheckpoint,
)
from spec_impl.trainer.engine import Trainer
from spec_impl.trainer.lock import LOCK_NAME, CheckpointFolderLocked, CheckpointLock
from spec_impl.trainer.non_finite import NON_FINITE
from spec_impl.trainer.preemption import TrainingPreempted

# 200 samples in batches of 32: 7 steps per epoch, the last of 8 samples.
SAMPLES, BATCH, EPOCHS, STEPS = 200, 32, 3, 7


digits = functools.partial(digits_arrays, SAMPLES)


def run(mode="function", k=1, callbacks=(), x=None, y=None, epochs=EPOCHS, **kwargs):
    """Train the MLP with Adam (its state is what a wrong skip or resume would change)."""
    xd, yd, x_val, y_val = digits()
    model = digits_mlp()
    history = train(model, xd if x is None else x, yd if y is None else y, batch_size=BATCH,
                    epochs=epochs, shuffle=False, verbose=0, validation_data=(x_val, y_val),
                    loss="sparse_categorical_crossentropy", optimizer=keras.optimizers.Adam(1e-2),
                    metrics=["accuracy"], mode=mode, steps_per_execution=k,
                    callbacks=list(callbacks), **kwargs)
    return model, history


def assert_same_state(model, reference):
    for got, want in zip(model.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(model.optimizer.variables, reference.optimizer.variables, strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=got.path)


class SigtermAt(keras.callbacks.Callback):
    """Send this process a real SIGTERM (or `signum`) at a hook: `("batch", epoch, step)` at the
    start of that call, `("epoch", epoch)` at that epoch's end, `("validation", epoch)` as
    validation starts."""

    def __init__(self, where, signum=signal.SIGTERM):
        super().__init__()
        self.where, self.epoch, self.signum = where, 0, signum

    def _kill(self):
        os.kill(os.getpid(), self.signum)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self.where == ("batch", self.epoch, batch):
            self._kill()

    def on_epoch_end(self, epoch, logs=None):
        if self.where == ("epoch", epoch):
            self._kill()

    def on_test_begin(self, logs=None):
        if self.where == ("validation", self.epoch):
            self._kill()


def position(folder):
    reader = tf.train.load_checkpoint(str(folder))
    return (int(reader.get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE")),
            int(reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")))


@pytest.fixture(scope="module")
def uninterrupted():
    return {(mode, k): run(mode, k) for mode, k in (("function", 1), ("xla", 2), ("eager", 1))}


# where the SIGTERM lands -> (epoch, step) of the checkpoint written. A call's batch callback
# runs as the call starts: the call finishes, then the run stops after it. k = 2 in xla mode:
# calls start at steps 0, 2, 4 (a group), 6 (the partial batch, step by step).
PREEMPTION_POINTS = [
    ("function", 1, ("batch", 1, 3), (1, 4)),
    ("xla", 2, ("batch", 1, 2), (1, 4)),   # mid-epoch, in a group of two steps
    ("xla", 2, ("batch", 0, 6), (1, 0)),   # the epoch's last call: validation, then stop
    ("eager", 1, ("batch", 0, 0), (0, 1)),
    ("function", 1, ("epoch", 0), (1, 0)),  # between epochs
    ("xla", 2, ("validation", 1), (2, 0)),  # during validation: it completes, then stop
]


@pytest.mark.parametrize("mode, k, where, stopped_at", PREEMPTION_POINTS,
                         ids=[f"{m}-k{k}-{w[0]}{w[1:]}" for m, k, w, _ in PREEMPTION_POINTS])
def test_sigterm_checkpoints_at_that_step_and_the_rerun_is_bit_identical(
        mode, k, where, stopped_at, uninterrupted, tmp_path):
    folder = tmp_path / "checkpoints"
    before = signal.getsignal(signal.SIGTERM)  # SIG_DFL, or what the process was started with
    with pytest.raises(TrainingPreempted) as info:
        run(mode, k, [SigtermAt(where)], checkpoint_dir=str(folder))
    epoch, step = stopped_at
    assert (info.value.epoch, info.value.step) == stopped_at
    assert position(folder) == stopped_at
    assert info.value.checkpoint == tf.train.latest_checkpoint(str(folder))
    assert str(info.value) == (f"Stopped by SIGTERM after epoch {epoch + 1}, step {step}: "
                               f"checkpoint {info.value.checkpoint} written; run again with the "
                               f"same checkpoint folder to resume from it.")
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is restored
    assert not (folder / LOCK_NAME).exists()  # the lock is released
    model, history = run(mode, k, checkpoint_dir=str(folder))
    reference, ref_history = uninterrupted[(mode, k)]
    assert_same_state(model, reference)
    # the epochs run after the restart log what the uninterrupted run logged for them
    for name, values in history.history.items():
        assert values == ref_history.history[name][-len(values):], name


def test_sigterm_without_a_checkpoint_folder_stops_after_the_call_and_saves_nothing():
    with pytest.raises(TrainingPreempted, match=r"^Stopped by SIGTERM after epoch 1, step 3: "
                                                r"no checkpoint_dir, so nothing was saved\.$"):
        run("function", 1, [SigtermAt(("batch", 0, 2))])


def test_sigterm_in_the_last_call_finishes_the_run(uninterrupted, tmp_path):
    model, _ = run("function", 1, [SigtermAt(("batch", EPOCHS - 1, STEPS - 1))],
                   checkpoint_dir=str(tmp_path))
    assert position(tmp_path) == (EPOCHS, 0)
    assert_same_state(model, uninterrupted[("function", 1)][0])


# ---- one run per checkpoint folder ----

HOLDER = textwrap.dedent("""
    import sys, time
    from spec_impl.trainer.lock import CheckpointLock
    with CheckpointLock(sys.argv[1]):
        print("locked", flush=True)
        sys.stdin.readline()  # hold the lock until told to go
""")


def test_a_second_run_on_a_locked_folder_fails_fast_and_the_first_is_not_disturbed(tmp_path):
    folder = tmp_path / "checkpoints"
    with subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as holder:
        try:
            assert holder.stdout.readline() == "locked\n"
            with pytest.raises(CheckpointFolderLocked) as info:
                run("function", 1, checkpoint_dir=str(folder))
            assert str(info.value).startswith(
                f"The checkpoint folder {folder} is in use by process {holder.pid} on ")
            assert list(folder.iterdir()) == [folder / LOCK_NAME]  # left alone, nothing beside
            holder.stdin.write("go\n")
            holder.stdin.flush()
            assert holder.wait(timeout=60) == 0
        finally:
            if holder.poll() is None:
                holder.kill()
    assert not (folder / LOCK_NAME).exists()
    run("function", 1, checkpoint_dir=str(folder))  # free again
    assert position(folder) == (EPOCHS, 0)


def test_a_stale_lock_is_taken_over_with_a_warning(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": gone.pid, "host": socket.gethostname()}))
    with pytest.warns(RuntimeWarning, match=f"Taking over the stale lock {tmp_path / LOCK_NAME} "
                                            f"of process {gone.pid} on "):
        run("function", 1, checkpoint_dir=str(tmp_path))
    assert position(tmp_path) == (EPOCHS, 0)
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_lock_from_another_host_is_respected(tmp_path):
    (tmp_path / LOCK_NAME).write_text('{"pid": 1, "host": "another-machine"}')
    with pytest.raises(CheckpointFolderLocked, match="in use by process 1 on another-machine"):
        with CheckpointLock(tmp_path):
            pass


# ---- corrupt checkpoints ----

def _checkpointed(folder):
    """A finished run checkpointing every 3 steps: 3 checkpoints kept, the newest at the end."""
    run("function", 1, checkpoint_dir=str(folder), checkpoint_every=3)
    return tf.train.get_checkpoint_state(str(folder)).all_model_checkpoint_paths


def _truncate(prefix):
    data = f"{prefix}.data-00000-of-00001"
    with open(data, "r+b") as f:
        f.truncate(os.path.getsize(data) // 2)


def test_a_truncated_latest_checkpoint_is_skipped_for_the_newest_readable_one(tmp_path):
    kept = _checkpointed(tmp_path)
    assert len(kept) == 3
    want = tf.train.load_checkpoint(kept[-2])
    _truncate(kept[-1])
    trainer = Trainer(digits_mlp(), loss="sparse_categorical_crossentropy", optimizer="adam",
                      metrics=["accuracy"])  # the variables of the run that wrote it
    trainer.build(tf.data.Dataset.from_tensor_slices(digits()[:2]).batch(BATCH).element_spec)
    with pytest.warns(RuntimeWarning, match=f"^Skipped the checkpoint {kept[-1]} \\(IndexError: "
                                            f".*\\), which cannot be read; restored {kept[-2]} "
                                            f"instead\\.$"):
        assert TrainingCheckpoint(str(tmp_path), trainer).restore_latest() == (
            int(want.get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE")),
            int(want.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")))
    np.testing.assert_array_equal(trainer.model.weights[0].numpy(),
                                  want.get_tensor("model/v00000/.ATTRIBUTES/VARIABLE_VALUE"))


def test_a_run_resumes_from_the_newest_readable_checkpoint(tmp_path, uninterrupted):
    kept = _checkpointed(tmp_path)
    _truncate(kept[-1])
    os.remove(f"{kept[-2]}.index")
    with pytest.warns(RuntimeWarning) as warned:
        model, _ = run("function", 1, checkpoint_dir=str(tmp_path))
    assert [str(w.message).split(" (")[0] for w in warned] == [
        f"Skipped the checkpoint {kept[-1]}", f"Skipped the checkpoint {kept[-2]}"]
    assert_same_state(model, uninterrupted[("function", 1)][0])


def test_no_readable_checkpoint_is_a_clear_error(tmp_path):
    kept = _checkpointed(tmp_path)
    for prefix in kept:
        _truncate(prefix)
    with pytest.raises(CheckpointUnreadableError, match=f"^No checkpoint in {tmp_path} can be "
                                                        f"restored: {kept[-1]} \\(IndexError"):
        run("function", 1, checkpoint_dir=str(tmp_path))


# ---- a checkpoint write that fails ----

class FileSizeLimitAfter(keras.callbacks.Callback):
    """After epoch `epoch`'s checkpoint, limit files to `limit` bytes (RLIMIT_FSIZE), as a full
    disk would stop a write; SIGXFSZ is ignored so that the write fails with EFBIG."""

    def __init__(self, epoch, limit):
        super().__init__()
        self.epoch, self.limit = epoch, limit

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            resource.setrlimit(resource.RLIMIT_FSIZE, (self.limit, resource.getrlimit(
                resource.RLIMIT_FSIZE)[1]))


@pytest.fixture
def restore_file_size_limit():
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    yield limits
    resource.setrlimit(resource.RLIMIT_FSIZE, limits)
    signal.signal(signal.SIGXFSZ, previous)


def test_a_failed_checkpoint_write_names_the_folder_and_keeps_the_previous(
        tmp_path, restore_file_size_limit):
    with pytest.raises(CheckpointWriteError) as info:
        run("function", 1, [FileSizeLimitAfter(0, 1024)], checkpoint_dir=str(tmp_path))
    resource.setrlimit(resource.RLIMIT_FSIZE, restore_file_size_limit)
    first = str(tmp_path / "ckpt-1")
    assert str(info.value).startswith(f"Could not write a checkpoint to {tmp_path} (epoch 2, "
                                      f"step 0): ")
    assert str(info.value).endswith(f"The latest checkpoint is still {first}.")
    assert tf.train.latest_checkpoint(str(tmp_path)) == first
    assert position(tmp_path) == (1, 0)
    assert not (tmp_path / LOCK_NAME).exists()


# ---- on_nan="skip" ----

BAD_STEP = 2  # of epoch 1 (from 0): samples 64..95


def _with_nan_batch():
    x, y, _, _ = digits()
    bad = x.copy()
    bad[BAD_STEP * BATCH + 5, 0] = np.nan
    return bad, y


def _without_bad_batch():
    x, y, _, _ = digits()
    keep = np.r_[0:BAD_STEP * BATCH, (BAD_STEP + 1) * BATCH:SAMPLES]
    return x[keep], y[keep]


@pytest.mark.parametrize("mode, k", [("function", 1), ("eager", 1), ("xla", 1), ("xla", 4),
                                     ("function", 3)])
def test_skip_leaves_the_bad_step_out_as_if_its_batch_were_absent(mode, k):
    # The reference trains on the data without the bad batch: the batches after it shift by
    # one position, so the comparison is over one epoch, where they are the same batches.
    x, y = _with_nan_batch()
    with pytest.warns(RuntimeWarning, match=rf"^Skipped 1 step\(s\) with a non-finite loss or "
                                            rf"gradient in epoch 1, the last at step {BAD_STEP + 1}"):
        model, history = run(mode, k, x=x, y=y, on_nan="skip", epochs=1)
    xr, yr = _without_bad_batch()
    reference, ref_history = run(mode, k, x=xr, y=yr, epochs=1)
    assert_same_state(model, reference)
    assert history.history == ref_history.history


def test_skip_stops_after_max_skipped_consecutive_steps(tmp_path):
    x, _ = _with_nan_batch()
    x[: 3 * BATCH, 0] = np.nan  # steps 1, 2, 3 of every epoch
    with pytest.raises(FloatingPointError, match=r"^Non-finite loss nan at epoch 1, step 3 \(3 "
                                                 r"consecutive steps skipped\): training stopped"), \
            pytest.warns(RuntimeWarning, match="Skipped 1 step"):
        run("function", 1, x=x, on_nan="skip", max_skipped=3, checkpoint_dir=str(tmp_path))
    assert tf.train.latest_checkpoint(str(tmp_path)) is None


@pytest.mark.parametrize("mode, k", [("function", 1), ("eager", 1), ("xla", 2)])
def test_an_epoch_whose_steps_were_all_skipped_reports_no_loss_never_a_perfect_one(mode, k, tmp_path):
    # Every batch of the first epoch is non-finite, every one of the second is good: epoch 1
    # trained on nothing. Keras's mean of no sample is 0.0, a perfect loss that
    # ModelCheckpoint(save_best_only=True) would keep. No value, as fit reports an epoch
    # without batches: the callback warns that `loss` is not available and keeps nothing.
    x, y, _, _ = digits()
    good = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)
    bad = tf.data.Dataset.from_tensor_slices((np.full_like(x, np.nan), y)).batch(BATCH)
    data, steps = bad.concatenate(good), STEPS  # one iterator: epoch 1 bad, epoch 2 good
    best = tmp_path / "best.weights.h5"
    keep_best = keras.callbacks.ModelCheckpoint(str(best), monitor="loss", save_best_only=True,
                                                save_weights_only=True)
    weights = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: weights.append(model.get_weights()))
    model = digits_mlp()
    before = model.get_weights()
    with warnings.catch_warnings(record=True) as caught:  # h5py's own DeprecationWarning too
        warnings.simplefilter("always")
        history = train(model, data, epochs=2, steps_per_epoch=steps, verbose=0, mode=mode,
                        steps_per_execution=k, loss="sparse_categorical_crossentropy",
                        optimizer=keras.optimizers.Adam(1e-2), metrics=["accuracy"],
                        on_nan="skip", max_skipped=2 * steps, callbacks=[keep_best, record])
    epochs_warned = [str(w.message) for w in caught if "trained on no batch" in str(w.message)]
    assert epochs_warned == ["Epoch 1 trained on no batch: on_nan='skip' left out every step it "
                             "ran, so it reports no loss, accuracy (as fit reports an epoch "
                             "without batches), not the 0.0 of an empty mean."]
    assert history.epoch == [0, 1]
    assert sorted(history.history) == ["accuracy", "loss"]
    assert len(history.history["loss"]) == len(history.history["accuracy"]) == 1  # epoch 2's
    assert np.isfinite(history.history["loss"][0]) and 0 < history.history["accuracy"][0] <= 1
    for got, want in zip(weights[0], before, strict=True):  # epoch 1 changed nothing
        np.testing.assert_array_equal(got, want)
    # the best kept is epoch 2's, the only epoch that trained
    reloaded = digits_mlp()
    reloaded.load_weights(str(best))
    for got, want in zip(reloaded.get_weights(), weights[1], strict=True):
        np.testing.assert_array_equal(got, want)


class _OwnAssertion(keras.layers.Layer):
    """A layer whose own in-graph assertion fails on inputs above 100, with a message that
    reads like the engine's finiteness check."""

    def call(self, x):
        tf.debugging.Assert(tf.reduce_max(x) < 100.0, [NON_FINITE])
        return x


@pytest.mark.parametrize("mode", ["eager", "function"])
def test_a_models_own_failed_assertion_is_its_error_not_a_non_finite_step(mode):
    # The loop tells its own check from any other error by the step the check recorded, not by
    # the message: the model's error comes through as it is, even worded as the engine's.
    x, y, _, _ = digits()
    x = x.copy()
    x[2 * BATCH] = 1000.0  # the third batch
    model = keras.Sequential([keras.Input((64,)), _OwnAssertion(), keras.layers.Dense(10)])
    with pytest.raises(tf.errors.InvalidArgumentError, match=NON_FINITE):
        train(model, x, y, batch_size=BATCH, shuffle=False, verbose=0, mode=mode,
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))


def test_stop_is_the_default_and_names_the_step():
    x, _ = _with_nan_batch()
    with pytest.raises(FloatingPointError, match=rf"^Non-finite loss nan at epoch 1, step "
                                                 rf"{BAD_STEP + 1}: training stopped"):
        run("function", 1, x=x)


@pytest.mark.parametrize("on_nan, max_skipped, message", [
    ("ignore", 10, "Expected `on_nan` to be one of stop, skip. Received: on_nan='ignore'"),
    ("skip", 0, "max_skipped"),
])
def test_bad_on_nan_settings(on_nan, max_skipped, message):
    with pytest.raises(ValueError, match=message):
        Trainer(digits_mlp(), loss="mse", on_nan=on_nan, max_skipped=max_skipped)


def test_skip_under_a_mirrored_strategy_equals_one_device():
    # the process's one CPU as a strategy's only replica: the all-reduce of the skip decision
    # and the skipped update inside the replica step run as on several devices
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    x, y = _with_nan_batch()
    xd, yd, x_val, y_val = digits()
    with strategy.scope():
        model = digits_mlp()
        optimizer = keras.optimizers.Adam(1e-2)
    with pytest.warns(RuntimeWarning, match="Skipped 1 step"):
        train(model, x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0,
              loss="sparse_categorical_crossentropy", optimizer=optimizer, on_nan="skip",
              strategy=strategy)
    xr, yr = _without_bad_batch()
    reference, _ = run("function", 1, x=xr, y=yr, epochs=1)
    for got, want in zip(model.get_weights(), reference.get_weights(), strict=True):
        assert_allclose(got, want, rtol=1e-6, atol=1e-7)


# ---- the options together ----

def _every_option(folder, mode, k, callbacks=(), strategy=None):
    """A NaN batch skipped, bfloat16 compute, TensorBoard logging, checkpoints, validation and
    accuracy, under `strategy`: the options a long run combines."""
    x, y = _with_nan_batch()
    _, _, x_val, y_val = digits()
    scope = strategy.scope() if strategy is not None else global_policy("mixed_bfloat16")
    with scope:
        model = digits_mlp()
        optimizer = keras.optimizers.Adam(1e-2)
    with pytest.warns(RuntimeWarning, match="Skipped 1 step"):
        history = train(model, x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0,
                        validation_data=(x_val, y_val), loss="sparse_categorical_crossentropy",
                        optimizer=optimizer, metrics=["accuracy"], mode=mode,
                        steps_per_execution=k, on_nan="skip", log_dir=str(folder / "logs"),
                        checkpoint_dir=str(folder / "ckpt"), callbacks=list(callbacks),
                        strategy=strategy)
    return model, history


@pytest.mark.parametrize("mode, k, strategy", [("xla", 2, False), ("function", 1, True)],
                         ids=["xla-k2-bfloat16", "function-mirrored"])
def test_preemption_with_every_other_option_resumes_bit_identical(mode, k, strategy, tmp_path):
    # The SIGTERM lands in epoch 2 after the skipped step (step 2, inside an XLA group of two),
    # the run resumes from its checkpoint, and everything ends as in an uninterrupted run:
    # weights, optimizer state, the resumed epochs' logs, and one TensorBoard point per step
    # across the two processes' event files, with the uninterrupted run's values.
    make = (lambda: tf.distribute.MirroredStrategy(["/cpu:0"])) if strategy else (lambda: None)
    reference, ref_history = _every_option(tmp_path / "reference", mode, k, strategy=make())
    with pytest.raises(TrainingPreempted) as info:
        _every_option(tmp_path / "run", mode, k, [SigtermAt(("batch", 1, 4))], strategy=make())
    assert (info.value.epoch, info.value.step) == (1, 4 + k)
    model, history = _every_option(tmp_path / "run", mode, k, strategy=make())
    assert_same_state(model, reference)
    for name, values in history.history.items():
        assert values == ref_history.history[name][-len(values):], name
    got = read_scalars(tmp_path / "run" / "logs" / "train")["batch_loss"]
    want = read_scalars(tmp_path / "reference" / "logs" / "train")["batch_loss"]
    assert [step for step, _ in want] == list(range(1, EPOCHS * STEPS + 1))
    assert got == want
