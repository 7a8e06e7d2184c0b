"""Faults at the edges of `train`: a lost or garbage checkpoint index, a folder name with
brackets, a lock whose pid was reused (a restarted container), a folder removed or made
read-only mid-run, a resume with other settings, Ctrl-C, updates that overflow, data that is
not what it says.

Each fault is injected for real: files removed or overwritten, a real second process holding
the lock, a real read-only bind mount (or permissions, when not root), real signals.
"""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_faults import (
    BATCH,
    EPOCHS,
    HOLDER,
    STEPS,
    SigtermAt,
    assert_same_state,
    digits,
    position,
    run,
)

from spec_impl import load_dataset, train
from spec_impl.saving import check_finite_weights, remove_stale_temporaries, save_figure_atomic
from spec_impl.testing import digits_mlp
from spec_impl.trainer.checkpointing import (
    INDEX_NAME,
    CheckpointMismatchError,
    CheckpointWriteError,
    checkpoint_numbers,
    has_checkpoints,
    remove_leftovers,
)
from spec_impl.trainer.lock import LOCK_NAME, CheckpointFolderLost, CheckpointLock
from spec_impl.trainer.preemption import INTERRUPTED_EXIT_CODE, TrainingPreempted


@pytest.fixture(scope="module")
def uninterrupted():
    return run("function", 1)


def _files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.name.startswith("ckpt-")}


# ---- the checkpoint index ----

@pytest.mark.parametrize("damage", ["missing", "garbage", "stale"])
def test_a_lost_index_resumes_from_the_files_and_overwrites_nothing(damage, uninterrupted,
                                                                   tmp_path):
    run("function", 1, epochs=1, checkpoint_dir=str(tmp_path))
    before = _files(tmp_path)
    index = tmp_path / INDEX_NAME
    if damage == "missing":
        index.unlink()
    elif damage == "garbage":
        index.write_text("model_checkpoint_path: {{{ not a checkpoint state")
    else:  # names a checkpoint that is not there
        index.write_text('model_checkpoint_path: "ckpt-0"\n')
    with pytest.warns(RuntimeWarning, match=rf"^The checkpoint index {index} was missing or did "
                                            rf"not name the newest checkpoint; rebuilt it from "
                                            rf"the files: resuming from {tmp_path / 'ckpt-1'}\.$"):
        model, history = run("function", 1, checkpoint_dir=str(tmp_path))
    assert len(history.history["loss"]) == EPOCHS - 1  # resumed after epoch 1, not from scratch
    assert_same_state(model, uninterrupted[0])
    after = _files(tmp_path)
    assert {name: after[name] for name in before} == before  # ckpt-1 untouched
    assert checkpoint_numbers(tmp_path) == [3, 2, 1]
    assert tf.train.latest_checkpoint(str(tmp_path)) == str(tmp_path / "ckpt-3")


def test_files_without_an_index_are_an_earlier_run(tmp_path):
    from spec_impl.workflow import train_and_evaluate

    folder = tmp_path / "checkpoints"
    run("function", 1, epochs=1, checkpoint_dir=str(folder))
    (folder / INDEX_NAME).unlink()
    assert has_checkpoints(folder)
    with pytest.raises(ValueError, match=f"^{folder} holds checkpoints of an earlier run"):
        train_and_evaluate("mnist_mlp", out=str(tmp_path), epochs=1)
    assert checkpoint_numbers(folder) == [1]


def test_a_folder_name_with_brackets_resumes_and_keeps_three(uninterrupted, tmp_path):
    folder = tmp_path / "exp[lr=0.001]"
    with pytest.raises(TrainingPreempted):
        run("function", 1, [SigtermAt(("batch", 1, 3))], checkpoint_dir=str(folder),
            checkpoint_every=2)
    model, _ = run("function", 1, checkpoint_dir=str(folder), checkpoint_every=2)
    assert_same_state(model, uninterrupted[0])
    assert len(checkpoint_numbers(folder)) == 3  # pruned by name, though the glob would not
    assert sorted(p.name for p in folder.iterdir() if p.name.endswith(".index")) == [
        f"ckpt-{n}.index" for n in sorted(checkpoint_numbers(folder))]


# ---- the lock ----

@pytest.mark.parametrize("pid", [1, "self"], ids=["pid-1", "this-pid"])
def test_a_lock_whose_pid_was_reused_is_taken_over(pid, tmp_path):
    # A container restarted after an OOM kill: the dead run's lock names a pid that is alive
    # again (often 1, or this very process), but no process holds the file's flock.
    pid = os.getpid() if pid == "self" else pid
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": socket.gethostname(),
                                                  "started": 0}))
    with pytest.warns(RuntimeWarning, match=f"^Taking over the stale lock {tmp_path / LOCK_NAME} "
                                            f"of process {pid} on "):
        run("function", 1, epochs=1, checkpoint_dir=str(tmp_path))
    assert position(tmp_path) == (1, 0)
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_lock_left_by_a_killed_holder_is_taken_over(tmp_path):
    with subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as holder:
        assert holder.stdout.readline() == "locked\n"
        holder.kill()  # SIGKILL: no clean-up runs, the file stays
        holder.wait(timeout=60)
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == holder.pid
    with pytest.warns(RuntimeWarning, match=f"stale lock .* of process {holder.pid} on "):
        with CheckpointLock(tmp_path):
            assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()


class RemoveFolderAfter(keras.callbacks.Callback):
    """At epoch `epoch`'s end (its checkpoint written), remove the checkpoint folder, and with
    `holder`, start a real second process that takes the re-created folder's lock."""

    def __init__(self, folder, epoch, holder=False):
        super().__init__()
        self.folder, self.epoch, self.holder, self.process = folder, epoch, holder, None

    def on_epoch_end(self, epoch, logs=None):
        if epoch != self.epoch:
            return
        shutil.rmtree(self.folder)
        if self.holder:
            self.process = subprocess.Popen([sys.executable, "-c", HOLDER, str(self.folder)],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            text=True)
            assert self.process.stdout.readline() == "locked\n"


def test_a_folder_removed_mid_run_is_recreated_with_its_lock(tmp_path):
    folder = tmp_path / "ckpt"
    with pytest.warns(RuntimeWarning, match=f"^The checkpoint folder {folder} \\(or its lock file\\) "
                                            f"was removed during the run; took its lock again\\.$"):
        run("function", 1, [RemoveFolderAfter(folder, 0)], checkpoint_dir=str(folder))
    assert position(folder) == (EPOCHS, 0)
    assert checkpoint_numbers(folder) == [2, 1]  # written after the removal
    assert not (folder / LOCK_NAME).exists()


def test_a_folder_taken_by_another_run_mid_run_stops_this_one(tmp_path):
    folder = tmp_path / "ckpt"
    remover = RemoveFolderAfter(folder, 0, holder=True)
    try:
        with pytest.raises(CheckpointFolderLost, match=(
                f"^The checkpoint folder {folder} was removed during this run, and process "
                f"\\d+ on .* has taken it since: this run stops without writing there\\.$")):
            run("function", 1, [remover], checkpoint_dir=str(folder))
        assert checkpoint_numbers(folder) == []  # nothing written into the other run's folder
        assert json.loads((folder / LOCK_NAME).read_text())["pid"] == remover.process.pid
    finally:
        remover.process.communicate("go\n", timeout=60)
    assert not (folder / LOCK_NAME).exists()


@contextlib.contextmanager
def read_only(folder):
    """Make `folder` read-only for this process: a read-only bind mount as root (for whom
    permissions do not count), its permissions otherwise."""
    if os.geteuid() != 0:
        os.chmod(folder, 0o555)
        try:
            yield
        finally:
            os.chmod(folder, 0o755)
        return
    mounted = subprocess.run(f"mount --bind '{folder}' '{folder}' && mount -o remount,ro,bind "
                             f"'{folder}' '{folder}'", shell=True, capture_output=True, text=True)
    if mounted.returncode:
        subprocess.run(["umount", str(folder)], capture_output=True)
        pytest.skip(f"a read-only folder as root needs a bind mount: {mounted.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


class ReadOnlyAfter(keras.callbacks.Callback):
    def __init__(self, folder, stack):
        super().__init__()
        self.folder, self.stack = folder, stack

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            self.stack.enter_context(read_only(self.folder))


def test_a_folder_made_read_only_mid_run_reports_the_write_and_keeps_the_lock_takeable(tmp_path):
    folder = tmp_path / "ckpt"
    with contextlib.ExitStack() as stack:
        with pytest.raises(CheckpointWriteError, match=(
                f"^Could not write a checkpoint to {folder} \\(epoch 2, step 0\\): .*The latest "
                f"checkpoint is still {folder / 'ckpt-1'}\\.$")):
            run("function", 1, [ReadOnlyAfter(folder, stack)], checkpoint_dir=str(folder))
        assert (folder / LOCK_NAME).exists()  # could not be removed, and nothing masked that
    with pytest.warns(RuntimeWarning, match="Taking over the stale lock"):
        run("function", 1, checkpoint_dir=str(folder))  # the flock died with the run
    assert position(folder) == (EPOCHS, 0)


# ---- resuming with other settings ----

def _resume(folder, model=None, optimizer=None, batch_size=BATCH, epochs=2):
    """Continue `run`'s checkpoint in `folder` with other settings (the rest as `run`'s)."""
    x, y, _, _ = digits()
    return train(model or digits_mlp(), x, y, batch_size=batch_size, epochs=epochs, verbose=0,
                 shuffle=False, loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                 optimizer=optimizer or keras.optimizers.Adam(1e-2), checkpoint_dir=str(folder))


def _preempted_mid_epoch(folder):
    with pytest.raises(TrainingPreempted):
        run("function", 1, [SigtermAt(("batch", 1, 3))], checkpoint_dir=str(folder))
    return folder / "ckpt-2"


def test_another_optimizer_is_refused_naming_both(tmp_path):
    run("function", 1, epochs=1, checkpoint_dir=str(tmp_path))
    with pytest.raises(CheckpointMismatchError, match=(
            f"^The checkpoint {tmp_path / 'ckpt-1'} was trained with optimizer Adam; this run has "
            f"optimizer SGD\\. To continue it, use optimizer Adam; to start a new run with SGD, "
            f"use another checkpoint folder\\.$")):
        _resume(tmp_path, optimizer=keras.optimizers.SGD(1e-2))


def test_another_batch_size_mid_epoch_is_refused_and_at_an_epoch_end_accepted(tmp_path):
    path = _preempted_mid_epoch(tmp_path / "mid")
    with pytest.raises(CheckpointMismatchError, match=(
            f"^The checkpoint {path} stopped mid-epoch \\(step 4\\) with batch size {BATCH}; "
            f"this run has batch size 16, which would count that step in other batches\\. To "
            f"continue it, use batch size {BATCH}")):
        _resume(tmp_path / "mid", batch_size=16, epochs=EPOCHS)
    run("function", 1, epochs=1, checkpoint_dir=str(tmp_path / "end"))
    history = _resume(tmp_path / "end", batch_size=16)
    assert len(history.history["loss"]) == 1


def test_a_new_learning_rate_is_applied_and_announced(tmp_path):
    run("function", 1, epochs=1, checkpoint_dir=str(tmp_path))  # Adam(1e-2)
    optimizer = keras.optimizers.Adam(1e-3)
    with pytest.warns(RuntimeWarning, match=f"^The checkpoint {tmp_path / 'ckpt-1'} was trained "
                                            f"with learning rate 0.01; continuing with this "
                                            f"run's 0.001\\.$"):
        _resume(tmp_path, optimizer=optimizer)
    assert float(optimizer.learning_rate) == pytest.approx(1e-3)
    assert int(optimizer.iterations) == 2 * STEPS  # the checkpoint's count went on
    assert json.loads((tmp_path / "ckpt-2.json").read_text())["learning_rate"] == 0.001


def test_another_model_says_what_differs_and_how_to_continue(tmp_path):
    run("function", 1, epochs=1, checkpoint_dir=str(tmp_path))
    other = digits_mlp(hidden=8)
    with pytest.raises(CheckpointMismatchError) as info:
        _resume(tmp_path, model=other)
    message = str(info.value)
    assert message.startswith(f"The checkpoint {tmp_path / 'ckpt-1'} is intact but holds other "
                              f"variables than this run's: model variable v00000 (")
    assert "is float32 (64, 16) in the checkpoint, float32 (64, 8) in this run" in message
    assert "It was trained with: optimizer Adam, learning_rate 0.01, batch_size 32" in message
    assert message.endswith("To continue it, use the model, optimizer, metrics and precision it "
                            "was trained with; to start a new run, use another checkpoint folder.")
    assert "Move the folder away" not in message


def test_another_precision_is_refused(tmp_path):
    from spec_impl import global_policy

    run("function", 1, epochs=1, checkpoint_dir=str(tmp_path))
    with global_policy("mixed_bfloat16"):
        model = digits_mlp()
    with pytest.raises(CheckpointMismatchError, match="trained with precision float32; this run "
                                                      "has precision mixed_bfloat16"):
        _resume(tmp_path, model=model)


# ---- Ctrl-C ----

def _users_handler(signum, frame):
    raise AssertionError("the user's own SIGINT handler was called during the run")


# What SIGINT's handler is when a run starts: Python's default (a terminal), ignored (a process
# started in the background, `cmd &` or `nohup`, which Python leaves ignored), or the user's own.
PREVIOUS_SIGINT = {"default": signal.default_int_handler, "ignored": signal.SIG_IGN,
                   "users-own": _users_handler}


@pytest.fixture(params=list(PREVIOUS_SIGINT))
def sigint_before(request):
    """SIGINT's handler set to each `PREVIOUS_SIGINT` for the test, and put back after it."""
    outside = signal.signal(signal.SIGINT, PREVIOUS_SIGINT[request.param])
    yield PREVIOUS_SIGINT[request.param]
    signal.signal(signal.SIGINT, outside)


def test_sigint_checkpoints_at_the_step_and_resumes_bit_identical(uninterrupted, tmp_path,
                                                                 sigint_before):
    with pytest.raises(TrainingPreempted) as info:
        run("function", 1, [SigtermAt(("batch", 1, 3), signal.SIGINT)], checkpoint_dir=str(tmp_path))
    assert (info.value.signal, info.value.exit_code) == (signal.SIGINT, INTERRUPTED_EXIT_CODE)
    assert str(info.value).startswith("Stopped by SIGINT after epoch 2, step 4: checkpoint ")
    assert position(tmp_path) == (1, 4)
    assert signal.getsignal(signal.SIGINT) is sigint_before  # restored, whatever it was
    if sigint_before is not signal.default_int_handler:
        return  # the resume does not depend on the handler before: once is enough
    model, _ = run("function", 1, checkpoint_dir=str(tmp_path))
    assert_same_state(model, uninterrupted[0])


class TwoSignals(SigtermAt):
    """A SIGTERM at a batch, then a SIGINT while the preemption checkpoint is being written."""

    def _kill(self):
        super()._kill()
        from spec_impl.trainer import checkpointing

        save = checkpointing.TrainingCheckpoint.save

        def save_under_a_second_signal(ckpt, epoch, step):
            os.kill(os.getpid(), signal.SIGINT)
            return save(ckpt, epoch, step)

        self.patch = pytest.MonkeyPatch()
        self.patch.setattr(checkpointing.TrainingCheckpoint, "save", save_under_a_second_signal)


def test_a_second_signal_while_stopping_is_ignored(tmp_path):
    callback = TwoSignals(("batch", 1, 3))
    try:
        with pytest.raises(TrainingPreempted) as info:
            run("function", 1, [callback], checkpoint_dir=str(tmp_path))
    finally:
        callback.patch.undo()
    assert info.value.signal == signal.SIGTERM  # the first one decides
    assert position(tmp_path) == (1, 4)


# ---- updates that overflow ----

@pytest.mark.parametrize("on_nan", ["stop", "skip"])
@pytest.mark.parametrize("mode, k", [("function", 1), ("xla", 2)])
@pytest.mark.parametrize("optimizer", ["adam-epsilon-0", "sgd-1e39"])
def test_non_finite_weights_stop_the_run_and_are_never_saved(optimizer, mode, k, on_nan, tmp_path):
    # Adam with epsilon 0 divides 0 by 0 for a weight whose gradient is 0 (the digits' always
    # blank pixels); SGD with a rate of 1e39 overflows float32. The loss and gradients of the
    # step are finite: only the weights after the update are not.
    make = {"adam-epsilon-0": lambda: keras.optimizers.Adam(1e-2, epsilon=0.0),
            "sgd-1e39": lambda: keras.optimizers.SGD(1e39)}[optimizer]
    x, y, _, _ = digits()
    with pytest.raises(FloatingPointError, match=(
            r"^Non-finite weights \(sequential(_\d+)?/dense(_\d+)?/kernel.*\) after epoch 1, "
            r"step 1: the optimizer's update overflowed \(check the learning rate and the "
            r"optimizer's epsilon\); training stopped, no checkpoint written after it$")):
        train(digits_mlp(), x, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=False,
              loss="sparse_categorical_crossentropy", optimizer=make(), mode=mode,
              steps_per_execution=k, on_nan=on_nan, checkpoint_dir=str(tmp_path))
    assert checkpoint_numbers(tmp_path) == []


def test_check_finite_weights_names_the_weight():
    model = digits_mlp()
    kernel = model.layers[-1].kernel
    kernel.assign(np.where(np.arange(kernel.shape[1]) == 3, np.nan, kernel.numpy()))
    with pytest.raises(FloatingPointError, match=rf"^Non-finite weights \({kernel.path}\): not "
                                                 rf"saved\.$"):
        check_finite_weights(model, "not saved")


# ---- data that is not what it says ----

@pytest.mark.parametrize("dtype", ["int64", "int32", "uint16", "uint8"])
def test_integer_images_are_scaled_to_the_unit_interval(dtype, tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 8, 8)).astype(dtype)
    labels = np.arange(12) % 3
    path = tmp_path / "d.npz"
    np.savez(path, x_train=images, y_train=labels, x_test=images[:4], y_test=labels[:4])
    (x, _), _ = load_dataset(str(path))
    assert x.dtype == np.float32 and x.shape == (12, 8, 8, 1)
    np.testing.assert_array_equal(x[..., 0], images.astype("float32") / 255)


def test_integer_images_beyond_eight_bits_are_refused_naming_the_dtype(tmp_path):
    images = np.full((4, 8, 8), 1000, dtype="uint16")
    path = tmp_path / "d.npz"
    np.savez(path, x_train=images, y_train=np.arange(4), x_test=images, y_test=np.arange(4))
    with pytest.raises(ValueError, match=rf"^Dataset {path}: Integer images \(uint16\) with "
                                         rf"values 1000\.\.1000: expected pixels 0\.\.255"):
        load_dataset(str(path))


def test_an_implausible_class_count_is_refused_before_the_model_is_built(tmp_path):
    from spec_impl.workflow import train_and_evaluate

    images = np.zeros((20, 8, 8), "float32")
    labels = np.arange(20) % 4
    labels[7] = 10**7
    path = tmp_path / "d.npz"
    np.savez(path, x_train=images, y_train=labels, x_test=images[:4], y_test=labels[:4])
    with pytest.raises(ValueError, match=rf"^data='{path}': labels range over 0\.\.10000000, "
                                         rf"which would make 10000001 classes for 24 samples"):
        train_and_evaluate("mnist_mlp", str(path), out=str(tmp_path / "run"), epochs=1)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_messages_name_the_argument_given():
    x, y, x_val, y_val = digits()
    with pytest.raises(ValueError, match=r"Received: validation_steps=0$"):
        run("function", 1, epochs=1, validation_steps=0)
    with pytest.raises(ValueError, match=r"Received: strategy='mirrored'; make one with "
                                         r"spec_impl.make_strategy\('mirrored'\)"):
        train(digits_mlp(), x, y, loss="sparse_categorical_crossentropy", strategy="mirrored")


# ---- leftovers ----

def test_leftovers_of_killed_writes_are_removed_at_the_next_run(tmp_path):
    folder = tmp_path / "ckpt"
    run("function", 1, epochs=1, checkpoint_dir=str(folder))
    (folder / "ckpt-2_temp").mkdir()
    (folder / "ckpt-2_temp" / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"x" * 64)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    alive = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    try:
        stale = tmp_path / f".model.keras.{dead}.0123abcd.tmp.keras"
        live = tmp_path / f".model.keras.{alive.pid}.0123abcd.tmp.keras"
        for path in (stale, live):
            path.write_bytes(b"partial")
        assert remove_stale_temporaries(tmp_path) == [stale.name]
        assert live.exists()
    finally:
        alive.communicate(b"", timeout=60)
    run("function", 1, epochs=2, checkpoint_dir=str(folder))
    assert not (folder / "ckpt-2_temp").exists()
    assert checkpoint_numbers(folder) == [2, 1]
    assert remove_leftovers(folder) == []


def test_a_plot_path_without_an_extension_is_written_as_png(tmp_path):
    from spec_impl._plot import new_figure

    path = save_figure_atomic(new_figure((2, 2)), tmp_path / "chart")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chart"]
