"""Checkpoint and resume for the training engine, losing nothing.

A `tf.train.CheckpointManager` keeps the model's variables, the optimizer's, the running metric
totals and the position (epoch, step within the epoch). Variables are checkpointed as indexed
dicts rather than through `tf.train.Checkpoint(model=model)`: on Keras 3 the latter silently skips
layers held in Python lists. TensorFlow writes each checkpoint to a temporary name and updates the
`checkpoint` index file atomically, so a run killed midway keeps the last complete checkpoint.
"""

import tensorflow as tf

MAX_TO_KEEP = 3


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
            optimizer=_indexed(trainer.optimizer.variables),
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
        """Record that `epoch` epochs and `step` further steps are done, and write a checkpoint."""
        self.epoch.assign(epoch)
        self.step.assign(step)
        return self.manager.save()

    def restore_latest(self):
        """Restore the latest checkpoint if there is one; returns `(epoch, step)` to resume at."""
        if self.latest is None:
            return 0, 0
        self.checkpoint.restore(self.latest).assert_existing_objects_matched()
        return int(self.epoch.numpy()), int(self.step.numpy())
