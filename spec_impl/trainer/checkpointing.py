"""Checkpoint and resume for the training engine, losing nothing.

A checkpoint keeps the model's variables, the optimizer's, the running metric totals and the
position (epoch, step within the epoch), plus what the run was trained with (`ckpt-N.json`:
optimizer, learning rate, batch size, steps per call, precision). Variables are checkpointed
as indexed dicts rather than through `tf.train.Checkpoint(model=model)`: on Keras 3 the latter
silently skips layers held in Python lists.

Checkpoints are found by their files (`ckpt-N.index`), never by TensorFlow's `checkpoint`
index alone: a folder whose index is missing or garbage (a copy of the files alone, a clean-up)
resumes from its newest readable checkpoint, the index is rebuilt with a warning, and a new
checkpoint never takes the number of an existing one. TensorFlow reads checkpoints through a
glob, so a folder whose name holds `[`, `]`, `*` or `?` is read through a plain-named symbolic
link; the package prunes old checkpoints itself, by name, for the same reason.

Faults: a latest checkpoint that cannot be read (a truncated data file, a missing file) is
skipped with a warning naming it, and the newest readable one is restored, which is why three
are kept; a checkpoint written by other settings (another model, optimizer, precision, or a
mid-epoch resume with another batch size) raises `CheckpointMismatchError` naming both; a write
that fails (a full disk, a file-size limit) raises `CheckpointWriteError` naming the folder, and
the previous checkpoint stays the latest; weights that are not finite are never written.
"""

import contextlib
import json
import math
import os
import re
import shutil
import tempfile
import warnings

import numpy as np
import tensorflow as tf

from spec_impl.saving import check_finite_weights, write_atomic_text
from spec_impl.trainer import keras_api
from spec_impl.trainer.randomness import warn_stateful_random_ops

MAX_TO_KEEP = 3
INDEX_NAME = "checkpoint"  # TensorFlow's index of a folder's checkpoints
_CHECKPOINT = re.compile(r"^ckpt-(\d+)\.(index|data-\d+-of-\d+)$")
_TEMPORARY = re.compile(r"^ckpt-\d+_temp")  # TensorFlow writes `ckpt-N_temp/` then renames
_GLOB_CHARACTERS = "*?[]"


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (no space left, a file-size limit, permissions)."""


class CheckpointUnreadableError(RuntimeError):
    """No checkpoint in the folder can be restored."""


class CheckpointMismatchError(ValueError):
    """The checkpoint is intact but was written with other settings than this run's."""


def _indexed(variables):
    return {f"v{i:05d}": v for i, v in enumerate(variables)}


def checkpoint_numbers(folder):
    """The numbers N of the `ckpt-N` checkpoints with a file in `folder` (its index or a data
    file: one without the other is listed, to be reported as unreadable), newest first."""
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted({int(m.group(1)) for m in map(_CHECKPOINT.match, names) if m}, reverse=True)


def has_checkpoints(folder):
    """Whether `folder` holds checkpoints of an earlier run (their files, or an index)."""
    return bool(checkpoint_numbers(folder)) or os.path.exists(os.path.join(folder, INDEX_NAME))


def remove_leftovers(folder):
    """Remove the temporary folders of checkpoint writes that were killed midway; returns
    their names. Call it only while holding the folder's lock (no write is in flight)."""
    try:
        names = sorted(n for n in os.listdir(folder) if _TEMPORARY.match(n))
    except FileNotFoundError:
        return []
    for name in names:
        path = os.path.join(folder, name)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    return names


@contextlib.contextmanager
def _readable(prefix):
    """`prefix` as TensorFlow can read it: through a symbolic link with a plain name when the
    folder's path holds glob characters (TensorFlow's reader globs the path)."""
    folder, name = os.path.split(prefix)
    if not any(c in folder for c in _GLOB_CHARACTERS):
        yield prefix
        return
    with tempfile.TemporaryDirectory(prefix="spec_impl_ckpt_") as plain:
        link = os.path.join(plain, "folder")
        os.symlink(os.path.abspath(folder), link)
        yield os.path.join(link, name)


def _first_line(error):
    text = str(error)
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


def _learning_rate(optimizer):
    """The optimizer's learning rate as a float, or `None` under a schedule."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    if keras_api.learning_rate_schedule(optimizer) is not None:
        return None
    return float(f"{float(np.asarray(optimizer.learning_rate)):.7g}")  # float32's digits


def run_settings(trainer, batch_size):
    """What a checkpoint records about the run that wrote it."""
    optimizer = trainer.optimizer
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    return {"optimizer": type(inner).__name__, "learning_rate": _learning_rate(optimizer),
            "batch_size": batch_size, "steps_per_execution": trainer.steps_per_execution,
            "mode": trainer.mode, "precision": trainer.model.dtype_policy.name}


def _described(settings):
    return ", ".join(f"{k} {v}" for k, v in settings.items() if v is not None)


class TrainingCheckpoint:
    """Save and restore a `Trainer`'s full state under `directory`.

    Args:
        directory: the checkpoint folder (created if needed).
        trainer: a built `spec_impl.trainer.engine.Trainer` (model and optimizer variables exist).
        max_to_keep: how many checkpoints to keep.
        write_directory: where to write (default: `directory`); a multi-worker non-chief
            worker writes to a temporary folder and restores from the chief's `directory`.
        settings: what the run is trained with (`run_settings`); recorded beside each
            checkpoint and compared on restore.
        lock: the folder's `CheckpointLock`, verified before each write.
    """

    def __init__(self, directory, trainer, max_to_keep=MAX_TO_KEEP, write_directory=None,
                 settings=None, lock=None):
        self.directory = str(directory)
        self.write_directory = str(write_directory or directory)
        self.max_to_keep = max_to_keep
        self.trainer = trainer
        self.settings = dict(settings or {})
        self.lock = lock
        self._randomness_checked = False
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.groups = {
            "model": _indexed(trainer.model.variables),
            "optimizer": _indexed([v for o in trainer.steps.optimizers() for v in o.variables]),
            "state": _indexed(trainer.state_variables()),  # the metrics' running totals, ...
        }
        self.checkpoint = tf.train.Checkpoint(**self.groups, epoch=self.epoch, step=self.step)
        self.checkpoint.save_counter  # noqa: B018  (created now, so every checkpoint holds it)

    def _prefix(self, folder, number):
        return os.path.join(folder, f"ckpt-{number}")

    @property
    def latest(self):
        """Path prefix of the newest checkpoint this run writes to (`write_directory`), or
        `None`."""
        folder = self.write_directory
        complete = [n for n in checkpoint_numbers(folder)
                    if os.path.exists(f"{self._prefix(folder, n)}.index")]
        return self._prefix(folder, complete[0]) if complete else None

    def save(self, epoch, step):
        """Record that `epoch` epochs and `step` further steps are done, and write a checkpoint
        numbered after every one in the folder; then prune to `max_to_keep` and rewrite the
        index. Returns its path prefix.

        Raises:
            FloatingPointError: a weight is not finite (nothing is written).
            CheckpointWriteError: the write failed; the previous checkpoint is still the latest.
        """
        self._check_finite(epoch, step)
        if not self._randomness_checked:  # once: the step's ops do not change within a run
            self._randomness_checked = True
            warn_stateful_random_ops(self.trainer)
        if self.lock is not None:
            self.lock.verify()
        folder = self.write_directory
        numbers = checkpoint_numbers(folder)
        prefix = self._prefix(folder, (numbers[0] if numbers else 0) + 1)
        self.epoch.assign(epoch)
        self.step.assign(step)
        try:
            os.makedirs(folder, exist_ok=True)  # with the user's umask (TensorFlow's ignores it)
            self.checkpoint.write(prefix)
            write_atomic_text(f"{prefix}.json", json.dumps(self.settings, indent=1) + "\n")
            self._prune(folder)
        except (tf.errors.OpError, OSError) as error:
            message = getattr(error, "message", None) or str(error)
            raise CheckpointWriteError(
                f"Could not write a checkpoint to {folder} (epoch {epoch}, step {step}): "
                f"{message.splitlines()[0] if message else type(error).__name__}. The latest "
                f"checkpoint is still {self.latest}.") from error
        return prefix

    def _check_finite(self, epoch, step):
        last = f"; the last good checkpoint is {self.latest}" if self.latest else ""
        check_finite_weights(self.trainer.model,
                             f"not checkpointed at epoch {epoch}, step {step}{last}")

    def _prune(self, folder):
        """Keep the newest `max_to_keep` checkpoints (removed by name, never by a glob) and
        write TensorFlow's index listing them (`tf.train.latest_checkpoint` reads it)."""
        numbers = checkpoint_numbers(folder)
        kept, dropped = numbers[:self.max_to_keep], numbers[self.max_to_keep:]
        for number in dropped:
            self._remove(folder, number)
        self._write_index(folder, kept)

    @staticmethod
    def _remove(folder, number):
        start = f"ckpt-{number}."
        for name in os.listdir(folder):
            if name.startswith(start):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(folder, name))

    @staticmethod
    def _write_index(folder, numbers):
        lines = [f'model_checkpoint_path: "ckpt-{numbers[0]}"'] + [
            f'all_model_checkpoint_paths: "ckpt-{n}"' for n in reversed(numbers)]
        write_atomic_text(os.path.join(folder, INDEX_NAME), "\n".join(lines) + "\n")

    def _index_is_stale(self, newest):
        """Whether TensorFlow's index is missing, unreadable or names another newest one."""
        try:
            state = tf.train.get_checkpoint_state(self.directory)
        except Exception:  # garbage: a text-format parse error
            return True
        return state is None or os.path.basename(state.model_checkpoint_path) != f"ckpt-{newest}"

    def restore_latest(self):
        """Restore the newest readable checkpoint, if there is one; returns `(epoch, step)` to
        resume at (`None` without a checkpoint: the run starts at its `initial_epoch`).

        Raises:
            CheckpointUnreadableError: checkpoints are in the folder but none can be read.
            CheckpointMismatchError: the newest readable checkpoint was written with other
                settings (model, optimizer, metrics, precision, or mid-epoch a batch size).
        """
        numbers = checkpoint_numbers(self.directory)
        failures = []
        rate = _learning_rate(self.trainer.optimizer) if self.settings else None  # this run's
        for number in numbers:
            path = self._prefix(self.directory, number)
            recorded = self._recorded(path)
            try:
                with _readable(path) as readable:
                    reader = tf.train.load_checkpoint(readable)
                    self._refuse_other_settings(path, recorded, reader)
                    difference = self._difference(reader)
                    if difference:  # read, but not these variables
                        raise self._mismatch(path, recorded, difference)
                    self.checkpoint.restore(readable).assert_existing_objects_matched()
            except CheckpointMismatchError:
                raise
            except Exception as error:  # a truncated file raises IndexError, a missing one OpError
                failures.append(f"{path} ({_first_line(error)})")
                continue
            self._warn_skipped(failures, path, numbers[0])
            self._apply_learning_rate(path, recorded, rate)
            return int(self.epoch.numpy()), int(self.step.numpy())
        if failures:
            raise CheckpointUnreadableError(
                f"No checkpoint in {self.directory} can be restored: {'; '.join(failures)}. "
                f"Restore a copy of the folder, or move it away to start over.")
        return None

    def _difference(self, reader):
        """How the checkpoint's variables differ from this run's (count, shape, dtype of each
        group: model, optimizer, state), or `None`."""
        shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
        for group, variables in self.groups.items():
            saved = sorted(k for k in shapes if k.startswith(f"{group}/"))
            if len(saved) != len(variables):
                return (f"{len(saved)} {group} variables in the checkpoint, {len(variables)} in "
                        f"this run")
            for name, variable in variables.items():
                key = f"{group}/{name}/.ATTRIBUTES/VARIABLE_VALUE"
                here = (tuple(variable.shape), tf.as_dtype(variable.dtype).name)
                there = (tuple(shapes.get(key, ())), dtypes[key].name if key in dtypes else None)
                if here != there:
                    return (f"{group} variable {name} ({variable.path}) is {there[1]} {there[0]} "
                            f"in the checkpoint, {here[1]} {here[0]} in this run")
        return None

    def _warn_skipped(self, failures, path, newest):
        for failure in failures:
            warnings.warn(f"Skipped the checkpoint {failure}, which cannot be read; restored "
                          f"{path} instead.", RuntimeWarning, stacklevel=3)
        if self.write_directory == self.directory and self._index_is_stale(newest):
            warnings.warn(f"The checkpoint index {os.path.join(self.directory, INDEX_NAME)} was "
                          f"missing or did not name the newest checkpoint; rebuilt it from the "
                          f"files: resuming from {path}.", RuntimeWarning, stacklevel=3)
            self._write_index(self.directory, checkpoint_numbers(self.directory)[:self.max_to_keep])

    @staticmethod
    def _recorded(path):
        try:
            with open(f"{path}.json") as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}  # written before settings were recorded, or lost: nothing to compare

    def _mismatch(self, path, recorded, difference):
        was = _described(recorded) or "settings not recorded"
        return CheckpointMismatchError(
            f"The checkpoint {path} is intact but holds other variables than this run's: "
            f"{difference}. It was trained with: {was}; this run has: "
            f"{_described(self.settings)}. To continue it, use the model, optimizer, metrics "
            f"and precision it was trained with; to start a new run, use another checkpoint "
            f"folder.")

    def _refuse_other_settings(self, path, recorded, reader):
        """Refuse a resume whose settings cannot continue the checkpoint: another optimizer or
        precision, or mid-epoch another batch size (checked before anything is restored)."""
        current = self.settings
        if not current:  # nothing to compare with
            return
        for key in ("optimizer", "precision"):
            if recorded.get(key) is not None and current.get(key) != recorded[key]:
                raise CheckpointMismatchError(
                    f"The checkpoint {path} was trained with {key} {recorded[key]}; this run has "
                    f"{key} {current.get(key)}. To continue it, use {key} {recorded[key]}; to "
                    f"start a new run with {current.get(key)}, use another checkpoint folder.")
        step = int(reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE"))
        if step and recorded.get("batch_size") is not None \
                and current.get("batch_size") != recorded["batch_size"]:
            raise CheckpointMismatchError(
                f"The checkpoint {path} stopped mid-epoch (step {step}) with batch size "
                f"{recorded['batch_size']}; this run has batch size {current.get('batch_size')}, "
                f"which would count that step in other batches. To continue it, use batch size "
                f"{recorded['batch_size']} (another one is accepted from an epoch's end).")

    def _apply_learning_rate(self, path, recorded, rate):
        """Keep this run's learning rate `rate` over the restored one, and say so."""
        saved = recorded.get("learning_rate")
        if rate is not None and saved is not None and not math.isclose(rate, saved, rel_tol=1e-6):
            optimizer = getattr(self.trainer.optimizer, "inner_optimizer", self.trainer.optimizer)
            optimizer.learning_rate = rate
            warnings.warn(f"The checkpoint {path} was trained with learning rate {saved:g}; "
                          f"continuing with this run's {rate:g}.", RuntimeWarning, stacklevel=3)
