"""TensorBoard for a run: `train/` and `validation/` writers under `log_dir`, or writers that
record nothing without one (as Orbit does), so the engine never asks whether it logs."""

import os

import tensorflow as tf
from tensorboard.plugins.scalar import metadata as scalar_metadata

_SCALAR_METADATA = scalar_metadata.create_summary_metadata(display_name=None, description=None)
SIDES = {"train": "", "validation": "val_"}  # writer folder -> the prefix of its log names


def scalar(tag, value):
    """`tf.summary.scalar` under exactly `tag`, whatever name scope (AutoGraph's `while/cond`
    inside a multi-step loop) is current."""
    tf.summary.write(tag, tf.cast(value, tf.float32), metadata=_SCALAR_METADATA)


class Summaries:
    """The run's two TensorBoard writers.

    Args:
        log_dir: the TensorBoard folder, or `None`: then both writers are no-op writers and
            `enabled` is False (a compiled step then builds no per-step logs at all).
    """

    def __init__(self, log_dir):
        self.enabled = log_dir is not None
        if not self.enabled:
            self.writers = {side: tf.summary.create_noop_writer() for side in SIDES}
            return
        if "://" not in str(log_dir):  # a local folder: created with the user's umask
            for side in SIDES:
                os.makedirs(os.path.join(log_dir, side), exist_ok=True)
        self.writers = {side: tf.summary.create_file_writer(f"{log_dir}/{side}") for side in SIDES}

    def batch(self, side, read_logs, step):
        """`batch_<name>` scalars of one step at `step`; `read_logs()` is called only when
        enabled, so that a run without TensorBoard builds none of them."""
        if not self.enabled:
            return
        with self.writers[side].as_default(step=step):
            for name, value in read_logs().items():
                scalar(f"batch_{name}", value)

    def text(self, tag, markdown, step):
        """A text summary `tag` in `train/` at `step`."""
        with self.writers["train"].as_default(step=step):
            tf.summary.text(tag, markdown)
        self.writers["train"].flush()

    def epoch(self, epoch, logs):
        """`epoch_<name>` scalars at step `epoch`: training names in `train/`, `val_` names in
        `validation/` without their prefix."""
        for side, prefix in SIDES.items():
            with self.writers[side].as_default(step=epoch):
                for name, value in logs.items():
                    if prefix and name.startswith(prefix):
                        tf.summary.scalar("epoch_" + name[len(prefix):], value)
                    elif not prefix and not name.startswith(SIDES["validation"]):
                        tf.summary.scalar("epoch_" + name, value)
            self.writers[side].flush()
