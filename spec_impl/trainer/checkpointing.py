"""Checkpoint and resume for the training engine, losing nothing.

A `tf.train.CheckpointManager` keeps the model's variables, the optimizer's, the running metric
totals and the position (epoch, step within the epoch). Variables are checkpointed as indexed
dicts rather than through `tf.train.Checkpoint(model=model)`: on Keras 3 the latter silently skips
layers held in Python lists. TensorFlow writes each checkpoint to a temporary name and updates the
`checkpoint` index file atomically, so a run killed midway keeps the last complete checkpoint.

Faults: a latest checkpoint that cannot be read (a truncated data file, a missing index) is
skipped with a warning naming it, and the newest readable one is restored, which is why three
are kept; a write that fails (a full disk, a file-size limit) raises `CheckpointWriteError`
naming the folder, and the previous checkpoint stays the latest.
"""

import warnings

import tensorflow as tf

MAX_TO_KEEP = 3


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (no space left, a file-size limit, permissions)."""


class CheckpointUnreadableError(RuntimeError):
    """No checkpoint in the folder can be restored."""


def _indexed(variables):
    return {f"v{i:05d}": v for i, v in enumerate(variables)}


class TrainingCheckpoint:
    """Save and restore a `Trainer`'s full state under `directory`.

    Args:
        directory: the checkpoint folder (created if needed).
        trainer: a built `spec_impl.trainer.engine.Trainer` (model and optimizer variables exist).
        max_to_keep: how many checkpoints to keep.
        write_directory: where to write (default: `directory`); a multi-worker non-chief
            worker writes to a temporary folder and restores from the chief's `directory`.
    """

    def __init__(self, directory, trainer, max_to_keep=MAX_TO_KEEP, write_directory=None):
        self.directory = str(directory)
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.checkpoint = tf.train.Checkpoint(
            model=_indexed(trainer.model.variables),
            optimizer=_indexed([v for o in trainer.optimizers() for v in o.variables]),
            state=_indexed(trainer.state_variables()),
            epoch=self.epoch,
            step=self.step,
        )
        self.manager = tf.train.CheckpointManager(self.checkpoint,
                                                  str(write_directory or directory),
                                                  max_to_keep=max_to_keep)

    @property
    def latest(self):
        """Path prefix of the latest complete checkpoint in `directory`, or `None`."""
        return tf.train.latest_checkpoint(self.directory)

    def save(self, epoch, step):
        """Record that `epoch` epochs and `step` further steps are done, and write a checkpoint.

        Raises:
            CheckpointWriteError: the write failed; the previous checkpoint is still the latest.
        """
        self.epoch.assign(epoch)
        self.step.assign(step)
        try:
            return self.manager.save()
        except (tf.errors.OpError, OSError) as error:
            message = getattr(error, "message", None) or str(error)
            raise CheckpointWriteError(
                f"Could not write a checkpoint to {self.manager.directory} (epoch {epoch}, step "
                f"{step}): {message.splitlines()[0] if message else type(error).__name__}. The "
                f"latest checkpoint is still {self.latest}.") from error

    def _kept(self):
        """The checkpoints the index lists, newest first."""
        state = tf.train.get_checkpoint_state(self.directory)
        if state is None:
            return []
        return list(reversed(state.all_model_checkpoint_paths)) or [state.model_checkpoint_path]

    def restore_latest(self):
        """Restore the newest readable checkpoint, if there is one; returns `(epoch, step)` to
        resume at (`None` without a checkpoint: the run starts at its `initial_epoch`).

        Raises:
            CheckpointUnreadableError: checkpoints are listed but none can be restored.
        """
        failures = []
        for path in self._kept():
            try:
                self.checkpoint.restore(path).assert_existing_objects_matched()
            except Exception as error:  # a truncated file raises IndexError, a missing one OpError
                reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                failures.append(f"{path} ({reason})")
                continue
            for failure in failures:
                warnings.warn(f"Skipped the checkpoint {failure}, which cannot be read; restored "
                              f"{path} instead.", RuntimeWarning, stacklevel=2)
            return int(self.epoch.numpy()), int(self.step.numpy())
        if failures:
            raise CheckpointUnreadableError(
                f"No checkpoint in {self.directory} can be restored: {'; '.join(failures)}. Move "
                f"the folder away to start over.")
        return None
